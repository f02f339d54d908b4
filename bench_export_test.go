package dockerpool

import "testing"

// BenchNoDebug turns the debug checks off for one benchmark of the
// external test package (bench_agent_test.go).
func BenchNoDebug(b *testing.B) { benchNoDebug(b) }
