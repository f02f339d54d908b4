// Package testdaemon starts private Docker daemons for the tests that need
// one of their own: a daemon with another runtime registered (gVisor's
// runsc), a daemon to stop, kill or cut off (faults, several hosts).
//
// Each daemon runs in a network namespace of its own. That is not only for
// the tests that cut its network: a dockerd started with --bridge=none (as a
// second daemon on a machine must be) deletes the interface named docker0 in
// its namespace when it starts, which in the host's namespace is the
// machine's own daemon's bridge. Everything a daemon has lives under one
// directory, /tmp/dockerpool-testdaemon-<name>: its data, its exec root
// (containerd and the shims), its socket, its config, its log. Stop ends the
// daemon by its PID, then kills by PID whatever process still names that
// directory (a containerd-shim, runsc-sandbox and runsc-gofer of a failed
// start), unmounts what is left under it, removes it and the namespace.
// Nothing is ever killed by name, and the machine's daemon is never touched.
// A start claims its directory first (it must not exist): a name already in
// use, by another test run on the machine, fails the start, and nothing of
// the other daemon is touched. StartHosts (hosts.go) starts daemons that
// stand for remote hosts, with faults (faults.go).
package testdaemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/docker/docker/client"
)

// DirPrefix starts the directory of every daemon: CI's cleanup looks for
// processes that name it.
const DirPrefix = "/tmp/dockerpool-testdaemon-"

// NetnsPrefix starts the name of every daemon's network namespace.
const NetnsPrefix = "dptest-"

// Runtime is an OCI runtime to register with the daemon.
type Runtime struct {
	Path string   `json:"path"`
	Args []string `json:"runtimeArgs,omitempty"`
}

// Options says what daemon to start.
type Options struct {
	// Runtimes to register besides runc, by name.
	Runtimes map[string]Runtime
	// DefaultRuntime for containers that ask for none ("" for runc).
	DefaultRuntime string
	// StartTimeout bounds the wait for the daemon to answer. Default 60s.
	StartTimeout time.Duration
}

// Daemon is a private dockerd.
type Daemon struct {
	Name   string // of the daemon, its directory and its namespace
	Dir    string
	Socket string // its API socket
	Host   string // "unix://" + Socket, for DOCKER_HOST
	Client *client.Client

	// Set by StartHosts: the daemon is also a remote host, reached over
	// TCP with TLS at Remote ("tcp://IP:2376") by TCP's client.
	IP     net.IP
	Remote string
	TCP    *client.Client

	owned  bool     // its directory was made by this Daemon: cleanup may remove it
	nsMade bool     // its namespace was made by this Daemon
	args   []string // dockerd's flags besides the common ones
	cgroup string   // the containers' cgroup parent, when set
	veth   string   // the host's end of the link, when there is one
	ca     *CA
	faults faults // what is done to it now, undone by Stop

	cmd    *exec.Cmd
	exited chan struct{}
	log    *os.File
}

// Start starts a daemon and waits until it answers.
func Start(ctx context.Context, name string, opts Options) (*Daemon, error) {
	d := &Daemon{Name: name, Dir: DirPrefix + name, exited: make(chan struct{})}
	d.Socket = filepath.Join(d.Dir, "docker.sock")
	d.Host = "unix://" + d.Socket
	if err := d.prepare(opts); err != nil {
		d.cleanup()
		return nil, err
	}
	if err := d.launch(); err != nil {
		d.cleanup()
		return nil, err
	}
	if err := d.waitReady(ctx, cmpOr(opts.StartTimeout, time.Minute)); err != nil {
		_ = d.Stop()
		return nil, err
	}
	return d, nil
}

func cmpOr(d, def time.Duration) time.Duration {
	if d == 0 {
		return def
	}
	return d
}

// prepare makes the directory, the config file and the namespace.
func (d *Daemon) prepare(opts Options) error {
	// The directory is claimed first, exclusively: a daemon of the same
	// name may run for another test run on this machine (two engineers,
	// two go test), and a failed start must not clean up what is theirs.
	if err := os.Mkdir(d.Dir, 0o700); err != nil {
		return fmt.Errorf("testdaemon: %s is in use (by another run's daemon %q, or left by a dead one: .ci/run's cleanup removes those): %w", d.Dir, d.Name, err)
	}
	d.owned = true
	for _, sub := range []string{"data", "exec"} {
		if err := os.MkdirAll(filepath.Join(d.Dir, sub), 0o700); err != nil {
			return err
		}
	}
	// An empty config of its own: the machine's /etc/docker/daemon.json
	// sets a data root and a storage driver that are not this daemon's.
	cfg := map[string]any{}
	if len(opts.Runtimes) > 0 {
		cfg["runtimes"] = opts.Runtimes
	}
	if opts.DefaultRuntime != "" {
		cfg["default-runtime"] = opts.DefaultRuntime
	}
	b, _ := json.Marshal(cfg)
	if err := os.WriteFile(filepath.Join(d.Dir, "daemon.json"), b, 0o600); err != nil {
		return err
	}
	if out, err := exec.Command("ip", "netns", "add", NetnsPrefix+d.Name).CombinedOutput(); err != nil {
		return fmt.Errorf("testdaemon: ip netns add %s: %v: %s", NetnsPrefix+d.Name, err, out)
	}
	d.nsMade = true
	if out, err := exec.Command("ip", "-n", NetnsPrefix+d.Name, "link", "set", "lo", "up").CombinedOutput(); err != nil {
		return fmt.Errorf("testdaemon: lo up in %s: %v: %s", NetnsPrefix+d.Name, err, out)
	}
	return nil
}

// launch starts dockerd in the namespace. nsenter, not "ip netns exec",
// which remounts /sys so that dockerd fails ("Devices cgroup isn't
// mounted").
// A restart (Restart) launches it again on the same directories, and
// appends to the same log.
func (d *Daemon) launch() error {
	if d.log == nil {
		log, err := os.OpenFile(filepath.Join(d.Dir, "dockerd.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
		if err != nil {
			return err
		}
		d.log = log
	}
	args := append([]string{"--net=/var/run/netns/" + NetnsPrefix + d.Name, "dockerd",
		"--config-file", filepath.Join(d.Dir, "daemon.json"),
		"--data-root", filepath.Join(d.Dir, "data"),
		"--exec-root", filepath.Join(d.Dir, "exec"),
		"--pidfile", filepath.Join(d.Dir, "dockerd.pid"),
		"-H", d.Host,
		"--bridge=none", "--iptables=false", "--ip-masq=false"}, d.args...)
	cmd := exec.Command("nsenter", args...)
	cmd.Stdout, cmd.Stderr = d.log, d.log
	// The daemon dies with the test binary (nsenter executes dockerd, which
	// keeps the setting); Stop cleans up after it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("testdaemon: start dockerd: %w", err)
	}
	exited := make(chan struct{})
	d.cmd, d.exited = cmd, exited
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	return nil
}

// waitReady pings the daemon until it answers (a new daemon announces
// nothing: it can only be asked).
func (d *Daemon) waitReady(ctx context.Context, within time.Duration) error {
	if d.Client == nil {
		cli, err := client.NewClientWithOpts(client.WithHost(d.Host), client.WithAPIVersionNegotiation())
		if err != nil {
			return err
		}
		d.Client = cli
	}
	cli := d.Client
	deadline := time.Now().Add(within)
	for {
		pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		_, err := cli.Ping(pctx)
		cancel()
		switch {
		case err == nil:
			return nil
		case time.Now().After(deadline):
			return fmt.Errorf("testdaemon: dockerd %s did not answer within %v: %v; log:\n%s", d.Name, within, err, d.Log())
		}
		select {
		case <-d.exited:
			return fmt.Errorf("testdaemon: dockerd %s exited; log:\n%s", d.Name, d.Log())
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Log returns the end of the daemon's log.
func (d *Daemon) Log() string {
	b, _ := os.ReadFile(filepath.Join(d.Dir, "dockerd.log"))
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}

// PID is the daemon's process.
func (d *Daemon) PID() int { return d.cmd.Process.Pid }

// Stop ends the daemon and everything it started, and removes its
// directory and namespace. It returns what it could not clean.
func (d *Daemon) Stop() error {
	var errs []error
	errs = append(errs, d.undoFaults())
	if d.cmd != nil && d.cmd.Process != nil {
		_ = d.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-d.exited:
		case <-time.After(20 * time.Second):
			_ = d.cmd.Process.Kill()
			<-d.exited
		}
	}
	if d.Client != nil {
		_ = d.Client.Close()
	}
	if d.TCP != nil {
		_ = d.TCP.Close()
	}
	if left := d.killAll(); len(left) > 0 {
		errs = append(errs, fmt.Errorf("testdaemon: %s left processes that did not die: %v", d.Name, left))
	}
	errs = append(errs, d.cleanup())
	return errors.Join(errs...)
}

// cleanup unmounts and removes the directory, and deletes the namespace.
func (d *Daemon) cleanup() error {
	if d.log != nil {
		d.log.Close()
	}
	if !d.owned {
		return nil // another's: touch nothing
	}
	var errs []error
	unmountUnder(d.Dir)
	if err := os.RemoveAll(d.Dir); err != nil {
		errs = append(errs, err)
	}
	errs = append(errs, d.removeLink())
	if d.nsMade {
		if out, err := exec.Command("ip", "netns", "delete", NetnsPrefix+d.Name).CombinedOutput(); err != nil && !strings.Contains(string(out), "No such file") {
			errs = append(errs, fmt.Errorf("testdaemon: ip netns delete: %v: %s", err, out))
		}
	}
	errs = append(errs, removeCgroups(d.cgroup))
	return errors.Join(errs...)
}
