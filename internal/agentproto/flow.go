package agentproto

import "sync"

// Flow control, one stream at a time (see the package documentation). The
// sender of a stream's data holds a Credit; the receiver an Acker.

// Credit is the sender's side of one stream's window: the bytes it may still
// send before the receiver acknowledges more.
type Credit struct {
	mu     sync.Mutex
	n      int
	closed bool
	wake   chan struct{} // one pending wake-up
}

// NewCredit returns a Credit with the initial Window.
func NewCredit() *Credit { return &Credit{n: Window, wake: make(chan struct{}, 1)} }

// Add returns n bytes of credit, from a Grant frame.
func (c *Credit) Add(n int) {
	c.mu.Lock()
	c.n += n
	c.mu.Unlock()
	c.signal()
}

// Close makes every Take return 0 from now on: the stream is over.
func (c *Credit) Close() {
	c.mu.Lock()
	c.closed = true
	c.mu.Unlock()
	c.signal()
}

func (c *Credit) signal() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// Take waits until there is credit and takes up to want bytes of it. It
// returns 0 when stop is closed first, or the Credit is closed.
func (c *Credit) Take(want int, stop <-chan struct{}) int {
	for {
		c.mu.Lock()
		if c.closed {
			c.mu.Unlock()
			return 0
		}
		if c.n > 0 {
			k := min(c.n, want)
			c.n -= k
			c.mu.Unlock()
			return k
		}
		c.mu.Unlock()
		select {
		case <-c.wake:
		case <-stop:
			return 0
		}
	}
}

// Acker is the receiver's side of one stream's window: it counts the bytes
// received and consumed, and says when to acknowledge them.
type Acker struct {
	mu       sync.Mutex
	held     int // received, not consumed yet
	consumed int // consumed, not acknowledged yet
}

// Received counts n bytes that arrived. It reports false when they overrun
// the window: the sender does not keep to the protocol.
func (a *Acker) Received(n int) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.held += n
	return a.held+a.consumed <= Window
}

// Consumed counts n bytes that were used, and returns how many to
// acknowledge now in a Grant frame (0: not yet). Acknowledging by quarters
// of the window keeps Grant frames few and the sender never idle.
func (a *Acker) Consumed(n int) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.held -= n
	a.consumed += n
	if a.consumed < Window/4 && a.held > 0 {
		return 0
	}
	k := a.consumed
	a.consumed = 0
	return k
}
