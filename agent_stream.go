package dockerpool

import (
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/dockerpool/dockerpool/internal/agentproto"
)

// stream is the pool's side of one id of an agent session: a command, a
// file transfer, a ping or a reset. The session's reader queues the frames
// that arrive for it (never waiting); its user takes them with next and
// gives credit back for the data it consumed; and what the user sends goes
// within the credit the agent granted (agentproto's flow control).
type stream struct {
	a  *agentConn
	id uint32

	mu     sync.Mutex
	frames []agentproto.Frame
	ready  chan struct{} // one pending wake-up: frames arrived
	ack    agentproto.Acker
	credit *agentproto.Credit // for the data this side sends
}

func newStream(a *agentConn, id uint32) *stream {
	return &stream{a: a, id: id, ready: make(chan struct{}, 1), credit: agentproto.NewCredit()}
}

// deliver takes a frame from the session's reader.
func (s *stream) deliver(f agentproto.Frame) error {
	switch f.Type {
	case agentproto.Grant:
		n, err := agentproto.GrantOf(f)
		if err != nil {
			return err
		}
		s.credit.Add(n)
		return nil
	case agentproto.Stdout, agentproto.Stderr:
		if !s.ack.Received(len(f.Payload)) {
			return fmt.Errorf("the agent sent more than the window of stream %d", s.id)
		}
	}
	s.mu.Lock()
	s.frames = append(s.frames, f)
	s.mu.Unlock()
	select {
	case s.ready <- struct{}{}:
	default:
	}
	return nil
}

// next returns the next frame that arrived, if there is one.
func (s *stream) next() (agentproto.Frame, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.frames) == 0 {
		return agentproto.Frame{}, false
	}
	f := s.frames[0]
	s.frames[0] = agentproto.Frame{}
	s.frames = s.frames[1:]
	if len(s.frames) > 0 { // more to take: stay awake
		select {
		case s.ready <- struct{}{}:
		default:
		}
	}
	return f, true
}

// consumed gives the agent credit back for n bytes of data used.
func (s *stream) consumed(n int) {
	if k := s.ack.Consumed(n); k > 0 {
		_ = s.a.write(agentproto.Grant, s.id, agentproto.GrantPayload(k))
	}
}

// send writes data as frames of type t within the stream's credit, waiting
// for more as needed. It fails when the stream or the session ends first.
func (s *stream) send(t agentproto.Type, data []byte) error {
	for len(data) > 0 {
		k := s.credit.Take(min(len(data), agentproto.Chunk), s.a.done)
		if k == 0 {
			if err := s.a.broken(); err != nil {
				return err
			}
			return errStreamClosed
		}
		if err := s.a.write(t, s.id, data[:k]); err != nil {
			return err
		}
		data = data[k:]
	}
	return nil
}

var errStreamClosed = errors.New("stream closed")

// close ends the stream's sending side: a send waiting for credit returns.
func (s *stream) close() { s.credit.Close() }

// await waits up to timeout for the stream's next frame, for the one-frame
// answers (Pong, ResetDone).
func (s *stream) await(timeout time.Duration, what string) (agentproto.Frame, error) {
	t := time.NewTimer(timeout)
	defer t.Stop()
	for {
		if f, ok := s.next(); ok {
			return f, nil
		}
		select {
		case <-s.ready:
		case <-s.a.done:
			return agentproto.Frame{}, s.a.broken()
		case <-t.C:
			return agentproto.Frame{}, fmt.Errorf("%w: no answer to %s within %v", ErrAgent, what, timeout)
		}
	}
}
