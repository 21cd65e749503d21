package server_test

import (
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2"

	"github.com/slipway-dev/slipway/events"
)

// TestBuildEventsReachTheSinkFromTheOutbox runs a build (its runner cannot
// start here: no executor, so it fails at once) with a sink that refuses
// the first deliveries: queued, started and failed arrive in that order,
// from the outbox, with the sequence extension and K_CE_OVERRIDES'.
func TestBuildEventsReachTheSinkFromTheOutbox(t *testing.T) {
	got := make(chan cloudevents.Event, 64)
	var refused atomic.Int32
	sink := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ev, err := cloudevents.NewEventFromHTTPRequest(r)
		if err != nil {
			http.Error(w, err.Error(), 400)
			return
		}
		if refused.Add(1) <= 3 { // the broker is away for a while
			http.Error(w, "away", http.StatusServiceUnavailable)
			return
		}
		got <- *ev
		w.WriteHeader(http.StatusAccepted)
	}))
	defer sink.Close()
	cfg := serverConfig(t)
	cfg.Sink = sink.URL
	cfg.CEOverrides = `{"extensions":{"cluster":"test"}}`
	cfg.Executor = filepath.Join(t.TempDir(), "no-executor")
	e := start(t, cfg)
	e.announce(events.WorkspaceCreated, "ws1", "alice")
	img, _ := e.create("ws1", "alice", "team/outboxed")
	if res := e.call("POST", "/api/v1/images/"+img.ID+"/builds", "alice", nil, nil); res.StatusCode != http.StatusAccepted {
		t.Fatalf("build: %d", res.StatusCode)
	}
	var order []string
	var last int64
	for len(order) < 3 {
		select {
		case ev := <-got:
			if ev.Subject() != img.ID+"-1" {
				continue // the image's own events
			}
			order = append(order, ev.Type())
			seq, err := strconv.ParseInt(ev.Extensions()["sequence"].(string), 10, 64)
			if err != nil || seq <= last {
				t.Errorf("%s: sequence %v after %d", ev.Type(), ev.Extensions()["sequence"], last)
			}
			last = seq
			if ev.Extensions()["cluster"] != "test" {
				t.Errorf("%s without K_CE_OVERRIDES' extension: %v", ev.Type(), ev.Extensions())
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("build events at the sink: %v", order)
		}
	}
	if order[0] != events.BuildQueued || order[1] != events.BuildStarted || order[2] != events.BuildFailed {
		t.Errorf("build events arrived as %v, want queued, started, failed", order)
	}
}
