package dockerpool_test

import (
	"fmt"
	"os"
	"testing"

	"go.uber.org/goleak"

	"github.com/dockerpool/dockerpool/dockerpooltest"
)

// TestMain fails the run if any goroutine outlives the tests (the internal
// and the integration tests share this binary). Nothing is ignored: the
// shared Docker client of the integration tests is closed first, which ends
// its keep-alive connections, and every pool, agent session, exec and proxy
// a test made must be gone by then. (debug_test.go turns the owner's debug
// checks on for the whole binary.)
func TestMain(m *testing.M) {
	code := m.Run()
	dockerpooltest.CloseClient()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintf(os.Stderr, "goleak: goroutines outlived the tests: %v\n", err)
			code = 1
		}
	}
	os.Exit(code)
}
