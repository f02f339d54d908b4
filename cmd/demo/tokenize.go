package main

import (
	"errors"
	"strings"
)

// tokenize splits a command line into words the way a POSIX shell does for
// simple cases:
//
//   - blanks (spaces and tabs) separate words;
//   - 'single quotes' keep everything up to the next single quote as is;
//   - "double quotes" keep everything as is, except that a backslash escapes
//     a following ", \, $ or ` (any other backslash stays);
//   - outside quotes, a backslash makes the next character literal;
//   - quoted and unquoted parts that touch make one word: a'b'"c" is abc,
//     and "" alone is an empty word.
//
// There is no expansion of any kind ($VAR, *, ~) and no operators: ; | & and
// friends are ordinary characters. Write `sh -c '...'` to use a shell in the
// container.
func tokenize(line string) ([]string, error) {
	l := lexer{in: line}
	for l.pos < len(l.in) {
		if err := l.step(); err != nil {
			return nil, err
		}
	}
	l.endWord()
	return l.words, nil
}

// lexer holds the state of tokenize.
type lexer struct {
	in     string
	pos    int
	words  []string
	word   strings.Builder
	inWord bool // a word has started, even if it is empty so far ("")
}

// step consumes one unquoted character, or a whole quoted part.
func (l *lexer) step() error {
	ch := l.in[l.pos]
	l.pos++
	switch ch {
	case ' ', '\t', '\r', '\n':
		l.endWord()
	case '\'':
		return l.singleQuoted()
	case '"':
		return l.doubleQuoted()
	case '\\':
		if l.pos == len(l.in) {
			return errors.New("the line ends with a backslash")
		}
		l.add(l.in[l.pos])
		l.pos++
	default:
		l.add(ch)
	}
	return nil
}

// singleQuoted consumes the rest of a '...' part, its opening quote read.
func (l *lexer) singleQuoted() error {
	end := strings.IndexByte(l.in[l.pos:], '\'')
	if end < 0 {
		return errors.New("unterminated single quote")
	}
	l.inWord = true
	l.word.WriteString(l.in[l.pos : l.pos+end])
	l.pos += end + 1
	return nil
}

// doubleQuoted consumes the rest of a "..." part, its opening quote read.
func (l *lexer) doubleQuoted() error {
	l.inWord = true
	for l.pos < len(l.in) {
		ch := l.in[l.pos]
		l.pos++
		switch {
		case ch == '"':
			return nil
		case ch == '\\' && l.pos < len(l.in) && strings.IndexByte("\"\\$`", l.in[l.pos]) >= 0:
			l.word.WriteByte(l.in[l.pos])
			l.pos++
		default:
			l.word.WriteByte(ch)
		}
	}
	return errors.New("unterminated double quote")
}

// add appends one byte to the current word. Working on bytes is safe for
// UTF-8: every special character is ASCII, and no byte of a multi-byte
// sequence is.
func (l *lexer) add(ch byte) {
	l.inWord = true
	l.word.WriteByte(ch)
}

// endWord closes the current word, if one has started.
func (l *lexer) endWord() {
	if !l.inWord {
		return
	}
	l.words = append(l.words, l.word.String())
	l.word.Reset()
	l.inWord = false
}
