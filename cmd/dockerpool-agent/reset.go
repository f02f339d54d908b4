package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/dockerpool/dockerpool/internal/agentproto"
)

// resetExitWait bounds how long a reset waits for the execs it killed to send
// their Exit, so that they come before the ResetDone.
const resetExitWait = 2 * time.Second

// handleReset starts a reset; its ResetDone carries the frame's id.
func (a *agent) handleReset(f agentproto.Frame) {
	var msg agentproto.ResetMsg
	if len(f.Payload) > 0 {
		if err := f.Decode(&msg); err != nil {
			a.log.Printf("reset %d: %v", f.ID, err)
			go a.out.json(agentproto.ResetDone, f.ID, agentproto.ResetDoneMsg{Error: err.Error()})
			return
		}
	}
	go a.reset(f.ID, msg)
}

// reset kills every descendant of the agent (running commands included: they
// end with Killed and Error "killed by a reset"), verifies, and empties the
// directories.
func (a *agent) reset(id uint32, msg agentproto.ResetMsg) {
	killed, survivors := a.sweep(func(v *view, p procInfo) bool {
		if e := v.owner(p.pid); e != nil {
			e.kill(reasonReset)
		}
		return true
	})
	a.reapZombies()
	a.waitResetExecs()
	d := agentproto.ResetDoneMsg{Killed: killed, Survivors: survivors}
	switch {
	case msg.Verify:
		d.Left = verifiedClean(msg.EmptyDirs)
	default:
		if err := emptyDirs(msg.EmptyDirs); err != nil {
			d.Error = err.Error()
		}
	}
	a.out.json(agentproto.ResetDone, id, d)
}

// waitResetExecs waits, boundedly, for the execs a reset killed to be over.
func (a *agent) waitResetExecs() {
	var waits []chan struct{}
	a.mu.Lock()
	for _, e := range a.execs {
		e.mu.Lock()
		if e.reason == reasonReset {
			waits = append(waits, e.done)
		}
		e.mu.Unlock()
	}
	a.mu.Unlock()
	t := time.NewTimer(resetExitWait)
	defer t.Stop()
	for _, w := range waits {
		select {
		case <-w:
		case <-t.C:
			return
		}
	}
}

// emptyDirs removes the contents of each directory, not the directory. A
// directory that does not exist is empty. Relative paths and "/" are refused.
func emptyDirs(dirs []string) error {
	var errs []string
	for _, d := range dirs {
		if !filepath.IsAbs(d) || filepath.Clean(d) == "/" {
			errs = append(errs, fmt.Sprintf("empty %q: not an absolute path other than /", d))
			continue
		}
		entries, err := os.ReadDir(d)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err.Error())
		}
		for _, en := range entries {
			if err := os.RemoveAll(filepath.Join(d, en.Name())); err != nil {
				errs = append(errs, err.Error())
			}
		}
	}
	if len(errs) == 0 {
		return nil
	}
	return errors.New(strings.Join(errs, "; "))
}
