package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/docker/docker/api/types/container"

	"github.com/dockerpool/dockerpool"
)

// runSoak runs Soak acquire/exec(true)/return cycles on a real-daemon pool
// and reports what could leak: goroutines and heap of this process (before,
// after the cycles, after Shutdown), the exec IDs left on the containers
// (ContainerInspect(...).ExecIDs), whether the daemon still holds the record
// of the first exec at the end, and the daemon's resident memory.
func (e *env) runSoak() error {
	ctx := e.ctx
	n := e.p.Soak
	e.logf("soak: %d acquire/exec(true)/return cycles", n)
	g0, h0 := procSnapshot()
	rss0 := dockerdRSS()

	pool, err := e.newPool("soak", dockerpool.Config{MinIdle: 1, MaxIdle: 2})
	if err != nil {
		return err
	}
	defer e.closePool(pool)
	if err := e.waitIdle(pool, 1); err != nil {
		return err
	}
	used := map[string]int{}
	var marker, markerContainer string
	cycle := func() (time.Duration, error) {
		t0 := time.Now()
		c, err := pool.Acquire(ctx)
		if err != nil {
			return 0, err
		}
		if marker == "" {
			// One exec of our own, to ask the daemon about it at the end.
			created, err := e.cli.ContainerExecCreate(ctx, c.ID(), container.ExecOptions{Cmd: []string{"true"}})
			if err != nil {
				return 0, err
			}
			if err := e.cli.ContainerExecStart(ctx, created.ID, container.ExecStartOptions{Detach: true}); err != nil {
				return 0, err
			}
			marker, markerContainer = created.ID, c.ID()
			t0 = time.Now()
		}
		used[c.ID()]++
		res, err := c.Exec(ctx, []string{"true"})
		if rerr := pool.Return(ctx, c); rerr != nil && err == nil {
			err = rerr
		}
		if err == nil && res.ExitCode != 0 {
			err = fmt.Errorf("true exited %d", res.ExitCode)
		}
		return time.Since(t0), err
	}
	const warm = 100
	for range warm {
		if _, err := cycle(); err != nil {
			return fmt.Errorf("soak warm-up: %w", err)
		}
	}
	g1, h1 := procSnapshot()
	rss1 := dockerdRSS()
	lat := make([]time.Duration, 0, n)
	for i := range n {
		d, err := cycle()
		if err != nil {
			return fmt.Errorf("soak cycle %d: %w", i, err)
		}
		lat = append(lat, d)
		if (i+1)%1000 == 0 {
			e.logf("soak: %d/%d cycles", i+1, n)
		}
	}
	g2, h2 := procSnapshot()
	rss2 := dockerdRSS()

	maxExecIDs := 0
	for id := range used {
		info, err := e.cli.ContainerInspect(ctx, id)
		if err != nil {
			continue // removed meanwhile (trimmed): nothing left on it
		}
		maxExecIDs = max(maxExecIDs, len(info.ExecIDs))
	}
	_, markerErr := e.cli.ContainerExecInspect(ctx, marker)
	markerKept := 0.0
	if markerErr == nil {
		markerKept = 1
	}
	maxUses := 0
	for _, k := range used {
		maxUses = max(maxUses, k)
	}
	st := pool.Stats()
	if _, err := e.closePool(pool); err != nil {
		return err
	}
	time.Sleep(200 * time.Millisecond)
	g3, h3 := procSnapshot()
	_, markerAfterErr := e.cli.ContainerExecInspect(ctx, marker)

	k := min(1000, n/2)
	e.rep.add(summarize("soak.cycle", fmt.Sprintf("soak: Acquire + Exec(true) + Return, %d cycles", n), lat))
	e.rep.add(summarize("soak.first", fmt.Sprintf("  first %d cycles", k), lat[:k]))
	e.rep.add(summarize("soak.last", fmt.Sprintf("  last %d cycles", k), lat[n-k:]))
	add := func(name, label string, v float64, unit string) {
		e.rep.addFact(fact{Name: name, Label: label, Value: v, Unit: unit})
	}
	add("soak.goroutines.0", "goroutines before the pool", float64(g0), "")
	add("soak.goroutines.1", fmt.Sprintf("goroutines after %d warm-up cycles", warm), float64(g1), "")
	add("soak.goroutines.2", fmt.Sprintf("goroutines after %d more cycles", n), float64(g2), "")
	add("soak.goroutines.3", "goroutines after Shutdown", float64(g3), "")
	add("soak.heap.0", "HeapAlloc after GC, before the pool", float64(h0)/1024, "KiB")
	add("soak.heap.1", "HeapAlloc after GC, after warm-up", float64(h1)/1024, "KiB")
	add("soak.heap.2", "HeapAlloc after GC, after the cycles", float64(h2)/1024, "KiB")
	add("soak.heap.3", "HeapAlloc after GC, after Shutdown", float64(h3)/1024, "KiB")
	add("soak.containers", "containers that served the cycles", float64(len(used)), "")
	add("soak.uses", "most uses of one container", float64(maxUses), "uses")
	add("soak.execids", "largest len(ContainerInspect.ExecIDs) at the end", float64(maxExecIDs), "IDs")
	add("soak.marker", "daemon still answers ExecInspect for the first exec (1 = yes)", markerKept, "")
	add("soak.created", "containers the pool created in all", float64(st.Created), "")
	if rss0 > 0 {
		add("soak.dockerd.0", "dockerd VmRSS before", float64(rss0)/1024, "MiB")
		add("soak.dockerd.1", "dockerd VmRSS after warm-up", float64(rss1)/1024, "MiB")
		add("soak.dockerd.2", "dockerd VmRSS after the cycles", float64(rss2)/1024, "MiB")
	}
	e.rep.notef("soak: the first exec's record on container %.12s was %s at the end and %s once the container was removed",
		markerContainer, answered(markerErr), answered(markerAfterErr))
	return nil
}

func answered(err error) string {
	if err == nil {
		return "still inspectable"
	}
	return "gone (" + strings.TrimSpace(err.Error()) + ")"
}

// procSnapshot returns the goroutine count and the live heap after a GC.
func procSnapshot() (goroutines int, heap uint64) {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return runtime.NumGoroutine(), m.HeapAlloc
}

// dockerdRSS returns dockerd's resident memory in KiB, or 0 when it cannot
// be read (another machine, no permission).
func dockerdRSS() int64 {
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	for _, d := range dirs {
		comm, err := os.ReadFile(d + "/comm")
		if err != nil || string(bytes.TrimSpace(comm)) != "dockerd" {
			continue
		}
		status, err := os.ReadFile(d + "/status")
		if err != nil {
			return 0
		}
		for _, line := range strings.Split(string(status), "\n") {
			if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
				kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
				return kb
			}
		}
	}
	return 0
}
