package outbox_test

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/slipway-dev/slipway/events"
	"github.com/slipway-dev/slipway/pkg/build"
	"github.com/slipway-dev/slipway/pkg/outbox"
	"github.com/slipway-dev/slipway/pkg/store"
	"github.com/slipway-dev/slipway/pkg/store/sqlite"
	"github.com/slipway-dev/slipway/pkg/store/storetest"
)

// sink is a real HTTP event sink decoding with the CloudEvents SDK, as a
// Knative Broker would; while down it answers 503.
type sink struct {
	*httptest.Server
	down atomic.Bool
	mu   sync.Mutex
	got  []cloudevents.Event
	seen chan struct{}
}

func newSink(t *testing.T) *sink {
	s := &sink{seen: make(chan struct{}, 1024)}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if s.down.Load() {
			http.Error(w, "the broker is away", http.StatusServiceUnavailable)
			return
		}
		ev, err := cloudevents.NewEventFromHTTPRequest(r)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		s.mu.Lock()
		s.got = append(s.got, *ev)
		s.mu.Unlock()
		s.seen <- struct{}{}
		w.WriteHeader(http.StatusAccepted)
	}))
	t.Cleanup(s.Close)
	return s
}

// wait returns once n events have arrived.
func (s *sink) wait(t *testing.T, n int) []cloudevents.Event {
	t.Helper()
	for {
		s.mu.Lock()
		got := append([]cloudevents.Event(nil), s.got...)
		s.mu.Unlock()
		if len(got) >= n {
			return got
		}
		select {
		case <-s.seen:
		case <-time.After(time.Minute):
			t.Fatalf("%d of %d events arrived", len(got), n)
		}
	}
}

type env struct {
	st    store.Store
	relay *outbox.Relay
	reg   *prometheus.Registry
	stop  func()
}

func start(t *testing.T, sinkURL, overrides string) *env {
	st, err := sqlite.Open(filepath.Join(t.TempDir(), "slipway.db"))
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	relay, err := outbox.New(outbox.Options{Outbox: st, Sink: sinkURL, Overrides: overrides, Registerer: reg,
		Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Poll: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { relay.Run(ctx); close(done) }()
	e := &env{st: st, relay: relay, reg: reg, stop: func() { cancel(); <-done }}
	t.Cleanup(func() { e.stop(); st.Close() })
	ctx0 := context.Background()
	st.ApplyWorkspace(ctx0, "k", store.Order{}, store.Workspace{ID: "ws1", Owner: "alice"}, false)
	return e
}

// undelivered reads the gauge slipway_events_undelivered from the registry.
func (e *env) undelivered(t *testing.T) float64 {
	t.Helper()
	mfs, err := e.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "slipway_events_undelivered" {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	t.Fatal("no slipway_events_undelivered gauge")
	return 0
}

// lifecycle runs builds of image id through queued, started and an end,
// each change announced by events.Lifecycle.
func (e *env) lifecycle(t *testing.T, id string, builds int) {
	ctx := store.Announce(context.Background(), events.Lifecycle(func() time.Time { return time.Now().UTC() }))
	if err := e.st.CreateImage(context.Background(), storetest.NewImage(id, "ws1", "team/"+id)); err != nil {
		t.Fatal(err)
	}
	for range builds {
		b, err := e.st.CreateBuild(ctx, build.New(id, 1, "alice", build.TriggerManual, time.Now()))
		if err != nil {
			t.Fatal(err)
		}
		for _, step := range []func(*build.Build) error{
			func(b *build.Build) error { return b.Start(time.Now()) },
			func(b *build.Build) error { return b.Fail(build.ReasonDockerfile, "no", time.Now()) },
		} {
			if _, err := e.st.UpdateBuild(ctx, id, b.Number, step); err != nil {
				t.Fatal(err)
			}
		}
		e.relay.Notify()
	}
}

// checkOrder fails when a subject's events arrived out of their order:
// queued, started, failed for each build, sequence increasing.
func checkOrder(t *testing.T, got []cloudevents.Event) {
	t.Helper()
	want := []string{events.BuildQueued, events.BuildStarted, events.BuildFailed}
	next := map[string]int{}
	seq := map[string]int64{}
	ids := map[string]bool{}
	for _, ev := range got {
		if ids[ev.ID()] {
			continue // at least once: a duplicate is the consumer's to drop
		}
		ids[ev.ID()] = true
		s := ev.Subject()
		if w := want[next[s]%3]; ev.Type() != w {
			t.Errorf("subject %s: %s arrived where %s was due", s, ev.Type(), w)
		}
		next[s]++
		ext, _ := ev.Extensions()["sequence"].(string)
		n, err := strconv.ParseInt(ext, 10, 64)
		if err != nil || n <= seq[s] {
			t.Errorf("subject %s: sequence %q after %d", s, ext, seq[s])
		}
		seq[s] = n
		if ev.Source() != events.Source {
			t.Errorf("source %s", ev.Source())
		}
	}
}

// TestEventsOutlastASinkOutage: with the sink down for 12 s, every event of
// five builds waits in the outbox, the gauge says how many, and once the
// sink is back all arrive, each build's in order.
func TestEventsOutlastASinkOutage(t *testing.T) {
	s := newSink(t)
	s.down.Store(true)
	e := start(t, s.URL, "")
	for i := range 5 {
		e.lifecycle(t, "img"+strconv.Itoa(i), 1)
	}
	// The relay has tried and failed: the gauge counts what waits.
	for e.undelivered(t) != 15 {
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(12 * time.Second) // the outage
	s.down.Store(false)
	got := s.wait(t, 15)
	checkOrder(t, got)
	// The relay marks each event delivered once the sink has taken it: the
	// outbox empties, and the gauge says so.
	for e.undelivered(t) != 0 {
		time.Sleep(20 * time.Millisecond)
	}
	e.stop()
	if left, err := e.st.PendingEvents(context.Background(), 10); err != nil || len(left) != 0 {
		t.Errorf("%d events left in the outbox (%v)", len(left), err)
	}
}

// TestSequentialChangesArriveInOrder: forty changes of one subject, and
// build.started never before build.queued, with K_CE_OVERRIDES' extensions.
func TestSequentialChangesArriveInOrder(t *testing.T) {
	s := newSink(t)
	e := start(t, s.URL, `{"extensions":{"cluster":"dev-1","tenant":"acme"}}`)
	e.lifecycle(t, "img1", 14) // 42 changes of 14 subjects, one after another
	got := s.wait(t, 42)
	checkOrder(t, got)
	for _, ev := range got {
		if ev.Extensions()["cluster"] != "dev-1" || ev.Extensions()["tenant"] != "acme" {
			t.Fatalf("event without K_CE_OVERRIDES' extensions: %v", ev.Extensions())
		}
	}
	var one []string
	for _, ev := range got {
		if ev.Subject() == "img1-1" {
			one = append(one, ev.Type())
		}
	}
	if strings.Join(one, " ") != events.BuildQueued+" "+events.BuildStarted+" "+events.BuildFailed {
		t.Errorf("img1-1's events: %v", one)
	}
}

func TestBadOverridesAreRefused(t *testing.T) {
	st, err := sqlite.Open(filepath.Join(t.TempDir(), "slipway.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if _, err := outbox.New(outbox.Options{Outbox: st, Overrides: `{"extensions":`}); err == nil {
		t.Error("a malformed K_CE_OVERRIDES was accepted")
	}
}
