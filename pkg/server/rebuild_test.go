package server_test

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2"
	"github.com/google/uuid"

	"github.com/slipway-dev/slipway/events"
)

// policyJSON is an image's rebuild field as the tests read it.
type policyJSON struct {
	Schedule *struct {
		Cron     string `json:"cron"`
		Timezone string `json:"timezone"`
	} `json:"schedule"`
	OnBaseImageUpdate bool    `json:"on_base_image_update"`
	OnGitCommit       bool    `json:"on_git_commit"`
	SetBy             *stamp  `json:"set_by"`
	CheckedAt         *string `json:"checked_at"`
	UpToDate          bool    `json:"up_to_date"`
	Pending           bool    `json:"pending"`
	Webhook           bool    `json:"webhook"`
}

type imageWithPolicy struct {
	image
	Rebuild policyJSON `json:"rebuild"`
}

func (e *env) getPolicy(id, subject string) (imageWithPolicy, string) {
	e.t.Helper()
	var img imageWithPolicy
	res := e.call("GET", "/api/v1/images/"+id, subject, nil, &img)
	want(e.t, res, 200, "")
	return img, res.Header.Get("ETag")
}

// The owner sets the policy; members see it and cannot change it; it is
// not the definition: neither status nor history.modified move.
func TestRebuildPolicyIsTheOwners(t *testing.T) {
	e := start(t, serverConfig(t))
	e.announce(events.WorkspaceCreated, "ws1", "alice", "bob")
	img, _ := e.create("ws1", "bob", "team/policy")
	got, tag := e.getPolicy(img.ID, "bob")
	if got.Rebuild.Schedule != nil || got.Rebuild.OnBaseImageUpdate || got.Rebuild.OnGitCommit || got.Rebuild.SetBy != nil {
		t.Fatalf("default policy %+v, want none", got.Rebuild)
	}
	policy := map[string]any{"schedule": map[string]any{"cron": "0 3 * * 1", "timezone": "Europe/Berlin"}, "on_base_image_update": true}

	// A member's PATCH or POST of a policy: 403, nothing changes.
	e.callErr("PATCH", "/api/v1/images/"+img.ID, "bob", map[string]any{"rebuild": policy, "description": "mine"}, 403, "forbidden", "If-Match", tag)
	def := localImage("team/policy2", "FROM busybox\n")
	def["rebuild"] = policy
	e.callErr("POST", "/api/v1/workspaces/ws1/images", "bob", def, 403, "forbidden")
	if after, tag2 := e.getPolicy(img.ID, "alice"); tag2 != tag || after.Description != img.Description || after.Rebuild.Schedule != nil {
		t.Fatalf("a member's refused PATCH changed the image: %+v (ETag %s, was %s)", after, tag2, tag)
	}
	e.callErr("GET", "/api/v1/images/team%2Fpolicy2", "alice", nil, 404, "not_found")

	// Bad policies: 400 with the field's code, nothing changes.
	for _, c := range []struct {
		p    map[string]any
		code string
	}{
		{map[string]any{"schedule": map[string]any{"cron": "0 3 * *"}}, "invalid_cron"},
		{map[string]any{"schedule": map[string]any{"cron": "@every 5m"}}, "invalid_cron"},
		{map[string]any{"schedule": map[string]any{"cron": "0 3 * * *", "timezone": "Europe/Atlantis"}}, "invalid_timezone"},
		{map[string]any{"on_git_commit": true}, "invalid_rebuild"},
	} {
		eb := e.callErr("PATCH", "/api/v1/images/"+img.ID, "alice", map[string]any{"rebuild": c.p}, 400, c.code, "If-Match", tag)
		if !strings.HasPrefix(eb.Error.Field, "rebuild.") {
			t.Errorf("%v: field %q", c.p, eb.Error.Field)
		}
	}
	e.callErr("PATCH", "/api/v1/images/"+img.ID, "alice", map[string]any{"rebuild": map[string]any{"schedule": map[string]any{"cron": "@daily", "tz": "UTC"}}}, 400, "invalid_json", "If-Match", tag)
	if _, tag2 := e.getPolicy(img.ID, "alice"); tag2 != tag {
		t.Fatal("a refused PATCH changed the image")
	}

	// The owner sets it: status and history.modified stay.
	var set imageWithPolicy
	res := e.call("PATCH", "/api/v1/images/"+img.ID, "alice", map[string]any{"rebuild": policy}, &set, "If-Match", tag)
	want(t, res, 200, "")
	if set.Rebuild.Schedule == nil || set.Rebuild.Schedule.Cron != "0 3 * * 1" || set.Rebuild.Schedule.Timezone != "Europe/Berlin" ||
		!set.Rebuild.OnBaseImageUpdate || set.Rebuild.SetBy == nil || set.Rebuild.SetBy.By != "alice" {
		t.Fatalf("policy after the owner's PATCH: %+v", set.Rebuild)
	}
	if set.Status != got.Status || !set.History.Modified.At.Equal(got.History.Modified.At) || set.History.Modified.By != "bob" {
		t.Fatalf("a policy change moved status or history.modified: %s %+v, was %s %+v", set.Status, set.History.Modified, got.Status, got.History.Modified)
	}
	// Members see it, and may edit the definition sending it back as read.
	seen, tag := e.getPolicy(img.ID, "bob")
	if seen.Rebuild.Schedule == nil || !seen.Rebuild.OnBaseImageUpdate {
		t.Fatalf("a member sees %+v", seen.Rebuild)
	}
	var raw map[string]any
	e.call("GET", "/api/v1/images/"+img.ID, "bob", nil, &raw)
	res = e.call("PATCH", "/api/v1/images/"+img.ID, "bob", map[string]any{"description": "edited", "rebuild": raw["rebuild"]}, nil, "If-Match", tag)
	want(t, res, 200, "")
	// Listing shows it too.
	var list struct {
		Images []imageWithPolicy `json:"images"`
	}
	e.call("GET", "/api/v1/workspaces/ws1/images", "bob", nil, &list)
	if len(list.Images) != 1 || list.Images[0].Rebuild.Schedule == nil {
		t.Fatalf("listing: %+v", list.Images)
	}

	// The webhook secret: the owner's alone, never in the image.
	e.callErr("POST", "/api/v1/images/"+img.ID+"/webhook", "bob", nil, 403, "forbidden")
	e.callErr("GET", "/api/v1/images/"+img.ID+"/webhook", "alice", nil, 404, "not_found")
	var hook struct{ URL, Secret string }
	want(t, e.call("POST", "/api/v1/images/"+img.ID+"/webhook", "alice", nil, &hook), 201, "")
	if len(hook.Secret) < 32 || !strings.HasSuffix(hook.URL, "/hooks/v1/images/"+img.ID+"/git") {
		t.Fatalf("webhook %+v", hook)
	}
	var again struct{ URL, Secret string }
	want(t, e.call("GET", "/api/v1/images/"+img.ID+"/webhook", "alice", nil, &again), 200, "")
	e.callErr("GET", "/api/v1/images/"+img.ID+"/webhook", "bob", nil, 403, "forbidden")
	if again != hook {
		t.Fatalf("GET webhook %+v, POST gave %+v", again, hook)
	}
	for _, who := range []string{"alice", "bob"} {
		_, body := e.c.JSON("GET", "/api/v1/images/"+img.ID, e.token(who), nil)
		if bytes.Contains(body, []byte(hook.Secret)) {
			t.Fatalf("the image shows %s the webhook secret", who)
		}
		if !bytes.Contains(body, []byte(`"webhook":true`)) {
			t.Fatalf("the image does not say it has a webhook: %s", body)
		}
	}
	if strings.Contains(e.logs.String(), hook.Secret) {
		t.Fatal("the server logged the webhook secret")
	}
}

// rebuildEvent is a platform.image.rebuild.requested event.
func rebuildEvent(id, imageRef, reason string) cloudevents.Event {
	ev := cloudevents.NewEvent()
	ev.SetID(id)
	ev.SetSource("/platform/scanner")
	ev.SetType(events.ImageRebuildRequested)
	ev.SetData(cloudevents.ApplicationJSON, map[string]string{"image": imageRef, "reason": reason})
	return ev
}

// buildsOf lists an image's builds as alice.
func (e *env) buildsOf(id string) []buildWithCause {
	e.t.Helper()
	var list struct {
		Builds []buildWithCause `json:"builds"`
	}
	want(e.t, e.call("GET", "/api/v1/images/"+id+"/builds", "alice", nil, &list), 200, "")
	return list.Builds
}

type buildWithCause struct {
	buildJSON
	Trigger string `json:"trigger"`
	Cause   *struct {
		Slot   *string                            `json:"slot"`
		Bases  []struct{ Ref, Old, New string }   `json:"bases"`
		Commit string                             `json:"commit"`
		Prev   string                             `json:"previous_commit"`
		Via    string                             `json:"via"`
		Event  *struct{ Source, ID, Type string } `json:"event"`
		Reason string                             `json:"reason"`
	} `json:"cause"`
	Bases []struct{ Ref, Digest string } `json:"bases"`
}

// A rebuild request from a publisher builds once however often it is
// delivered; from anyone else it is 403.
func TestRebuildEventFromPublishers(t *testing.T) {
	e := start(t, serverConfig(t))
	e.announce(events.WorkspaceCreated, "ws1", "alice", "bob")
	img, _ := e.create("ws1", "alice", "team/evented")
	ev := rebuildEvent(uuid.NewString(), img.ID, "CVE-2026-1234 in openssl")
	for _, who := range []string{"alice", "bob", "mallory"} {
		if res := e.postEvent(ev, who); res.StatusCode != 403 {
			t.Fatalf("rebuild event from %s: %d, want 403", who, res.StatusCode)
		}
	}
	if bs := e.buildsOf(img.ID); len(bs) != 0 {
		t.Fatalf("%d builds after refused events", len(bs))
	}
	for i := range 3 {
		if res := e.postEvent(ev, "platform"); res.StatusCode != 200 {
			t.Fatalf("delivery %d: %d", i, res.StatusCode)
		}
	}
	bs := e.buildsOf(img.ID)
	if len(bs) != 1 {
		t.Fatalf("%d builds after three deliveries of one event, want 1", len(bs))
	}
	b := bs[0]
	if b.Trigger != "event" || b.RequestedBy != "platform" || b.Cause == nil || b.Cause.Reason != "CVE-2026-1234 in openssl" ||
		b.Cause.Event == nil || b.Cause.Event.ID != ev.ID() || b.Cause.Event.Source != "/platform/scanner" {
		t.Fatalf("event build %+v cause %+v", b, b.Cause)
	}
	// By name, a new event: another build once the first has ended.
	e.waitFor(img.ID, b.Number, 2*time.Minute, ended)
	byName := rebuildEvent(uuid.NewString(), "team/evented", "weekly")
	if res := e.postEvent(byName, "platform"); res.StatusCode != 200 {
		t.Fatalf("by name: %d", res.StatusCode)
	}
	if bs := e.buildsOf(img.ID); len(bs) != 2 || bs[0].Cause.Reason != "weekly" {
		t.Fatalf("builds %+v", bs)
	}
	// Unknown image: 404; no image named: 400.
	if res := e.postEvent(rebuildEvent(uuid.NewString(), "team/nope", "x"), "platform"); res.StatusCode != 404 {
		t.Fatalf("unknown image: %d", res.StatusCode)
	}
	if res := e.postEvent(rebuildEvent(uuid.NewString(), "", "x"), "platform"); res.StatusCode != 400 {
		t.Fatalf("no image: %d", res.StatusCode)
	}
}

// postHook posts a push webhook delivery with headers.
func (e *env) postHook(id string, body []byte, headers ...string) (*http.Response, map[string]any) {
	e.t.Helper()
	req, _ := http.NewRequest("POST", e.baseURL+"/hooks/v1/images/"+id+"/git", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	res := e.c.Do(req)
	data, _ := io.ReadAll(res.Body)
	res.Body.Close()
	var out map[string]any
	json.Unmarshal(data, &out)
	return res, out
}
