package dockerpool

import (
	"context"
	"fmt"
	"io"
	"sync/atomic"

	"github.com/docker/docker/api/types"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/events"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/api/types/system"
	"github.com/docker/docker/client"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// hostClient is the DockerAPI the member pools of one Group host use: the
// host's Client, with every call bound to the host's current epoch. When
// the group takes the host out (cut), the epoch ends: the calls in flight
// on it end at once, with the host's error (wrapping ErrHostDown), and
// calls made while it is out fail at once, so nothing waits on a host that
// stalls. heal starts a new epoch. The health ping does not go through it.
type hostClient struct {
	api   DockerAPI
	epoch atomic.Pointer[hostEpoch]
}

type hostEpoch struct {
	ctx    context.Context
	cancel context.CancelCauseFunc
}

func newHostClient(api DockerAPI) *hostClient {
	h := &hostClient{api: api}
	h.heal()
	return h
}

// heal starts a new epoch (the host is back), unless the current one runs.
func (h *hostClient) heal() {
	if e := h.epoch.Load(); e != nil && e.ctx.Err() == nil {
		return
	}
	ctx, cancel := context.WithCancelCause(context.Background())
	h.epoch.Store(&hostEpoch{ctx: ctx, cancel: cancel})
}

// cut ends the current epoch with why.
func (h *hostClient) cut(why error) { h.epoch.Load().cancel(why) }

// bind derives a call's context from ctx and the epoch; done releases it.
// A call that returns a stream keeps its context until ctx ends.
func (h *hostClient) bind(ctx context.Context) (context.Context, func()) {
	e := h.epoch.Load()
	cctx, cancel := context.WithCancelCause(ctx)
	stop := context.AfterFunc(e.ctx, func() { cancel(context.Cause(e.ctx)) })
	return cctx, func() { stop(); cancel(nil) }
}

// bindStream is bind for a call whose result outlives it (a stream): the
// link to the epoch lasts until ctx ends.
func (h *hostClient) bindStream(ctx context.Context) context.Context {
	cctx, done := h.bind(ctx)
	context.AfterFunc(cctx, done)
	return cctx
}

// wrap adds the epoch's end to a call's error, so that errors.Is finds
// ErrHostDown in what the client reports as a cancelled context.
func (h *hostClient) wrap(ctx context.Context, err error) error {
	if err == nil {
		return nil
	}
	if why := context.Cause(ctx); why != nil && ctx.Err() != nil && why != ctx.Err() {
		return fmt.Errorf("%w: %w", why, err)
	}
	return err
}

func call[T any](h *hostClient, ctx context.Context, f func(context.Context) (T, error)) (T, error) {
	cctx, done := h.bind(ctx)
	defer done()
	v, err := f(cctx)
	return v, h.wrap(cctx, err)
}

func call0(h *hostClient, ctx context.Context, f func(context.Context) error) error {
	cctx, done := h.bind(ctx)
	defer done()
	return h.wrap(cctx, f(cctx))
}

func (h *hostClient) Ping(ctx context.Context) (types.Ping, error) {
	return call(h, ctx, h.api.Ping)
}

func (h *hostClient) Info(ctx context.Context) (system.Info, error) {
	return call(h, ctx, h.api.Info)
}

func (h *hostClient) ImageInspect(ctx context.Context, id string, opts ...client.ImageInspectOption) (image.InspectResponse, error) {
	return call(h, ctx, func(ctx context.Context) (image.InspectResponse, error) { return h.api.ImageInspect(ctx, id, opts...) })
}

func (h *hostClient) ImagePull(ctx context.Context, ref string, o image.PullOptions) (io.ReadCloser, error) {
	cctx := h.bindStream(ctx)
	r, err := h.api.ImagePull(cctx, ref, o)
	return r, h.wrap(cctx, err)
}

func (h *hostClient) NetworkInspect(ctx context.Context, id string, o network.InspectOptions) (network.Inspect, error) {
	return call(h, ctx, func(ctx context.Context) (network.Inspect, error) { return h.api.NetworkInspect(ctx, id, o) })
}

func (h *hostClient) NetworkCreate(ctx context.Context, name string, o network.CreateOptions) (network.CreateResponse, error) {
	return call(h, ctx, func(ctx context.Context) (network.CreateResponse, error) { return h.api.NetworkCreate(ctx, name, o) })
}

func (h *hostClient) NetworkRemove(ctx context.Context, id string) error {
	return call0(h, ctx, func(ctx context.Context) error { return h.api.NetworkRemove(ctx, id) })
}

func (h *hostClient) ContainerCreate(ctx context.Context, cc *container.Config, hc *container.HostConfig, nc *network.NetworkingConfig, pl *ocispec.Platform, name string) (container.CreateResponse, error) {
	return call(h, ctx, func(ctx context.Context) (container.CreateResponse, error) {
		return h.api.ContainerCreate(ctx, cc, hc, nc, pl, name)
	})
}

func (h *hostClient) ContainerStart(ctx context.Context, id string, o container.StartOptions) error {
	return call0(h, ctx, func(ctx context.Context) error { return h.api.ContainerStart(ctx, id, o) })
}

func (h *hostClient) ContainerRemove(ctx context.Context, id string, o container.RemoveOptions) error {
	return call0(h, ctx, func(ctx context.Context) error { return h.api.ContainerRemove(ctx, id, o) })
}

func (h *hostClient) ContainerInspect(ctx context.Context, id string) (container.InspectResponse, error) {
	return call(h, ctx, func(ctx context.Context) (container.InspectResponse, error) { return h.api.ContainerInspect(ctx, id) })
}

func (h *hostClient) ContainerList(ctx context.Context, o container.ListOptions) ([]container.Summary, error) {
	return call(h, ctx, func(ctx context.Context) ([]container.Summary, error) { return h.api.ContainerList(ctx, o) })
}

func (h *hostClient) ContainerRename(ctx context.Context, id, name string) error {
	return call0(h, ctx, func(ctx context.Context) error { return h.api.ContainerRename(ctx, id, name) })
}

func (h *hostClient) ContainerDiff(ctx context.Context, id string) ([]container.FilesystemChange, error) {
	return call(h, ctx, func(ctx context.Context) ([]container.FilesystemChange, error) { return h.api.ContainerDiff(ctx, id) })
}

func (h *hostClient) ContainerAttach(ctx context.Context, id string, o container.AttachOptions) (types.HijackedResponse, error) {
	cctx := h.bindStream(ctx)
	r, err := h.api.ContainerAttach(cctx, id, o)
	return r, h.wrap(cctx, err)
}

func (h *hostClient) CopyToContainer(ctx context.Context, id, dst string, content io.Reader, o container.CopyToContainerOptions) error {
	return call0(h, ctx, func(ctx context.Context) error { return h.api.CopyToContainer(ctx, id, dst, content, o) })
}

func (h *hostClient) CopyFromContainer(ctx context.Context, id, src string) (io.ReadCloser, container.PathStat, error) {
	cctx := h.bindStream(ctx)
	r, st, err := h.api.CopyFromContainer(cctx, id, src)
	return r, st, h.wrap(cctx, err)
}

func (h *hostClient) ContainerStatPath(ctx context.Context, id, path string) (container.PathStat, error) {
	return call(h, ctx, func(ctx context.Context) (container.PathStat, error) { return h.api.ContainerStatPath(ctx, id, path) })
}

func (h *hostClient) ContainerExecCreate(ctx context.Context, id string, o container.ExecOptions) (container.ExecCreateResponse, error) {
	return call(h, ctx, func(ctx context.Context) (container.ExecCreateResponse, error) {
		return h.api.ContainerExecCreate(ctx, id, o)
	})
}

func (h *hostClient) ContainerExecAttach(ctx context.Context, id string, o container.ExecAttachOptions) (types.HijackedResponse, error) {
	cctx := h.bindStream(ctx)
	r, err := h.api.ContainerExecAttach(cctx, id, o)
	return r, h.wrap(cctx, err)
}

func (h *hostClient) ContainerExecInspect(ctx context.Context, id string) (container.ExecInspect, error) {
	return call(h, ctx, func(ctx context.Context) (container.ExecInspect, error) { return h.api.ContainerExecInspect(ctx, id) })
}

func (h *hostClient) ContainerExecResize(ctx context.Context, id string, o container.ResizeOptions) error {
	return call0(h, ctx, func(ctx context.Context) error { return h.api.ContainerExecResize(ctx, id, o) })
}

// Events follows the host's events until ctx or the epoch ends: a stream
// that a silent network drop left open is closed when the host goes out,
// and the pool's watcher subscribes again (at once, when the host is back:
// Pool.kickEvents).
func (h *hostClient) Events(ctx context.Context, o events.ListOptions) (<-chan events.Message, <-chan error) {
	return h.api.Events(h.bindStream(ctx), o)
}

var _ DockerAPI = (*hostClient)(nil)
