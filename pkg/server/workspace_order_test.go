package server_test

import (
	"encoding/json"
	"net/http"
	"testing"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2"

	"github.com/slipway-dev/slipway/events"
	"github.com/slipway-dev/slipway/pkg/server"
)

// wsEvent is a platform workspace event: its id, type and data, and its
// place in the platform's order (a zero time or an empty sequence leaves
// that attribute out).
type wsEvent struct {
	id, typ string
	at      time.Time
	seq     string
	data    events.Workspace
}

// send posts ev over HTTP in structured mode as the platform and returns
// the status.
func (e *env) send(ev wsEvent) int {
	e.t.Helper()
	ce := cloudevents.NewEvent()
	ce.SetID(ev.id)
	ce.SetSource("/platform")
	ce.SetType(ev.typ)
	if !ev.at.IsZero() {
		ce.SetTime(ev.at)
	}
	if ev.seq != "" {
		ce.SetExtension("sequence", ev.seq)
	}
	ce.SetData(cloudevents.ApplicationJSON, ev.data)
	res := e.postEvent(ce, "platform")
	return res.StatusCode
}

func (e *env) mustSend(ev wsEvent, status int) {
	e.t.Helper()
	if got := e.send(ev); got != status {
		e.t.Fatalf("event %s (%s at %v, sequence %q): %d, want %d", ev.id, ev.typ, ev.at, ev.seq, got, status)
	}
}

// canList wants subject's listing of ws's images to answer status.
func (e *env) canList(ws, subject string, status int) {
	e.t.Helper()
	if status == 200 {
		want(e.t, e.call("GET", "/api/v1/workspaces/"+ws+"/images", subject, nil, nil), 200, "")
		return
	}
	e.callErr("GET", "/api/v1/workspaces/"+ws+"/images", subject, nil, status, "not_found")
}

// TestWorkspaceEventsInPlatformOrder: the platform's workspace events
// apply in the order of their time (or sequence), whatever order they
// arrive in; an older one is acknowledged and changes nothing.
func TestWorkspaceEventsInPlatformOrder(t *testing.T) {
	e := start(t, server.Config{})
	t0 := time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC)
	at := func(m int) time.Time { return t0.Add(time.Duration(m) * time.Minute) }
	ws := func(owner string, members ...string) events.Workspace {
		return events.Workspace{ID: "ws1", Owner: owner, Members: members}
	}

	t.Run("OlderUpdateAfterNewerUpdate", func(t *testing.T) {
		e.mustSend(wsEvent{id: "a1", typ: events.WorkspaceCreated, at: at(1), data: ws("alice", "bob", "carol")}, 204)
		e.canList("ws1", "carol", 200)
		e.mustSend(wsEvent{id: "a3", typ: events.WorkspaceUpdated, at: at(3), data: ws("alice", "bob")}, 204)
		// The update of minute 2, which still lists carol, arrives late.
		e.mustSend(wsEvent{id: "a2", typ: events.WorkspaceUpdated, at: at(2), data: ws("alice", "bob", "carol")}, 204)
		e.canList("ws1", "carol", 404)
		e.canList("ws1", "bob", 200)
		// So does one that would hand the workspace to mallory, at the very
		// time of the last applied one.
		e.mustSend(wsEvent{id: "a3b", typ: events.WorkspaceUpdated, at: at(3), data: ws("mallory")}, 204)
		e.canList("ws1", "mallory", 404)
		e.canList("ws1", "alice", 200)
	})

	t.Run("DuplicateDelivery", func(t *testing.T) {
		// A redelivered event, even carrying other data and a later time,
		// is the same event: nothing changes.
		e.mustSend(wsEvent{id: "a3", typ: events.WorkspaceUpdated, at: at(30), data: ws("mallory")}, 204)
		e.canList("ws1", "mallory", 404)
		// The late event of minute 2 was recorded when it was ignored.
		e.mustSend(wsEvent{id: "a2", typ: events.WorkspaceUpdated, at: at(2), data: ws("alice", "bob", "carol")}, 204)
		e.canList("ws1", "carol", 404)
	})

	t.Run("StaleDeletionKeepsTheWorkspace", func(t *testing.T) {
		img, _ := e.create("ws1", "alice", "team/kept")
		e.mustSend(wsEvent{id: "d2", typ: events.WorkspaceDeleted, at: at(2), data: events.Workspace{ID: "ws1"}}, 204)
		e.canList("ws1", "bob", 200)
		want(t, e.call("GET", "/api/v1/images/"+img.ID, "alice", nil, nil), 200, "")
	})

	t.Run("OutOfOrderUpdateAfterDelete", func(t *testing.T) {
		e.mustSend(wsEvent{id: "d5", typ: events.WorkspaceDeleted, at: at(5), data: events.Workspace{ID: "ws1"}}, 204)
		e.canList("ws1", "alice", 404)
		// The update of minute 4 arrives after the deletion: it must not
		// bring the workspace (or bob) back.
		e.mustSend(wsEvent{id: "u4", typ: events.WorkspaceUpdated, at: at(4), data: ws("alice", "bob")}, 204)
		e.mustSend(wsEvent{id: "c4", typ: events.WorkspaceCreated, at: at(4), data: ws("alice", "bob")}, 204)
		e.canList("ws1", "alice", 404)
		e.canList("ws1", "bob", 404)
		// Its image went with it, and its name is free.
		e.announce(events.WorkspaceCreated, "ws2", "carol")
		e.create("ws2", "carol", "team/kept")
		// A create after the deletion makes the workspace anew, empty.
		e.mustSend(wsEvent{id: "c6", typ: events.WorkspaceCreated, at: at(6), data: ws("dave")}, 204)
		var list struct {
			Images []image `json:"images"`
		}
		want(t, e.call("GET", "/api/v1/workspaces/ws1/images", "dave", nil, &list), 200, "")
		if len(list.Images) != 0 {
			t.Fatalf("the recreated workspace has %d images, want none", len(list.Images))
		}
		e.canList("ws1", "alice", 404)
	})

	t.Run("SequenceBeforeTime", func(t *testing.T) {
		w := func(owner string) events.Workspace { return events.Workspace{ID: "ws3", Owner: owner} }
		e.mustSend(wsEvent{id: "s9", typ: events.WorkspaceCreated, seq: "9", at: at(50), data: w("alice")}, 204)
		// Sequence 10 follows 9 (as integers), although its time is earlier.
		e.mustSend(wsEvent{id: "s10", typ: events.WorkspaceUpdated, seq: "10", at: at(40), data: w("bob")}, 204)
		e.canList("ws3", "bob", 200)
		e.canList("ws3", "alice", 404)
		// Sequence 2 is older, although its time is the latest.
		e.mustSend(wsEvent{id: "s2", typ: events.WorkspaceUpdated, seq: "2", at: at(60), data: w("mallory")}, 204)
		e.canList("ws3", "mallory", 404)
		// A deletion in sequence, and an older sequence's update after it.
		e.mustSend(wsEvent{id: "s11", typ: events.WorkspaceDeleted, seq: "11", data: events.Workspace{ID: "ws3"}}, 204)
		e.mustSend(wsEvent{id: "s10b", typ: events.WorkspaceUpdated, seq: "10", at: at(70), data: w("bob")}, 204)
		e.canList("ws3", "bob", 404)
		e.mustSend(wsEvent{id: "s12", typ: events.WorkspaceCreated, seq: "12", data: w("erin")}, 204)
		e.canList("ws3", "erin", 200)
	})

	t.Run("UnorderedEventsApplyInArrivalOrder", func(t *testing.T) {
		// Neither a time nor a sequence (both optional in CloudEvents):
		// placed at the time Slipway received it, so such events apply in
		// arrival order, and one still never undoes a newer stamped event.
		e.mustSend(wsEvent{id: "n0", typ: events.WorkspaceCreated, data: events.Workspace{ID: "ws9", Owner: "mallory"}}, 204)
		e.canList("ws9", "mallory", 200)
		e.mustSend(wsEvent{id: "n1", typ: events.WorkspaceUpdated, data: events.Workspace{ID: "ws9", Owner: "mallory", Members: []string{"oscar"}}}, 204)
		e.canList("ws9", "oscar", 200)
		e.mustSend(wsEvent{id: "n2", typ: events.WorkspaceDeleted, data: events.Workspace{ID: "ws9"}}, 204)
		e.canList("ws9", "mallory", 404)
		// A stamped update from before the unstamped deletion arrived
		// does not bring the workspace back.
		e.mustSend(wsEvent{id: "n3", typ: events.WorkspaceUpdated, at: time.Now().Add(-time.Minute), data: events.Workspace{ID: "ws9", Owner: "mallory"}}, 204)
		e.canList("ws9", "mallory", 404)
		// The error is the contract's JSON shape.
		res, body := e.c.JSON("POST", "/events", e.token("platform"), map[string]any{
			"specversion": "1.0", "id": "n4", "source": "/platform", "type": events.WorkspaceUpdated,
			"sequence": "", "data": ws("mallory"),
		}, "Content-Type", "application/cloudevents+json")
		var eb errorBody
		if res.StatusCode != http.StatusBadRequest || json.Unmarshal(body, &eb) != nil || eb.Error.Code != "invalid_event" {
			t.Fatalf("an empty sequence: %d %s", res.StatusCode, body)
		}
		e.canList("ws1", "mallory", 404)
	})
}

// TestStaleWorkspaceDeletion: a deletion older than the workspace's last
// event neither cancels its builds nor removes its registry content; a
// newer one still does both, as every deletion did.
func TestStaleWorkspaceDeletion(t *testing.T) {
	e := buildEnv(t, func(c *server.Config) { c.RegistryGCQuiet = 0 })
	img := e.built("team/stays", "FROM "+e.base()+"\nRUN echo mine > /mine\n")
	running := e.newImage(localImage("team/running", "FROM "+e.base()+"\nRUN sleep 3\n"))
	n := e.startBuild(running.ID)
	// buildEnv announced ws1 just now; this deletion is from an hour ago.
	e.mustSend(wsEvent{id: "old-delete", typ: events.WorkspaceDeleted, at: time.Now().Add(-time.Hour), data: events.Workspace{ID: "ws1"}}, 204)
	e.mustPull("bob", *img.Reference)
	if b := e.waitFor(running.ID, n, 2*time.Minute, ended); b.Status != "succeeded" {
		t.Fatalf("a stale deletion stopped a build: %+v\n%s", b, e.buildLog(running.ID, n))
	}
	e.mustSend(wsEvent{id: "new-delete", typ: events.WorkspaceDeleted, at: time.Now(), data: events.Workspace{ID: "ws1"}}, 204)
	e.callErr("GET", "/api/v1/images/"+img.ID, "alice", nil, 404, "not_found")
	e.announce(events.WorkspaceCreated, "ws2", "carol")
	e.create("ws2", "carol", "team/stays")
	e.mustNotResolve("carol", *img.Reference)
}
