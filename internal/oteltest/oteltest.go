// Package oteltest is an in-memory OpenTelemetry MeterProvider and
// TracerProvider for the root module's tests: it records every measurement,
// observation and span, so the tests need no SDK (which would grow the
// library's go.mod). The embedded no-op types supply the methods the pool
// does not use.
package oteltest

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/embedded"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/trace"
	tracenoop "go.opentelemetry.io/otel/trace/noop"
)

// Key names one time series: the instrument's name and its attributes,
// sorted, as "name{k=v,k=v}".
func Key(name string, attrs attribute.Set) string {
	var kv []string
	for _, a := range attrs.ToSlice() {
		kv = append(kv, fmt.Sprintf("%s=%s", a.Key, a.Value.String()))
	}
	sort.Strings(kv)
	return name + "{" + strings.Join(kv, ",") + "}"
}

// Recorder is both providers. Its zero value is not ready: use New.
type Recorder struct {
	metricnoop.MeterProvider
	mu        sync.Mutex
	sums      map[string]float64 // counters: the sum; histograms: the sum of values
	counts    map[string]int     // how many measurements
	units     map[string]string  // by instrument name
	callbacks []metric.Callback
	spans     []*Span
}

// New returns an empty Recorder.
func New() *Recorder {
	return &Recorder{sums: map[string]float64{}, counts: map[string]int{}, units: map[string]string{}}
}

// Meter returns a meter recording into r.
func (r *Recorder) Meter(string, ...metric.MeterOption) metric.Meter { return meter{r: r} }

// Tracers returns a TracerProvider recording into r.
func (r *Recorder) Tracers() trace.TracerProvider { return tracerProvider{r: r} }

func (r *Recorder) add(name string, v float64, set attribute.Set) {
	r.mu.Lock()
	defer r.mu.Unlock()
	k := Key(name, set)
	r.sums[k] += v
	r.counts[k]++
}

// Sum returns the sum of what was recorded for one time series (a counter's
// value, a histogram's total).
func (r *Recorder) Sum(name string, attrs ...attribute.KeyValue) float64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.sums[Key(name, attribute.NewSet(attrs...))]
}

// Count returns how many measurements one time series got.
func (r *Recorder) Count(name string, attrs ...attribute.KeyValue) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.counts[Key(name, attribute.NewSet(attrs...))]
}

// Series returns every time series recorded so far, sorted.
func (r *Recorder) Series() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var ks []string
	for k := range r.counts {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

// Unit returns the unit an instrument was made with.
func (r *Recorder) Unit(name string) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.units[name]
}

// Observe runs the registered callbacks once and returns what they
// observed, by Key. It reports how many callbacks are registered.
func (r *Recorder) Observe(ctx context.Context) (map[string]int64, int) {
	r.mu.Lock()
	cbs := append([]metric.Callback(nil), r.callbacks...)
	r.mu.Unlock()
	o := &observer{got: map[string]int64{}}
	for _, cb := range cbs {
		if err := cb(ctx, o); err != nil {
			o.got["error: "+err.Error()] = 1
		}
	}
	return o.got, len(cbs)
}

// Spans returns the spans ended so far, and those still running.
func (r *Recorder) Spans() []*Span {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]*Span(nil), r.spans...)
}

type meter struct {
	metricnoop.Meter
	r *Recorder
}

func (m meter) unit(name string, unit string) {
	m.r.mu.Lock()
	defer m.r.mu.Unlock()
	m.r.units[name] = unit
}

func (m meter) Int64Counter(name string, opts ...metric.Int64CounterOption) (metric.Int64Counter, error) {
	m.unit(name, metric.NewInt64CounterConfig(opts...).Unit())
	return counter{name: name, r: m.r}, nil
}

func (m meter) Float64Histogram(name string, opts ...metric.Float64HistogramOption) (metric.Float64Histogram, error) {
	m.unit(name, metric.NewFloat64HistogramConfig(opts...).Unit())
	return histogram{name: name, r: m.r}, nil
}

func (m meter) Int64ObservableGauge(name string, opts ...metric.Int64ObservableGaugeOption) (metric.Int64ObservableGauge, error) {
	m.unit(name, metric.NewInt64ObservableGaugeConfig(opts...).Unit())
	return gauge{name: name}, nil
}

func (m meter) Int64ObservableCounter(name string, opts ...metric.Int64ObservableCounterOption) (metric.Int64ObservableCounter, error) {
	m.unit(name, metric.NewInt64ObservableCounterConfig(opts...).Unit())
	return observableCounter{name: name}, nil
}

func (m meter) RegisterCallback(f metric.Callback, _ ...metric.Observable) (metric.Registration, error) {
	m.r.mu.Lock()
	defer m.r.mu.Unlock()
	m.r.callbacks = append(m.r.callbacks, f)
	return &registration{r: m.r, n: len(m.r.callbacks) - 1}, nil
}

type registration struct {
	embedded.Registration
	r *Recorder
	n int
}

func (g *registration) Unregister() error {
	g.r.mu.Lock()
	defer g.r.mu.Unlock()
	g.r.callbacks = append(g.r.callbacks[:g.n], g.r.callbacks[g.n+1:]...)
	return nil
}

type counter struct {
	metricnoop.Int64Counter
	name string
	r    *Recorder
}

func (c counter) Enabled(context.Context) bool { return true }

func (c counter) Add(_ context.Context, v int64, opts ...metric.AddOption) {
	c.r.add(c.name, float64(v), metric.NewAddConfig(opts).Attributes())
}

type histogram struct {
	metricnoop.Float64Histogram
	name string
	r    *Recorder
}

func (h histogram) Enabled(context.Context) bool { return true }

func (h histogram) Record(_ context.Context, v float64, opts ...metric.RecordOption) {
	h.r.add(h.name, v, metric.NewRecordConfig(opts).Attributes())
}

type gauge struct {
	metricnoop.Int64ObservableGauge
	name string
}

type observableCounter struct {
	metricnoop.Int64ObservableCounter
	name string
}

type observer struct {
	embedded.Observer
	got map[string]int64
}

func (o *observer) ObserveFloat64(metric.Float64Observable, float64, ...metric.ObserveOption) {}

func (o *observer) ObserveInt64(inst metric.Int64Observable, v int64, opts ...metric.ObserveOption) {
	name := "?"
	switch i := inst.(type) {
	case gauge:
		name = i.name
	case observableCounter:
		name = i.name
	}
	o.got[Key(name, metric.NewObserveConfig(opts).Attributes())] = v
}

// ---- traces ---------------------------------------------------------------------

type tracerProvider struct {
	tracenoop.TracerProvider
	r *Recorder
}

func (p tracerProvider) Tracer(string, ...trace.TracerOption) trace.Tracer { return tracer{r: p.r} }

type tracer struct {
	tracenoop.Tracer
	r *Recorder
}

func (t tracer) Start(ctx context.Context, name string, opts ...trace.SpanStartOption) (context.Context, trace.Span) {
	cfg := trace.NewSpanStartConfig(opts...)
	s := &Span{Name: name, Parent: trace.SpanFromContext(ctx), Attrs: cfg.Attributes()}
	t.r.mu.Lock()
	t.r.spans = append(t.r.spans, s)
	t.r.mu.Unlock()
	return trace.ContextWithSpan(ctx, s), s
}

// Span is a recorded span. Read its fields once it ended (Ended).
type Span struct {
	tracenoop.Span
	mu          sync.Mutex
	Name        string
	Parent      trace.Span // the span of the ctx it started from
	Attrs       []attribute.KeyValue
	Events      []string // names and attributes, as text
	Status      codes.Code
	Description string
	ended       bool
}

// Ended reports whether End was called.
func (s *Span) Ended() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ended
}

// Attr returns the value of an attribute, and whether it is set.
func (s *Span) Attr(k attribute.Key) (attribute.Value, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := len(s.Attrs) - 1; i >= 0; i-- {
		if s.Attrs[i].Key == k {
			return s.Attrs[i].Value, true
		}
	}
	return attribute.Value{}, false
}

// Text is everything the span carries, as one string: name, attributes,
// events, status.
func (s *Span) Text() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var b strings.Builder
	fmt.Fprintf(&b, "%s ", s.Name)
	for _, a := range s.Attrs {
		fmt.Fprintf(&b, "%s=%s ", a.Key, a.Value.String())
	}
	fmt.Fprintf(&b, "%s %s %s", strings.Join(s.Events, " "), s.Status, s.Description)
	return b.String()
}

// IsRecording is true: the span records.
func (s *Span) IsRecording() bool { return true }

// SetName renames the span.
func (s *Span) SetName(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.Name = name
}

// SetAttributes adds attributes.
func (s *Span) SetAttributes(kv ...attribute.KeyValue) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.Attrs = append(s.Attrs, kv...)
}

// AddEvent records an event.
func (s *Span) AddEvent(name string, opts ...trace.EventOption) {
	cfg := trace.NewEventConfig(opts...)
	s.event(name, cfg.Attributes())
}

// RecordError records err as an exception event.
func (s *Span) RecordError(err error, opts ...trace.EventOption) {
	cfg := trace.NewEventConfig(opts...)
	s.event("exception: "+err.Error(), cfg.Attributes())
}

func (s *Span) event(name string, attrs []attribute.KeyValue) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e := name
	for _, a := range attrs {
		e += fmt.Sprintf(" %s=%s", a.Key, a.Value.String())
	}
	s.Events = append(s.Events, e)
}

// SetStatus sets the status.
func (s *Span) SetStatus(code codes.Code, desc string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.Status, s.Description = code, desc
}

// End marks the span ended.
func (s *Span) End(...trace.SpanEndOption) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ended = true
}
