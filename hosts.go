package dockerpool

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"sync"
	"time"

	"github.com/docker/docker/api/types/system"
)

// Host is one Docker endpoint of a Group spread over several machines
// (GroupConfig.Hosts). Each template runs a pool on every host; the group
// places each Acquire on a healthy host, keeps each host within its own
// MaxSize, and takes a host that fails or stalls out of placement until it
// answers again.
type Host struct {
	// Name identifies the host: unique among the group's hosts and not
	// empty. Container.Host returns it, and GroupStats.Hosts is keyed by it.
	Name string
	// Client is how to reach that daemon: a *client.Client with its own
	// host and TLS settings (client.WithHost, client.WithTLSClientConfig,
	// client.WithAPIVersionNegotiation), or any DockerAPI. It replaces the
	// templates' Config.Client on this host. Required. The group does not
	// close it: the caller owns it. Two hosts must be two daemons (their
	// pools share names): NewGroup refuses, with ErrInvalidConfig naming
	// both, the same Client twice, the same daemon URL twice (DaemonHost,
	// which *client.Client has) and the same daemon twice as Info, asked of
	// every host before any pool starts, tells it: the same ID, host name
	// and data root (the ID alone is shared by the daemons of one machine).
	Client DockerAPI
	// MaxSize caps the containers of all templates together on this host:
	// idle, in use and being made. Required (positive).
	MaxSize int
}

// HostStats is one host's part of GroupStats.
type HostStats struct {
	Healthy bool      // in placement: its last ping answered within HostPing
	Since   time.Time // when Healthy last changed (the group's start, if never)
	Used    int       // containers counted against its MaxSize (all templates), permits on their way included
	Idle    int       // idle containers on it (all templates)
	InUse   int       // containers leased on it (all templates)
	MaxSize int       // its cap (Host.MaxSize)
	Outages int       // times it was taken out of placement
	// LastError is the error that took it out last (a failed or late
	// ping), or "" if it never went out.
	LastError string
}

// ErrHostDown is returned, wrapped, for work on a host of a Group that is
// out of placement (its pings fail or stall): by Exec and the file calls of
// a container leased there (together with ErrContainerDead: the container
// is lost to its holder, and the library never runs the command elsewhere),
// by Acquire when no host is healthy, and by Shutdown for the hosts it
// could not reach. The error names the host.
var ErrHostDown = errors.New("dockerpool: host down")

// DefaultHostPing is GroupConfig.HostPing's default.
const DefaultHostPing = time.Second

// Host returns the name of the Group host the container runs on
// (Host.Name), or "" for a container of a plain Pool or of a Group without
// Hosts.
func (c *Container) Host() string { return c.pool.cfg.host }

// validateHosts checks GroupConfig.Hosts; every error wraps
// ErrInvalidConfig and names the host (both hosts, for two entries of one
// daemon: the same Client, or the same daemon URL as a *client.Client's
// DaemonHost reports it).
func validateHosts(hosts []Host) error {
	seen := map[string]bool{}
	for i, h := range hosts {
		switch {
		case h.Name == "":
			return fmt.Errorf("%w: GroupConfig.Hosts[%d] has no Name", ErrInvalidConfig, i)
		case seen[h.Name]:
			return fmt.Errorf("%w: GroupConfig.Hosts: host %q appears twice", ErrInvalidConfig, h.Name)
		case h.Client == nil:
			return fmt.Errorf("%w: GroupConfig.Hosts: host %q has no Client", ErrInvalidConfig, h.Name)
		case h.MaxSize <= 0:
			return fmt.Errorf("%w: GroupConfig.Hosts: host %q: MaxSize must be positive, not %d", ErrInvalidConfig, h.Name, h.MaxSize)
		}
		seen[h.Name] = true
	}
	return sameDaemonTwice(hosts)
}

// sameDaemonTwice refuses two hosts with the same Client (a pointer, or
// any comparable value) or the same daemon URL: their pools would share
// names on one daemon and take or remove each other's containers.
func sameDaemonTwice(hosts []Host) error {
	clients := map[DockerAPI]string{}
	urls := map[string]string{}
	for _, h := range hosts {
		if reflect.TypeOf(h.Client).Comparable() {
			if other, ok := clients[h.Client]; ok {
				return fmt.Errorf("%w: GroupConfig.Hosts: hosts %q and %q have the same Client: one daemon, two entries", ErrInvalidConfig, other, h.Name)
			}
			clients[h.Client] = h.Name
		}
		d, ok := h.Client.(interface{ DaemonHost() string })
		if !ok || d.DaemonHost() == "" {
			continue
		}
		url := d.DaemonHost()
		if other, ok := urls[url]; ok {
			return fmt.Errorf("%w: GroupConfig.Hosts: hosts %q and %q reach the same daemon (%s)", ErrInvalidConfig, other, h.Name, url)
		}
		urls[url] = h.Name
	}
	return nil
}

// sameDaemonID asks every host's daemon who it is (Info, in parallel,
// within pingTimeout) before any pool starts, and refuses two hosts that
// are one daemon: two URLs of it (a name and an address, a socket and
// TCP). The ID alone does not tell: daemons on one machine share it (Docker
// 20.10 derives it from /etc/docker/key.json) and so do cloned machines, so
// a daemon is its ID, its host name and its data root together. A host
// that does not answer is not checked: its pools' start says why it cannot
// be reached.
func sameDaemonID(ctx context.Context, hosts []Host) error {
	ctx, cancel := context.WithTimeout(ctx, pingTimeout)
	defer cancel()
	infos := make([]system.Info, len(hosts))
	var wg sync.WaitGroup
	for i, h := range hosts {
		wg.Go(func() {
			if info, err := h.Client.Info(ctx); err == nil {
				infos[i] = info
			}
		})
	}
	wg.Wait()
	seen := map[[3]string]string{}
	for i, info := range infos {
		if info.ID == "" {
			continue
		}
		who := [3]string{info.ID, info.Name, info.DockerRootDir}
		if other, ok := seen[who]; ok {
			return fmt.Errorf("%w: GroupConfig.Hosts: hosts %q and %q are the same daemon (ID %s, host name %q, data root %q)",
				ErrInvalidConfig, other, hosts[i].Name, info.ID, info.Name, info.DockerRootDir)
		}
		seen[who] = hosts[i].Name
	}
	return nil
}
