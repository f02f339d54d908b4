package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/docker/docker/client"

	"github.com/dockerpool/dockerpool"
)

// The demo's -hosts mode: the -templates group spread over several Docker
// daemons (dockerpool.GroupConfig.Hosts), each named by its URL and capped
// at hostMaxSize containers. run shows the host of the container it used,
// stats each host's health and counts.

// hostMaxSize is each host's cap in the -hosts mode.
const hostMaxSize = 4

// connectHosts makes a client per URL of -hosts (client.WithHost, API
// version negotiation; for tcp:// URLs, TLS from DOCKER_CERT_PATH and
// DOCKER_TLS_VERIFY when DOCKER_CERT_PATH is set) and checks that each
// daemon answers. The clients are the caller's to close, on error too.
func connectHosts(ctx context.Context, list string) ([]dockerpool.Host, []*client.Client, error) {
	var hosts []dockerpool.Host
	var clis []*client.Client
	for _, u := range strings.Split(list, ",") {
		u = strings.TrimSpace(u)
		if u == "" {
			continue
		}
		opts := []client.Opt{client.WithHost(u), client.WithAPIVersionNegotiation()}
		if strings.HasPrefix(u, "tcp://") && os.Getenv("DOCKER_CERT_PATH") != "" {
			opts = append(opts, client.WithTLSClientConfigFromEnv())
		}
		cli, err := client.NewClientWithOpts(opts...)
		if err != nil {
			return nil, clis, fmt.Errorf("docker client for %s: %w", u, err)
		}
		clis = append(clis, cli)
		pctx, cancel := context.WithTimeout(ctx, pingTimeout)
		_, err = cli.Ping(pctx)
		cancel()
		if err != nil {
			return nil, clis, fmt.Errorf("cannot reach the Docker daemon at %s: %w", u, err)
		}
		hosts = append(hosts, dockerpool.Host{Name: u, Client: cli, MaxSize: hostMaxSize})
	}
	if len(hosts) == 0 {
		return nil, clis, errors.New("-hosts names no host")
	}
	return hosts, clis, nil
}

// runHosts is the -hosts mode: the image is chosen (built) on every host,
// then the group runs until quit.
func runHosts(ctx context.Context, opts options, stdin io.Reader, stdout, stderr io.Writer) int {
	hosts, clis, err := connectHosts(ctx, opts.hosts)
	defer func() {
		for _, c := range clis {
			c.Close()
		}
	}()
	if err != nil {
		fmt.Fprintf(stderr, "demo: %v\n", err)
		return 1
	}
	var img dockerpool.ImageConfig
	for i, cli := range clis {
		im, why := chooseImage(ctx, cli, opts.image)
		if ctx.Err() != nil {
			fmt.Fprintln(stderr, "demo: interrupted")
			return 1
		}
		fmt.Fprintf(stdout, "image on %s: %s (%s)\n", hosts[i].Name, im.Name, why)
		if i == 0 {
			img = im
		}
	}
	g, err := startGroup(ctx, nil, opts, img, stderr, hosts)
	if err != nil {
		fmt.Fprintf(stderr, "demo: %v%s\n", oneLine(err), hint(err, opts))
		return 1
	}
	return groupLoop(ctx, g, opts, stdin, stdout)
}

// printHostStats prints each host's line of the group's stats.
func printHostStats(st dockerpool.GroupStats, stdout io.Writer) {
	for _, name := range slices.Sorted(maps.Keys(st.Hosts)) {
		h := st.Hosts[name]
		state := "healthy"
		if !h.Healthy {
			state = "OUT"
		}
		fmt.Fprintf(stdout, "  host %s: %s since %s, used %d of %d, idle %d, in use %d, outages %d",
			name, state, h.Since.Format(time.TimeOnly), h.Used, h.MaxSize, h.Idle, h.InUse, h.Outages)
		if h.LastError != "" {
			fmt.Fprintf(stdout, ", last error: %s", oneLine(errors.New(h.LastError)))
		}
		fmt.Fprintln(stdout)
	}
}
