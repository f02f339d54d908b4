package dockerpooltest

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the run if a test leaves a goroutine behind, and reports
// the tests skipped for want of a daemon or test image.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(Main(m),
		// Idle keep-alive connections of the shared Docker client.
		goleak.IgnoreTopFunction("net/http.(*persistConn).readLoop"),
		goleak.IgnoreTopFunction("net/http.(*persistConn).writeLoop"),
		goleak.IgnoreTopFunction("internal/poll.runtime_pollWait"),
	)
}
