package main

import (
	"bufio"
	"encoding/binary"
	"errors"
	"io"
	"log"
	"sync"

	"github.com/dockerpool/dockerpool/internal/agentproto"
)

// writer serializes frames to the pool (stdout, or the pool's socket): many
// goroutines send.
type writer struct {
	mu     sync.Mutex
	w      io.Writer
	log    *log.Logger
	failed bool // a write failed already: later failures are not logged
}

// frame writes one frame. A failed write is logged once; the frame is lost
// (nobody is there to read it).
func (w *writer) frame(t agentproto.Type, id uint32, payload []byte) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if err := agentproto.Write(w.w, t, id, payload); err != nil && !w.failed {
		w.failed = true
		if w.log != nil {
			w.log.Printf("write to the pool: %v (frames are lost)", err)
		}
	}
}

// send writes data as frames of type t, as the stream's credit allows. It
// reports false when stop closes (or the stream ends) before all of it went.
func (w *writer) send(t agentproto.Type, id uint32, data []byte, credit *agentproto.Credit, stop <-chan struct{}) bool {
	for len(data) > 0 {
		k := credit.Take(len(data), stop)
		if k == 0 {
			return false
		}
		w.frame(t, id, data[:k])
		data = data[k:]
	}
	return true
}

// use sends the frames to w from now on.
func (w *writer) use(to io.Writer) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.w, w.failed = to, false
}

// json writes a control frame.
func (w *writer) json(t agentproto.Type, id uint32, v any) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if err := agentproto.WriteJSON(w.w, t, id, v); err != nil && !w.failed {
		w.failed = true
		if w.log != nil {
			w.log.Printf("write to the pool: %v (frames are lost)", err)
		}
	}
}

// knownType reports the frame types of this protocol version.
func knownType(t agentproto.Type) bool {
	switch t {
	case agentproto.Hello, agentproto.Exec, agentproto.Stdin, agentproto.StdinEOF,
		agentproto.Kill, agentproto.Stdout, agentproto.Stderr, agentproto.Exit,
		agentproto.Reset, agentproto.ResetDone, agentproto.Ping, agentproto.Pong,
		agentproto.Grant, agentproto.Put, agentproto.Get, agentproto.Done,
		agentproto.Term, agentproto.Resize:
		return true
	}
	return false
}

// plausibleHeader tells whether b (HeaderSize bytes) can start a frame: the
// check of agentproto.Read.
func plausibleHeader(b []byte) bool {
	return knownType(agentproto.Type(b[0])) && binary.BigEndian.Uint32(b[5:9]) <= agentproto.MaxPayload
}

// likelyHeader is the stricter check used to find the next frame after
// garbage: a type the pool sends, with a length that fits it, and a JSON
// object for control frames (b holds the header and, for those, one byte of
// payload).
func likelyHeader(b []byte) bool {
	n := binary.BigEndian.Uint32(b[5:9])
	switch agentproto.Type(b[0]) {
	case agentproto.StdinEOF, agentproto.Kill:
		return n == 0
	case agentproto.Grant:
		return n == 4
	case agentproto.Ping:
		return n <= 64
	case agentproto.Stdin:
		return n > 0 && n <= agentproto.MaxPayload
	case agentproto.Resize:
		return n >= 2 && n <= 64 && len(b) > agentproto.HeaderSize && b[agentproto.HeaderSize] == '{'
	}
	if jsonControl(agentproto.Type(b[0])) {
		return n >= 2 && n <= agentproto.MaxPayload && len(b) > agentproto.HeaderSize && b[agentproto.HeaderSize] == '{'
	}
	return false
}

// jsonControl reports the types of the control frames the pool sends with a
// JSON payload, whose first byte likelyHeader checks.
func jsonControl(t agentproto.Type) bool {
	switch t {
	case agentproto.Hello, agentproto.Exec, agentproto.Reset, agentproto.Put, agentproto.Get,
		agentproto.Term, agentproto.Resize:
		return true
	}
	return false
}

// serve reads frames from r until it ends, and handles them. After garbage
// (bytes that cannot start a frame) it looks for the next likely frame header
// a byte at a time, so the stream resynchronizes if the garbage came between
// frames. When r ends, the agent keeps running: its commands go on and the
// pool may attach again later.
func (a *agent) serve(r io.Reader) { a.serveFrom(r, "stdin", nil) }

// serveFrom reads the frames from r (named name in the log); onHello, when
// set, runs on each Hello from there before it is dispatched.
func (a *agent) serveFrom(r io.Reader, name string, onHello func()) {
	br := bufio.NewReaderSize(r, 64<<10)
	skipped := 0 // > 0: resynchronizing
	for {
		hdr, err := br.Peek(agentproto.HeaderSize)
		if err != nil {
			a.readEnded(name, err, skipped+len(hdr))
			return
		}
		ok := plausibleHeader(hdr)
		if ok && skipped > 0 {
			if jsonControl(agentproto.Type(hdr[0])) {
				if hdr, err = br.Peek(agentproto.HeaderSize + 1); err != nil {
					a.readEnded(name, err, skipped+len(hdr))
					return
				}
			}
			ok = likelyHeader(hdr)
		}
		if !ok {
			_, _ = br.Discard(1)
			skipped++
			continue
		}
		if skipped > 0 {
			a.log.Printf("skipped %d bytes of garbage on %s", skipped, name)
			skipped = 0
		}
		f, err := agentproto.Read(br)
		if err != nil {
			if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
				a.readEnded(name, err, 0)
				return
			}
			a.log.Printf("read frame: %v", err)
			continue
		}
		if f.Type == agentproto.Hello && onHello != nil {
			onHello()
		}
		a.dispatch(f)
	}
}

func (a *agent) readEnded(name string, err error, garbage int) {
	if garbage > 0 {
		a.log.Printf("skipped %d bytes of garbage on %s", garbage, name)
	}
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		a.log.Printf("%s closed; still running", name)
		return
	}
	a.log.Printf("read %s: %v; no longer reading, still running", name, err)
}

// dispatch handles one frame from the pool. It does not block: the work,
// and the answers, happen on other goroutines.
func (a *agent) dispatch(f agentproto.Frame) {
	switch f.Type {
	case agentproto.Hello:
		var h agentproto.HelloMsg
		if err := f.Decode(&h); err != nil {
			a.log.Printf("pool hello: %v", err)
		} else if h.Version != agentproto.Version {
			a.log.Printf("pool speaks protocol version %d, this agent %d", h.Version, agentproto.Version)
		}
	case agentproto.Exec:
		a.handleExec(f)
	case agentproto.Term:
		a.handleTerm(f)
	case agentproto.Resize:
		var m agentproto.ResizeMsg
		if err := f.Decode(&m); err != nil {
			a.log.Printf("resize %d: %v", f.ID, err)
		} else {
			a.stream(f.ID).resize(m.Rows, m.Cols)
		}
	case agentproto.Put, agentproto.Get:
		a.handleTransfer(f)
	case agentproto.Stdin:
		if in := a.stream(f.ID).input(); in != nil && !in.push(f.Payload) {
			a.log.Printf("stream %d: %d bytes beyond its window, dropped", f.ID, len(f.Payload))
		}
	case agentproto.StdinEOF:
		if in := a.stream(f.ID).input(); in != nil {
			in.closeInput()
		}
	case agentproto.Grant:
		n, err := agentproto.GrantOf(f)
		if out := a.stream(f.ID).output(); out != nil && err == nil {
			out.Add(n)
		}
	case agentproto.Kill:
		a.stream(f.ID).abort()
	case agentproto.Reset:
		a.handleReset(f)
	case agentproto.Ping:
		// Not on this goroutine: a pool that does not read our stdout
		// must not stop us from reading its frames.
		go a.out.frame(agentproto.Pong, f.ID, f.Payload)
	default:
		a.log.Printf("unexpected %q frame from the pool (id %d)", byte(f.Type), f.ID)
	}
}
