package main

import (
	"bytes"
	"context"
	"io"
	"strings"
)

// input is the demo's standard input, read on a goroutine of its own so
// that the prompt can also watch for Ctrl-C. The prompt takes it line by
// line; the shell command takes its bytes as they come, keystrokes that go
// to the container's terminal. The goroutine stays blocked in Read when the
// program ends first; that is fine for a process about to exit.
type input struct {
	chunks  chan []byte // what each Read got; closed at the end of input
	err     error       // why the input ended (nil: EOF); read after chunks is closed
	pending []byte      // received, not consumed yet
}

func readInput(r io.Reader) *input {
	in := &input{chunks: make(chan []byte)}
	go func() {
		defer close(in.chunks)
		for {
			buf := make([]byte, 4096)
			n, err := r.Read(buf)
			if n > 0 {
				in.chunks <- buf[:n]
			}
			if err != nil {
				if err != io.EOF {
					in.err = err
				}
				return
			}
		}
	}()
	return in
}

// line returns the next line, without its end; io.EOF at the end of input
// (after a last line without an end), the read error that ended it, or
// ctx's error when ctx ends first.
func (in *input) line(ctx context.Context) (string, error) {
	for {
		if i := bytes.IndexByte(in.pending, '\n'); i >= 0 {
			line := string(in.pending[:i])
			in.pending = in.pending[i+1:]
			return strings.TrimSuffix(line, "\r"), nil
		}
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case b, ok := <-in.chunks:
			if ok {
				in.pending = append(in.pending, b...)
				continue
			}
			if len(in.pending) > 0 {
				line := string(in.pending)
				in.pending = nil
				return line, nil
			}
			if in.err != nil {
				return "", in.err
			}
			return "", io.EOF
		}
	}
}

// forward writes the input to w as it comes (what was received and not
// consumed first), until stop closes, w fails, or the input ends: then it
// reports true.
func (in *input) forward(w io.Writer, stop <-chan struct{}) (ended bool) {
	if len(in.pending) > 0 {
		b := in.pending
		in.pending = nil
		if _, err := w.Write(b); err != nil {
			return false
		}
	}
	for {
		select {
		case <-stop:
			return false
		case b, ok := <-in.chunks:
			if !ok {
				return true
			}
			// Keystrokes typed for the shell after it ended are dropped:
			// they were not meant for the prompt.
			if _, err := w.Write(b); err != nil {
				return false
			}
		}
	}
}
