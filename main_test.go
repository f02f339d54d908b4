package dockerpool

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain turns on the owner's invariant and goroutine checks for every test
// of the package, and fails the run if any goroutine outlives the tests
// (integration tests included: they share this binary).
func TestMain(m *testing.M) {
	debugChecks = true
	goleak.VerifyTestMain(m,
		// Idle keep-alive connections of the shared Docker client used by
		// the integration tests' helpers; they belong to net/http.
		goleak.IgnoreTopFunction("net/http.(*persistConn).readLoop"),
		goleak.IgnoreTopFunction("net/http.(*persistConn).writeLoop"),
		goleak.IgnoreTopFunction("internal/poll.runtime_pollWait"),
	)
}
