package dockerpool

import "testing"

// BenchNoDebug turns the debug checks off for one benchmark of the
// external test package (bench_agent_test.go).
func BenchNoDebug(b *testing.B) { benchNoDebug(b) }

// NoFileServer makes the Docker path's transfers on c take the one-shot way
// (as when the image cannot run the file server), for the tests of that way.
func NoFileServer(c *Container) {
	c.files.mu.Lock()
	c.files.broken = true
	c.files.mu.Unlock()
}
