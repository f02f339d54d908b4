package dockerpool

import "io"

// limiter counts the bytes left under ExecOptions.Limit, shared by the two
// output streams of a command. Only one goroutine at a time may write
// through it (each runner writes from one).
type limiter struct {
	on   bool // Limit > 0
	left int  // bytes still allowed
	hit  bool
}

func newLimiter(limit int) *limiter { return &limiter{on: limit > 0, left: limit} }

// wrap returns w limited by l.
func (l *limiter) wrap(w io.Writer) io.Writer { return &limitedWriter{l: l, w: w} }

type limitedWriter struct {
	l *limiter
	w io.Writer
}

func (lw *limitedWriter) Write(b []byte) (int, error) {
	l := lw.l
	if !l.on {
		return lw.w.Write(b)
	}
	if len(b) <= l.left {
		l.left -= len(b)
		return lw.w.Write(b)
	}
	n, err := lw.w.Write(b[:l.left])
	l.left -= n
	l.hit = true
	if err != nil {
		return n, err
	}
	return n, ErrOutputLimitExceeded
}
