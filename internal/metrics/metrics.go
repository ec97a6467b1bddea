// Package metrics is segment-sink's Prometheus instrumentation, on a registry the caller passes
// in (no global state). Metrics satisfies the small observer interfaces that httpapi and batcher
// declare, so neither of them knows Prometheus.
package metrics

import (
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/segment-sink/segment-sink/internal/event"
)

const namespace = "segment_sink"

// Metrics holds every metric of the sink.
type Metrics struct {
	requests      *prometheus.CounterVec
	ackLatency    *prometheus.HistogramVec
	accepted      *prometheus.CounterVec
	rejected      *prometheus.CounterVec
	duplicates    prometheus.Counter
	batchSize     prometheus.Histogram
	flushDuration prometheus.Histogram
	dbErrors      *prometheus.CounterVec
}

// Pending reports the events and bytes held in memory; the batcher satisfies it.
type Pending interface {
	Pending() (events int, bytes int64)
}

// New registers the sink's metrics, and Go's runtime and process metrics, on reg.
func New(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "http_requests_total",
			Help: "HTTP requests answered, by route and status code.",
		}, []string{"path", "status"}),
		ackLatency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: namespace, Name: "ack_latency_seconds",
			Help:    "Time from a request's arrival to its answer, by route and outcome (ok: committed).",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
		}, []string{"path", "outcome"}),
		accepted: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "events_accepted_total",
			Help: "Events committed to the database and acknowledged, by type (redeliveries included).",
		}, []string{"type"}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "events_rejected_total",
			Help: "Events not stored, by reason: invalid, unauthorized, too_large, unstorable, overloaded, unavailable, shutting_down.",
		}, []string{"reason"}),
		duplicates: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: namespace, Name: "duplicates_absorbed_total",
			Help: "Events written that left the database unchanged: redeliveries of a stored messageId with the same content.",
		}),
		batchSize: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: namespace, Name: "flush_events",
			Help:    "Events per flush (one transaction).",
			Buckets: prometheus.ExponentialBuckets(1, 2, 13), // 1 … 4096
		}),
		flushDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: namespace, Name: "flush_duration_seconds",
			Help:    "Time to write one flush, retries included.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
		}),
		dbErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "database_errors_total",
			Help: "Failed writes, by kind: unavailable (connection, timeout; retried) or unstorable (the data was refused).",
		}, []string{"kind"}),
	}
	reg.MustRegister(m.requests, m.ackLatency, m.accepted, m.rejected, m.duplicates, m.batchSize,
		m.flushDuration, m.dbErrors,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	for _, t := range event.Types {
		m.accepted.WithLabelValues(t.String()) // present from the start, at 0
	}
	return m
}

// WatchPending registers the gauges of events held in memory, read from p at each scrape.
func WatchPending(reg prometheus.Registerer, p Pending) {
	reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: namespace, Name: "pending_events",
			Help: "Events held in memory, waiting for or in a flush.",
		}, func() float64 { n, _ := p.Pending(); return float64(n) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: namespace, Name: "pending_bytes",
			Help: "Bytes of events held in memory, waiting for or in a flush.",
		}, func() float64 { _, b := p.Pending(); return float64(b) }),
	)
}

// Handler serves the registry in Prometheus' text format.
func Handler(reg *prometheus.Registry) http.Handler {
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg})
}

// Answered records one answered request.
func (m *Metrics) Answered(path string, status int, took time.Duration) {
	m.requests.WithLabelValues(path, strconv.Itoa(status)).Inc()
	outcome := "ok"
	if status >= 300 {
		outcome = "error"
	}
	m.ackLatency.WithLabelValues(path, outcome).Observe(took.Seconds())
}

// Accepted records committed events.
func (m *Metrics) Accepted(events []event.Event) {
	var n [event.Alias + 1]int
	for i := range events {
		n[events[i].Type]++
	}
	for _, t := range event.Types {
		if n[t] > 0 {
			m.accepted.WithLabelValues(t.String()).Add(float64(n[t]))
		}
	}
}

// Rejected records n events not stored, for reason.
func (m *Metrics) Rejected(reason string, n int) {
	m.rejected.WithLabelValues(reason).Add(float64(n))
}

// Flushed records one flush: its size, how long it took, how many of its events changed
// nothing, and its error if it failed.
func (m *Metrics) Flushed(events, unchanged int, took time.Duration, err error) {
	m.batchSize.Observe(float64(events))
	m.flushDuration.Observe(took.Seconds())
	m.duplicates.Add(float64(unchanged))
	switch {
	case err == nil:
	case errors.Is(err, event.ErrUnstorable):
		m.dbErrors.WithLabelValues("unstorable").Inc()
	default:
		m.dbErrors.WithLabelValues("unavailable").Inc()
	}
}
