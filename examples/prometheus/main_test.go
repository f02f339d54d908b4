package main

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/dockerpool/dockerpool"
	"github.com/dockerpool/dockerpool/dockerpooltest"
)

// The example as an operator sees it: the pool runs a few commands, and a
// scrape of /metrics finds every metric of the README's Monitoring section
// with values that fit what happened.
func TestPrometheusScrapeFindsThePoolsMetrics(t *testing.T) {
	cli := dockerpooltest.Client(t) // skip (or, under CI, fail) without a daemon
	cfg := dockerpooltest.Config(t, dockerpool.Config{MinIdle: 2, MaxIdle: 4, MaxUses: 3})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	ready := make(chan struct{})
	ran := make(chan error, 1)
	go func() { ran <- run(ctx, ln, 20*time.Millisecond, cfg, ready) }()
	t.Cleanup(func() {
		cancel()
		if err := <-ran; err != nil {
			t.Errorf("run: %v", err)
		}
		dockerpooltest.AssertClean(t, cli, cfg.Name)
	})
	select {
	case <-ready:
	case err := <-ran:
		t.Fatalf("run ended before the pool was warm: %v", err)
	case <-ctx.Done():
		t.Fatal("the pool was not warm within 2 minutes")
	}
	url := "http://" + ln.Addr().String() + "/metrics"
	pool := `dockerpool_pool_name="` + cfg.Name + `"`
	var m metrics
	deadline := time.Now().Add(time.Minute)
	for { // until a few runs have gone through, one removal for MaxUses included
		m = scrape(t, url)
		if m.get(`dockerpool_acquires_total`, pool, `dockerpool_acquire_result="hit"`) >= 5 &&
			m.get(`dockerpool_container_removals_total`, pool, `dockerpool_removal_reason="max-uses"`) >= 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after a minute, not 5 warm acquires and one removal for max-uses:\n%s", m.text)
		}
		time.Sleep(100 * time.Millisecond) // polling an endpoint: nothing to await
	}
	t.Logf("scraped:\n%s", m.dockerpool())
	hits := m.get(`dockerpool_acquires_total`, pool, `dockerpool_acquire_result="hit"`)
	execs := m.get(`dockerpool_exec_duration_seconds_count`, pool, `dockerpool_exec_path="docker"`)
	if execs < hits-1 || execs > hits+1 {
		t.Errorf("%v execs for %v warm acquires", execs, hits)
	}
	if sum := m.get(`dockerpool_exec_duration_seconds_sum`, pool, `dockerpool_exec_path="docker"`); sum <= 0 || sum/execs > 5 {
		t.Errorf("exec durations: %v s for %v execs", sum, execs)
	}
	if n := m.get(`dockerpool_acquire_duration_seconds_count`, pool, `dockerpool_acquire_result="hit"`); n != hits {
		t.Errorf("%v acquire durations for %v warm acquires", n, hits)
	}
	if n := m.get(`dockerpool_file_transfer_duration_seconds_count`, pool, `dockerpool_file_operation="write"`); n < hits-1 {
		t.Errorf("%v file writes timed for %v acquires", n, hits)
	}
	created := m.get(`dockerpool_container_creations_total`, pool)
	if created < 3 || m.get(`dockerpool_container_creation_duration_seconds_count`, pool) < 3 {
		t.Errorf("%v containers created: expected 2 at the start, and one after a removal at least", created)
	}
	if n := m.get(`dockerpool_container_creation_errors_total`, pool); n != 0 {
		t.Errorf("%v creation errors", n)
	}
	if idle, in := m.get(`dockerpool_containers`, pool, `dockerpool_container_state="idle"`), m.get(`dockerpool_containers`, pool, `dockerpool_container_state="in_use"`); idle+in < 1 || idle+in > 4 || in > 1 {
		t.Errorf("%v idle, %v in use", idle, in)
	}
	if m.get(`dockerpool_waiters`, pool) != 0 || m.get(`dockerpool_daemon_healthy`, pool) != 1 {
		t.Errorf("waiters or daemon health wrong:\n%s", m.dockerpool())
	}
	if m.get(`dockerpool_container_removal_duration_seconds_count`, pool) < 1 {
		t.Errorf("no removal timed")
	}
}

// metrics is a scrape in Prometheus's text format.
type metrics struct {
	text   string
	values map[string][]sample
}

type sample struct {
	labels string
	value  float64
}

// get returns the value of the one series of name whose labels contain
// every one of labels, or -1 when there is none.
func (m metrics) get(name string, labels ...string) float64 {
	for _, s := range m.values[name] {
		ok := true
		for _, l := range labels {
			ok = ok && strings.Contains(s.labels, l)
		}
		if ok {
			return s.value
		}
	}
	return -1
}

// dockerpool returns the pool's lines of the scrape.
func (m metrics) dockerpool() string {
	var b strings.Builder
	for _, l := range strings.Split(m.text, "\n") {
		if strings.HasPrefix(l, "dockerpool_") && !strings.Contains(l, "_bucket{") {
			b.WriteString(l + "\n")
		}
	}
	return b.String()
}

func scrape(t *testing.T, url string) metrics {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("scrape: %v", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("scrape: %s, %v", resp.Status, err)
	}
	m := metrics{text: string(body), values: map[string][]sample{}}
	sc := bufio.NewScanner(strings.NewReader(m.text))
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		name, labels, value, err := parseLine(line)
		if err != nil {
			t.Fatalf("scrape: line %q: %v", line, err)
		}
		m.values[name] = append(m.values[name], sample{labels, value})
	}
	return m
}

// parseLine splits `name{labels} value`.
func parseLine(line string) (name, labels string, value float64, err error) {
	sp := strings.LastIndexByte(line, ' ')
	if sp < 0 {
		return "", "", 0, errors.New("no value")
	}
	value, err = strconv.ParseFloat(line[sp+1:], 64)
	head := line[:sp]
	if i := strings.IndexByte(head, '{'); i >= 0 {
		return head[:i], head[i:], value, err
	}
	return head, "", value, err
}
