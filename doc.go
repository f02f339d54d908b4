// Package dockerpool keeps Docker containers started and waiting, so that a
// program can run a command in an isolated container in milliseconds instead
// of paying for a cold `docker run` each time. It is meant for services that
// run code they do not control: online judges, sandboxes for AI agents,
// graders, CI runners, notebook back ends.
//
// # Using a pool
//
// New starts a pool; it fills up to Config.MinIdle containers in the
// background. Acquire hands out a container for the caller's exclusive use:
// the most recently returned idle one, or one created for the caller when
// none is idle. Run commands in it with Exec, ExecStd or ExecStream, then
// give it back with Return (it is reused) or Remove (it is destroyed).
// Shutdown removes every container the pool made.
//
//	pool, err := dockerpool.New(ctx, dockerpool.Config{
//		Name:    "judge",
//		Network: dockerpool.NetworkConfig{Name: "none"},
//		Image:   dockerpool.ImageConfig{Name: "python:3.12-alpine"},
//	})
//	...
//	c, err := pool.Acquire(ctx)
//	...
//	res, err := c.ExecStd(ctx, []string{"python3", "-c", code}, dockerpool.ExecOptions{
//		Timeout: 5 * time.Second,
//		Limit:   64 << 10,
//	})
//	...
//	pool.Return(ctx, c)
//
// # What Exec promises
//
// A command that does not end by itself (ExecOptions.Timeout, ctx, Limit) is
// killed with all its processes before Exec returns, and the kill is verified
// with a process listing; when it cannot be verified the container is marked
// tainted and Return removes it. Either way, nothing a caller started runs in
// a container handed to the next caller. Stdin is closed at EOF; stdout and
// stderr are kept apart; exit codes are the command's own (126: not
// executable, 127: not found). See Container.ExecStream.
//
// # Isolation between callers
//
// A returned container is reused as it is: files a caller wrote stay, and so
// do processes it left running in the background (unless an exec timed out:
// those are killed). For untrusted code, use Config.VerifiedReset (every
// Return resets the container and proves it as good as new, or removes it),
// or Config.MaxUses = 1 (every caller gets a container nobody used, at the
// price of a creation per caller).
//
// # Monitoring
//
// The pool reports OpenTelemetry metrics (containers by state, waiters, warm
// hits and misses, creations, removals by reason, and the times of Acquire,
// Exec, file transfers, creation, removal and reset) and spans, to
// Config.MeterProvider and Config.TracerProvider, by default OpenTelemetry's
// global providers. A span names a command's program, never its arguments,
// environment or stdin. The README's Monitoring section lists the metrics and
// what to alert on.
//
// # How it works
//
// One goroutine, the owner, holds all of the pool's state: the idle stack,
// the containers in use, the creations and removals in flight, the callers
// waiting. The methods send it typed requests that carry their own buffered
// reply channel. Docker calls run on bounded worker pools
// (Config.MaxConcurrentDockerOps, Config.MaxConcurrentAcquire) and come back
// to the owner as messages. Docker's events tell the pool when a container
// dies. Exec runs on the caller's goroutine: an acquired container belongs to
// its caller alone.
//
// Package dockerpooltest helps test code that uses a pool: it builds a tiny
// image offline and starts pools that clean up after the test.
package dockerpool
