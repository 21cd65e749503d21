// Package outbox delivers the events that the store's outbox holds (see
// store.Announce) to the event sink, K_SINK: each subject's events in the
// order they were written, each retried with backoff until the sink takes
// it, however long the sink is away. Events carry the CloudEvents
// `sequence` extension and those of K_CE_OVERRIDES (Knative's SinkBinding).
// Consumers deduplicate on source and id: an event may arrive twice.
package outbox

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/slipway-dev/slipway/events"
	"github.com/slipway-dev/slipway/pkg/store"
)

// Defaults of Options.
const (
	DefaultPoll       = time.Second
	DefaultMinBackoff = 100 * time.Millisecond
	DefaultMaxBackoff = 5 * time.Second
	// Batch is how many events one pass reads at most.
	Batch = 256
)

// Options configure a Relay.
type Options struct {
	Outbox store.Outbox
	// Sink is the URL events go to; empty: none, and the relay only
	// empties the outbox (the process's own handlers get events in-process).
	Sink string
	// Overrides is K_CE_OVERRIDES: JSON {"extensions":{"name":value,...}},
	// set on every event sent; empty for none.
	Overrides string
	Log       *slog.Logger
	// Poll is how often the outbox is looked at without a Notify;
	// DefaultPoll when zero.
	Poll time.Duration
	// MinBackoff and MaxBackoff bound the wait after a pass that could not
	// deliver everything; it doubles from the one to the other.
	MinBackoff, MaxBackoff time.Duration
	// Registerer gets the gauge slipway_events_undelivered; none when nil.
	Registerer prometheus.Registerer
}

// Relay delivers the outbox's events. Run delivers until its context ends.
type Relay struct {
	o         Options
	sink      cloudevents.Client
	overrides map[string]any
	wake      chan struct{}
	pending   prometheus.Gauge
	mu        sync.Mutex
}

// New returns a Relay; an Overrides that is not K_CE_OVERRIDES' JSON is an
// error.
func New(o Options) (*Relay, error) {
	if o.Outbox == nil {
		return nil, errors.New("outbox: no store")
	}
	if o.Poll <= 0 {
		o.Poll = DefaultPoll
	}
	if o.MinBackoff <= 0 {
		o.MinBackoff = DefaultMinBackoff
	}
	if o.MaxBackoff < o.MinBackoff {
		o.MaxBackoff = max(DefaultMaxBackoff, o.MinBackoff)
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	r := &Relay{o: o, wake: make(chan struct{}, 1), pending: prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "slipway_events_undelivered",
		Help: "Events in the outbox not yet delivered to the sink, as of the relay's last look (at most one batch, 256).",
	})}
	if o.Registerer != nil {
		if err := o.Registerer.Register(r.pending); err != nil {
			return nil, err
		}
	}
	if o.Overrides != "" {
		var ov struct {
			Extensions map[string]any `json:"extensions"`
		}
		if err := json.Unmarshal([]byte(o.Overrides), &ov); err != nil {
			return nil, fmt.Errorf("K_CE_OVERRIDES is not {\"extensions\":{...}}: %w", err)
		}
		r.overrides = ov.Extensions
	}
	if o.Sink != "" {
		c, err := cloudevents.NewClientHTTP(cloudevents.WithTarget(o.Sink))
		if err != nil {
			return nil, fmt.Errorf("events sink %s: %w", o.Sink, err)
		}
		r.sink = c
	}
	return r, nil
}

// Notify tells the relay that an event was written: it looks at once.
func (r *Relay) Notify() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// Run delivers until ctx is done.
func (r *Relay) Run(ctx context.Context) {
	backoff := r.o.MinBackoff
	for ctx.Err() == nil {
		n, complete := r.pass(ctx)
		wait := r.o.Poll
		switch {
		case !complete:
			wait, backoff = backoff, min(2*backoff, r.o.MaxBackoff)
		case n == Batch:
			backoff = r.o.MinBackoff
			continue
		default:
			backoff = r.o.MinBackoff
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
		case <-t.C:
		case <-r.wake:
			if !complete {
				<-t.C // a failing sink: keep the backoff
			}
		}
		t.Stop()
	}
}

// pass delivers what the outbox holds, in order; a subject whose event the
// sink refuses waits for the next pass with the rest of its events. It
// returns how many events it read and whether it delivered all of them.
func (r *Relay) pass(ctx context.Context) (int, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	evs, err := r.o.Outbox.PendingEvents(ctx, Batch)
	if err != nil {
		if ctx.Err() == nil {
			r.o.Log.Error("reading the event outbox", "error", err)
		}
		return 0, false
	}
	blocked := map[string]bool{}
	left := len(evs)
	for _, e := range evs {
		if blocked[e.Subject] {
			continue
		}
		if err := r.send(ctx, e); err != nil {
			blocked[e.Subject] = true
			if ctx.Err() == nil {
				r.o.Log.Warn("event not delivered yet", "type", e.Type, "id", e.ID, "subject", e.Subject, "to", r.o.Sink, "error", err)
			}
			continue
		}
		if err := r.o.Outbox.DeliveredEvents(context.WithoutCancel(ctx), e.ID); err != nil {
			// Delivered but not marked: it goes again (the same id).
			blocked[e.Subject] = true
			r.o.Log.Error("marking an event delivered", "id", e.ID, "error", err)
			continue
		}
		left--
	}
	r.pending.Set(float64(left))
	return len(evs), left == 0
}

// Event is the CloudEvent of an outbox event: source events.Source, its id, type, subject and time, its data, the sequence
// extension and K_CE_OVERRIDES' extensions.
func (r *Relay) Event(e store.OutboxEvent) (cloudevents.Event, error) {
	ce := cloudevents.NewEvent()
	ce.SetID(e.ID)
	ce.SetSource(events.Source)
	ce.SetType(e.Type)
	ce.SetSubject(e.Subject)
	ce.SetTime(e.Time)
	ce.SetExtension("sequence", strconv.FormatInt(e.Sequence, 10))
	for k, v := range r.overrides {
		ce.SetExtension(k, v)
	}
	if err := ce.SetData(cloudevents.ApplicationJSON, []byte(e.Data)); err != nil {
		return ce, err
	}
	return ce, ce.Validate()
}

func (r *Relay) send(ctx context.Context, e store.OutboxEvent) error {
	if r.sink == nil {
		return nil
	}
	ce, err := r.Event(e)
	if err != nil {
		r.o.Log.Error("an outbox event is not a valid CloudEvent; dropped", "id", e.ID, "error", err)
		return nil
	}
	sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if res := r.sink.Send(sctx, ce); !cloudevents.IsACK(res) {
		return res
	}
	return nil
}
