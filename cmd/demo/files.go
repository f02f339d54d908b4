package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"
	"unicode/utf8"

	"github.com/dockerpool/dockerpool"
)

// getMax bounds what get shows: it prints the file.
const getMax = 1 << 20

// cmdPut writes a local file into the current container (the last one
// acquired, or one acquired for it and held).
func (s *session) cmdPut(ctx context.Context, args []string) error {
	if len(args) != 2 {
		return errUsage
	}
	data, err := os.ReadFile(args[0])
	if err != nil {
		return err
	}
	st, err := os.Stat(args[0])
	if err != nil {
		return err
	}
	n, h, err := s.current(ctx, true)
	if err != nil {
		return err
	}
	start := time.Now()
	if err := h.c.WriteFile(ctx, args[1], data, st.Mode().Perm()); err != nil {
		return err
	}
	fmt.Fprintf(s.out, "wrote %d bytes to %s in #%d in %s (exec %d <command...> to use it)\n", len(data), args[1], n, ms(time.Since(start)), n)
	return nil
}

// cmdGet prints a file of the current container.
func (s *session) cmdGet(ctx context.Context, args []string) error {
	if len(args) != 1 {
		return errUsage
	}
	n, h, err := s.current(ctx, false)
	if err != nil {
		return err
	}
	start := time.Now()
	data, err := h.c.ReadFile(ctx, args[0], getMax)
	if errors.Is(err, dockerpool.ErrFileTooLarge) {
		return fmt.Errorf("%w (get shows files of up to %d bytes)", err, getMax)
	}
	if err != nil {
		return err
	}
	if utf8.Valid(data) {
		fmt.Fprint(s.out, string(data))
		if len(data) > 0 && data[len(data)-1] != '\n' {
			fmt.Fprintln(s.out)
		}
	} else {
		fmt.Fprintf(s.out, "(%d bytes of binary data)\n", len(data))
	}
	fmt.Fprintf(s.out, "read %d bytes of %s in #%d in %s\n", len(data), args[0], n, ms(time.Since(start)))
	return nil
}

// current returns the held container files go to: the last one acquired.
// With none held, put acquires one and holds it; get has nothing to read.
func (s *session) current(ctx context.Context, acquire bool) (int, heldContainer, error) {
	last := 0
	for n := range s.held {
		last = max(last, n)
	}
	if last > 0 {
		return last, s.held[last], nil
	}
	if !acquire {
		return 0, heldContainer{}, errors.New("no container held: put a file first, or acquire one")
	}
	if err := s.cmdAcquire(ctx, nil); err != nil {
		return 0, heldContainer{}, err
	}
	return s.next - 1, s.held[s.next-1], nil
}
