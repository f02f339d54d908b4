package testdaemon

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/docker/docker/client"
)

// Port is the TCP port every host's daemon listens on (TLS), in its own
// namespace.
const Port = 2376

// HostsOptions says what set of hosts StartHosts starts.
type HostsOptions struct {
	Options // for each daemon
	// Setup runs on each daemon once it answers, over its unix socket
	// (d.Client), before StartHosts returns: to import the test image,
	// say. (testdaemon does not build it: dockerpooltest imports the
	// package under test, which the package's own tests could not then
	// import.) It runs for all the daemons at once.
	Setup func(ctx context.Context, d *Daemon) error
}

// Hosts is a set of daemons that stand for remote Docker hosts: each in a
// network namespace of its own (dptest-<run>-<i>), linked to the test's by
// a veth pair on a /30 of 10.231.0.0/16, listening on tcp://<its IP>:2376
// with mutual TLS (certificates of a CA made for the set), and on a unix
// socket in its directory for the test's own setup. Each can be paused,
// killed and restarted, cut off (link down) or firewalled (DROP), and Stop
// undoes all of that and removes everything.
type Hosts struct {
	Run     string
	Daemons []*Daemon
	CA      *CA
}

// NewRun returns a name for a set of hosts unique to this process and,
// with overwhelming likelihood, to the machine: "h" and 6 hex digits.
func NewRun() string {
	var b [3]byte
	_, _ = rand.Read(b[:])
	return fmt.Sprintf("h%x", b)
}

// StartHosts starts n daemons, in parallel, and waits until each answers
// over TCP and its Setup is done. On failure it stops those it started.
func StartHosts(ctx context.Context, run string, n int, opts HostsOptions) (*Hosts, error) {
	ca, err := NewCA()
	if err != nil {
		return nil, fmt.Errorf("testdaemon: make a CA: %w", err)
	}
	h := &Hosts{Run: run, CA: ca, Daemons: make([]*Daemon, n)}
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			h.Daemons[i], errs[i] = startHost(ctx, fmt.Sprintf("%s-%d", run, i), ca, opts)
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, errors.Join(err, h.Stop())
	}
	return h, nil
}

// Stop stops every daemon (in parallel) and removes what each had.
func (h *Hosts) Stop() error {
	errs := make([]error, len(h.Daemons))
	var wg sync.WaitGroup
	for i, d := range h.Daemons {
		if d == nil {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = d.Stop()
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

func startHost(ctx context.Context, name string, ca *CA, opts HostsOptions) (*Daemon, error) {
	d := &Daemon{Name: name, Dir: DirPrefix + name, ca: ca}
	d.Socket = d.Dir + "/docker.sock"
	d.Host = "unix://" + d.Socket
	// The containers' cgroups are under one of the daemon's own, so that
	// their processes can be found (and killed) when the daemon, its
	// containerd and the shims are dead: see Kill.
	d.cgroup = "dockerpool-testdaemon-" + name
	if err := d.prepare(opts.Options); err != nil {
		return nil, errors.Join(err, d.cleanup())
	}
	if err := d.addLink(); err != nil {
		return nil, errors.Join(err, d.cleanup())
	}
	tlsArgs, err := ca.writeServer(d.Dir+"/tls", d.IP)
	if err != nil {
		return nil, errors.Join(err, d.cleanup())
	}
	d.Remote = "tcp://" + net.JoinHostPort(d.IP.String(), strconv.Itoa(Port))
	d.args = append([]string{"-H", d.Remote, "--cgroup-parent", "/" + d.cgroup}, tlsArgs...)
	if err := d.launch(); err != nil {
		return nil, errors.Join(err, d.cleanup())
	}
	if d.TCP, err = d.NewTCPClient(); err != nil {
		return nil, errors.Join(err, d.Stop())
	}
	if err := d.ready(ctx, cmpOr(opts.StartTimeout, time.Minute)); err != nil {
		return nil, errors.Join(err, d.Stop())
	}
	if opts.Setup != nil {
		if err := opts.Setup(ctx, d); err != nil {
			return nil, errors.Join(fmt.Errorf("testdaemon: set up %s: %w", name, err), d.Stop())
		}
	}
	return d, nil
}

// ready waits until the daemon answers on its socket, then over TCP.
func (d *Daemon) ready(ctx context.Context, within time.Duration) error {
	start := time.Now()
	if err := d.waitReady(ctx, within); err != nil {
		return err
	}
	if d.TCP == nil {
		return nil
	}
	for {
		pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		_, err := d.TCP.Ping(pctx)
		cancel()
		switch {
		case err == nil:
			return nil
		case time.Since(start) > within:
			return fmt.Errorf("testdaemon: dockerd %s answers on its socket but not at %s within %v: %v; log:\n%s", d.Name, d.Remote, within, err, d.Log())
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond): // it announces nothing: ask again
		}
	}
}

// NewTCPClient returns a new client of the daemon over TCP with TLS (the
// set's CA, its client certificate), negotiating the API version. The
// caller closes it.
func (d *Daemon) NewTCPClient() (*client.Client, error) {
	if d.Remote == "" {
		return nil, fmt.Errorf("testdaemon: %s is not a TCP host (made by Start, not StartHosts)", d.Name)
	}
	tr := &http.Transport{TLSClientConfig: d.ca.ClientTLS()}
	cli, err := client.NewClientWithOpts(client.WithHTTPClient(&http.Client{Transport: tr}),
		client.WithHost(d.Remote), client.WithAPIVersionNegotiation())
	if err != nil {
		return nil, err
	}
	tr.Proxy = nil // the client sets the environment's: no proxy reaches a private namespace
	return cli, nil
}

// subnets in use by this process's hosts, by /30 index in 10.231.0.0/16.
var subnets struct {
	mu   sync.Mutex
	used map[uint32]bool
}

// pickSubnet picks a /30 of 10.231.0.0/16 that no interface of this
// namespace has an address in and no host of this process uses: at random,
// so that two test processes (two engineers, two packages) rarely try the
// same one, and a clash with an address on the machine is avoided.
func pickSubnet() (hostIP, nsIP net.IP, err error) {
	subnets.mu.Lock()
	defer subnets.mu.Unlock()
	if subnets.used == nil {
		subnets.used = map[uint32]bool{}
	}
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return nil, nil, err
	}
	taken := map[uint32]bool{}
	for _, a := range addrs {
		if ipn, ok := a.(*net.IPNet); ok {
			if v4 := ipn.IP.To4(); v4 != nil && v4[0] == 10 && v4[1] == 231 {
				taken[uint32(binary.BigEndian.Uint16(v4[2:]))>>2] = true
			}
		}
	}
	for range 1000 {
		var b [2]byte
		_, _ = rand.Read(b[:])
		i := uint32(binary.BigEndian.Uint16(b[:]) >> 2)
		if taken[i] || subnets.used[i] {
			continue
		}
		subnets.used[i] = true
		base := i << 2
		return net.IPv4(10, 231, byte(base>>8), byte(base)+1).To4(), net.IPv4(10, 231, byte(base>>8), byte(base)+2).To4(), nil
	}
	return nil, nil, errors.New("testdaemon: no free /30 in 10.231.0.0/16")
}

// vethName names the host's end of a daemon's link: interface names have
// 15 characters at most, so it is a hash of the namespace's name.
func vethName(ns string) string {
	h := fnv.New32a()
	_, _ = h.Write([]byte(ns))
	return fmt.Sprintf("dpt%08xh", h.Sum32())
}

// addLink makes the veth pair (the host's end here, eth0 in the
// namespace) and gives both ends their addresses.
func (d *Daemon) addLink() error {
	hostIP, nsIP, err := pickSubnet()
	if err != nil {
		return err
	}
	ns := NetnsPrefix + d.Name
	veth := vethName(ns)
	steps := [][]string{
		{"link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns},
		{"addr", "add", hostIP.String() + "/30", "dev", veth},
		{"link", "set", veth, "up"},
		{"-n", ns, "addr", "add", nsIP.String() + "/30", "dev", "eth0"},
		{"-n", ns, "link", "set", "eth0", "up"},
	}
	for i, s := range steps {
		if out, err := exec.Command("ip", s...).CombinedOutput(); err != nil {
			return fmt.Errorf("testdaemon: ip %s: %v: %s", strings.Join(s, " "), err, out)
		}
		if i == 0 {
			d.veth = veth // made: it is this daemon's to delete
		}
	}
	d.IP = nsIP
	return nil
}

// removeLink deletes the host's end of the link (and so the pair) before
// the namespace goes: the kernel destroys a dead namespace's interfaces
// later, in the background.
func (d *Daemon) removeLink() error {
	if d.veth == "" {
		return nil
	}
	out, err := exec.Command("ip", "link", "delete", d.veth).CombinedOutput()
	if err != nil && !strings.Contains(string(out), "Cannot find device") {
		return fmt.Errorf("testdaemon: ip link delete %s: %v: %s", d.veth, err, out)
	}
	return nil
}

// Missing says what this machine lacks to start hosts ("" when nothing):
// root, the programs (dockerd, nsenter, ip, iptables), the ability to
// make a network namespace.
func Missing() string {
	if os.Geteuid() != 0 {
		return "testdaemon: hosts need root (network namespaces, veth links, dockerd)"
	}
	for _, p := range []string{"dockerd", "nsenter", "ip", "iptables"} {
		if _, err := exec.LookPath(p); err != nil {
			return fmt.Sprintf("testdaemon: %s is not installed: %v", p, err)
		}
	}
	ns := NetnsPrefix + "probe-" + NewRun()
	if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
		return fmt.Sprintf("testdaemon: cannot make a network namespace (ip netns add %s): %v: %s", ns, err, out)
	}
	if out, err := exec.Command("ip", "netns", "delete", ns).CombinedOutput(); err != nil {
		return fmt.Sprintf("testdaemon: ip netns delete %s: %v: %s", ns, err, out)
	}
	return ""
}

// Leftovers lists what of the set is still on the machine: processes
// naming a daemon's directory or in its containers' cgroups, namespaces,
// links, cgroups, directories. After Stop it should be empty.
func (h *Hosts) Leftovers() []string {
	var out []string
	nsList, _ := exec.Command("ip", "netns", "list").CombinedOutput()
	for _, d := range h.Daemons {
		if d == nil {
			continue
		}
		for pid, cmd := range Naming(d.Dir) {
			out = append(out, fmt.Sprintf("%s: process %d %s", d.Name, pid, cmd))
		}
		for pid, cmd := range InCgroup(d.cgroup) {
			out = append(out, fmt.Sprintf("%s: process %d in its cgroup: %s", d.Name, pid, cmd))
		}
		for _, l := range strings.Split(string(nsList), "\n") {
			if f := strings.Fields(l); len(f) > 0 && f[0] == NetnsPrefix+d.Name {
				out = append(out, fmt.Sprintf("%s: network namespace %s", d.Name, f[0]))
			}
		}
		if _, err := net.InterfaceByName(d.veth); err == nil {
			out = append(out, fmt.Sprintf("%s: link %s", d.Name, d.veth))
		}
		for _, c := range Cgroups(d.cgroup) {
			out = append(out, fmt.Sprintf("%s: cgroup %s", d.Name, c))
		}
		if _, err := os.Stat(d.Dir); err == nil {
			out = append(out, fmt.Sprintf("%s: directory %s", d.Name, d.Dir))
		}
	}
	return out
}
