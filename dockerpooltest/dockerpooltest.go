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
	"flag"
	"fmt"
	"os"
	"path/filepath"
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

// LabelRun is put on every container, and every network a pool creates, of
// the pools made by Config, when the DOCKERPOOL_TEST_RUN variable is set: it
// carries its value. CI names each run so, and checks at the end that
// nothing labelled with it is left, without mistaking what other runs on
// the same daemon have.
const LabelRun = "dockerpool.testrun"

// RunID returns the name of this test run: $DOCKERPOOL_TEST_RUN, or "".
func RunID() string { return os.Getenv("DOCKERPOOL_TEST_RUN") }

// ShutdownTimeout bounds the Shutdown that NewPool registers with t.Cleanup.
var ShutdownTimeout = 20 * time.Second

// The daemon and the test image, found once per test binary; a failure is
// remembered too, so that every test skips (or fails) at once instead of
// trying again.
var (
	daemonOnce sync.Once
	sharedCli  *client.Client
	isPodman   bool
	clientErr  error

	imageOnce sync.Once
	imageRef  string
	imageErr  error
)

func connect() (*client.Client, error) {
	daemonOnce.Do(func() {
		sharedCli, clientErr = client.NewClientWithOpts(client.FromEnv, client.WithAPIVersionNegotiation())
		if clientErr != nil {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if _, clientErr = sharedCli.Ping(ctx); clientErr != nil {
			return
		}
		v, err := sharedCli.ServerVersion(ctx)
		if err != nil {
			clientErr = err
			return
		}
		for _, c := range v.Components {
			isPodman = isPodman || strings.Contains(c.Name, "Podman")
		}
	})
	return sharedCli, clientErr
}

func testImage() (string, error) {
	if ref := os.Getenv("DOCKERPOOL_TEST_IMAGE"); ref != "" {
		return ref, nil
	}
	cli, err := connect()
	if err != nil {
		return "", err
	}
	imageOnce.Do(func() {
		// Long enough for the pull of the pinned busybox (a megabyte).
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		imageRef, imageErr = BuildImage(ctx, cli, ImageOptions{})
	})
	return imageRef, imageErr
}

// Client returns a Docker client made from the environment, shared by the
// whole test binary. When no daemon answers, the test is skipped, or fails if
// the CI environment variable is set.
func Client(t testing.TB) *client.Client {
	t.Helper()
	cli, err := connect()
	if err != nil {
		unavailable(t, "no Docker daemon: %v", err)
	}
	return cli
}

// Podman reports whether the daemon is Podman's Docker-compatible service
// (docs/podman.md lists what differs). It skips or fails the test as Client
// does when no daemon answers.
func Podman(t testing.TB) bool {
	t.Helper()
	Client(t)
	return isPodman
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
// busybox, and without the pinned busybox image from a registry, the test is
// skipped, or fails under CI.
func Image(t testing.TB) string {
	t.Helper()
	Client(t)
	ref, err := testImage()
	if err != nil {
		unavailable(t, "no test image: %v", err)
	}
	return ref
}

// Skips of tests for want of a daemon or image, counted for SkipReport.
var skips struct {
	mu     sync.Mutex
	n      int
	reason string
}

// Unavailable skips t for want of something the machine lacks (a daemon, an
// image, a runtime), counted in SkipReport; under CI it fails t instead, so
// that a broken CI machine cannot pass by skipping.
func Unavailable(t testing.TB, format string, args ...any) {
	t.Helper()
	unavailable(t, format, args...)
}

func unavailable(t testing.TB, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf("dockerpooltest: "+format, args...)
	if os.Getenv("CI") != "" {
		t.Fatalf("%s (CI is set: this is a failure, not a skip)", msg)
		return
	}
	skips.mu.Lock()
	skips.n++
	if skips.reason == "" {
		skips.reason = msg
	}
	skips.mu.Unlock()
	t.Skip(msg)
}

// SkipReport returns one line that says how many tests of this test binary
// were skipped for want of a Docker daemon or a test image, and why; "" when
// none was.
func SkipReport() string {
	skips.mu.Lock()
	defer skips.mu.Unlock()
	if skips.n == 0 && !examplesSkipped {
		return ""
	}
	what := fmt.Sprintf("%d integration tests skipped", skips.n)
	if examplesSkipped {
		what += " (and the examples not run)"
	}
	reason := skips.reason
	if reason == "" {
		reason = examplesReason
	}
	pkg := strings.TrimSuffix(filepath.Base(os.Args[0]), ".test")
	return fmt.Sprintf("SKIPPED in %s: %s: %s (set CI=1 to make this a failure)", pkg, what, strings.TrimPrefix(reason, "dockerpooltest: "))
}

var (
	examplesSkipped bool
	examplesReason  string
)

// SkipExamplesIfUnavailable keeps the package's examples from running when
// there is no daemon or no test image, outside CI: an example cannot skip,
// and the log.Fatal of the first one would end the whole test binary.
// Call it in TestMain, before Run. Under CI the examples run, and fail.
func SkipExamplesIfUnavailable() {
	if os.Getenv("CI") != "" {
		return
	}
	if !flag.Parsed() {
		flag.Parse()
	}
	if _, err := testImage(); err == nil {
		return
	} else {
		examplesReason = err.Error()
	}
	f := flag.Lookup("test.skip")
	if f == nil {
		return
	}
	skip := "^Example"
	if old := f.Value.String(); old != "" {
		skip = old + "|" + skip
	}
	if f.Value.Set(skip) == nil {
		examplesSkipped = true
	}
}

// Main wraps m for TestMain: its Run runs the tests, removes the agent that
// Agent built, then prints SkipReport's line, if any, to stdout and to the
// terminal (go test shows a passing package's output only with -v; the
// terminal sees it anyway).
//
//	func TestMain(m *testing.M) { os.Exit(dockerpooltest.Main(m).Run()) }
func Main(m *testing.M) interface{ Run() int } { return mainRunner{m} }

type mainRunner struct{ m *testing.M }

func (r mainRunner) Run() int {
	code := r.m.Run()
	removeAgent()
	if line := SkipReport(); line != "" {
		fmt.Println(line)
		if tty, err := os.OpenFile("/dev/tty", os.O_WRONLY, 0); err == nil {
			fmt.Fprintln(tty, line)
			tty.Close()
		}
	}
	return code
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
	if run := RunID(); run != "" {
		labels[LabelRun] = run
		if cfg.Network.NeedsCreate {
			nl := map[string]string{LabelRun: run}
			for k, v := range cfg.Network.Labels {
				nl[k] = v
			}
			cfg.Network.Labels = nl
		}
	}
	for k, v := range cfg.Labels {
		labels[k] = v
	}
	cfg.Labels = labels
	if cfg.HostConfig != nil && len(cfg.HostConfig.Ulimits) > 0 && Podman(t) {
		cfg.HostConfig = withPodmanUlimits(t, cfg.HostConfig)
	}
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

// SweepPool force-removes every container of the named pool, listing again
// until none is left (for 30 seconds at most): Docker lists a container
// whose creation is still in progress before it can remove it, so one pass
// can miss the creations a killed process had in flight. Use it in cleanups
// of tests that bypass Shutdown on purpose.
func SweepPool(cli *client.Client, poolName string) {
	deadline := time.Now().Add(30 * time.Second)
	for wait := 50 * time.Millisecond; ; wait = min(2*wait, time.Second) {
		left, err := Leftovers(cli, poolName)
		if err == nil && len(left) == 0 || time.Now().After(deadline) {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		for _, c := range left {
			_ = cli.ContainerRemove(ctx, c.ID, container.RemoveOptions{Force: true, RemoveVolumes: true})
		}
		cancel()
		time.Sleep(wait) // the daemon announces no end of a creation: poll
	}
}
