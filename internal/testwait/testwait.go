// Package testwait bounds the waits of tests: every receive, WaitGroup and
// helper process a test waits for has a deadline, and a test that reaches it
// fails with a message saying what did not happen, instead of hanging until
// go test's -timeout kills the whole binary.
package testwait

import (
	"sync"
	"testing"
	"time"
)

// Recv returns the next value from ch, or fails the test with "what did
// not happen within d".
func Recv[T any](t testing.TB, ch <-chan T, d time.Duration, what string) T {
	t.Helper()
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case v := <-ch:
		return v
	case <-timer.C:
		t.Fatalf("%s: did not happen within %v", what, d)
		panic("unreachable")
	}
}

// Group waits for wg, or fails the test with "what did not happen within
// d". On a failure, the goroutine that waits for wg is left behind (goleak
// then names the goroutines that are stuck).
func Group(t testing.TB, wg *sync.WaitGroup, d time.Duration, what string) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		wg.Wait()
		close(done)
	}()
	Recv(t, done, d, what)
}
