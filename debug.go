package dockerpool

import (
	"bytes"
	"log/slog"
	"os"
	"runtime"
	"strconv"
)

// debugChecks turns on the invariant and goroutine-ownership checks: the
// core's invariants after every message (core.check), the owner asserting
// that it runs on its own goroutine (owner.check), and the public methods
// asserting that they do not (assertNotOwner: the owner would wait for
// itself). The package's tests turn it on; so does DOCKERPOOL_DEBUG=1 in
// the environment, for a program's own tests. It costs a stack dump per
// message and per public call.
var debugChecks = os.Getenv("DOCKERPOOL_DEBUG") == "1"

// assertNotOwner panics when a public method runs on the owner goroutine.
func (p *Pool) assertNotOwner() {
	if debugChecks && goid() == p.ownerG.Load() {
		panic("dockerpool: internal error: pool method called on the owner goroutine")
	}
}

// goid returns the current goroutine's ID, for debug checks only.
func goid() uint64 {
	var buf [64]byte
	b := buf[:runtime.Stack(buf[:], false)]
	b = bytes.TrimPrefix(b, []byte("goroutine "))
	if i := bytes.IndexByte(b, ' '); i > 0 {
		b = b[:i]
	}
	n, _ := strconv.ParseUint(string(b), 10, 64)
	return n
}

func slogID(id string) slog.Attr { return slog.String("id", shortID(id)) }
