package main

import (
	"os"
	"sync"
)

// stdinQueue carries Stdin frames to a command's stdin pipe. The frame reader
// must never wait for a command that does not read its input (that would
// stall every other exec and the Kill frames), so the queue is unbounded: the
// protocol has no flow control for stdin, the pool's sender is trusted to
// keep it reasonable.
type stdinQueue struct {
	mu     sync.Mutex
	chunks [][]byte
	eof    bool     // StdinEOF came: close the pipe once the queue is written
	closed bool     // the exec is over: drop everything
	w      *os.File // the pipe, once feed runs
	wake   chan struct{}
}

func newStdinQueue() *stdinQueue {
	return &stdinQueue{wake: make(chan struct{}, 1)}
}

func (q *stdinQueue) signal() {
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// push queues data for the command.
func (q *stdinQueue) push(b []byte) {
	if len(b) == 0 {
		return
	}
	q.mu.Lock()
	if !q.eof && !q.closed {
		q.chunks = append(q.chunks, b)
	}
	q.mu.Unlock()
	q.signal()
}

// closeInput closes the command's stdin after the queued data.
func (q *stdinQueue) closeInput() {
	q.mu.Lock()
	q.eof = true
	q.mu.Unlock()
	q.signal()
}

// stop ends the feeding at once: the exec is over. Closing the pipe also
// unblocks a write the command does not read.
func (q *stdinQueue) stop() {
	q.mu.Lock()
	q.closed = true
	q.chunks = nil
	w := q.w
	q.mu.Unlock()
	if w != nil {
		w.Close()
	}
	q.signal()
}

// feed writes the queue to w until StdinEOF or stop, then closes w. When the
// command stops reading (EPIPE), the rest is dropped.
func (q *stdinQueue) feed(w *os.File) {
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		w.Close()
		return
	}
	q.w = w
	q.mu.Unlock()
	defer w.Close()
	broken := false
	for {
		q.mu.Lock()
		chunks, eof, closed := q.chunks, q.eof, q.closed
		q.chunks = nil
		q.mu.Unlock()
		if closed {
			return
		}
		for _, c := range chunks {
			if broken {
				break
			}
			if _, err := w.Write(c); err != nil {
				broken = true
			}
		}
		if eof {
			return // everything pushed before StdinEOF was in chunks
		}
		<-q.wake
	}
}
