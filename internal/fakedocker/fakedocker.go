// Package fakedocker is an in-memory Docker daemon with the method set of
// the Docker client calls that dockerpool makes. Tests use it to drive the
// pool deterministically: every call goes through Hook first, which may fail
// it or block it on a channel the test releases.
package fakedocker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/events"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/api/types/system"
	"github.com/docker/docker/client"
	"github.com/docker/docker/pkg/stdcopy"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Op names a Docker call, for Hook and Calls.
type Op string

// The calls the fake implements.
const (
	OpPing           Op = "ping"
	OpImageInspect   Op = "image-inspect"
	OpImagePull      Op = "image-pull"
	OpNetworkInspect Op = "network-inspect"
	OpNetworkCreate  Op = "network-create"
	OpNetworkRemove  Op = "network-remove"
	OpCreate         Op = "create"
	OpStart          Op = "start"
	OpRemove         Op = "remove"
	OpInspect        Op = "inspect"
	OpList           Op = "list"
	OpRename         Op = "rename"
	OpAttach         Op = "attach"
	OpCopy           Op = "copy"
	OpExecCreate     Op = "exec-create"
	OpExecAttach     Op = "exec-attach"
	OpExecInspect    Op = "exec-inspect"
	OpEvents         Op = "events"
	OpInfo           Op = "info"
	OpDiff           Op = "diff"
	OpCopyFrom       Op = "copy-from"
	OpStatPath       Op = "stat-path"
	OpExecResize     Op = "exec-resize"
)

// Container is the fake's record of a container.
type Container struct {
	ID      string
	Name    string
	Labels  map[string]string
	Image   string
	Running bool
	Created time.Time
	ExecIDs []string
}

type execRec struct {
	container string
	cmd       []string
	stdin     bool // attached: otherwise its stdin is at its end from the start
	exitCode  int
	running   bool
	pid       int           // set once started
	started   chan struct{} // closed once started
}

// Fake is an in-memory Docker daemon. The zero value is not usable; call New.
type Fake struct {
	// Hook, when set, runs at the start of every call, outside the fake's
	// lock. An error fails the call; blocking blocks it. id is the container
	// (or image, network, exec) the call is about, when there is one.
	Hook func(ctx context.Context, op Op, id string) error

	// SlowExecStart, when set, makes an exec's process start this long
	// after its attach (ExecInspect reports its PID from then on), and an
	// end of stdin that arrives before the start is lost: the command never
	// sees it. runsc (gVisor) did that now and then.
	SlowExecStart time.Duration

	mu         sync.Mutex
	containers map[string]*Container
	images     map[string]string // name -> ID
	networks   map[string]map[string]string
	execs      map[string]*execRec
	seq        int
	calls      map[Op]int
	subs       []*sub
	history    []pastEvent // the last events, for replays (Since)

	// A host-wide fault (Stall, Fail), applied to every call after Hook.
	stalled chan struct{} // non-nil while stalled: closed by Heal
	failErr error
}

type sub struct {
	ctx    context.Context
	filter filters.Args
	msgs   chan events.Message
	errs   chan error
}

// New returns a fake daemon that has the given images.
func New(images ...string) *Fake {
	f := &Fake{
		containers: map[string]*Container{},
		images:     map[string]string{},
		networks:   map[string]map[string]string{"none": nil, "bridge": nil},
		execs:      map[string]*execRec{},
		calls:      map[Op]int{},
	}
	for _, im := range images {
		f.images[im] = "sha256:" + strings.Repeat("ab", 32)
	}
	return f
}

func (f *Fake) enter(ctx context.Context, op Op, id string) error {
	f.mu.Lock()
	f.calls[op]++
	hook := f.Hook
	f.mu.Unlock()
	if hook != nil {
		if err := hook(ctx, op, id); err != nil {
			return err
		}
	}
	f.mu.Lock()
	stalled, failErr := f.stalled, f.failErr
	f.mu.Unlock()
	if failErr != nil {
		return failErr
	}
	if stalled != nil {
		select {
		case <-stalled:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return ctx.Err()
}

// Stall makes the daemon stop answering, as behind a network that drops
// its packets: every call blocks until its ctx ends or Heal. Event streams
// open stay open and deliver nothing new.
func (f *Fake) Stall() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.stalled == nil {
		f.stalled = make(chan struct{})
	}
}

// Fail makes every call fail at once with err, as a daemon that refuses
// connections.
func (f *Fake) Fail(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.failErr = err
}

// Heal ends Stall and Fail: calls blocked by Stall go on.
func (f *Fake) Heal() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.stalled != nil {
		close(f.stalled)
		f.stalled = nil
	}
	f.failErr = nil
}

func notFound(what, id string) error {
	return fmt.Errorf("no such %s: %s: %w", what, id, cerrdefs.ErrNotFound)
}

// SetHook replaces Hook while the fake is in use.
func (f *Fake) SetHook(h func(ctx context.Context, op Op, id string) error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.Hook = h
}

// Calls returns how many times op was called.
func (f *Fake) Calls(op Op) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[op]
}

// Containers returns a copy of the containers on the fake daemon.
func (f *Fake) Containers() []Container {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []Container
	for _, c := range f.containers {
		cc := *c
		out = append(out, cc)
	}
	return out
}

// Running counts the running containers.
func (f *Fake) Running() int {
	n := 0
	for _, c := range f.Containers() {
		if c.Running {
			n++
		}
	}
	return n
}

// Add puts a container on the fake daemon, as if an earlier process had made
// it. It returns the ID.
func (f *Fake) Add(name string, labels map[string]string, running bool, execs int) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	id := f.newID()
	c := &Container{ID: id, Name: name, Labels: labels, Running: running, Created: time.Now()}
	for range execs {
		c.ExecIDs = append(c.ExecIDs, f.newID())
	}
	f.containers[id] = c
	return id
}

// Kill stops a container behind the pool's back and publishes "die".
func (f *Fake) Kill(id string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if c, ok := f.containers[id]; ok && c.Running {
		c.Running = false
		f.publish(c, events.ActionDie)
	}
}

// Delete removes a container behind the pool's back and publishes "destroy".
func (f *Fake) Delete(id string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if c, ok := f.containers[id]; ok {
		c.Running = false
		delete(f.containers, id)
		f.publish(c, events.ActionDestroy)
	}
}

// BreakEvents ends every event subscription with err, as a daemon restart
// would.
func (f *Fake) BreakEvents(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, s := range f.subs {
		select {
		case s.errs <- err:
		default:
		}
	}
	f.subs = nil
}

func (f *Fake) newID() string {
	f.seq++
	return fmt.Sprintf("%064x", f.seq)
}

// publish sends an event to the subscribers whose label filter matches. The
// fake drops events for a subscriber that does not keep up, as a real daemon
// would; tests that care read them promptly. Called with f.mu held.
func (f *Fake) publish(c *Container, action events.Action) {
	attrs := map[string]string{}
	for k, v := range c.Labels {
		attrs[k] = v
	}
	if action == events.ActionDie {
		attrs["exitCode"] = "137" // killed, as by docker kill or a forced removal
	}
	m := events.Message{Type: events.ContainerEventType, Action: action, Actor: events.Actor{ID: c.ID, Attributes: attrs}, Time: time.Now().Unix()}
	f.history = append(f.history, pastEvent{msg: m, labels: c.Labels})
	if len(f.history) > maxHistory {
		f.history = f.history[len(f.history)-maxHistory:]
	}
	for _, s := range f.subs {
		if s.ctx.Err() != nil || !s.wants(m, c.Labels) {
			continue
		}
		select {
		case s.msgs <- m:
		default:
		}
	}
}

// pastEvent is an event kept for the replay of a subscription with Since.
type pastEvent struct {
	msg    events.Message
	labels map[string]string
}

// maxHistory bounds the events kept for replays.
const maxHistory = 1024

func (s *sub) wants(m events.Message, labels map[string]string) bool {
	if !matchLabels(s.filter, labels) {
		return false
	}
	return len(s.filter.Get("event")) == 0 || s.filter.ExactMatch("event", string(m.Action))
}

func matchLabels(f filters.Args, labels map[string]string) bool {
	return f.MatchKVList("label", labels)
}

// ---- the Docker client's method set ----------------------------------------

// Ping answers as an API 1.41 daemon.
func (f *Fake) Ping(ctx context.Context) (types.Ping, error) {
	if err := f.enter(ctx, OpPing, ""); err != nil {
		return types.Ping{}, err
	}
	return types.Ping{APIVersion: "1.41"}, nil
}

// ImageInspect finds the images given to New.
func (f *Fake) ImageInspect(ctx context.Context, name string, _ ...client.ImageInspectOption) (image.InspectResponse, error) {
	if err := f.enter(ctx, OpImageInspect, name); err != nil {
		return image.InspectResponse{}, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	id, ok := f.images[name]
	if !ok {
		return image.InspectResponse{}, notFound("image", name)
	}
	return image.InspectResponse{ID: id}, nil
}

// ImagePull always fails, in the stream as a real pull does: the fake has no registry.
func (f *Fake) ImagePull(ctx context.Context, ref string, _ image.PullOptions) (io.ReadCloser, error) {
	if err := f.enter(ctx, OpImagePull, ref); err != nil {
		return nil, err
	}
	return io.NopCloser(strings.NewReader(`{"error":"pull access denied: no registry in the fake"}`)), nil
}

// NetworkInspect knows "none", "bridge" and the networks created.
func (f *Fake) NetworkInspect(ctx context.Context, name string, _ network.InspectOptions) (network.Inspect, error) {
	if err := f.enter(ctx, OpNetworkInspect, name); err != nil {
		return network.Inspect{}, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	labels, ok := f.networks[name]
	if !ok {
		return network.Inspect{}, notFound("network", name)
	}
	return network.Inspect{Name: name, Labels: labels}, nil
}

// NetworkCreate makes a network; an existing name is a conflict.
func (f *Fake) NetworkCreate(ctx context.Context, name string, opts network.CreateOptions) (network.CreateResponse, error) {
	if err := f.enter(ctx, OpNetworkCreate, name); err != nil {
		return network.CreateResponse{}, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.networks[name]; ok {
		return network.CreateResponse{}, fmt.Errorf("network %s exists: %w", name, cerrdefs.ErrConflict)
	}
	f.networks[name] = opts.Labels
	return network.CreateResponse{ID: name}, nil
}

// NetworkRemove deletes a network.
func (f *Fake) NetworkRemove(ctx context.Context, name string) error {
	if err := f.enter(ctx, OpNetworkRemove, name); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.networks[name]; !ok {
		return notFound("network", name)
	}
	delete(f.networks, name)
	return nil
}

// Networks reports whether the named network exists.
func (f *Fake) Network(name string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	_, ok := f.networks[name]
	return ok
}

// ContainerCreate makes a stopped container of a known image.
func (f *Fake) ContainerCreate(ctx context.Context, cfg *container.Config, _ *container.HostConfig, _ *network.NetworkingConfig, _ *ocispec.Platform, _ string) (container.CreateResponse, error) {
	if err := f.enter(ctx, OpCreate, ""); err != nil {
		return container.CreateResponse{}, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.images[cfg.Image]; !ok {
		return container.CreateResponse{}, notFound("image", cfg.Image)
	}
	id := f.newID()
	labels := map[string]string{}
	for k, v := range cfg.Labels {
		labels[k] = v
	}
	f.containers[id] = &Container{ID: id, Name: "fake_" + id[56:], Labels: labels, Image: cfg.Image, Created: time.Now()}
	return container.CreateResponse{ID: id}, nil
}

// ContainerStart marks a container running.
func (f *Fake) ContainerStart(ctx context.Context, id string, _ container.StartOptions) error {
	return f.update(ctx, OpStart, id, func(c *Container) { c.Running = true })
}

// update runs a call that changes one container.
func (f *Fake) update(ctx context.Context, op Op, id string, change func(*Container)) error {
	if err := f.enter(ctx, op, id); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	c, ok := f.containers[id]
	if !ok {
		return notFound("container", id)
	}
	change(c)
	return nil
}

// ContainerRemove deletes a container (a running one needs Force), publishing die and destroy.
func (f *Fake) ContainerRemove(ctx context.Context, id string, opts container.RemoveOptions) error {
	if err := f.enter(ctx, OpRemove, id); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	c, ok := f.containers[id]
	if !ok {
		return notFound("container", id)
	}
	if c.Running && !opts.Force {
		return fmt.Errorf("container %s is running: stop it or use force: %w", id, cerrdefs.ErrConflict)
	}
	if c.Running {
		c.Running = false
		f.publish(c, events.ActionDie)
	}
	delete(f.containers, id)
	f.publish(c, events.ActionDestroy)
	return nil
}

// ContainerInspect reports state, labels and running exec IDs.
func (f *Fake) ContainerInspect(ctx context.Context, id string) (container.InspectResponse, error) {
	if err := f.enter(ctx, OpInspect, id); err != nil {
		return container.InspectResponse{}, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	c, ok := f.containers[id]
	if !ok {
		return container.InspectResponse{}, notFound("container", id)
	}
	status := container.StateExited
	if c.Running {
		status = container.StateRunning
	}
	return container.InspectResponse{
		ContainerJSONBase: &container.ContainerJSONBase{
			ID:      c.ID,
			State:   &container.State{Status: status, Running: c.Running},
			ExecIDs: append([]string(nil), c.ExecIDs...),
		},
		Config: &container.Config{Labels: c.Labels, Image: c.Image},
	}, nil
}

// ContainerList lists containers matching the label filters (running ones unless All).
func (f *Fake) ContainerList(ctx context.Context, opts container.ListOptions) ([]container.Summary, error) {
	if err := f.enter(ctx, OpList, ""); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []container.Summary
	for _, c := range f.containers {
		if !opts.All && !c.Running {
			continue
		}
		if !matchLabels(opts.Filters, c.Labels) {
			continue
		}
		state := container.StateExited
		if c.Running {
			state = container.StateRunning
		}
		out = append(out, container.Summary{ID: c.ID, Names: []string{"/" + c.Name}, Labels: c.Labels, State: state, Created: c.Created.Unix(), Image: c.Image})
	}
	return out, nil
}

// ContainerAttach is not supported by the fake: the agent path is tested
// against the real daemon.
func (f *Fake) ContainerAttach(ctx context.Context, id string, _ container.AttachOptions) (types.HijackedResponse, error) {
	if err := f.enter(ctx, OpAttach, id); err != nil {
		return types.HijackedResponse{}, err
	}
	return types.HijackedResponse{}, errors.New("fakedocker: attach is not supported")
}

// CopyToContainer accepts and discards the content.
func (f *Fake) CopyToContainer(ctx context.Context, id, _ string, content io.Reader, _ container.CopyToContainerOptions) error {
	if err := f.enter(ctx, OpCopy, id); err != nil {
		return err
	}
	_, err := io.Copy(io.Discard, content)
	return err
}

// ContainerRename renames a container.
func (f *Fake) ContainerRename(ctx context.Context, id, name string) error {
	return f.update(ctx, OpRename, id, func(c *Container) { c.Name = name })
}

// ContainerExecCreate records an exec in a running container.
func (f *Fake) ContainerExecCreate(ctx context.Context, id string, opts container.ExecOptions) (container.ExecCreateResponse, error) {
	if err := f.enter(ctx, OpExecCreate, id); err != nil {
		return container.ExecCreateResponse{}, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	c, ok := f.containers[id]
	if !ok {
		return container.ExecCreateResponse{}, notFound("container", id)
	}
	if !c.Running {
		return container.ExecCreateResponse{}, fmt.Errorf("container %s is not running: %w", id, cerrdefs.ErrConflict)
	}
	eid := f.newID()
	c.ExecIDs = append(c.ExecIDs, eid)
	f.execs[eid] = &execRec{container: id, cmd: opts.Cmd, stdin: opts.AttachStdin}
	return container.ExecCreateResponse{ID: eid}, nil
}

// ContainerExecAttach runs the exec. The fake knows three commands: "echo
// args..." writes its arguments to stdout; "cat" copies stdin to stdout
// until its end; "exit N" exits with N. Anything else exits with 127.
func (f *Fake) ContainerExecAttach(ctx context.Context, eid string, _ container.ExecAttachOptions) (types.HijackedResponse, error) {
	if err := f.enter(ctx, OpExecAttach, eid); err != nil {
		return types.HijackedResponse{}, err
	}
	f.mu.Lock()
	e, ok := f.execs[eid]
	if ok {
		f.seq++
		pid := f.seq
		e.running, e.started = true, make(chan struct{})
		start := func() {
			f.mu.Lock()
			e.pid = pid
			f.mu.Unlock()
			close(e.started)
		}
		if f.SlowExecStart > 0 {
			time.AfterFunc(f.SlowExecStart, start)
		} else {
			e.pid = pid
			close(e.started)
		}
	}
	f.mu.Unlock()
	if !ok {
		return types.HijackedResponse{}, notFound("exec", eid)
	}
	client, server := net.Pipe()
	in, inW := io.Pipe()
	if !e.stdin {
		_ = inW.Close()
	}
	conn := &execConn{Conn: client, stdin: inW, started: e.started, loseEarlyEOF: f.SlowExecStart > 0}
	go f.serveExec(e, server, in)
	return types.NewHijackedResponse(conn, ""), nil
}

// execConn is the client's end of an exec's stream: it reads the output
// and writes stdin, whose end CloseWrite passes on.
type execConn struct {
	net.Conn
	stdin        *io.PipeWriter
	started      chan struct{}
	loseEarlyEOF bool
}

func (c *execConn) Write(b []byte) (int, error) { return c.stdin.Write(b) }

func (c *execConn) CloseWrite() error {
	select {
	case <-c.started:
	default:
		if c.loseEarlyEOF {
			return nil // lost: the command reads on
		}
	}
	return c.stdin.Close()
}

func (c *execConn) Close() error {
	c.stdin.CloseWithError(net.ErrClosed)
	return c.Conn.Close()
}

func (f *Fake) serveExec(e *execRec, conn net.Conn, stdin *io.PipeReader) {
	defer conn.Close()
	defer stdin.CloseWithError(io.ErrClosedPipe) // what the command did not read fails to send
	out := stdcopy.NewStdWriter(conn, stdcopy.Stdout)
	code := 0
	switch {
	case len(e.cmd) > 0 && e.cmd[0] == "echo":
		_, _ = io.WriteString(out, strings.Join(e.cmd[1:], " ")+"\n")
	case len(e.cmd) == 1 && e.cmd[0] == "cat":
		if _, err := io.Copy(out, stdin); err != nil {
			code = 1
		}
	case len(e.cmd) == 2 && e.cmd[0] == "exit":
		code, _ = strconv.Atoi(e.cmd[1])
	default:
		code = 127
	}
	f.mu.Lock()
	e.running, e.exitCode = false, code
	f.mu.Unlock()
}

// ContainerExecInspect reports whether an exec runs and its exit code.
func (f *Fake) ContainerExecInspect(ctx context.Context, eid string) (container.ExecInspect, error) {
	if err := f.enter(ctx, OpExecInspect, eid); err != nil {
		return container.ExecInspect{}, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	e, ok := f.execs[eid]
	if !ok {
		return container.ExecInspect{}, notFound("exec", eid)
	}
	return container.ExecInspect{ExecID: eid, ContainerID: e.container, Running: e.running, ExitCode: e.exitCode, Pid: e.pid}, nil
}

// Events subscribes to container events matching the options' label and
// event filters. The stream ends with an error on BreakEvents or when ctx
// ends.
func (f *Fake) Events(ctx context.Context, opts events.ListOptions) (<-chan events.Message, <-chan error) {
	msgs, errs := make(chan events.Message, 256), make(chan error, 1)
	if err := f.enter(ctx, OpEvents, ""); err != nil {
		errs <- err
		return msgs, errs
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	s := &sub{ctx: ctx, filter: opts.Filters, msgs: msgs, errs: errs}
	// As the real daemon does, a subscription with Since first replays
	// the events from then on, so that a subscriber that starts late (or
	// again, after a break) misses nothing.
	if since, err := strconv.ParseInt(opts.Since, 10, 64); err == nil && opts.Since != "" {
		for _, e := range f.history {
			if e.msg.Time >= since && s.wants(e.msg, e.labels) {
				select {
				case msgs <- e.msg:
				default:
				}
			}
		}
	}
	f.subs = append(f.subs, s)
	return msgs, errs
}

// ErrDown is what a hook can return to play a daemon that does not answer.
var ErrDown = errors.New("fakedocker: Cannot connect to the Docker daemon")

// Info reports a daemon with the runc runtime.
func (f *Fake) Info(ctx context.Context) (system.Info, error) {
	if err := f.enter(ctx, OpInfo, ""); err != nil {
		return system.Info{}, err
	}
	return system.Info{DefaultRuntime: "runc", Runtimes: map[string]system.RuntimeWithStatus{"runc": {}}}, nil
}

// ContainerDiff reports no change: the fake has no filesystems.
func (f *Fake) ContainerDiff(ctx context.Context, id string) ([]container.FilesystemChange, error) {
	if err := f.enter(ctx, OpDiff, id); err != nil {
		return nil, err
	}
	if _, ok := f.container(id); !ok {
		return nil, notFound("container", id)
	}
	return nil, nil
}

// CopyFromContainer is not supported: the fake has no filesystems.
func (f *Fake) CopyFromContainer(ctx context.Context, id, path string) (io.ReadCloser, container.PathStat, error) {
	if err := f.enter(ctx, OpCopyFrom, id); err != nil {
		return nil, container.PathStat{}, err
	}
	return nil, container.PathStat{}, notFound("file", path)
}

// ContainerStatPath finds nothing: the fake has no filesystems.
func (f *Fake) ContainerStatPath(ctx context.Context, id, path string) (container.PathStat, error) {
	if err := f.enter(ctx, OpStatPath, id); err != nil {
		return container.PathStat{}, err
	}
	return container.PathStat{}, notFound("file", path)
}

// ContainerExecResize accepts the size of a known exec.
func (f *Fake) ContainerExecResize(ctx context.Context, eid string, _ container.ResizeOptions) error {
	if err := f.enter(ctx, OpExecResize, eid); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.execs[eid]; !ok {
		return notFound("exec", eid)
	}
	return nil
}

func (f *Fake) container(id string) (*Container, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	c, ok := f.containers[id]
	return c, ok
}
