package agentproto

import (
	"bytes"
	"errors"
	"io"
	"testing"
	"testing/synctest"
)

func TestFramesRoundTripInOrder(t *testing.T) {
	var buf bytes.Buffer
	if err := WriteJSON(&buf, Exec, 7, ExecMsg{Argv: []string{"echo", "hi"}, Limit: 10}); err != nil {
		t.Fatal(err)
	}
	if err := Write(&buf, Stdout, 7, []byte("hi\n")); err != nil {
		t.Fatal(err)
	}
	if err := Write(&buf, StdinEOF, 7, nil); err != nil {
		t.Fatal(err)
	}
	f, err := Read(&buf)
	if err != nil || f.Type != Exec || f.ID != 7 {
		t.Fatalf("first frame: %+v, %v", f, err)
	}
	var m ExecMsg
	if err := f.Decode(&m); err != nil || m.Argv[1] != "hi" || m.Limit != 10 {
		t.Fatalf("decode: %+v, %v", m, err)
	}
	f, err = Read(&buf)
	if err != nil || f.Type != Stdout || string(f.Payload) != "hi\n" {
		t.Fatalf("second frame: %+v, %v", f, err)
	}
	f, err = Read(&buf)
	if err != nil || f.Type != StdinEOF || len(f.Payload) != 0 {
		t.Fatalf("third frame: %+v, %v", f, err)
	}
	if _, err := Read(&buf); err != io.EOF {
		t.Fatalf("end: %v", err)
	}
}

func TestReadRejectsGarbage(t *testing.T) {
	for name, in := range map[string][]byte{
		"unknown type":  {'?', 0, 0, 0, 1, 0, 0, 0, 0},
		"huge length":   {'O', 0, 0, 0, 1, 0xff, 0xff, 0xff, 0xff},
		"short payload": {'O', 0, 0, 0, 1, 0, 0, 0, 5, 'a'},
		"half a header": {'O', 0, 0},
		"shell noise":   []byte("sh: can't open\n"),
	} {
		_, err := Read(bytes.NewReader(in))
		if err == nil {
			t.Errorf("%s: no error", name)
		}
		if name == "huge length" && !errors.Is(err, ErrFrameTooLarge) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func FuzzReadNeverPanics(f *testing.F) {
	f.Add([]byte{'O', 0, 0, 0, 1, 0, 0, 0, 2, 'h', 'i'})
	f.Fuzz(func(t *testing.T, b []byte) {
		r := bytes.NewReader(b)
		for {
			if _, err := Read(r); err != nil {
				return
			}
		}
	})
}

func TestCreditNeverLetsMoreThanTheWindowOutUntilItIsAcknowledged(t *testing.T) {
	// In a bubble, so that synctest.Wait can tell that a taker is blocked
	// for good: the Credit and its channels are made inside.
	synctest.Test(t, func(t *testing.T) {
		c := NewCredit()
		stop := make(chan struct{})
		sent := 0
		for sent < Window {
			sent += c.Take(Chunk, stop)
		}
		if sent != Window {
			t.Fatalf("sent %d, window %d", sent, Window)
		}
		got := make(chan int, 1)
		go func() { got <- c.Take(Chunk, stop) }()
		synctest.Wait() // the taker is blocked for good, or has taken
		select {
		case n := <-got:
			t.Fatalf("took %d bytes beyond the window", n)
		default:
		}
		c.Add(100)
		if n := <-got; n != 100 {
			t.Fatalf("took %d after 100 bytes of credit", n)
		}
		close(stop)
		if n := c.Take(1, stop); n != 0 {
			t.Fatalf("took %d after stop", n)
		}
	})
}

func TestAckerAcknowledgesByQuartersAndWhenDrainedAndCatchesOverruns(t *testing.T) {
	var a Acker
	if !a.Received(Window) {
		t.Fatal("a full window is within the window")
	}
	if n := a.Consumed(1000); n != 0 {
		t.Fatalf("acknowledged %d of a small part", n)
	}
	if n := a.Consumed(Window/4 - 1000); n != Window/4 {
		t.Fatalf("acknowledged %d at a quarter", n)
	}
	if a.Received(Window/4 + 1) {
		t.Fatal("an overrun went unnoticed")
	}
	var b Acker
	b.Received(10)
	if n := b.Consumed(10); n != 10 {
		t.Fatalf("acknowledged %d when drained", n)
	}
}
