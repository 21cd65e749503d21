package server_test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/slipway-dev/slipway/events"
	"github.com/slipway-dev/slipway/internal/servertest"
)

// Reads of images are served from encoded answers cached per workspace
// catalogue number; every change shows at once, also those a build makes
// without changing the image's version, and rights are checked before
// any cached answer.
func TestCachedReadsFollowEveryChange(t *testing.T) {
	cfg := serverConfig(t)
	cfg.Executor = servertest.Executor(t)
	e := start(t, cfg)
	e.announce(events.WorkspaceCreated, "ws1", "alice", "bob")
	img, _ := e.create("ws1", "alice", "team/cached")
	e.create("ws1", "alice", "team/other")

	// read returns the image as listed and as got, checking they agree.
	read := func(subject string) (image, string) {
		t.Helper()
		var list struct {
			Images []json.RawMessage `json:"images"`
		}
		want(t, e.call("GET", "/api/v1/workspaces/ws1/images", subject, nil, &list), 200, "")
		var got json.RawMessage
		res := e.call("GET", "/api/v1/images/"+img.ID, subject, nil, &got)
		want(t, res, 200, "")
		var listed json.RawMessage
		for _, raw := range list.Images {
			var v image
			json.Unmarshal(raw, &v)
			if v.ID == img.ID {
				listed = raw
			}
		}
		if !bytes.Equal(listed, got) {
			t.Fatalf("listed %s\ngot    %s", listed, got)
		}
		var v image
		json.Unmarshal(got, &v)
		return v, res.Header.Get("ETag")
	}
	for range 2 { // the second time from the cache
		if v, tag := read("bob"); v.Description != "about team/cached" || tag != `"1"` {
			t.Fatalf("before changes: %+v, ETag %s", v, tag)
		}
	}
	// A change of the definition.
	res := e.call("PATCH", "/api/v1/images/"+img.ID, "alice", map[string]any{"description": "changed"}, nil, "If-Match", `"1"`)
	want(t, res, 200, "")
	if v, tag := read("bob"); v.Description != "changed" || tag != `"2"` {
		t.Fatalf("after PATCH: %+v, ETag %s", v, tag)
	}
	// A build changes the image's latest build, not its version.
	want(t, e.call("POST", "/api/v1/images/"+img.ID+"/builds", "alice", nil, nil), http.StatusAccepted, "")
	var b struct {
		Number int    `json:"number"`
		Status string `json:"status"`
	}
	deadline := time.Now().Add(2 * time.Minute)
	for {
		want(t, e.call("GET", "/api/v1/images/"+img.ID+"/builds/1", "alice", nil, &b), 200, "")
		if b.Status != "queued" && b.Status != "running" || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	var latest struct {
		Number int    `json:"number"`
		Status string `json:"status"`
	}
	v, tag := read("alice")
	json.Unmarshal(v.LatestBuild, &latest)
	if latest.Number != 1 || latest.Status != b.Status || tag != `"2"` {
		t.Fatalf("after the build ended %s: latest build %s, ETag %s", b.Status, v.LatestBuild, tag)
	}
	// Rights come first: bob, no longer a member, sees nothing cached.
	e.announce(events.WorkspaceUpdated, "ws1", "alice")
	e.callErr("GET", "/api/v1/workspaces/ws1/images", "bob", nil, 404, "not_found")
	e.callErr("GET", "/api/v1/images/"+img.ID, "bob", nil, 404, "not_found")
	// A deleted image is gone from both.
	want(t, e.call("DELETE", "/api/v1/images/"+img.ID, "alice", nil, nil), http.StatusNoContent, "")
	e.callErr("GET", "/api/v1/images/"+img.ID, "alice", nil, 404, "not_found")
	var list struct {
		Images []image `json:"images"`
	}
	e.call("GET", "/api/v1/workspaces/ws1/images", "alice", nil, &list)
	if len(list.Images) != 1 || list.Images[0].Name != "team/other" {
		t.Fatalf("after delete: %+v", list.Images)
	}
}
