package dockerpool

// The owner's invariant and goroutine checks are on for every test of the
// package, internal and integration alike.
func init() { debugChecks = true }
