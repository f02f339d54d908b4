package dockerpooltest

import (
	"slices"
	"testing"

	"github.com/docker/docker/api/types/container"
)

// Rootful Podman raises a container's RLIMIT_NOFILE and RLIMIT_NPROC to
// 1048576 and 4194304 unless told otherwise, and where root lacks
// CAP_SYS_RESOURCE (as on the project's CI machines) raising a hard limit
// fails: every container start then fails with "error setting rlimit type
// 7: operation not permitted". The limits of containers.conf
// (default_ulimits, which .ci/run writes) avoid that, but Podman ignores
// them for a container that sets any ulimit of its own, such as the sandbox
// preset's core=0. For those, Config adds nofile and nproc limits that stay
// within this process's hard limits (Podman's service runs on the same
// machine in CI), unless the HostConfig sets them already. Docker leaves the
// limits alone, so on Docker nothing is added.

// Upper bounds of the limits added on Podman (also the values .ci/run
// writes to containers.conf, when the hard limits allow).
const (
	podmanNofile = 1024
	podmanNproc  = 4096
)

// withPodmanUlimits returns a copy of hc with nofile and nproc ulimits
// added where hc has none.
func withPodmanUlimits(t testing.TB, hc *container.HostConfig) *container.HostConfig {
	t.Helper()
	c := *hc
	c.Ulimits = slices.Clone(hc.Ulimits)
	has := func(name string) bool {
		return slices.ContainsFunc(c.Ulimits, func(u *container.Ulimit) bool { return u != nil && u.Name == name })
	}
	for _, l := range []struct {
		name string
		max  int64
	}{{"nofile", podmanNofile}, {"nproc", podmanNproc}} {
		if has(l.name) {
			continue
		}
		v := l.max
		if hard, ok := hardLimit(l.name); ok && hard < v {
			v = hard
		}
		c.Ulimits = append(c.Ulimits, &container.Ulimit{Name: l.name, Soft: v, Hard: v})
		t.Logf("dockerpooltest: Podman: ulimit %s=%d added (the container sets ulimits of its own, so containers.conf's do not apply)", l.name, v)
	}
	return &c
}
