package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"time"

	"github.com/docker/docker/api/types/container"

	"github.com/dockerpool/dockerpool"
	"github.com/dockerpool/dockerpool/dockerpooltest"
	"github.com/dockerpool/dockerpool/internal/testdaemon"
)

// runGVisor compares runc with gVisor's runsc (issue 16, point 4) on a
// private dockerd (internal/testdaemon, in a network namespace of its own)
// with runsc registered (runtimeArgs --network=none), into which the busybox
// image and the agent image are built. Interleaved on that daemon:
//
//	gvisor.runc.create, gvisor.runsc.create  a bare container of that
//	    runtime: create + start; .remove: its force-remove;
//	gvisor.runc.agent, gvisor.runsc.agent    Acquire + Exec(echo hi) + Return
//	    on a warm agent pool with the sandbox preset (SandboxOptions{} and
//	    SandboxOptions{Runtime: "runsc"}), User SandboxUser.
//
// Each pool's containers are checked to run under the kernel they should
// (gVisor reports a /proc/version of its own). The daemon is always
// stopped, on an error and on Ctrl-C too (the run's context), and no process
// naming its directory may be left.
func (e *env) runGVisor() (err error) {
	runsc := e.p.Runsc
	if runsc == "" {
		if runsc, err = exec.LookPath("runsc"); err != nil {
			return fmt.Errorf("no runsc (-runsc): %w", err)
		}
	}
	if err := e.ensureAgent(); err != nil {
		return err
	}
	e.logf("gvisor: starting a private dockerd with %s", runsc)
	d, err := testdaemon.Start(e.ctx, "dpbench-"+e.runID, testdaemon.Options{
		Runtimes: map[string]testdaemon.Runtime{"runsc": {Path: runsc, Args: []string{"--network=none"}}},
	})
	if err != nil {
		return fmt.Errorf("private daemon: %w", err)
	}
	defer func() {
		serr := d.Stop()
		if left := testdaemon.Naming(d.Dir); len(left) > 0 {
			serr = errors.Join(serr, fmt.Errorf("processes naming %s left after Stop: %v", d.Dir, left))
		}
		if serr != nil {
			err = errors.Join(err, fmt.Errorf("stop the private daemon: %w", serr))
		} else {
			e.logf("gvisor: private daemon stopped, nothing left naming %s", d.Dir)
		}
	}()
	if info, err := d.Client.Info(e.ctx); err == nil {
		e.rep.notef("gvisor: private dockerd %s, storage driver %s, runtimes %d", info.ServerVersion, info.Driver, len(info.Runtimes))
	}
	bctx, cancel := context.WithTimeout(e.ctx, 5*time.Minute)
	defer cancel()
	img, err := dockerpooltest.BuildImage(bctx, d.Client, dockerpooltest.ImageOptions{})
	if err != nil {
		return fmt.Errorf("private daemon: build image: %w", err)
	}
	agentImg, err := dockerpooltest.AgentImage(bctx, d.Client, e.agentBin, dockerpooltest.ImageOptions{})
	if err != nil {
		return fmt.Errorf("private daemon: agent image: %w", err)
	}
	if err := e.gvisorCreate(&bare{cli: d.Client, image: img, runID: e.runID}); err != nil {
		return err
	}
	return e.gvisorAgent(d, agentImg)
}

// gvisorCreate times bare create+start and remove of runc and runsc
// containers, alternately.
func (e *env) gvisorCreate(b *bare) error {
	ctx := e.ctx
	runtimes := []string{"runc", "runsc"}
	create, remove := map[string][]time.Duration{}, map[string][]time.Duration{}
	for r := range e.p.GVisorN + 1 { // one round of warm-up
		for i := range runtimes {
			rt := runtimes[(i+r)%len(runtimes)]
			cc, hc := b.config()
			hc.Runtime = rt
			t0 := time.Now()
			resp, err := b.cli.ContainerCreate(ctx, cc, hc, nil, nil, "")
			if err != nil {
				return fmt.Errorf("gvisor %s: create: %w", rt, err)
			}
			err = b.cli.ContainerStart(ctx, resp.ID, container.StartOptions{})
			t1 := time.Now()
			rerr := b.remove(context.WithoutCancel(ctx), resp.ID)
			t2 := time.Now()
			if err != nil {
				return fmt.Errorf("gvisor %s: start: %w", rt, err)
			}
			if rerr != nil {
				return fmt.Errorf("gvisor %s: remove: %w", rt, rerr)
			}
			if r > 0 {
				create[rt] = append(create[rt], t1.Sub(t0))
				remove[rt] = append(remove[rt], t2.Sub(t1))
			}
		}
	}
	for _, rt := range runtimes {
		e.rep.add(summarize("gvisor."+rt+".create", "gvisor daemon: bare create + start, Runtime "+rt, create[rt]))
		e.rep.add(summarize("gvisor."+rt+".remove", "  then its force-remove", remove[rt]))
	}
	return nil
}

// gvisorAgent times the agent cycle on a runc and a runsc sandbox pool of the
// private daemon, alternately.
func (e *env) gvisorAgent(d *testdaemon.Daemon, agentImg string) error {
	ctx := e.ctx
	host, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	pools := map[string]*dockerpool.Pool{}
	runtimes := []string{"runc", "runsc"}
	for _, rt := range runtimes {
		opts := dockerpool.SandboxOptions{}
		if rt == "runsc" {
			opts.Runtime = rt
		}
		p, err := e.newPoolImage("gvisor-"+rt, dockerpool.Config{
			MinIdle: 1, MaxIdle: 2, Client: d.Client, Agent: &dockerpool.AgentConfig{},
			HostConfig:      dockerpool.SandboxHostConfig(opts),
			ContainerConfig: &container.Config{User: dockerpool.SandboxUser},
		}, agentImg)
		if err != nil {
			return err
		}
		defer e.closePool(p) // before the daemon stops: deferred after it
		if err := e.waitIdle(p, 1); err != nil {
			return fmt.Errorf("gvisor %s: %w", rt, err)
		}
		if err := checkKernel(ctx, p, rt == "runsc", strings.TrimSpace(string(host))); err != nil {
			return fmt.Errorf("gvisor %s: %w", rt, err)
		}
		pools[rt] = p
	}
	samples := map[string][]time.Duration{}
	for r := range e.p.N + 10 { // 10 rounds of warm-up
		for i := range runtimes {
			rt := runtimes[(i+r)%len(runtimes)]
			dur, err := e.cycle(pools[rt], func(c *dockerpool.Container) error {
				res, err := c.Exec(ctx, hi)
				if err == nil && (string(res.Stdout) != "hi\n" || res.ExitCode != 0) {
					err = fmt.Errorf("got %q, exit %d", res.Stdout, res.ExitCode)
				}
				return err
			})
			if err != nil {
				return fmt.Errorf("gvisor %s agent: %w", rt, err)
			}
			if r >= 10 {
				samples[rt] = append(samples[rt], dur)
			}
		}
	}
	for _, rt := range runtimes {
		e.rep.add(summarize("gvisor."+rt+".agent", "gvisor daemon: agent Acquire + Exec(echo hi) + Return, sandbox preset, "+rt, samples[rt]))
	}
	return nil
}

// checkKernel checks that a pool's containers run under gVisor's kernel, or
// under the host's: gVisor's /proc/version names a kernel of its own.
func checkKernel(ctx context.Context, p *dockerpool.Pool, gvisor bool, host string) error {
	c, err := p.Acquire(ctx)
	if err != nil {
		return err
	}
	defer p.Return(context.WithoutCancel(ctx), c)
	res, err := c.Exec(ctx, []string{"cat", "/proc/version"})
	if err != nil {
		return err
	}
	onHost := host != "" && strings.Contains(string(res.Stdout), host)
	if onHost == gvisor {
		return fmt.Errorf("/proc/version %q: want gVisor %v (host kernel %s)", strings.TrimSpace(string(res.Stdout)), gvisor, host)
	}
	return nil
}

// evaluateGVisor adds the ratios of -mode gvisor.
func (r *report) evaluateGVisor() {
	for _, k := range []string{"create", "agent"} {
		runc, runsc := r.find("gvisor.runc."+k), r.find("gvisor.runsc."+k)
		if runc == nil || runsc == nil {
			continue
		}
		v := ratio(runsc.P50, runc.P50)
		r.addGoal(goal{Name: "gvisor." + k, Label: "gvisor: runsc over runc, " + k + " p50 (information)", Value: v, Display: fmt.Sprintf("%.2f×", v)})
	}
}
