package dockerpool

import (
	"context"
	"errors"
	"fmt"
	"path"
	"reflect"
	"sync"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"
	tracenoop "go.opentelemetry.io/otel/trace/noop"
)

// OpenTelemetry: the pool's instruments, made once in New, its attribute
// sets, precomputed so that recording allocates nothing, and its spans. The
// counters and histograms are recorded from the caller's goroutine (Acquire,
// Exec, file transfers) or a worker's (creation, removal, reset); the gauges
// read Stats in a callback, never the owner's state.

const scopeName = "github.com/dockerpool/dockerpool"

// The attribute keys, after OpenTelemetry's naming conventions.
const (
	keyPool      = attribute.Key("dockerpool.pool.name")
	keyState     = attribute.Key("dockerpool.container.state")
	keyReason    = attribute.Key("dockerpool.removal.reason")
	keyResult    = attribute.Key("dockerpool.acquire.result")
	keyPath      = attribute.Key("dockerpool.exec.path")
	keyOperation = attribute.Key("dockerpool.file.operation")
	keyContainer = attribute.Key("dockerpool.container.id")
	keyProgram   = attribute.Key("process.executable.name")
	keyError     = attribute.Key("error.type")
)

// secondsBuckets fit the pool's times, from a warm Acquire (well under a
// millisecond) to a creation or a long command (seconds to a minute).
var secondsBuckets = []float64{0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60}

// The classes of error.type; errNone is success.
const (
	errNone = iota
	errTimeout
	errCanceled
	errDead
	errLimit
	errOther
	numErrClasses
)

var errClassNames = [numErrClasses]string{"", "timeout", "canceled", "container_dead", "output_limit", "_OTHER"}

// errClass sorts an error into a low-cardinality class for error.type.
func errClass(err error) int {
	switch {
	case err == nil:
		return errNone
	case errors.Is(err, ErrExecTimeout), errors.Is(err, context.DeadlineExceeded):
		return errTimeout
	case errors.Is(err, context.Canceled):
		return errCanceled
	case errors.Is(err, ErrContainerDead):
		return errDead
	case errors.Is(err, ErrOutputLimitExceeded):
		return errLimit
	}
	return errOther
}

// The file operations, by the verb their frame names them with.
var transferOps = [...]struct{ verb, op, span string }{
	{"write file", "write", "dockerpool.WriteFile"},
	{"read file", "read", "dockerpool.ReadFile"},
	{"copy into", "copy_to", "dockerpool.CopyTo"},
	{"copy from", "copy_from", "dockerpool.CopyFrom"},
}

// opts are the precomputed options of one attribute set.
type opts struct {
	add []metric.AddOption
	rec []metric.RecordOption
}

func optsOf(attrs ...attribute.KeyValue) opts {
	o := metric.WithAttributeSet(attribute.NewSet(attrs...))
	return opts{add: []metric.AddOption{o}, rec: []metric.RecordOption{o}}
}

// telemetry is the pool's OpenTelemetry side; immutable after New.
type telemetry struct {
	meter    metric.Meter
	tracer   trace.Tracer
	tp       trace.TracerProvider
	global   bool // tp is OpenTelemetry's global placeholder
	noTraces bool // tp is a no-op provider
	base     []attribute.KeyValue
	spanOpts []trace.SpanStartOption // the base attributes, for every span

	acquires                            metric.Int64Counter
	acquireTime, execTime, createTime   metric.Float64Histogram
	resetTime, transferTime, removeTime metric.Float64Histogram
	acquireOpts                         [2]opts // hit, miss
	execOpts                            [2][numErrClasses]opts
	createOpts, resetOpts, removeOpts   [numErrClasses]opts
	transferOpts                        [len(transferOps)][numErrClasses]opts
	gauges                              []metric.Observable
	containers, waiters, healthy        metric.Int64ObservableGauge
	creations, creationErrors           metric.Int64ObservableCounter
	removals, removalErrors             metric.Int64ObservableCounter
	stateOpts                           [5]metric.ObserveOption
	reasonOpts                          [numReasons]metric.ObserveOption
	baseOpt                             metric.ObserveOption
	registration                        metric.Registration
	unregister                          sync.Once
}

// baseAttributes are the attributes of everything the pool reports: its
// name, then extra ones (a Group's template and host) that a caller adds.
func baseAttributes(name string, extra ...attribute.KeyValue) []attribute.KeyValue {
	return append([]attribute.KeyValue{keyPool.String(name)}, extra...)
}

// newTelemetry makes the instruments and attribute sets of a pool.
func newTelemetry(s settings, extra ...attribute.KeyValue) (*telemetry, error) {
	mp, tp := s.MeterProvider, s.TracerProvider
	if mp == nil {
		mp = otel.GetMeterProvider()
	}
	if tp == nil {
		tp = otel.GetTracerProvider()
	}
	t := &telemetry{tp: tp, base: baseAttributes(s.Name, extra...)}
	t.tracer = tp.Tracer(scopeName)
	t.global = isGlobalPlaceholder(tp)
	_, t.noTraces = tp.(tracenoop.TracerProvider)
	t.spanOpts = []trace.SpanStartOption{trace.WithAttributes(t.base...)}
	t.meter = mp.Meter(scopeName)
	if err := t.instruments(t.meter); err != nil {
		return nil, fmt.Errorf("dockerpool: OpenTelemetry instruments: %w", err)
	}
	t.attributeSets()
	return t, nil
}

// isGlobalPlaceholder reports whether tp is the provider
// otel.GetTracerProvider returns before the program installs one: it
// forwards to the installed one afterwards and records nothing until then.
func isGlobalPlaceholder(tp trace.TracerProvider) bool {
	ty := reflect.TypeOf(tp)
	return ty.Kind() == reflect.Pointer && ty.Elem().PkgPath() == "go.opentelemetry.io/otel/internal/global"
}

func (t *telemetry) instruments(m metric.Meter) error {
	hist := func(name, desc string) metric.Float64Histogram {
		h, err := m.Float64Histogram(name, metric.WithUnit("s"), metric.WithDescription(desc),
			metric.WithExplicitBucketBoundaries(secondsBuckets...))
		if err != nil {
			panic(err) // only a malformed name: our bug
		}
		return h
	}
	var err error
	t.acquires, err = m.Int64Counter("dockerpool.acquires", metric.WithUnit("{acquire}"),
		metric.WithDescription("Successful Acquire calls, by warm hit (a container was idle) or miss (the caller waited)."))
	t.acquireTime = hist("dockerpool.acquire.duration", "Time a successful Acquire took, its wait for a container included.")
	t.execTime = hist("dockerpool.exec.duration", "Time a command took, by path (docker, agent).")
	t.createTime = hist("dockerpool.container.creation.duration", "Time to create and start a container (and its agent).")
	t.resetTime = hist("dockerpool.container.reset.duration", "Time to reset a returned container (OnReturn, VerifiedReset, the agent's reset).")
	t.removeTime = hist("dockerpool.container.removal.duration", "Time to remove a container.")
	t.transferTime = hist("dockerpool.file.transfer.duration", "Time a file transfer took, by operation.")
	errs := []error{err}
	gauge := func(name, unit, desc string) metric.Int64ObservableGauge {
		g, err := m.Int64ObservableGauge(name, metric.WithUnit(unit), metric.WithDescription(desc))
		errs = append(errs, err)
		t.gauges = append(t.gauges, g)
		return g
	}
	counter := func(name, unit, desc string) metric.Int64ObservableCounter {
		c, err := m.Int64ObservableCounter(name, metric.WithUnit(unit), metric.WithDescription(desc))
		errs = append(errs, err)
		t.gauges = append(t.gauges, c)
		return c
	}
	t.containers = gauge("dockerpool.containers", "{container}", "Containers of the pool, by state (idle, in_use, creating, removing, checking).")
	t.waiters = gauge("dockerpool.waiters", "{caller}", "Acquire calls waiting for a container.")
	t.healthy = gauge("dockerpool.daemon.healthy", "", "1 while Docker answers, 0 while its calls fail.")
	t.creations = counter("dockerpool.container.creations", "{container}", "Containers created and started.")
	t.creationErrors = counter("dockerpool.container.creation.errors", "{error}", "Creations that failed.")
	t.removals = counter("dockerpool.container.removals", "{container}", "Containers removed, by reason.")
	t.removalErrors = counter("dockerpool.container.removal.errors", "{error}", "Removal attempts that failed (they are retried).")
	return errors.Join(errs...)
}

// attributeSets precomputes every attribute set a measurement uses.
func (t *telemetry) attributeSets() {
	with := func(more ...attribute.KeyValue) opts {
		return optsOf(append(append([]attribute.KeyValue{}, t.base...), more...)...)
	}
	classes := func(more ...attribute.KeyValue) (o [numErrClasses]opts) {
		for i := range o {
			if i == errNone {
				o[i] = with(more...)
			} else {
				o[i] = with(append(more, keyError.String(errClassNames[i]))...)
			}
		}
		return o
	}
	t.acquireOpts = [2]opts{with(keyResult.String("hit")), with(keyResult.String("miss"))}
	t.execOpts = [2][numErrClasses]opts{classes(keyPath.String("docker")), classes(keyPath.String("agent"))}
	t.createOpts, t.resetOpts, t.removeOpts = classes(), classes(), classes()
	for i, op := range transferOps {
		t.transferOpts[i] = classes(keyOperation.String(op.op))
	}
	set := func(more ...attribute.KeyValue) metric.ObserveOption {
		return metric.WithAttributeSet(attribute.NewSet(append(append([]attribute.KeyValue{}, t.base...), more...)...))
	}
	for i, st := range [...]string{"idle", "in_use", "creating", "removing", "checking"} {
		t.stateOpts[i] = set(keyState.String(st))
	}
	for r := range t.reasonOpts {
		t.reasonOpts[r] = set(keyReason.String(RemoveReason(r).String()))
	}
	t.baseOpt = set()
}

// observe registers the callback of the gauges and observable counters: it
// reads the pool's Stats. Called once the owner runs; stop undoes it.
func (t *telemetry) observe(p *Pool) error {
	reg, err := t.meter.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		st := p.Stats()
		for i, n := range [...]int{st.Idle, st.InUse, st.Creating, st.Removing, st.Checking} {
			o.ObserveInt64(t.containers, int64(n), t.stateOpts[i])
		}
		o.ObserveInt64(t.waiters, int64(st.Waiting), t.baseOpt)
		healthy := int64(0)
		if st.DaemonHealthy {
			healthy = 1
		}
		o.ObserveInt64(t.healthy, healthy, t.baseOpt)
		o.ObserveInt64(t.creations, st.Created, t.baseOpt)
		o.ObserveInt64(t.creationErrors, st.CreateErrors, t.baseOpt)
		o.ObserveInt64(t.removalErrors, st.RemoveErrors, t.baseOpt)
		for r, n := range st.RemovedBy {
			o.ObserveInt64(t.removals, n, t.reasonOpts[r])
		}
		return nil
	}, t.gauges...)
	t.registration = reg
	return err
}

// stop unregisters the callback; after the owner has exited, since a
// collection running the callback holds the SDK's lock while it waits for
// Stats.
func (t *telemetry) stop() {
	t.unregister.Do(func() {
		if t.registration != nil {
			_ = t.registration.Unregister()
		}
	})
}

// tracing reports whether a span would be recorded: not with a no-op
// provider, nor with the global placeholder before a program installed a
// provider (a span then costs allocations and records nothing).
func (t *telemetry) tracing() bool {
	return !t.noTraces && (!t.global || otel.GetTracerProvider() != t.tp)
}

// measure is one operation being timed and traced; its zero value records
// nothing.
type measure struct {
	span  trace.Span // nil when not tracing
	start time.Time  // zero when nothing needs the time
}

// begin starts timing an operation for h, and its span when tracing.
func (t *telemetry) begin(ctx context.Context, name string, h metric.Float64Histogram) (context.Context, measure) {
	var m measure
	if t.tracing() {
		ctx, m.span = t.tracer.Start(ctx, name, t.spanOpts...)
	}
	if m.span != nil || h.Enabled(ctx) {
		m.start = time.Now()
	}
	return ctx, m
}

// end records the operation's time in h with the attributes of its error's
// class, and ends its span with the error, if any.
func (m measure) end(ctx context.Context, h metric.Float64Histogram, o *[numErrClasses]opts, err error) {
	class := errClass(err)
	if !m.start.IsZero() {
		h.Record(ctx, time.Since(m.start).Seconds(), o[class].rec...)
	}
	m.finish(err, class)
}

func (m measure) finish(err error, class int) {
	if m.span == nil {
		return
	}
	if err != nil {
		m.span.SetAttributes(keyError.String(errClassNames[class]))
		m.span.RecordError(err)
		m.span.SetStatus(codes.Error, err.Error())
	}
	m.span.End()
}

// acquired records a successful or failed Acquire.
func (t *telemetry) acquired(ctx context.Context, m measure, c *Container, waited bool, err error) {
	if err == nil {
		i := 0
		if waited {
			i = 1
		}
		t.acquires.Add(ctx, 1, t.acquireOpts[i].add...)
		if !m.start.IsZero() {
			t.acquireTime.Record(ctx, time.Since(m.start).Seconds(), t.acquireOpts[i].rec...)
		}
		if m.span != nil {
			m.span.SetAttributes(keyResult.String([2]string{"hit", "miss"}[i]), keyContainer.String(shortID(c.id)))
		}
	}
	m.finish(err, errClass(err))
}

// beginExec starts the span and the timing of a command. Only the
// program's name goes on the span: arguments, environment and stdin may
// hold secrets.
func (t *telemetry) beginExec(ctx context.Context, c *Container, program string) (context.Context, measure) {
	ctx, m := t.begin(ctx, "dockerpool.Exec", t.execTime)
	if m.span != nil {
		m.span.SetAttributes(keyProgram.String(path.Base(program)), keyContainer.String(shortID(c.id)))
	}
	return ctx, m
}

// execOptsOf are the attribute sets of a command on c's path.
func (t *telemetry) execOptsOf(c *Container) *[numErrClasses]opts {
	if _, agent := c.runner.(agentRunner); agent {
		return &t.execOpts[1]
	}
	return &t.execOpts[0]
}

// beginTransfer starts the span and the timing of a file transfer named by
// its frame's verb; it returns the attribute sets to end it with.
func (t *telemetry) beginTransfer(ctx context.Context, c *Container, verb string) (context.Context, measure, *[numErrClasses]opts) {
	i := 0
	for i < len(transferOps)-1 && transferOps[i].verb != verb {
		i++
	}
	ctx, m := t.begin(ctx, transferOps[i].span, t.transferTime)
	if m.span != nil {
		m.span.SetAttributes(keyContainer.String(shortID(c.id)))
	}
	return ctx, m, &t.transferOpts[i]
}

// beginTask starts the span and timing of a worker's creation, removal or
// reset of a container; the span is a root: no caller waits on the task.
func (t *telemetry) beginTask(name, id string, h metric.Float64Histogram, more ...attribute.KeyValue) measure {
	_, m := t.begin(context.Background(), name, h)
	if m.span != nil {
		if id != "" {
			m.span.SetAttributes(keyContainer.String(shortID(id)))
		}
		m.span.SetAttributes(more...)
	}
	return m
}
