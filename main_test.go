package dockerpool

// The owner's invariant checks are on in every test of the package
// (integration tests included: they share this binary). TestMain is in
// testmain_test.go, in the external test package, which may import
// dockerpooltest.
func init() { debugChecks = true }
