package main

import (
	"errors"
	"flag"
	"io"
	"slices"
	"testing"
	"time"

	"github.com/dockerpool/dockerpool"
)

func TestPercentile(t *testing.T) {
	t.Parallel()
	var d []time.Duration
	for i := 1; i <= 20; i++ {
		d = append(d, time.Duration(i)*time.Millisecond)
	}
	for _, tt := range []struct {
		p    float64
		want time.Duration
	}{{0.50, 10 * time.Millisecond}, {0.95, 19 * time.Millisecond}, {1, 20 * time.Millisecond}} {
		if got := percentile(d, tt.p); got != tt.want {
			t.Errorf("percentile(1..20ms, %v) = %v, want %v", tt.p, got, tt.want)
		}
	}
	if got := percentile(d[:1], 0.95); got != time.Millisecond {
		t.Errorf("percentile of one value = %v, want it", got)
	}
	if got := percentile(nil, 0.5); got != 0 {
		t.Errorf("percentile(nil) = %v, want 0", got)
	}
}

func TestFormatStats(t *testing.T) {
	t.Parallel()
	var st dockerpool.Stats
	st.Idle, st.Total, st.DaemonHealthy = 3, 3, true
	st.Removed = 5
	st.RemovedBy = map[dockerpool.RemoveReason]int64{dockerpool.ReasonDied: 3, dockerpool.ReasonShutdown: 2}
	lines := formatStats(st)
	if want := "removed 5 (died 3, shutdown 2)"; !slices.Contains(lines, want) {
		t.Errorf("formatStats: no line %q in %q", want, lines)
	}
	if want := "docker daemon: healthy"; !slices.Contains(lines, want) {
		t.Errorf("formatStats: no line %q in %q", want, lines)
	}
	if got := reasonsSince(st, st); got != "" {
		t.Errorf("reasonsSince with no change = %q, want empty", got)
	}
}

func TestParseFlags(t *testing.T) {
	t.Parallel()
	o, err := parseFlags(nil, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	want := options{name: "dockerpool-demo", minIdle: 3, maxIdle: 6, network: "none", timeout: 10 * time.Second}
	if o != want {
		t.Errorf("defaults = %+v, want %+v", o, want)
	}
	if _, err := parseFlags([]string{"-h"}, io.Discard); !errors.Is(err, flag.ErrHelp) {
		t.Errorf("-h: err = %v, want flag.ErrHelp", err)
	}
	for _, args := range [][]string{
		{"-min-idle", "0"},
		{"-min-idle", "5", "-max-idle", "4"},
		{"-timeout", "-1s"},
		{"-name", ""},
		{"extra"},
		{"-no-such-flag"},
	} {
		if _, err := parseFlags(args, io.Discard); err == nil {
			t.Errorf("parseFlags(%q) accepted it", args)
		}
	}
}

func TestNetworkConfig(t *testing.T) {
	t.Parallel()
	nc, hc := networkConfig("none")
	if nc.Name != "none" || hc == nil || hc.NetworkMode != "none" {
		t.Errorf(`networkConfig("none") = %+v, %+v; want Name and NetworkMode "none"`, nc, hc)
	}
	nc, hc = networkConfig("bridge")
	if nc.Name != "bridge" || hc != nil {
		t.Errorf(`networkConfig("bridge") = %+v, %+v; want Name "bridge" and no HostConfig`, nc, hc)
	}
}
