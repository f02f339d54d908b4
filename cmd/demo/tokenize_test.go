package main

import (
	"slices"
	"testing"
)

func TestTokenize(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in   string
		want []string
	}{
		{"", nil},
		{"   \t ", nil},
		{"run echo hi", []string{"run", "echo", "hi"}},
		{"  run   echo\thi  ", []string{"run", "echo", "hi"}},
		{`run sh -c 'echo hi; exit 3'`, []string{"run", "sh", "-c", "echo hi; exit 3"}},
		{`run sh -c "echo \"hi\" \$HOME \\ \n"`, []string{"run", "sh", "-c", `echo "hi" $HOME \ \n`}},
		{`'it''s' "a"'b'c`, []string{"its", "abc"}},
		{`echo '' ""`, []string{"echo", "", ""}},
		{`echo 'a "b"' "c 'd'"`, []string{"echo", `a "b"`, `c 'd'`}},
		{`echo a\ b \'c\'`, []string{"echo", "a b", "'c'"}},
		{`echo 'back\slash'`, []string{"echo", `back\slash`}},
		{"echo héllo 'wörld'", []string{"echo", "héllo", "wörld"}},
	}
	for _, tt := range tests {
		got, err := tokenize(tt.in)
		if err != nil || !slices.Equal(got, tt.want) {
			t.Errorf("tokenize(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
		}
	}
}

func TestTokenizeErrors(t *testing.T) {
	t.Parallel()
	for _, in := range []string{`echo 'open`, `echo "open`, `echo "a\"`, `echo a\`} {
		if got, err := tokenize(in); err == nil {
			t.Errorf("tokenize(%q) = %q, want an error", in, got)
		}
	}
}
