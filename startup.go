package dockerpool

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sort"
	"strings"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/client"
	"github.com/sourcegraph/conc/pool"
)

// pingTimeout bounds New's first contact with the daemon.
const pingTimeout = 5 * time.Second

// New checks cfg, connects to Docker, prepares the network and the image,
// adopts the containers an earlier process left under cfg.Name, and returns a
// running pool. The pool fills up to MinIdle in the background; New does not
// wait for it.
//
// ctx bounds New itself, not the pool's life: call Shutdown to end the pool.
func New(ctx context.Context, cfg Config) (*Pool, error) {
	s, err := resolve(cfg)
	if err != nil {
		return nil, err
	}
	return open(ctx, s)
}

// open is New after the configuration is resolved; a Group's members start
// here with their link set.
func open(ctx context.Context, s settings) (*Pool, error) {
	api := s.Client
	var closer io.Closer
	if api == nil {
		cli, err := client.NewClientWithOpts(client.FromEnv, client.WithAPIVersionNegotiation())
		if err != nil {
			return nil, fmt.Errorf("dockerpool: docker client: %w", err)
		}
		api, closer = cli, cli
	}
	p, err := start(ctx, s, api)
	if err != nil {
		if closer != nil {
			_ = closer.Close()
		}
		return nil, err
	}
	p.closer = closer
	return p, nil
}

// start does New's work against the Docker seam.
func start(ctx context.Context, s settings, api DockerAPI) (*Pool, error) {
	pctx, cancel := context.WithTimeout(ctx, pingTimeout)
	_, err := api.Ping(pctx)
	cancel()
	if err != nil {
		return nil, fmt.Errorf("dockerpool: cannot reach the Docker daemon (is it running? DOCKER_HOST?): %w", err)
	}
	gvisor, err := checkRuntime(ctx, s, api)
	if err != nil {
		return nil, err
	}
	s.gvisor = gvisor
	if err := socketDaemon(&s, api); err != nil {
		return nil, err
	}
	if s.agent != nil && s.agent.Socket {
		sweepSocketDirs(ctx, api)
	}
	if err := prepareNetwork(ctx, s, api); err != nil {
		return nil, err
	}
	imageID, err := prepareImage(ctx, s, api)
	if err != nil {
		return nil, err
	}
	p, err := newPool(s, api, imageID, context.WithoutCancel(ctx))
	if err != nil {
		return nil, err
	}
	// Listen before listing, so that nothing dies unseen in between.
	first := p.subscribe(time.Now().Add(-2 * time.Second))
	go p.notifier()
	p.watcher.Add(2)
	go p.watchEvents(first)
	go p.ticker()
	found, err := p.scan(ctx)
	if err != nil {
		p.stopHelpers()
		return nil, err
	}
	go p.run()
	// The first message: the pool takes nothing before it knows what it has.
	adopted := make(chan struct{})
	p.ctrlCh <- adoptReq{found: found, reply: adopted}
	<-adopted
	if err := p.tel.observe(p); err != nil {
		p.notify(err)
	}
	return p, nil
}

// newPool makes the Pool value and its core, ready to run.
func newPool(s settings, api DockerAPI, imageID string, base context.Context) (*Pool, error) {
	var idb [8]byte
	_, _ = rand.Read(idb[:])
	p := &Pool{
		cfg:          s,
		api:          api,
		instance:     hex.EncodeToString(idb[:]),
		resetCleans:  s.OnReturn != nil || s.VerifiedReset || (s.agent != nil && s.agent.ResetOnReturn),
		acquireCh:    make(chan acquireReq),
		releaseCh:    make(chan releaseReq),
		ctrlCh:       make(chan message),
		kick:         make(chan struct{}, 1),
		resultCh:     make(chan message, s.MaxConcurrentDockerOps+s.MaxConcurrentAcquire+1),
		errCh:        make(chan error, 64),
		closing:      make(chan struct{}),
		done:         make(chan struct{}),
		notifierDone: make(chan struct{}),
	}
	p.acquireReplies.New = func() any { return make(chan acquireReply, 1) }
	p.releaseReplies.New = func() any { return make(chan error, 1) }
	p.spec = buildSpec(s, imageID, p.instance)
	var err error
	if p.tel, err = newTelemetry(s); err != nil {
		return nil, err
	}
	if s.agent != nil && s.agent.Binary != "" {
		if p.agentTar, err = agentTar(s.agent.Binary, s.agent.Path); err != nil {
			return nil, err
		}
	}
	p.baseCtx, p.cancelBase = context.WithCancel(base)
	p.createCtx, p.cancelCreate = context.WithCancel(p.baseCtx)
	p.lanes[laneOps] = pool.New().WithMaxGoroutines(s.MaxConcurrentDockerOps)
	p.lanes[laneAcquire] = pool.New().WithMaxGoroutines(s.MaxConcurrentAcquire)
	p.lanes[laneProbe] = pool.New().WithMaxGoroutines(1)
	c := newCore(s.limits(p.resetCleans), binary.LittleEndian.Uint64(idb[:]), s.Logger)
	p.owner = newOwner(c, p, p)
	if s.member != nil {
		p.owner.report = s.member.post
	}
	return p, nil
}

// checkRuntime makes sure the daemon has the runtime the containers ask
// for: without it, every creation would fail, after New had said yes. It
// reports whether that runtime (or the daemon's default) is gVisor's.
func checkRuntime(ctx context.Context, s settings, api DockerAPI) (gvisor bool, err error) {
	info, err := api.Info(ctx)
	if err != nil {
		return false, fmt.Errorf("dockerpool: ask the daemon for its runtimes: %w", err)
	}
	if s.HostConfig == nil || s.HostConfig.Runtime == "" {
		return isGVisor(info.DefaultRuntime), nil
	}
	if _, ok := info.Runtimes[s.HostConfig.Runtime]; ok {
		return isGVisor(s.HostConfig.Runtime), nil
	}
	names := make([]string, 0, len(info.Runtimes))
	for name := range info.Runtimes {
		names = append(names, name)
	}
	sort.Strings(names)
	return false, fmt.Errorf("%w: %q (the daemon has %s; register it in the daemon's daemon.json \"runtimes\")", ErrRuntimeNotFound, s.HostConfig.Runtime, strings.Join(names, ", "))
}

func prepareNetwork(ctx context.Context, s settings, api DockerAPI) error {
	name := s.Network.Name
	if name == "none" || name == "host" {
		return nil // network modes, not networks (Podman has no object for them)
	}
	_, err := api.NetworkInspect(ctx, name, network.InspectOptions{})
	switch {
	case err == nil:
		return nil
	case !cerrdefs.IsNotFound(err):
		return fmt.Errorf("dockerpool: inspect network %q: %w", name, err)
	case !s.Network.NeedsCreate:
		if s.HostConfig != nil && s.HostConfig.NetworkMode != "" {
			return nil // the containers do not join it
		}
		return fmt.Errorf("%w: %q (set Network.NeedsCreate to create it)", ErrNetworkNotFound, name)
	}
	labels := map[string]string{}
	for k, v := range s.Network.Labels {
		labels[k] = v
	}
	labels[LabelPool] = s.Name
	_, err = api.NetworkCreate(ctx, name, network.CreateOptions{Driver: s.Network.Driver, Labels: labels})
	if err != nil && cerrdefs.IsConflict(err) {
		return nil // made by somebody else meanwhile: reuse it
	}
	if err != nil {
		return fmt.Errorf("dockerpool: create network %q: %w", name, err)
	}
	return nil
}

// prepareImage makes sure the image is on the daemon, pulling it as the policy
// says, and returns its ID.
func prepareImage(ctx context.Context, s settings, api DockerAPI) (string, error) {
	name := s.Image.Name
	info, inspectErr := api.ImageInspect(ctx, name)
	present := inspectErr == nil
	if inspectErr != nil && !cerrdefs.IsNotFound(inspectErr) {
		return "", fmt.Errorf("dockerpool: inspect image %q: %w", name, inspectErr)
	}
	if !(s.pullPolicy == PullAlways || (s.pullPolicy == PullIfNotPresent && !present)) {
		if !present {
			return "", fmt.Errorf("%w: %q is not on the daemon and the pull policy is %q: %w", ErrImageNotFound, name, s.pullPolicy, inspectErr)
		}
		return info.ID, nil
	}
	pullErr := pullImage(ctx, s, api)
	switch {
	case pullErr == nil:
		info, inspectErr = api.ImageInspect(ctx, name)
		if inspectErr != nil {
			return "", fmt.Errorf("dockerpool: inspect image %q after pull: %w", name, inspectErr)
		}
		return info.ID, nil
	case present:
		// Offline, but we have a copy: go on with it.
		s.OnError(fmt.Errorf("dockerpool: pull %q failed, using the local image: %w", name, pullErr))
		return info.ID, nil
	default:
		return "", fmt.Errorf("%w: %q: pull failed: %w", ErrImageNotFound, name, pullErr)
	}
}

// pullImage pulls the image, reading the progress stream to its end (the pull
// is not finished before), and returns the daemon's reason on failure.
func pullImage(ctx context.Context, s settings, api DockerAPI) error {
	rc, err := api.ImagePull(ctx, s.Image.Name, image.PullOptions{})
	if err != nil {
		return err
	}
	defer rc.Close()
	return readPullProgress(rc, s)
}

// readPullProgress reads a pull's JSON progress stream to its end. The
// daemon reports a failed pull inside the stream, not as an HTTP error.
func readPullProgress(r io.Reader, s settings) error {
	dec := json.NewDecoder(r)
	for {
		var m struct {
			Status       string `json:"status"`
			ID           string `json:"id"`
			Progress     string `json:"progress"`
			ErrorMessage string `json:"error"`
		}
		if err := dec.Decode(&m); err == io.EOF {
			return nil
		} else if err != nil {
			return fmt.Errorf("read pull progress: %w", err)
		}
		if m.ErrorMessage != "" {
			return errors.New(m.ErrorMessage)
		}
		if s.Logger != nil && m.Status != "" && m.Progress == "" {
			s.Logger.Info("pull", slog.String("image", s.Image.Name), slog.String("layer", m.ID), slog.String("status", m.Status))
		}
	}
}

// scan lists the containers under the pool's label and says which can be
// adopted: running, made from the same configuration, never used, no exec
// running, and on the agent path with an agent that answers. The owner
// decides the rest (adoptReq).
func (p *Pool) scan(ctx context.Context) ([]adoptee, error) {
	list, err := p.api.ContainerList(ctx, container.ListOptions{All: true, Filters: p.labelFilter()})
	if err != nil {
		return nil, fmt.Errorf("dockerpool: list containers of pool %q: %w", p.cfg.Name, err)
	}
	found := make([]adoptee, len(list))
	check := pool.New().WithMaxGoroutines(p.cfg.MaxConcurrentDockerOps)
	for i, c := range list {
		found[i] = adoptee{id: c.ID, created: time.Unix(c.Created, 0)}
		if c.State != "running" || c.Labels[LabelConfig] != p.spec.hash || wasUsed(c.Names) {
			continue
		}
		check.Go(func() { found[i].ok, found[i].agent = p.trustworthy(ctx, c.ID) })
	}
	check.Wait()
	return found, nil
}

// trustworthy inspects a candidate for adoption, and on the agent path
// attaches to its agent and pings it.
func (p *Pool) trustworthy(ctx context.Context, id string) (bool, *agentConn) {
	info, err := p.api.ContainerInspect(ctx, id)
	// No exec running either (the used mark is set before a first exec
	// starts, so this is belt and braces).
	if err != nil || info.State == nil || !info.State.Running || len(info.ExecIDs) > 0 {
		return false, nil
	}
	if p.cfg.agent == nil {
		return true, nil
	}
	a, err := p.attachAgent(ctx, id)
	if err == nil {
		if dir := socketDirOf(info.Mounts); dir != "" { // removed with the container
			lock, _ := lockSocketDir(dir) // the dead process's lock is free
			a.sockDir = socketDir{dir, lock}
		}
		err = a.ping(p.cfg.agent.HandshakeTimeout)
	}
	if err != nil {
		a.close()
		return false, nil
	}
	return true, a
}

// wasUsed reports whether a container carries the used mark: an exec ran in
// it since it was created or last reset.
func wasUsed(names []string) bool {
	for _, n := range names {
		if strings.HasPrefix(strings.TrimPrefix(n, "/"), usedNamePrefix) {
			return true
		}
	}
	return false
}
