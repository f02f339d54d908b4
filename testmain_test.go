package dockerpool_test

import (
	"os"
	"testing"

	"go.uber.org/goleak"

	"github.com/dockerpool/dockerpool/dockerpooltest"
)

// TestMain fails the run if any goroutine outlives the tests (integration
// tests included: they share this binary). Without a daemon or a test image
// (and outside CI), the examples are not run, and the run ends with a line
// that says how many tests were skipped and why.
func TestMain(m *testing.M) {
	if name := os.Getenv("DOCKERPOOL_HELPER_POOL"); name != "" {
		// Not the tests: the adoption test's helper process.
		os.Exit(holdAPool(name, os.Getenv("DOCKERPOOL_HELPER_IMAGE")))
	}
	dockerpooltest.SkipExamplesIfUnavailable()
	goleak.VerifyTestMain(dockerpooltest.Main(m),
		// Idle keep-alive connections of the shared Docker client used by
		// the integration tests' helpers; they belong to net/http.
		goleak.IgnoreTopFunction("net/http.(*persistConn).readLoop"),
		goleak.IgnoreTopFunction("net/http.(*persistConn).writeLoop"),
		goleak.IgnoreTopFunction("internal/poll.runtime_pollWait"),
	)
}
