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
// a test made must be gone by then. Without a daemon or a test image (and
// outside CI), the examples are not run, and the run ends with a line that
// says how many tests were skipped and why. (debug_test.go turns the owner's
// debug checks on for the whole binary.)
func TestMain(m *testing.M) {
	if name := os.Getenv("DOCKERPOOL_HELPER_POOL"); name != "" {
		// Not the tests: the adoption test's helper process.
		os.Exit(holdAPool(name, os.Getenv("DOCKERPOOL_HELPER_IMAGE")))
	}
	dockerpooltest.SkipExamplesIfUnavailable()
	code := dockerpooltest.Main(m).Run()
	dockerpooltest.CloseClient()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintf(os.Stderr, "goleak: goroutines outlived the tests: %v\n", err)
			code = 1
		}
	}
	os.Exit(code)
}
