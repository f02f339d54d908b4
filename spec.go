package dockerpool

import (
	"maps"
	"path"
	"slices"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/network"
)

// containerSpec is what every container of the pool is created from.
type containerSpec struct {
	config  *container.Config
	host    *container.HostConfig
	network *network.NetworkingConfig
	hash    string
}

// buildSpec merges the user's configuration with the pool's own labels and
// defaults. imageID is the resolved image, for the configuration hash.
func buildSpec(s settings, imageID, instance string) containerSpec {
	var cc container.Config
	if s.ContainerConfig != nil {
		cc = *s.ContainerConfig
	}
	if cc.Image == "" {
		cc.Image = s.Image.Name
	}
	if len(cc.Cmd) == 0 {
		cc.Cmd = slices.Clone(s.Cmd)
	}
	labels := map[string]string{}
	maps.Copy(labels, cc.Labels)
	maps.Copy(labels, s.Labels)
	labels[LabelPool] = s.Name

	var hc container.HostConfig
	if s.HostConfig != nil {
		hc = *s.HostConfig
	}
	if hc.Init == nil {
		yes := true
		hc.Init = &yes
	}
	var nc *network.NetworkingConfig
	if hc.NetworkMode == "" {
		hc.NetworkMode = container.NetworkMode(s.Network.Name)
	}

	if a := s.agent; a != nil {
		// The agent is the main process, and talks on its stdin/stdout.
		cc.Entrypoint = []string{a.Path}
		cc.Cmd = nil
		cc.OpenStdin, cc.StdinOnce, cc.Tty = true, false, false
		cc.AttachStdin, cc.AttachStdout, cc.AttachStderr = true, true, true
		if hc.LogConfig.Type == "" {
			// Everything the agent writes is protocol (commands' output
			// included): keep it out of the container's log.
			hc.LogConfig.Type = "none"
		}
		if a.Binary != "" && hc.ReadonlyRootfs {
			// Docker copies onto a volume of a read-only container, not
			// onto its root: the agent gets an anonymous volume of its own,
			// removed with the container.
			cc.Volumes = maps.Clone(cc.Volumes)
			if cc.Volumes == nil {
				cc.Volumes = map[string]struct{}{}
			}
			cc.Volumes[path.Dir(a.Path)] = struct{}{}
		}
	}
	cc.Labels = labels
	hash := configHash(imageID, &cc, &hc, nc)
	cc.Labels = maps.Clone(labels)
	cc.Labels[LabelConfig] = hash
	cc.Labels[LabelInstance] = instance
	return containerSpec{config: &cc, host: &hc, network: nc, hash: hash}
}
