//go:build !unix

package dockerpool

import "os"

// lockSocketDir has no lock to take without flock (Agent.Socket needs a
// unix:// daemon anyway): the directory's age and the daemon's list of
// containers decide alone.
func lockSocketDir(dir string) (*os.File, error) {
	return os.Open(dir)
}
