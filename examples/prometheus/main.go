// Command prometheus runs a pool whose metrics are served at /metrics for
// Prometheus to scrape, through OpenTelemetry's Prometheus exporter.
//
// The pool is given no provider: it uses OpenTelemetry's global one, which
// the program installs first. That is all a program that already set up
// OpenTelemetry has to do. This is a module of its own, so that the
// library's dependencies do not grow by the SDK and the exporter.
//
//	go run . -addr localhost:9464 &
//	curl -s localhost:9464/metrics | grep dockerpool_
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/otel"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"

	"github.com/dockerpool/dockerpool"
	"github.com/dockerpool/dockerpool/dockerpooltest"
)

func main() {
	addr := flag.String("addr", "localhost:9464", "where to serve /metrics")
	every := flag.Duration("every", time.Second, "how often to run a command")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Fatal(err)
	}
	// A tiny busybox image built locally, so that this runs without a
	// registry. In your program, name your own image.
	image, err := dockerpooltest.LocalImage(ctx)
	if err != nil {
		log.Fatal(err)
	}
	cfg := dockerpool.Config{
		Name:       "prometheus-example",
		Network:    dockerpool.NetworkConfig{Name: "none"},
		HostConfig: &container.HostConfig{NetworkMode: "none"},
		Image:      dockerpool.ImageConfig{Name: image},
		MinIdle:    2,
		MaxUses:    3, // so that removals show up, by reason
		// No MeterProvider: the global one that run sets.
	}
	if err := run(ctx, ln, *every, cfg, nil); err != nil {
		log.Fatal(err)
	}
}

// run serves /metrics on ln, starts a pool of cfg and runs a command in it
// every interval until ctx ends. ready, when set, is closed once the pool
// is warm and serving.
func run(ctx context.Context, ln net.Listener, every time.Duration, cfg dockerpool.Config, ready chan<- struct{}) error {
	// OpenTelemetry, set up as a program would: a registry of its own,
	// the exporter reading the SDK's meters into it, the SDK as the
	// global provider.
	reg := prometheus.NewRegistry()
	exporter, err := otelprom.New(otelprom.WithRegisterer(reg))
	if err != nil {
		return err
	}
	provider := sdkmetric.NewMeterProvider(sdkmetric.WithReader(exporter))
	defer provider.Shutdown(context.Background())
	otel.SetMeterProvider(provider)

	srv := &http.Server{Handler: promhttp.HandlerFor(reg, promhttp.HandlerOpts{}), ReadHeaderTimeout: 5 * time.Second}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	defer srv.Close()

	pool, err := dockerpool.New(ctx, cfg)
	if err != nil {
		return err
	}
	defer pool.Shutdown(context.Background())
	if err := pool.WaitIdle(ctx, 2); err != nil {
		return err
	}
	if ready != nil {
		close(ready)
	}
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		if err := once(ctx, pool); err != nil && ctx.Err() == nil {
			log.Printf("run: %v", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case err := <-served:
			return fmt.Errorf("serve /metrics: %w", err)
		case <-tick.C:
		}
	}
}

// once runs one command in a warm container and writes a file in it.
func once(ctx context.Context, pool *dockerpool.Pool) error {
	c, err := pool.Acquire(ctx)
	if err != nil {
		return err
	}
	defer pool.Return(context.Background(), c)
	_, err = c.ExecStd(ctx, []string{"sh", "-c", "echo hello"}, dockerpool.ExecOptions{Timeout: 5 * time.Second})
	return errors.Join(err, c.WriteFile(ctx, "/tmp/hello", []byte("hello\n"), 0o644))
}
