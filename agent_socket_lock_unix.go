//go:build unix

package dockerpool

import (
	"errors"
	"os"
	"syscall"
)

// lockSocketDir takes the lock of a socket's directory: an exclusive flock
// on the directory itself (no file in it: the container sees the
// directory), which the process that uses the directory holds until it
// removes it, and the kernel drops when that process dies. It returns nil
// and no error when another holder has it (another process, or another
// open of this one), so that sweepSocketDirs keeps the directory of a
// container of another daemon of this machine.
func lockSocketDir(dir string) (*os.File, error) {
	f, err := os.Open(dir)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, nil
		}
		return nil, err
	}
	return f, nil
}
