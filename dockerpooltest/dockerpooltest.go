// Package dockerpooltest helps test code that uses dockerpool, in the spirit
// of net/http/httptest: it builds a tiny image offline, starts pools with
// test-friendly defaults that are shut down when the test ends, and checks
// that nothing of a pool is left on the daemon.
//
//	func TestJudge(t *testing.T) {
//		pool := dockerpooltest.NewPool(t, dockerpool.Config{MinIdle: 2})
//		c, err := pool.Acquire(t.Context())
//		...
//	}
//
// The tests need a Docker daemon (DOCKER_HOST and friends are honoured) and a
// static busybox on the machine (Debian: apt-get install busybox-static).
// Without a daemon the tests are skipped, unless the CI variable is set: then
// they fail, so that a broken CI machine cannot pass by skipping everything.
package dockerpooltest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/client"

	"github.com/dockerpool/dockerpool"
)

// LabelTest is put on every container of a pool made by NewPool, with the
// test's name, so that leftovers can be traced to their test.
const LabelTest = "dockerpool.test"

// ShutdownTimeout bounds the Shutdown that NewPool registers with t.Cleanup.
var ShutdownTimeout = 20 * time.Second

var (
	clientOnce sync.Once
	sharedCli  *client.Client
	clientErr  error

	imageMu  sync.Mutex
	imageRef string
)

// Client returns a Docker client made from the environment, shared by the
// whole test binary. When no daemon answers, the test is skipped, or fails if
// the CI environment variable is set.
func Client(t testing.TB) *client.Client {
	t.Helper()
	clientOnce.Do(func() {
		sharedCli, clientErr = client.NewClientWithOpts(client.FromEnv, client.WithAPIVersionNegotiation())
		if clientErr != nil {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, clientErr = sharedCli.Ping(ctx)
	})
	if clientErr != nil {
		unavailable(t, "no Docker daemon: %v", clientErr)
	}
	return sharedCli
}

// CloseClient closes the shared client of Client, which ends its idle
// keep-alive connections (and their goroutines). Call it from TestMain after
// m.Run, before a goroutine leak check.
func CloseClient() {
	if sharedCli != nil {
		_ = sharedCli.Close()
	}
}

// Image returns the image tests should run: $DOCKERPOOL_TEST_IMAGE when set,
// else the busybox image of BuildImage, built on first use. Without a static
// busybox the test is skipped, or fails under CI.
func Image(t testing.TB) string {
	t.Helper()
	if ref := os.Getenv("DOCKERPOOL_TEST_IMAGE"); ref != "" {
		return ref
	}
	cli := Client(t)
	imageMu.Lock()
	defer imageMu.Unlock()
	if imageRef != "" {
		return imageRef
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	ref, err := BuildImage(ctx, cli, ImageOptions{})
	if err != nil {
		unavailable(t, "no test image: %v", err)
	}
	imageRef = ref
	return ref
}

func unavailable(t testing.TB, format string, args ...any) {
	t.Helper()
	if os.Getenv("CI") != "" {
		t.Fatalf("dockerpooltest: "+format+" (CI is set: this is a failure, not a skip)", args...)
	}
	t.Skipf("dockerpooltest: "+format, args...)
}

// Name returns a pool name unique to this test and run, readable in
// `docker ps`.
func Name(t testing.TB) string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	base := strings.ToLower(nameClean.ReplaceAllString(t.Name(), "-"))
	if len(base) > 40 {
		base = base[len(base)-40:]
	}
	return "dptest-" + strings.Trim(base, "-") + "-" + hex.EncodeToString(b[:])
}

var nameClean = regexp.MustCompile(`[^a-zA-Z0-9]+`)

// Config returns cfg with test-friendly defaults in its zero fields: a unique
// Name, the test Image, no network (Network "none"), MinIdle 1, MaxIdle 4,
// errors reported with t.Logf, and the LabelTest label.
func Config(t testing.TB, cfg dockerpool.Config) dockerpool.Config {
	t.Helper()
	if cfg.Name == "" {
		cfg.Name = Name(t)
	}
	if cfg.Image.Name == "" {
		cfg.Image.Name = Image(t)
	}
	if cfg.Network.Name == "" {
		cfg.Network.Name = "none"
		if cfg.HostConfig == nil {
			cfg.HostConfig = &container.HostConfig{}
		}
		if cfg.HostConfig.NetworkMode == "" {
			hc := *cfg.HostConfig
			hc.NetworkMode = "none"
			cfg.HostConfig = &hc
		}
	}
	if cfg.MinIdle == 0 {
		cfg.MinIdle = 1
	}
	if cfg.MaxIdle == 0 {
		cfg.MaxIdle = max(4, cfg.MinIdle)
	}
	if cfg.OnError == nil {
		cfg.OnError = func(err error) { t.Logf("pool %s: %v", cfg.Name, err) }
	}
	labels := map[string]string{LabelTest: t.Name()}
	for k, v := range cfg.Labels {
		labels[k] = v
	}
	cfg.Labels = labels
	return cfg
}

// NewPool starts a pool from Config(t, cfg) and registers its end with
// t.Cleanup: Shutdown, then AssertClean. It fails the test when New fails.
func NewPool(t testing.TB, cfg dockerpool.Config) *dockerpool.Pool {
	t.Helper()
	cfg = Config(t, cfg)
	cli := Client(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	p, err := dockerpool.New(ctx, cfg)
	if err != nil {
		SweepPool(cli, cfg.Name)
		t.Fatalf("dockerpooltest: New: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), ShutdownTimeout)
		defer cancel()
		if err := p.Shutdown(ctx); err != nil {
			t.Errorf("dockerpooltest: Shutdown of pool %s: %v", cfg.Name, err)
		}
		AssertClean(t, cli, cfg.Name)
	})
	return p
}

// Leftovers lists the containers of the named pool still on the daemon.
func Leftovers(cli *client.Client, poolName string) ([]container.Summary, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return cli.ContainerList(ctx, container.ListOptions{
		All:     true,
		Filters: filters.NewArgs(filters.Arg("label", dockerpool.LabelPool+"="+poolName)),
	})
}

// AssertClean fails the test when containers of the named pool are still on
// the daemon, and removes them so that one failure does not leak into the
// next test.
func AssertClean(t testing.TB, cli *client.Client, poolName string) {
	t.Helper()
	left, err := Leftovers(cli, poolName)
	if err != nil {
		t.Errorf("dockerpooltest: list containers of pool %s: %v", poolName, err)
		return
	}
	if len(left) > 0 {
		var ids []string
		for _, c := range left {
			ids = append(ids, c.ID[:12]+" ("+c.State+")")
		}
		t.Errorf("dockerpooltest: pool %s left %d container(s): %s", poolName, len(left), strings.Join(ids, ", "))
		SweepPool(cli, poolName)
	}
}

// SweepPool force-removes every container of the named pool. Use it in
// cleanups of tests that bypass Shutdown on purpose.
func SweepPool(cli *client.Client, poolName string) {
	left, _ := Leftovers(cli, poolName)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, c := range left {
		_ = cli.ContainerRemove(ctx, c.ID, container.RemoveOptions{Force: true, RemoveVolumes: true})
	}
}
