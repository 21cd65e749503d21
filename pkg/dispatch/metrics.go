package dispatch

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/slipway-dev/slipway/pkg/build"
)

// metrics are the build metrics of a process that settles builds:
//
//   - slipway_builds_total{status,trigger,reason}: builds that ended, by
//     their status (succeeded, failed, cancelled), trigger and failure
//     reason ("" for a success);
//   - slipway_build_duration_seconds{status}: from start to end of the
//     builds that ran;
//   - slipway_build_phase_seconds{phase}: where a local build's time goes:
//     "context" (writing or fetching its context), "inputs" (checking the
//     Dockerfile, resolving bases, credentials), "executor" (the runner's
//     run) and "publish" (pushes to external destinations);
//   - slipway_build_queue_length and slipway_build_slots_active: builds
//     waiting for a slot and builds running in one (local dispatcher);
//     slipway_build_slots the slots it has.
type metrics struct {
	ended    *prometheus.CounterVec
	duration *prometheus.HistogramVec
	phases   *prometheus.HistogramVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		ended: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "slipway_builds_total",
			Help: "Builds that ended, by status, trigger and failure reason.",
		}, []string{"status", "trigger", "reason"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "slipway_build_duration_seconds",
			Help:    "Build duration from start to end, by status.",
			Buckets: prometheus.ExponentialBuckets(0.5, 2, 13), // 0.5 s to 34 min
		}, []string{"status"}),
		phases: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "slipway_build_phase_seconds",
			Help:    "Time of each phase of a build, by phase (context, inputs, executor, publish).",
			Buckets: prometheus.ExponentialBuckets(0.001, 4, 12), // 1 ms to 70 min
		}, []string{"phase"}),
	}
	if reg != nil {
		reg.MustRegister(m.ended, m.duration, m.phases)
	}
	return m
}

// phase records that a build's phase ran from since to now.
func (m *metrics) phase(name string, since time.Time) {
	if m != nil {
		m.phases.WithLabelValues(name).Observe(time.Since(since).Seconds())
	}
}

// observe counts the ended build b.
func (m *metrics) observe(b build.Build) {
	if m == nil || b.Status.Active() {
		return
	}
	reason := ""
	if b.Failure != nil {
		reason = string(b.Failure.Reason)
	}
	m.ended.WithLabelValues(string(b.Status), string(b.Trigger), reason).Inc()
	if b.StartedAt != nil && b.FinishedAt != nil {
		m.duration.WithLabelValues(string(b.Status)).Observe(b.FinishedAt.Sub(*b.StartedAt).Seconds())
	}
}

// registerQueue exposes the local dispatcher's queue and slots.
func (d *Dispatcher) registerQueue(reg prometheus.Registerer) {
	if reg == nil {
		return
	}
	locked := func(f func() int) func() float64 {
		return func() float64 {
			d.mu.Lock()
			defer d.mu.Unlock()
			return float64(f())
		}
	}
	reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "slipway_build_queue_length", Help: "Builds waiting for a slot."},
			locked(func() int { return len(d.queue) })),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "slipway_build_slots_active", Help: "Builds running in a slot."},
			locked(func() int { return len(d.running) })),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "slipway_build_slots", Help: "Build slots: builds that run at once."},
			func() float64 { return float64(d.o.Slots) }),
	)
}
