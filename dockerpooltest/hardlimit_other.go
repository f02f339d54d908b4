//go:build !linux

package dockerpooltest

// hardLimit is not known here: a Podman service runs on Linux, so it is
// not this machine.
func hardLimit(string) (int64, bool) { return 0, false }
