package dockerpool

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"

	"github.com/docker/docker/api/types"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/events"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/api/types/system"
	"github.com/docker/docker/client"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// DockerAPI is the narrow seam between a pool and the Docker Engine: the
// calls the pool makes, and nothing else. *client.Client from
// github.com/docker/docker/client satisfies it, and so can a wrapper of your
// own (one that traces or meters every call, retries, or goes through a
// proxy) or an in-memory fake for tests. Set it as Config.Client.
//
// The pool calls these methods from several goroutines at once, each with a
// context that bounds the call (Config.DockerTimeout, or the caller's ctx for
// Exec and file transfers).
type DockerAPI interface {
	Ping(ctx context.Context) (types.Ping, error)
	Info(ctx context.Context) (system.Info, error)

	ImageInspect(ctx context.Context, imageID string, opts ...client.ImageInspectOption) (image.InspectResponse, error)
	ImagePull(ctx context.Context, ref string, options image.PullOptions) (io.ReadCloser, error)

	NetworkInspect(ctx context.Context, networkID string, options network.InspectOptions) (network.Inspect, error)
	NetworkCreate(ctx context.Context, name string, options network.CreateOptions) (network.CreateResponse, error)
	NetworkRemove(ctx context.Context, networkID string) error

	ContainerCreate(ctx context.Context, config *container.Config, hostConfig *container.HostConfig, networkingConfig *network.NetworkingConfig, platform *ocispec.Platform, containerName string) (container.CreateResponse, error)
	ContainerStart(ctx context.Context, containerID string, options container.StartOptions) error
	ContainerRemove(ctx context.Context, containerID string, options container.RemoveOptions) error
	ContainerInspect(ctx context.Context, containerID string) (container.InspectResponse, error)
	ContainerList(ctx context.Context, options container.ListOptions) ([]container.Summary, error)
	ContainerRename(ctx context.Context, containerID, newContainerName string) error
	ContainerDiff(ctx context.Context, containerID string) ([]container.FilesystemChange, error)

	ContainerAttach(ctx context.Context, containerID string, options container.AttachOptions) (types.HijackedResponse, error)
	CopyToContainer(ctx context.Context, containerID, dstPath string, content io.Reader, options container.CopyToContainerOptions) error
	CopyFromContainer(ctx context.Context, containerID, srcPath string) (io.ReadCloser, container.PathStat, error)
	ContainerStatPath(ctx context.Context, containerID, path string) (container.PathStat, error)

	ContainerExecCreate(ctx context.Context, containerID string, options container.ExecOptions) (container.ExecCreateResponse, error)
	ContainerExecAttach(ctx context.Context, execID string, config container.ExecAttachOptions) (types.HijackedResponse, error)
	ContainerExecInspect(ctx context.Context, execID string) (container.ExecInspect, error)
	ContainerExecResize(ctx context.Context, execID string, options container.ResizeOptions) error

	Events(ctx context.Context, options events.ListOptions) (<-chan events.Message, <-chan error)
}

var _ DockerAPI = (*client.Client)(nil)

// Labels the pool puts on its containers and networks.
const (
	// LabelPool carries Config.Name on every container and network of a pool.
	LabelPool = "dockerpool.pool"
	// LabelConfig carries a hash of the image and configuration a container
	// was made from; New adopts only containers whose hash matches.
	LabelConfig = "dockerpool.config"
	// LabelInstance carries a random ID of the Pool value that created the
	// container, to tell in `docker ps` which process made it.
	LabelInstance = "dockerpool.instance"
)

// configHash is a short, stable digest of everything that makes one pool's
// containers interchangeable with another's: the image (by ID, so a rebuilt
// tag counts as different), the container and host configuration, and the
// network.
func configHash(imageID string, cc *container.Config, hc *container.HostConfig, nc *network.NetworkingConfig) string {
	h := sha256.New()
	enc := json.NewEncoder(h)
	// Encoding these plain structs cannot fail; maps are encoded sorted.
	_ = enc.Encode(imageID)
	_ = enc.Encode(cc)
	_ = enc.Encode(hc)
	_ = enc.Encode(nc)
	return hex.EncodeToString(h.Sum(nil))[:16]
}

// Names the pool gives a container once an exec ran in it ("used"), and
// after a reset cleaned it ("clean"). Docker keeps no record of past execs
// that a later process could read (the inspect's ExecIDs lists only running
// ones), so the name is how New tells an untouched container from one that
// somebody used.
const (
	usedNamePrefix  = "dockerpool-used-"
	cleanNamePrefix = "dockerpool-clean-"
)

// shortID shortens a container ID for messages, as the docker CLI does.
func shortID(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}
