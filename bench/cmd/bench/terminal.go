package main

import (
	"fmt"
	"time"

	"github.com/dockerpool/dockerpool"
)

// runTerminal measures the keystroke echo round trip of a terminal (issue
// 20): on a held container of a warm pool, Terminal(cat), then for each
// sample one byte written and its echo read back, on the Docker exec path
// (a TTY exec) and on the agent path (the agent's PTY), in alternating
// blocks of 10 keystrokes on two terminals open side by side. The echo is
// checked on every sample.
func (e *env) runTerminal() error {
	ctx := e.ctx
	n := e.p.N
	e.logf("terminal: %d keystrokes on each path", n)
	dockerPool, err := e.newPool("term-docker", dockerpool.Config{MinIdle: 1, MaxIdle: 1})
	if err != nil {
		return err
	}
	defer e.closePool(dockerPool)
	agentPool, err := e.newAgentPool("term-agent", dockerpool.Config{MinIdle: 1, MaxIdle: 1})
	if err != nil {
		return err
	}
	defer e.closePool(agentPool)
	paths := []struct {
		name, label string
		pool        *dockerpool.Pool
		term        *dockerpool.Terminal
		samples     []time.Duration
	}{
		{"term.docker", "terminal keystroke echo (cat), Docker exec with a TTY", dockerPool, nil, nil},
		{"term.agent", "terminal keystroke echo (cat), the agent's PTY", agentPool, nil, nil},
	}
	for i := range paths {
		p := &paths[i]
		c, err := p.pool.Acquire(ctx)
		if err != nil {
			return fmt.Errorf("terminal: acquire: %w", err)
		}
		defer p.pool.Return(ctx, c)
		p.term, err = c.Terminal(ctx, []string{"cat"}, dockerpool.TerminalOptions{Rows: 24, Cols: 80})
		if err != nil {
			return fmt.Errorf("terminal on %s: %w", p.name, err)
		}
		defer p.term.Close()
	}
	buf := make([]byte, 256)
	const block, warmup = 10, 20
	for k := 0; k < n+warmup; k += block {
		for i := range paths {
			p := &paths[(i+k/block)%len(paths)]
			for j := range block {
				key := []byte{byte('a' + (k+j)%26)}
				start := time.Now()
				if _, err := p.term.Write(key); err != nil {
					return fmt.Errorf("%s: write: %w", p.name, err)
				}
				got, err := p.term.Read(buf)
				d := time.Since(start)
				if err != nil {
					return fmt.Errorf("%s: read: %w", p.name, err)
				}
				if string(buf[:got]) != string(key) {
					return fmt.Errorf("%s: echo %q for %q", p.name, buf[:got], key)
				}
				if k >= warmup {
					p.samples = append(p.samples, d)
				}
			}
		}
	}
	for _, p := range paths {
		e.rep.add(summarize(p.name, p.label, p.samples))
	}
	return nil
}
