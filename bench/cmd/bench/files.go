package main

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"path"
	"time"

	"github.com/docker/docker/api/types/container"

	"github.com/dockerpool/dockerpool"
)

// tarFiles is how many files of random content the tar of -mode files holds.
const tarFiles = 4

// runFiles measures file transfers (issue 14), each side by side in one run:
//
//	(i)   WriteFile of 1 KiB then ReadFile of it (one sample: both, content
//	      checked) on the agent path and on the Docker exec path, into a
//	      directory of the container's layer (/data), and the same into a
//	      tmpfs (/tmp), interleaved with the bare exec round trip (a) on a
//	      long-lived container;
//	(ii)  CopyTo then CopyFrom of a TarMiB tar (4 files of random content)
//	      into /data against the raw client's CopyToContainer and
//	      CopyFromContainer of the same tar on the same container, on both
//	      paths (the Docker exec path uses the archive API there, the agent
//	      path the agent);
//	(iii) CopyTo and CopyFrom into a tmpfs (/tmp), where the archive API
//	      cannot go (the pool's only way), on both paths.
//
// Every CopyFrom, pool and raw, is checked against the tar (each file's size
// and CRC-32C, while it streams), and every CopyTo lands in a directory
// removed just before (untimed), so a transfer that silently wrote nothing
// cannot look fast.
func (e *env) runFiles() error {
	ctx := e.ctx
	e.logf("files: %d rounds of 1 KiB write+read; %d rounds of a %d MiB tar", e.p.N, e.p.CopyN, e.p.TarMiB)
	floorID, err := e.bare.createStart(ctx)
	if err != nil {
		return fmt.Errorf("floor container: %w", err)
	}
	defer func() { _ = e.bare.remove(context.WithoutCancel(ctx), floorID) }()

	tmpfs := &container.HostConfig{Tmpfs: map[string]string{"/tmp": fmt.Sprintf("size=%dm", 2*e.p.TarMiB+16)}}
	cfg := dockerpool.Config{MinIdle: 1, MaxIdle: 1, HostConfig: tmpfs}
	dpool, err := e.newPool("files", cfg)
	if err != nil {
		return err
	}
	defer e.closePool(dpool)
	cfg.HostConfig = &container.HostConfig{Tmpfs: tmpfs.Tmpfs}
	apool, err := e.newAgentPool("filesagent", cfg)
	if err != nil {
		return err
	}
	defer e.closePool(apool)
	// The agent's session on its socket (AgentConfig.Socket): (i) only.
	spool, err := e.newAgentPool("filessocket", cfg, func(a *dockerpool.AgentConfig) { a.Socket = true })
	if err != nil {
		return err
	}
	defer e.closePool(spool)
	var sides []*fileSide
	for _, s := range []struct {
		name string
		pool *dockerpool.Pool
	}{{"docker", dpool}, {"agent", apool}, {"socket", spool}} {
		c, err := s.pool.Acquire(ctx)
		if err != nil {
			return fmt.Errorf("%s: %w", s.name, err)
		}
		defer s.pool.Return(context.WithoutCancel(ctx), c)
		side := &fileSide{e: e, name: s.name, c: c}
		if err := side.sh("mkdir -p /data"); err != nil {
			return err
		}
		sides = append(sides, side)
	}
	if err := e.filesSmall(floorID, sides); err != nil {
		return err
	}
	return e.filesCopy(sides[:2])
}

// fileSide is one held container of runFiles and its samples.
type fileSide struct {
	e    *env
	name string // docker, agent or socket (the agent on its socket)
	c    *dockerpool.Container
	// by row name: CopyTo and CopyFrom durations
	times map[string][]time.Duration
}

// sh runs a shell command in the container, untimed, and checks it succeeded.
func (s *fileSide) sh(script string) error {
	res, err := s.c.Exec(s.e.ctx, []string{"sh", "-c", script})
	if err != nil {
		return fmt.Errorf("%s: %s: %w", s.name, script, err)
	}
	if res.ExitCode != 0 {
		return fmt.Errorf("%s: %s: exit %d: %s", s.name, script, res.ExitCode, res.Stderr)
	}
	return nil
}

// filesSmall is (i): (a) and 1 KiB WriteFile+ReadFile on both paths.
func (e *env) filesSmall(floorID string, sides []*fileSide) error {
	ctx := e.ctx
	data := make([]byte, 1024)
	_, _ = rand.Read(data)
	var sa []time.Duration
	small := map[string][]time.Duration{}
	opA := func(record bool) error {
		t0 := time.Now()
		r, err := bareExec(ctx, e.cli, floorID, hi)
		d := time.Since(t0)
		if err != nil {
			return fmt.Errorf("(a): %w", err)
		}
		if r.stdout != "hi\n" || r.code != 0 {
			return fmt.Errorf("(a): got %q, exit %d", r.stdout, r.code)
		}
		if record {
			sa = append(sa, d)
		}
		return nil
	}
	ops := []func(bool) error{opA}
	// Into /data (the image's writable layer: fuse-overlayfs here) and into
	// /tmp (a tmpfs), on both paths.
	for _, s := range sides {
		for _, at := range []struct{ key, path string }{{s.name, "/data/f1k"}, {s.name + ".tmpfs", "/tmp/f1k"}} {
			ops = append(ops, func(record bool) error {
				t0 := time.Now()
				err := s.c.WriteFile(ctx, at.path, data, 0o644)
				t1 := time.Now()
				var got []byte
				if err == nil {
					got, err = s.c.ReadFile(ctx, at.path, 4096)
				}
				t2 := time.Now()
				if err != nil {
					return fmt.Errorf("files %s %s: %w", s.name, at.path, err)
				}
				if !bytes.Equal(got, data) {
					return fmt.Errorf("files %s %s: ReadFile gave %d bytes, not the 1024 written", s.name, at.path, len(got))
				}
				if record {
					small[at.key] = append(small[at.key], t2.Sub(t0))
					small[at.key+".write"] = append(small[at.key+".write"], t1.Sub(t0))
					small[at.key+".read"] = append(small[at.key+".read"], t2.Sub(t1))
				}
				return nil
			})
		}
	}
	// The first pair of a hand-out: on the Docker exec path it starts the
	// file server (an exec); the rounds below measure the ones after it.
	for _, s := range sides {
		t0 := time.Now()
		err := s.c.WriteFile(ctx, "/data/first", data, 0o644)
		if err == nil {
			_, err = s.c.ReadFile(ctx, "/data/first", 4096)
		}
		if err != nil {
			return fmt.Errorf("files %s: first pair: %w", s.name, err)
		}
		e.rep.addFact(fact{Name: "files." + s.name + ".first", Label: "files: the first WriteFile 1 KiB + ReadFile of the hand-out, " + s.name + " path (one sample)", Value: float64(time.Since(t0).Microseconds()) / 1000, Unit: "ms"})
	}
	for r := range e.p.N + 10 { // 10 rounds of warm-up
		for i := range ops {
			if err := ops[(i+r)%len(ops)](r >= 10); err != nil {
				return err
			}
		}
	}
	e.rep.add(summarize("files.a", "files: bare exec round trip (a), same run", sa))
	for _, s := range []struct{ name, label string }{
		{"docker", "Docker exec path (the hand-out's file server)"}, {"agent", "agent path"},
		{"socket", "agent path on its socket (Agent.Socket)"},
	} {
		e.rep.add(summarize("files."+s.name, "files: WriteFile 1 KiB + ReadFile, "+s.label, small[s.name]))
		e.rep.add(summarize("files."+s.name+".write", "  of which WriteFile", small[s.name+".write"]))
		e.rep.add(summarize("files."+s.name+".read", "  of which ReadFile", small[s.name+".read"]))
		e.rep.add(summarize("files."+s.name+".tmpfs", "files: the same into /tmp (tmpfs), "+s.label, small[s.name+".tmpfs"]))
	}
	return nil
}

// filesCopy is (ii) and (iii).
func (e *env) filesCopy(sides []*fileSide) error {
	tarb, sums, err := randomTar(e.p.TarMiB << 20)
	if err != nil {
		return err
	}
	for _, s := range sides {
		s.times = map[string][]time.Duration{}
	}
	kinds := []string{"pool", "raw", "tmpfs"}
	for r := range e.p.CopyN + 1 { // one round of warm-up
		for _, s := range sides {
			for i := range kinds {
				if err := s.copyRound(kinds[(i+r)%len(kinds)], tarb, sums, r > 0); err != nil {
					return err
				}
			}
		}
		if r > 0 {
			e.logf("files: copy round %d/%d", r, e.p.CopyN)
		}
	}
	mb := float64(e.p.TarMiB<<20) / 1e6
	for _, s := range sides {
		for _, k := range []struct{ key, what string }{
			{"copyto", "CopyTo /data"}, {"copyto.raw", "raw CopyToContainer /data"},
			{"copyfrom", "CopyFrom /data"}, {"copyfrom.raw", "raw CopyFromContainer /data"},
			{"tmpfs.copyto", "CopyTo /tmp (tmpfs)"}, {"tmpfs.copyfrom", "CopyFrom /tmp (tmpfs)"},
		} {
			name := "files." + k.key + "." + s.name
			sum := summarize(name, fmt.Sprintf("files: %s of a %d MiB tar, %s path container", k.what, e.p.TarMiB, s.name), s.times[k.key])
			e.rep.add(sum)
			e.rep.addFact(fact{Name: name + ".mbps", Label: "files: " + k.what + " throughput at p50, " + s.name + " path container", Value: mb / sum.P50.Seconds(), Unit: "MB/s"})
		}
	}
	return nil
}

// copyRound is one CopyTo then CopyFrom, of the pool into /data ("pool") or
// /tmp ("tmpfs"), or of the raw client into /data ("raw").
func (s *fileSide) copyRound(kind string, tarb []byte, sums map[string]fileSum, record bool) error {
	ctx, cli, id := s.e.ctx, s.e.cli, s.c.ID()
	dir, prefix := "/data/p", ""
	switch kind {
	case "raw":
		dir = "/data/r"
	case "tmpfs":
		dir, prefix = "/tmp/p", "tmpfs."
	}
	prep := "rm -rf " + dir
	if kind == "raw" {
		prep += " && mkdir -p " + dir // CopyToContainer needs the directory
	}
	if err := s.sh(prep); err != nil {
		return err
	}
	suffix := ""
	t0 := time.Now()
	var err error
	if kind == "raw" {
		suffix = ".raw"
		err = cli.CopyToContainer(ctx, id, dir, bytes.NewReader(tarb), container.CopyToContainerOptions{})
	} else {
		err = s.c.CopyTo(ctx, dir, bytes.NewReader(tarb))
	}
	dTo := time.Since(t0)
	if err != nil {
		return fmt.Errorf("files %s %s: copy to %s: %w", s.name, kind, dir, err)
	}
	t1 := time.Now()
	if kind == "raw" {
		rc, _, err := cli.CopyFromContainer(ctx, id, dir)
		if err != nil {
			return fmt.Errorf("files %s raw: CopyFromContainer %s: %w", s.name, dir, err)
		}
		err = checkTar(rc, sums)
		rc.Close()
		if err != nil {
			return fmt.Errorf("files %s raw: CopyFromContainer %s: %w", s.name, dir, err)
		}
	} else {
		pr, pw := io.Pipe()
		done := make(chan error, 1)
		go func() {
			err := s.c.CopyFrom(ctx, dir, pw, -1)
			pw.CloseWithError(err)
			done <- err
		}()
		cerr := checkTar(pr, sums)
		pr.CloseWithError(errors.New("checked")) // unblocks CopyFrom if the check stopped early
		if err := <-done; err != nil {
			return fmt.Errorf("files %s %s: CopyFrom %s: %w", s.name, kind, dir, err)
		}
		if cerr != nil {
			return fmt.Errorf("files %s %s: CopyFrom %s: %w", s.name, kind, dir, cerr)
		}
	}
	dFrom := time.Since(t1)
	if record {
		s.times[prefix+"copyto"+suffix] = append(s.times[prefix+"copyto"+suffix], dTo)
		s.times[prefix+"copyfrom"+suffix] = append(s.times[prefix+"copyfrom"+suffix], dFrom)
	}
	return nil
}

// fileSum is the size and CRC-32C of one file of the tar.
type fileSum struct {
	size int64
	crc  uint32
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// randomTar makes a tar of tarFiles files of random content, size bytes
// together, and returns it with each file's sum by name.
func randomTar(size int) ([]byte, map[string]fileSum, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	sums := map[string]fileSum{}
	per := size / tarFiles
	data := make([]byte, per)
	for i := range tarFiles {
		_, _ = rand.Read(data)
		name := fmt.Sprintf("f%d", i)
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(per), Typeflag: tar.TypeReg, ModTime: time.Now()}); err != nil {
			return nil, nil, err
		}
		if _, err := tw.Write(data); err != nil {
			return nil, nil, err
		}
		sums[name] = fileSum{size: int64(per), crc: crc32.Checksum(data, castagnoli)}
	}
	if err := tw.Close(); err != nil {
		return nil, nil, err
	}
	return buf.Bytes(), sums, nil
}

// checkTar reads a tar stream and checks that it holds every file of sums,
// each with its size and CRC-32C (named by their base name: the stream names
// them from the directory's parent).
func checkTar(r io.Reader, sums map[string]fileSum) error {
	tr := tar.NewReader(r)
	seen := map[string]bool{}
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("read tar: %w", err)
		}
		if h.Typeflag != tar.TypeReg {
			continue
		}
		base := path.Base(h.Name)
		want, ok := sums[base]
		if !ok {
			return fmt.Errorf("unexpected file %q in the tar", h.Name)
		}
		crc := crc32.New(castagnoli)
		n, err := io.Copy(crc, tr)
		if err != nil {
			return fmt.Errorf("read %s: %w", h.Name, err)
		}
		if n != want.size || crc.Sum32() != want.crc {
			return fmt.Errorf("%s: %d bytes, crc %08x; want %d bytes, crc %08x", h.Name, n, crc.Sum32(), want.size, want.crc)
		}
		seen[base] = true
	}
	_, _ = io.Copy(io.Discard, r) // the tar's padding, so the sender ends cleanly
	if len(seen) != len(sums) {
		return fmt.Errorf("%d of %d files in the tar", len(seen), len(sums))
	}
	return nil
}

// evaluateFiles adds the goals of -mode files.
func (r *report) evaluateFiles() {
	a, d, ag, so := r.find("files.a"), r.find("files.docker"), r.find("files.agent"), r.find("files.socket")
	if a != nil && d != nil {
		v := ratio(d.P50, a.P50)
		r.addGoal(goal{Name: "files.docker/a", Label: "files: WriteFile+ReadFile 1 KiB, Docker exec path over (a), p50", Value: v, Display: fmt.Sprintf("%.3f×", v), Target: "≤ 1.2", Pass: v <= 1.2})
	}
	if ag != nil {
		r.addGoal(goal{Name: "files.agent.p50", Label: "files: WriteFile+ReadFile 1 KiB, agent path p50", Value: float64(ag.P50), Display: fmtDur(ag.P50), Target: "≤ 2ms", Pass: ag.P50 <= 2*time.Millisecond})
	}
	if so != nil {
		r.addGoal(goal{Name: "files.socket.p50", Label: "files: WriteFile+ReadFile 1 KiB, agent path on its socket p50", Value: float64(so.P50), Display: fmtDur(so.P50), Target: "≤ 2ms", Pass: so.P50 <= 2*time.Millisecond})
	}
	for _, side := range []string{"docker", "agent"} {
		for _, dir := range []string{"copyto", "copyfrom"} {
			p, raw := r.findFact("files."+dir+"."+side+".mbps"), r.findFact("files."+dir+".raw."+side+".mbps")
			if p == nil || raw == nil || raw.Value == 0 {
				continue
			}
			v := p.Value / raw.Value
			r.addGoal(goal{Name: "files." + dir + "." + side + "/raw", Label: fmt.Sprintf("files: %s /data throughput, pool over raw archive API, %s path", dir, side), Value: v, Display: fmt.Sprintf("%.3f×", v), Target: "≥ 0.8", Pass: v >= 0.8})
		}
	}
}
