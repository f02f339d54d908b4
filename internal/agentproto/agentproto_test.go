package agentproto

import (
	"bytes"
	"errors"
	"io"
	"testing"
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
