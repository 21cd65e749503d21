package server_test

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2"

	"github.com/slipway-dev/slipway/events"
	"github.com/slipway-dev/slipway/internal/servertest"
	"github.com/slipway-dev/slipway/pkg/server"
)

// setup starts a server with workspace ws1 (owner alice, member bob) and
// ws2 (owner carol).
func setup(t *testing.T) *env {
	e := start(t, server.Config{})
	e.announce(events.WorkspaceCreated, "ws1", "alice", "bob")
	e.announce(events.WorkspaceCreated, "ws2", "carol")
	return e
}

func TestRightsMatrix(t *testing.T) {
	e := setup(t)
	img, _ := e.create("ws1", "alice", "team/rights")
	// Each row: an endpoint and the status each caller gets.
	type row struct {
		method, path string
		body         any
		headers      []string
		// none and bad token are always 401; outsider is carol.
		outsider, member, owner int
	}
	fresh := func() string {
		i, _ := e.create("ws1", "alice", "team/fresh-"+strings.ToLower(time.Now().Format("150405.000000000")))
		return i.ID
	}
	rows := []row{
		{"GET", "/api/v1/workspaces/ws1", nil, nil, 404, 200, 200},
		{"GET", "/api/v1/workspaces/ws1/images", nil, nil, 404, 200, 200},
		{"POST", "/api/v1/workspaces/ws1/images", "MEMBER", nil, 404, 201, 201},
		{"GET", "/api/v1/images/" + img.ID, nil, nil, 404, 200, 200},
		{"PATCH", "/api/v1/images/" + img.ID, map[string]any{"description": "x"}, []string{"If-Match", "*"}, 404, 200, 200},
		{"GET", "/api/v1/images/" + img.ID + "/builds", nil, nil, 404, 200, 200},
		{"GET", "/api/v1/images/" + img.ID + "/builds/1", nil, nil, 404, 404, 404},
		{"GET", "/api/v1/images/" + img.ID + "/builds/1/log", nil, nil, 404, 404, 404},
		{"GET", "/api/v1/images/" + img.ID + "/builds/1/steps", nil, nil, 404, 404, 404},
		{"POST", "/api/v1/images/" + img.ID + "/builds/1/cancel", nil, nil, 404, 404, 404},
		{"PUT", "/api/v1/workspaces/ws1/credentials/hub", map[string]any{"kind": "registry", "registry": "r.example", "username": "u", "password": "p"}, nil, 404, 403, 204},
		{"GET", "/api/v1/workspaces/ws1/credentials", nil, nil, 404, 200, 200},
		{"DELETE", "/api/v1/workspaces/ws1/credentials/hub", nil, nil, 404, 403, 204},
		{"POST", "/api/v1/images/FRESH/builds", nil, nil, 404, 403, 202},
		{"DELETE", "/api/v1/images/FRESH", nil, nil, 404, 403, 204},
	}
	n := 0
	for _, r := range rows {
		for _, who := range []struct {
			subject string
			status  int
		}{{"", 401}, {"BAD", 401}, {"carol", r.outsider}, {"bob", r.member}, {"alice", r.owner}} {
			p := strings.ReplaceAll(r.path, "FRESH", fresh())
			body := r.body
			if body == "MEMBER" {
				n++
				body = localImage("team/by-"+who.subject+"-"+string(rune('a'+n)), "FROM busybox\n")
			}
			var res *http.Response
			if who.subject == "BAD" {
				res, _ = e.c.JSON(r.method, p, "not.a.token", body, r.headers...)
			} else {
				res = e.call(r.method, p, who.subject, body, nil, r.headers...)
			}
			if res.StatusCode != who.status {
				t.Errorf("%s %s as %q: %d, want %d", r.method, r.path, who.subject, res.StatusCode, who.status)
			}
		}
	}
	// A token signed by another key, and an expired one, are refused too.
	other := start(t, server.Config{})
	foreign, _ := other.srv.Issuer.Issue("alice", time.Hour)
	if res, _ := e.c.JSON("GET", "/api/v1/workspaces/ws1/images", foreign, nil); res.StatusCode != 401 {
		t.Errorf("foreign token: %d", res.StatusCode)
	}
	expired, _ := e.srv.Issuer.Issue("alice", -time.Hour)
	if res, _ := e.c.JSON("GET", "/api/v1/workspaces/ws1/images", expired, nil); res.StatusCode != 401 {
		t.Errorf("expired token: %d", res.StatusCode)
	}
	// Events: only publishers.
	ev := cloudevents.NewEvent()
	ev.SetID("x1")
	ev.SetSource("/platform")
	ev.SetType(events.WorkspaceUpdated)
	ev.SetData(cloudevents.ApplicationJSON, events.Workspace{ID: "ws1", Owner: "bob"})
	for subject, status := range map[string]int{"": 401, "alice": 403, "bob": 403} {
		if res := e.postEvent(ev, subject); res.StatusCode != status {
			t.Errorf("POST /events as %q: %d, want %d", subject, res.StatusCode, status)
		}
	}
	var got image
	e.call("GET", "/api/v1/images/"+img.ID, "alice", nil, &got)
	if got.ID == "" {
		t.Fatal("a refused event changed the workspace")
	}
}

func TestImageLifecycle(t *testing.T) {
	e := setup(t)
	before := time.Now().UTC().Add(-time.Second)
	img, etag := e.create("ws1", "bob", "team/pytorch")
	if img.Status != "not_built" || img.History.Created.By != "bob" || img.History.Created.At.Before(before) ||
		img.History.Modified.By != "bob" || img.History.Built != nil || img.Reference != nil || etag == "" {
		t.Fatalf("created image: %+v etag %q", img, etag)
	}
	var got image
	res := e.call("GET", "/api/v1/images/"+img.ID, "alice", nil, &got)
	if res.Header.Get("ETag") != etag || got.Name != "team/pytorch" {
		t.Fatalf("get: etag %q, %+v", res.Header.Get("ETag"), got)
	}
	// PATCH needs If-Match: 428 without, 412 when stale; nothing changes.
	e.callErr("PATCH", "/api/v1/images/"+img.ID, "alice", map[string]any{"description": "new"}, 428, "precondition_required")
	e.callErr("PATCH", "/api/v1/images/"+img.ID, "alice", map[string]any{"description": "new"}, 412, "precondition_failed", "If-Match", `"999"`)
	var patched image
	res = e.call("PATCH", "/api/v1/images/"+img.ID, "alice", map[string]any{"description": "new"}, &patched, "If-Match", etag)
	want(t, res, 200, "")
	etag2 := res.Header.Get("ETag")
	if etag2 == etag || patched.Description != "new" || patched.History.Modified.By != "alice" ||
		patched.History.Created.By != "bob" || patched.Status != "not_built" {
		t.Fatalf("patched: %+v, etag %q -> %q", patched, etag, etag2)
	}
	// The old ETag is stale now.
	e.callErr("PATCH", "/api/v1/images/"+img.ID, "bob", map[string]any{"description": "lost"}, 412, "precondition_failed", "If-Match", etag)
	// Rename, then the old name is free and the new one taken.
	res = e.call("PATCH", "/api/v1/images/"+img.ID, "alice", map[string]any{"name": "team/renamed"}, nil, "If-Match", etag2)
	want(t, res, 200, "")
	e.create("ws2", "carol", "team/pytorch")
	e.callErr("POST", "/api/v1/workspaces/ws2/images", "carol", localImage("team/renamed", "FROM a\n"), 409, "name_taken")
	// Listing: paginated, in name order.
	for _, n := range []string{"team/b", "team/c", "team/d"} {
		e.create("ws1", "alice", n)
	}
	var names []string
	token := ""
	for {
		var page struct {
			Images []image `json:"images"`
			Next   string  `json:"next_page_token"`
		}
		e.call("GET", "/api/v1/workspaces/ws1/images?limit=2&page_token="+token, "bob", nil, &page)
		for _, i := range page.Images {
			names = append(names, i.Name)
		}
		if token = page.Next; token == "" {
			break
		}
	}
	if strings.Join(names, " ") != "team/b team/c team/d team/renamed" {
		t.Fatalf("listing: %v", names)
	}
	var usable struct {
		Images []image `json:"images"`
	}
	e.call("GET", "/api/v1/workspaces/ws1/images?usable=true", "bob", nil, &usable)
	if len(usable.Images) != 0 {
		t.Fatalf("usable images before any build: %+v", usable.Images)
	}
	// Delete frees the name.
	want(t, e.call("DELETE", "/api/v1/images/"+img.ID, "alice", nil, nil), 204, "")
	e.callErr("GET", "/api/v1/images/"+img.ID, "alice", nil, 404, "not_found")
	e.create("ws2", "carol", "team/renamed")
}

func TestConcurrentCreatesOfOneName(t *testing.T) {
	e := setup(t)
	var created, taken atomic.Int32
	var wg sync.WaitGroup
	for i := range 40 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ws, who := "ws1", "alice"
			if i%2 == 1 {
				ws, who = "ws2", "carol"
			}
			var eb errorBody
			res := e.call("POST", "/api/v1/workspaces/"+ws+"/images", who, localImage("race/one", "FROM a\n"), &eb)
			switch {
			case res.StatusCode == 201:
				created.Add(1)
			case res.StatusCode == 409 && eb.Error.Code == "name_taken":
				taken.Add(1)
			default:
				t.Errorf("create %d: %d %+v", i, res.StatusCode, eb)
			}
		}()
	}
	wg.Wait()
	if created.Load() != 1 || taken.Load() != 39 {
		t.Fatalf("40 concurrent creates: %d created, %d name_taken", created.Load(), taken.Load())
	}
}

func TestConcurrentPatchesOneWins(t *testing.T) {
	e := setup(t)
	img, etag := e.create("ws1", "alice", "team/contended")
	var won, stale atomic.Int32
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			who := []string{"alice", "bob"}[i%2]
			res := e.call("PATCH", "/api/v1/images/"+img.ID, who, map[string]any{"description": who}, nil, "If-Match", etag)
			switch res.StatusCode {
			case 200:
				won.Add(1)
			case 412:
				stale.Add(1)
			default:
				t.Errorf("patch %d: %d", i, res.StatusCode)
			}
		}()
	}
	wg.Wait()
	if won.Load() != 1 || stale.Load() != 19 {
		t.Fatalf("20 concurrent patches with one ETag: %d won, %d got 412", won.Load(), stale.Load())
	}
}

func TestRestartKeepsEverything(t *testing.T) {
	e := setup(t)
	img, etag := e.create("ws1", "alice", "team/durable")
	res := e.call("PATCH", "/api/v1/images/"+img.ID, "bob", map[string]any{"description": "edited"}, nil, "If-Match", etag)
	etag = res.Header.Get("ETag")
	var before image
	e.call("GET", "/api/v1/images/"+img.ID, "alice", nil, &before)
	tok := e.token("alice")

	e2 := e.restart()
	e2.tokens.set("alice", tok) // tokens survive: the key is in the data dir
	var after image
	res = e2.call("GET", "/api/v1/images/"+img.ID, "alice", nil, &after)
	want(t, res, 200, "")
	if res.Header.Get("ETag") != etag || after.Description != "edited" || after.History.Modified.By != "bob" ||
		!after.History.Created.At.Equal(before.History.Created.At) || !after.History.Modified.At.Equal(before.History.Modified.At) {
		t.Fatalf("after restart: %+v etag %q; before %+v etag %q", after, res.Header.Get("ETag"), before, etag)
	}
	// Workspaces and processed events survive too.
	e2.callErr("POST", "/api/v1/workspaces/ws2/images", "carol", localImage("team/durable", "FROM a\n"), 409, "name_taken")
}

func TestBadInputChangesNothing(t *testing.T) {
	e := setup(t)
	img, etag := e.create("ws1", "alice", "team/target")
	post := "/api/v1/workspaces/ws1/images"
	cases := []struct {
		name   string
		body   any
		status int
		code   string
		line   int
	}{
		{"malformed JSON", `{"name":`, 400, "invalid_json", 0},
		{"trailing data", `{"name":"a","context":{"type":"local","dockerfile":"FROM a"}} {}`, 400, "invalid_json", 0},
		{"unknown field", `{"name":"team/u","colour":"red","context":{"type":"local","dockerfile":"FROM a"}}`, 400, "invalid_json", 0},
		{"wrong type", `{"name":7}`, 400, "invalid_json", 0},
		{"empty body", ``, 400, "invalid_json", 0},
		{"oversized", `{"name":"team/big","description":"` + strings.Repeat("x", 2<<20) + `"}`, 413, "too_large", 0},
		{"upper-case name", localImage("Team/X", "FROM a\n"), 400, "invalid_argument", 0},
		{"name with space", localImage("team /x", "FROM a\n"), 400, "invalid_argument", 0},
		{"no name", localImage("", "FROM a\n"), 400, "invalid_argument", 0},
		{"unknown instruction", localImage("team/d1", "FROM busybox\nRUN true\nRUNN echo\n"), 400, "invalid_dockerfile", 3},
		{"no FROM", localImage("team/d2", "RUN echo\n"), 400, "invalid_dockerfile", 1},
		{"bad flag", localImage("team/d3", "FROM a\n\n\nCOPY --chmod=x --nope a b\n"), 400, "invalid_dockerfile", 4},
		{"no context", map[string]any{"name": "team/nc"}, 400, "invalid_argument", 0},
		{"dir escapes", map[string]any{"name": "team/g1", "context": map[string]any{"type": "git", "git": map[string]any{"url": "https://example.com/r.git", "dir": "a/../../etc"}}}, 400, "invalid_argument", 0},
		{"file URL", map[string]any{"name": "team/g2", "context": map[string]any{"type": "git", "git": map[string]any{"url": "file:///etc"}}}, 400, "invalid_argument", 0},
		{"bad destination", map[string]any{"name": "team/g3", "context": map[string]any{"type": "local", "dockerfile": "FROM a"}, "destinations": []map[string]any{{"reference": "NOT A REF"}}}, 400, "invalid_argument", 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			eb := e.callErr("POST", post, "alice", c.body, c.status, c.code)
			if c.line != 0 && (eb.Error.Line != c.line || !strings.Contains(eb.Error.Message, "line")) {
				t.Fatalf("error %+v does not name line %d", eb.Error, c.line)
			}
		})
	}
	e.callErr("PATCH", "/api/v1/images/"+img.ID, "alice", map[string]any{"context": map[string]any{"type": "local", "dockerfile": "FROM a\nBOGUS x\n"}}, 400, "invalid_dockerfile", "If-Match", etag)
	e.callErr("PATCH", "/api/v1/images/"+img.ID, "alice", `{"name":`, 400, "invalid_json", "If-Match", etag)
	e.callErr("GET", post+"?limit=0", "alice", nil, 400, "invalid_argument")
	e.callErr("GET", post+"?limit=x", "alice", nil, 400, "invalid_argument")
	e.callErr("GET", post+"?page_token=%21%21", "alice", nil, 400, "invalid_argument")
	e.callErr("GET", post+"?usable=maybe", "alice", nil, 400, "invalid_argument")
	e.callErr("DELETE", "/api/v1/info", "alice", nil, 405, "method_not_allowed")
	e.callErr("GET", "/api/v1/nothing", "alice", nil, 404, "not_found")
	e.callErr("PUT", "/api/v1/workspaces/ws1/credentials/Bad_Name", "alice", map[string]any{"kind": "git", "token": "t"}, 400, "invalid_argument")
	e.callErr("PUT", "/api/v1/workspaces/ws1/credentials/hub", "alice", map[string]any{"kind": "ftp"}, 400, "invalid_argument")
	e.callErr("POST", post, "alice", `{"name":"x"}`, 415, "unsupported_media_type", "Content-Type", "text/plain")
	// Nothing changed: one image, still at its ETag.
	var list struct {
		Images []image `json:"images"`
	}
	e.call("GET", post, "alice", nil, &list)
	res := e.call("GET", "/api/v1/images/"+img.ID, "alice", nil, nil)
	if len(list.Images) != 1 || res.Header.Get("ETag") != etag {
		t.Fatalf("bad input changed something: %d images, etag %q -> %q", len(list.Images), etag, res.Header.Get("ETag"))
	}
}

func TestWorkspaceEvents(t *testing.T) {
	e := setup(t)
	// Binary mode, redelivered: the second delivery changes nothing.
	send := func(id, typ, data string) int {
		req, _ := http.NewRequest("POST", e.baseURL+"/events", strings.NewReader(data))
		for k, v := range map[string]string{"Ce-Specversion": "1.0", "Ce-Id": id, "Ce-Source": "/platform", "Ce-Type": typ,
			"Ce-Time":      time.Now().UTC().Format(time.RFC3339Nano),
			"Content-Type": "application/json", "Authorization": "Bearer " + e.token("platform")} {
			req.Header.Set(k, v)
		}
		res := e.c.Do(req)
		io.Copy(io.Discard, res.Body)
		res.Body.Close()
		return res.StatusCode
	}
	if s := send("e1", events.WorkspaceCreated, `{"id":"ws3","owner":"dave"}`); s != 204 {
		t.Fatalf("create: %d", s)
	}
	e.create("ws3", "dave", "team/dave")
	if s := send("e2", events.WorkspaceUpdated, `{"id":"ws3","owner":"erin"}`); s != 204 {
		t.Fatalf("update: %d", s)
	}
	// Redelivery of e1 must not give dave the workspace back.
	if s := send("e1", events.WorkspaceCreated, `{"id":"ws3","owner":"dave"}`); s != 204 {
		t.Fatalf("redelivery: %d", s)
	}
	e.callErr("GET", "/api/v1/workspaces/ws3/images", "dave", nil, 404, "not_found")
	want(t, e.call("GET", "/api/v1/workspaces/ws3/images", "erin", nil, nil), 200, "")
	// Unknown types are acknowledged and ignored; malformed ones are 400.
	if s := send("e3", "platform.node.created", `{"id":"n1"}`); s != 202 {
		t.Fatalf("unknown type: %d", s)
	}
	if s := send("e4", events.WorkspaceCreated, `{"owner":"x"}`); s != 400 {
		t.Fatalf("no workspace id: %d", s)
	}
	if s := send("e5", events.WorkspaceCreated, `not json`); s != 400 {
		t.Fatalf("data not JSON: %d", s)
	}
	req, _ := http.NewRequest("POST", e.baseURL+"/events", bytes.NewReader([]byte(`{"specversion":"1.0"}`)))
	req.Header.Set("Content-Type", "application/cloudevents+json")
	req.Header.Set("Authorization", "Bearer "+e.token("platform"))
	if res := e.c.Do(req); res.StatusCode != 400 {
		t.Fatalf("structured event without id: %d", res.StatusCode)
	}
	// Deleting the workspace deletes its images and frees their names.
	if s := send("e6", events.WorkspaceDeleted, `{"id":"ws3"}`); s != 204 {
		t.Fatalf("delete: %d", s)
	}
	e.create("ws1", "alice", "team/dave")
}

func TestEventsOut(t *testing.T) {
	// The sink is a real HTTP endpoint decoding with the CloudEvents SDK, as
	// a Knative Broker would.
	got := make(chan cloudevents.Event, 16)
	sink := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ev, err := cloudevents.NewEventFromHTTPRequest(r)
		if err != nil {
			http.Error(w, err.Error(), 400)
			return
		}
		got <- *ev
		w.WriteHeader(http.StatusAccepted)
	}))
	defer sink.Close()
	sinkURL := sink.URL

	cfg := serverConfig(t)
	cfg.Sink = sinkURL
	e := start(t, cfg)
	e.announce(events.WorkspaceCreated, "ws1", "alice")
	img, etag := e.create("ws1", "alice", "team/evented")
	e.call("PATCH", "/api/v1/images/"+img.ID, "alice", map[string]any{"description": "d"}, nil, "If-Match", etag)
	e.call("DELETE", "/api/v1/images/"+img.ID, "alice", nil, nil)
	seen := map[string]bool{}
	timeout := time.After(10 * time.Second)
	for len(seen) < 3 {
		select {
		case ev := <-got:
			if ev.Source() != events.Source || ev.Subject() != img.ID {
				t.Fatalf("event %v", ev)
			}
			var data image
			if err := ev.DataAs(&data); err != nil || data.ID != img.ID {
				t.Fatalf("event data: %+v, %v", data, err)
			}
			seen[ev.Type()] = true
		case <-timeout:
			t.Fatalf("events seen at the sink: %v", seen)
		}
	}
	for _, typ := range []string{events.ImageCreated, events.ImageUpdated, events.ImageDeleted} {
		if !seen[typ] {
			t.Errorf("no %s at the sink", typ)
		}
	}
}

func TestHealthAndMetrics(t *testing.T) {
	e := setup(t)
	for _, p := range []string{"/health/liveness", "/health/readiness"} {
		res, err := http.Get(e.baseURL + p)
		if err != nil || res.StatusCode != 200 {
			t.Fatalf("%s: %v %v", p, res, err)
		}
		res.Body.Close()
	}
	e.create("ws1", "alice", "team/metered")
	e.call("GET", "/api/v1/images/nope", "alice", nil, nil)
	res, err := http.Get(e.baseURL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	for _, wantLine := range []string{
		`slipway_http_requests_total{code="201",method="POST",route="/api/v1/workspaces/{ws}/images"} 1`,
		`slipway_http_requests_total{code="404",method="GET",route="/api/v1/images/{id}"} 1`,
		`slipway_http_request_duration_seconds_count{method="POST",route="/api/v1/workspaces/{ws}/images"} 1`,
	} {
		if !strings.Contains(string(body), wantLine) {
			t.Errorf("metrics lack %q", wantLine)
		}
	}
	e.callErr("GET", "/api/v1/info", "", nil, 401, "unauthenticated")
	var info struct{ Registry, Version string }
	e.call("GET", "/api/v1/info", "bob", nil, &info)
	if info.Registry != strings.TrimPrefix(e.baseURL, "http://") || info.Version == "" {
		t.Fatalf("info: %+v", info)
	}
}

func TestGetWorkspace(t *testing.T) {
	e := setup(t)
	var ws struct {
		ID, Owner, Role string
		Members         []string
	}
	e.call("GET", "/api/v1/workspaces/ws1", "bob", nil, &ws)
	if ws.ID != "ws1" || ws.Owner != "alice" || ws.Role != "member" || len(ws.Members) != 1 {
		t.Fatalf("as member: %+v", ws)
	}
	e.call("GET", "/api/v1/workspaces/ws2", "carol", nil, &ws)
	if ws.Role != "owner" || ws.Members == nil {
		t.Fatalf("as owner: %+v", ws)
	}
	e.callErr("GET", "/api/v1/workspaces/ws1", "carol", nil, 404, "not_found")
	e.callErr("GET", "/api/v1/workspaces/nope", "alice", nil, 404, "not_found")
}

func TestDemoLink(t *testing.T) {
	var out servertest.LockedBuffer
	cfg := serverConfig(t)
	cfg.Demo, cfg.Stdout = true, &out
	e := start(t, cfg)
	link := out.String()
	i := strings.Index(link, "#token=")
	if i < 0 || !strings.Contains(link, e.baseURL+"/#token=") || !strings.Contains(link, "&workspace=demo") {
		t.Fatalf("demo output: %q", link)
	}
	tok := strings.TrimSpace(link[i+len("#token=") : strings.Index(link, "&workspace=")])
	var ws struct{ Role string }
	res, body := e.c.JSON("GET", "/api/v1/workspaces/demo", tok, nil)
	if res.StatusCode != 200 || json.Unmarshal(body, &ws) != nil || ws.Role != "owner" {
		t.Fatalf("the demo token does not own the demo workspace: %d %s", res.StatusCode, body)
	}
	// A restart keeps the workspace and prints a fresh link.
	e.restart()
	if strings.Count(out.String(), "#token=") != 2 {
		t.Fatalf("no link after a restart: %q", out.String())
	}
}
