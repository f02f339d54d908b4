package dockerpool

import (
	"cmp"
	"context"
	"fmt"
	"log"
	"log/slog"
	"path"
	"time"

	"github.com/distribution/reference"
	"github.com/docker/docker/api/types/container"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"
)

// Defaults applied by New to zero-valued Config fields.
const (
	DefaultMinIdle                = 5
	DefaultMaxIdle                = 10
	DefaultRefillInterval         = 100 * time.Millisecond
	DefaultMaxConcurrentDockerOps = 10
	DefaultMaxConcurrentAcquire   = 10
	DefaultDockerTimeout          = 30 * time.Second
	DefaultCheckIdleAfter         = time.Second
)

// DefaultCmd returns the main process of a pool container when neither
// Config.Cmd nor Config.ContainerConfig.Cmd is set, ["sleep", "infinity"]: it
// keeps the container running and idle until the pool removes it. Each call
// returns a new slice.
func DefaultCmd() []string { return []string{"sleep", "infinity"} }

// Config describes a pool. Name, Network.Name and Image.Name are required;
// every other field has a default, applied by New when the field is zero.
type Config struct {
	// Name identifies the pool. Every container gets the label
	// dockerpool.pool=<Name>, and New adopts the running containers that an
	// earlier process left under that name. Two live pools must not share a
	// name.
	Name string

	// Network is the Docker network the containers join.
	Network NetworkConfig

	// Image is the image the containers run.
	Image ImageConfig

	// Cmd is the containers' main process. Default: DefaultCmd()
	// (sleep infinity). Commands are run beside it with Exec.
	Cmd []string

	// MinIdle is how many idle containers the pool keeps ready. Default 5.
	MinIdle int
	// MaxIdle caps the idle containers: a container returned above it is
	// removed. Default 10, or MinIdle when that is larger.
	MaxIdle int
	// RefillInterval is how often the pool checks MinIdle and MaxIdle and
	// retries failed work. Default 100ms. The pool also refills right after
	// an Acquire takes an idle container.
	RefillInterval time.Duration
	// MaxConcurrentDockerOps bounds the Docker calls made in the background:
	// refill, trimming, removals and shutdown. Default 10.
	MaxConcurrentDockerOps int
	// MaxConcurrentAcquire bounds the creations started for callers of
	// Acquire who found no idle container. Default 10.
	MaxConcurrentAcquire int

	// ContainerConfig, when set, is the base for every container. The pool
	// fills in Image (from Image.Name) and Cmd (from Cmd) when they are
	// empty, and adds its labels.
	ContainerConfig *container.Config
	// HostConfig, when set, is used for every container (resources, mounts,
	// security options). When its NetworkMode is set (for example "none"),
	// the pool network is not attached. When its Init is nil the pool sets
	// it to true, so that an init process reaps zombies.
	HostConfig *container.HostConfig

	// Labels are added to every container.
	Labels map[string]string

	// OnError receives errors that happen in the background (a failed refill,
	// a failed removal). It is called on a goroutine of its own, one call at a
	// time, and may call the pool. Default: the standard logger.
	OnError func(error)

	// The fields below go beyond what every pool needs; their zero value
	// turns them off or picks the default.

	// MaxSize caps all containers of the pool: idle, in use and being
	// created. At the cap, Acquire waits in FIFO order for a container to be
	// returned. Zero means no cap. In a Group with Hosts it counts per host.
	MaxSize int
	// MaxUses removes a container after it has been handed out this many
	// times. 1 gives single-use warm containers: the strongest isolation at
	// warm latency. Zero means no limit.
	MaxUses int
	// MaxIdleTime removes a container that stayed idle longer. Zero: no limit.
	MaxIdleTime time.Duration
	// MaxLifetime removes a container older than this (each container gets up
	// to 10% less, at random, so they do not all expire together). An in-use
	// container is removed when it is returned. Zero: no limit.
	MaxLifetime time.Duration
	// OnReturn, when set, runs on every returned container before it goes
	// back to the idle stack (on a background worker, never on the caller's
	// goroutine), for example to empty /tmp. An error removes the container
	// instead. The container is then checked as with CheckOnReturn.
	OnReturn func(ctx context.Context, c *Container) error
	// CheckOnReturn inspects every returned container before reuse: one that
	// stopped or was OOM-killed is removed. It costs one Docker call per
	// Return, on a background worker. Without it, the pool learns of deaths
	// from Docker's events, which can lag a few milliseconds.
	CheckOnReturn bool
	// Logger receives structured events: containers created, removed (with
	// the reason), adopted, and refill backoff. Default: none.
	Logger *slog.Logger
	// Client is how the pool reaches Docker: a *client.Client of
	// github.com/docker/docker/client, or any DockerAPI (a wrapper of your
	// own, a fake for tests). Default: a client made with client.FromEnv and
	// API version negotiation, closed by Shutdown. A Client you pass in is
	// yours to close, after Shutdown.
	Client DockerAPI
	// DockerTimeout bounds each Docker call the pool makes in the background
	// (create, start, remove, inspect). Default 30s.
	DockerTimeout time.Duration
	// CheckIdleAfter: an idle container that waited this long is inspected
	// before it is handed out, in case it died in the few milliseconds
	// before Docker's event reached the pool. Default 1s; a negative value
	// turns the check off. On the agent path the check costs nothing: the
	// agent's session says whether the container still runs.
	CheckIdleAfter time.Duration
	// VerifiedReset makes every Return reset the container, in the
	// background, to as good as new, and prove it before reuse: every
	// process but the main one is killed and the kill verified; every
	// writable place the container has (each tmpfs mount, found from its own
	// mounts, /dev/shm, POSIX message queues) is emptied; every System V IPC
	// object is removed; on a writable root, the container's layer is
	// compared with what it was right after the start (a file written there
	// cannot be undone). Each is checked afterwards; a container whose reset
	// cannot be verified is removed instead (Stats: ReasonResetUnverified).
	// For untrusted code it is the fast alternative to MaxUses 1: see the
	// README. On the Docker exec path the image needs /bin/sh (and ipcrm to
	// remove IPC objects: without it, a container where some were left is
	// removed).
	VerifiedReset bool
	// Agent, when set, runs commands through dockerpool-agent, the
	// container's main process, instead of Docker exec: about a millisecond
	// per command instead of tens. Cmd is then ignored. See AgentConfig.
	Agent *AgentConfig

	// MeterProvider receives the pool's metrics (see the README's
	// Monitoring section for the names). Default: OpenTelemetry's global
	// provider, otel.GetMeterProvider(), so a program that installed one
	// gets the metrics with no code, and one that did not pays next to
	// nothing.
	MeterProvider metric.MeterProvider
	// TracerProvider receives the pool's spans: Acquire, Exec, file
	// transfers, and the creation, removal and reset of containers. A
	// span names a command's program only, never its arguments,
	// environment or stdin. Default: OpenTelemetry's global provider.
	TracerProvider trace.TracerProvider
}

// NetworkConfig says which network the containers join.
type NetworkConfig struct {
	// Name of the network. Required.
	Name string
	// Driver used when the pool creates the network. Default "bridge".
	Driver string
	// NeedsCreate makes New create the network when it does not exist yet.
	// An existing network of that name is reused. When false, the network
	// must exist (unless HostConfig.NetworkMode detaches the containers).
	NeedsCreate bool
	// NeedsRemove makes Shutdown remove the network.
	NeedsRemove bool
	// Labels are set on the network when the pool creates it.
	Labels map[string]string
}

// ImageConfig says which image the containers run.
type ImageConfig struct {
	// Name of the image, such as "alpine:3.20". Required.
	Name string
	// NeedsPull makes New pull the image. When the pull fails but the image is
	// present locally, New goes on with the local copy and reports the failed
	// pull through OnError.
	NeedsPull bool
	// PullPolicy refines NeedsPull; see PullPolicy. The zero value follows
	// NeedsPull (PullAlways when true, PullNever when false).
	PullPolicy PullPolicy
}

// PullPolicy says when New pulls the image.
type PullPolicy string

const (
	// PullIfNotPresent pulls only when the image is missing locally.
	PullIfNotPresent PullPolicy = "if-not-present"
	// PullAlways pulls on every New (falling back to a local copy when the
	// registry cannot be reached).
	PullAlways PullPolicy = "always"
	// PullNever never pulls: the image must be present locally.
	PullNever PullPolicy = "never"
)

// settings is a validated Config with every default applied.
type settings struct {
	Config
	pullPolicy PullPolicy
	agent      *AgentConfig // a copy with defaults, or nil
	member     *memberLink  // set when the pool is a Group's member
	host       string       // the Group host it runs on (Host.Name), or ""
	// hostVerdict: how long the group may take to take the host out once
	// it stops answering (HostPing + the time between pings), or 0.
	hostVerdict time.Duration
	// gvisor: the containers run under gVisor (HostConfig.Runtime, or the
	// daemon's default runtime), whose file cache the host does not see:
	// file transfers then never use Docker's archive API.
	gvisor bool
}

// resolve validates cfg and applies the defaults.
func resolve(cfg Config) (settings, error) {
	if err := validate(cfg); err != nil {
		return settings{}, err
	}
	s := settings{Config: cfg}
	s.applyDefaults()
	if s.MinIdle > s.MaxIdle {
		return settings{}, fmt.Errorf("%w: MinIdle (%d) is above MaxIdle (%d)", ErrInvalidConfig, s.MinIdle, s.MaxIdle)
	}
	if s.MaxSize > 0 && s.MinIdle > s.MaxSize {
		return settings{}, fmt.Errorf("%w: MinIdle (%d) is above MaxSize (%d)", ErrInvalidConfig, s.MinIdle, s.MaxSize)
	}
	if cfg.Agent != nil {
		a := *cfg.Agent
		if a.Path == "" {
			a.Path = DefaultAgentPath
		}
		if a.HandshakeTimeout == 0 {
			a.HandshakeTimeout = 10 * time.Second
		}
		if a.HandshakeTimeout < 0 {
			return settings{}, fmt.Errorf("%w: Agent.HandshakeTimeout is negative", ErrInvalidConfig)
		}
		if err := agentOnReadOnlyRoot(&a, cfg); err != nil {
			return settings{}, err
		}
		s.agent = &a
	}
	switch s.Image.PullPolicy {
	case "":
		s.pullPolicy = PullNever
		if s.Image.NeedsPull {
			s.pullPolicy = PullAlways
		}
	case PullIfNotPresent, PullAlways, PullNever:
		s.pullPolicy = s.Image.PullPolicy
	default:
		return settings{}, fmt.Errorf("%w: unknown Image.PullPolicy %q", ErrInvalidConfig, s.Image.PullPolicy)
	}
	return s, nil
}

// validate checks the fields that have no default.
func validate(cfg Config) error {
	switch {
	case cfg.Name == "":
		return ErrPoolNameRequired
	case cfg.Network.Name == "":
		return ErrNetworkNameRequired
	case cfg.Image.Name == "":
		return ErrImageRequired
	}
	if _, err := reference.ParseAnyReference(cfg.Image.Name); err != nil {
		return fmt.Errorf("%w: Image.Name %q is not an image reference: %w", ErrInvalidConfig, cfg.Image.Name, err)
	}
	for _, f := range []struct {
		name string
		v    int64
	}{
		{"MinIdle", int64(cfg.MinIdle)},
		{"MaxIdle", int64(cfg.MaxIdle)},
		{"RefillInterval", int64(cfg.RefillInterval)},
		{"MaxConcurrentDockerOps", int64(cfg.MaxConcurrentDockerOps)},
		{"MaxConcurrentAcquire", int64(cfg.MaxConcurrentAcquire)},
		{"MaxSize", int64(cfg.MaxSize)},
		{"MaxUses", int64(cfg.MaxUses)},
		{"MaxIdleTime", int64(cfg.MaxIdleTime)},
		{"MaxLifetime", int64(cfg.MaxLifetime)},
		{"DockerTimeout", int64(cfg.DockerTimeout)},
	} {
		if f.v < 0 {
			return fmt.Errorf("%w: %s is negative (%d)", ErrInvalidConfig, f.name, f.v)
		}
	}
	return nil
}

// applyDefaults fills the zero fields that have a default.
func (s *settings) applyDefaults() {
	if len(s.Cmd) == 0 {
		s.Cmd = DefaultCmd()
	}
	if s.MinIdle == 0 {
		s.MinIdle = DefaultMinIdle
	}
	if s.MaxIdle == 0 {
		s.MaxIdle = max(DefaultMaxIdle, s.MinIdle)
	}
	s.RefillInterval = cmp.Or(s.RefillInterval, DefaultRefillInterval)
	s.MaxConcurrentDockerOps = cmp.Or(s.MaxConcurrentDockerOps, DefaultMaxConcurrentDockerOps)
	s.MaxConcurrentAcquire = cmp.Or(s.MaxConcurrentAcquire, DefaultMaxConcurrentAcquire)
	s.DockerTimeout = cmp.Or(s.DockerTimeout, DefaultDockerTimeout)
	switch {
	case s.CheckIdleAfter == 0:
		s.CheckIdleAfter = DefaultCheckIdleAfter
	case s.CheckIdleAfter < 0:
		s.CheckIdleAfter = 0 // off
	}
	s.Network.Driver = cmp.Or(s.Network.Driver, "bridge")
	if s.OnError == nil {
		name := s.Name
		s.OnError = func(err error) { log.Printf("dockerpool %s: %v", name, err) }
	}
}

// limits are the settings of the core.
func (s settings) limits(resetCleans bool) limits {
	return limits{
		minIdle:        s.MinIdle,
		maxIdle:        s.MaxIdle,
		maxSize:        s.MaxSize,
		workers:        [numLanes]int{s.MaxConcurrentDockerOps, s.MaxConcurrentAcquire, 1},
		dockerTimeout:  s.DockerTimeout,
		maxUses:        s.MaxUses,
		maxIdleTime:    s.MaxIdleTime,
		maxLifetime:    s.MaxLifetime,
		refillInterval: s.RefillInterval,
		suspectIdle:    s.CheckIdleAfter,
		agent:          s.agent != nil,
		hasReset:       s.OnReturn != nil || s.CheckOnReturn || s.VerifiedReset || (s.agent != nil && s.agent.ResetOnReturn),
		resetCleans:    resetCleans,
		budgeted:       s.member != nil,
	}
}

// agentOnReadOnlyRoot places an agent that the pool copies in (Binary) on a
// read-only root: Docker refuses copies onto such a root, but accepts them
// onto a volume, so the agent goes into a directory of its own that becomes
// an anonymous volume (the default Path moves to DefaultReadOnlyAgentPath).
func agentOnReadOnlyRoot(a *AgentConfig, cfg Config) error {
	if a.Binary == "" || cfg.HostConfig == nil || !cfg.HostConfig.ReadonlyRootfs {
		return nil
	}
	if cfg.Agent.Path == "" {
		a.Path = DefaultReadOnlyAgentPath
	}
	if path.Dir(a.Path) == "/" {
		return fmt.Errorf("%w: Agent.Path %q: on a read-only root the agent is copied onto a volume, which needs a directory of its own (such as %q)", ErrInvalidConfig, a.Path, DefaultReadOnlyAgentPath)
	}
	return nil
}
