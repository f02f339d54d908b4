package main

import (
	"errors"
	"io"
	"os"
	"sync"

	"github.com/dockerpool/dockerpool/internal/agentproto"
)

// errStopped is what an inbox's reader gets once its stream is over.
var errStopped = errors.New("stream stopped")

// inbox carries the data frames of one stream (a command's stdin, the
// content of a Put) to its consumer. The frame reader must never wait for a
// consumer (that would stall every other stream and the Kill frames), so it
// only queues; what it may queue is bounded by the stream's window (see
// agentproto's flow control): the pool sends at most Window bytes that the
// inbox has not given credit back for, and the inbox gives credit back as
// the consumer takes the data.
type inbox struct {
	mu     sync.Mutex
	chunks [][]byte
	eof    bool     // StdinEOF came: the end, once the queue is consumed
	closed bool     // the stream is over: drop everything
	w      *os.File // the command's stdin pipe, once feed runs
	wake   chan struct{}
	ack    agentproto.Acker
	grant  func(n int) // sends a Grant frame
	cur    []byte      // the chunk Read is in the middle of
}

func newInbox(grant func(n int)) *inbox {
	return &inbox{wake: make(chan struct{}, 1), grant: grant}
}

func (q *inbox) signal() {
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// push queues data for the consumer. It reports false when the data overruns
// the window (the pool broke the protocol); the data is dropped then.
func (q *inbox) push(b []byte) bool {
	if len(b) == 0 {
		return true
	}
	if !q.ack.Received(len(b)) {
		q.ack.Consumed(len(b))
		return false
	}
	q.mu.Lock()
	if !q.eof && !q.closed {
		q.chunks = append(q.chunks, b)
		b = nil
	}
	q.mu.Unlock()
	if b != nil { // after the end: dropped, but the window is whole again
		q.consumed(len(b))
	}
	q.signal()
	return true
}

// closeInput ends the stream after the queued data.
func (q *inbox) closeInput() {
	q.mu.Lock()
	q.eof = true
	q.mu.Unlock()
	q.signal()
}

// stop ends the stream at once: the command or transfer is over. Closing the
// pipe also unblocks a write the command does not read.
func (q *inbox) stop() {
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

// next waits for the next chunk; it returns io.EOF at the end of the data
// and errStopped once the stream was stopped. The caller passes the chunk's
// length to consumed once it has used it.
func (q *inbox) next() ([]byte, error) {
	for {
		q.mu.Lock()
		switch {
		case q.closed:
			q.mu.Unlock()
			return nil, errStopped
		case len(q.chunks) > 0:
			c := q.chunks[0]
			q.chunks[0] = nil
			q.chunks = q.chunks[1:]
			q.mu.Unlock()
			return c, nil
		case q.eof:
			q.mu.Unlock()
			return nil, io.EOF
		}
		q.mu.Unlock()
		<-q.wake
	}
}

// consumed gives credit back for n bytes the consumer used, unless the
// stream's data has all come (StdinEOF) and been used: then the pool sends
// nothing more, and a Grant would only cost a write on the way of a
// transfer's Done.
func (q *inbox) consumed(n int) {
	if k := q.ack.Consumed(n); k > 0 && !q.over() {
		q.grant(k)
	}
}

// over reports whether the end came and nothing is left queued.
func (q *inbox) over() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return (q.eof || q.closed) && len(q.chunks) == 0
}

// Read makes the inbox an io.Reader, for a Put.
func (q *inbox) Read(p []byte) (int, error) {
	if len(q.cur) == 0 {
		c, err := q.next()
		if err != nil {
			return 0, err
		}
		q.cur = c
	}
	n := copy(p, q.cur)
	q.cur = q.cur[n:]
	q.consumed(n)
	return n, nil
}

// feed writes the stream to a command's stdin pipe until its end or stop,
// then closes the pipe. When the command stops reading (EPIPE), the rest is
// dropped, with credit given back as if it was written.
func (q *inbox) feed(w *os.File) {
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
		c, err := q.next()
		if err != nil {
			return
		}
		if !broken {
			if _, err := w.Write(c); err != nil {
				broken = true
			}
		}
		q.consumed(len(c))
	}
}
