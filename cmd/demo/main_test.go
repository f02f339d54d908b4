package main

import (
	"testing"

	"go.uber.org/goleak"

	"github.com/dockerpool/dockerpool/dockerpooltest"
)

// TestMain fails the run if a test leaves a goroutine behind, and reports
// the tests skipped for want of a daemon or test image.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(dockerpooltest.Main(m),
		// Idle keep-alive connections of a shared Docker client.
		goleak.IgnoreTopFunction("net/http.(*persistConn).readLoop"),
		goleak.IgnoreTopFunction("net/http.(*persistConn).writeLoop"),
		goleak.IgnoreTopFunction("internal/poll.runtime_pollWait"),
	)
}
