package server_test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/slipway-dev/slipway/events"
	"github.com/slipway-dev/slipway/pkg/server"
)

// trickle sends request headers announcing a body of size bytes, then one
// byte every 100 ms, and returns how long the server let it go on and what
// it answered ("" when it only closed the connection).
func trickle(t *testing.T, addr, head string, size int, limit time.Duration) (time.Duration, string) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	begun := time.Now()
	fmt.Fprintf(c, "%sContent-Length: %d\r\n\r\n", head, size)
	answer := make(chan string, 1)
	go func() {
		b, _ := io.ReadAll(bufio.NewReader(c))
		answer <- string(b)
	}()
	for sent := 0; sent < size; sent++ {
		select {
		case a := <-answer:
			return time.Since(begun), a
		case <-time.After(100 * time.Millisecond):
		}
		if _, err := c.Write([]byte(" ")); err != nil {
			break
		}
		if time.Since(begun) > limit {
			t.Fatalf("%s: still accepting a trickled body after %s", strings.SplitN(head, "\r\n", 2)[0], time.Since(begun))
		}
	}
	select {
	case a := <-answer:
		return time.Since(begun), a
	case <-time.After(limit):
		t.Fatalf("%s: no answer and no close after %s", strings.SplitN(head, "\r\n", 2)[0], time.Since(begun))
		return 0, ""
	}
}

// TestTricklingClientsAreCutOff: a client that sends its body a byte at a
// time is cut off after --body-timeout on the API and the event receiver,
// authenticated or not, and once below the minimum rate on the registry;
// and nothing it sent is stored.
func TestTricklingClientsAreCutOff(t *testing.T) {
	const bodyTimeout = 2 * time.Second
	cfg := serverConfig(t)
	cfg.BodyTimeout = bodyTimeout
	e := start(t, cfg)
	e.announce(events.WorkspaceCreated, "ws1", "alice")
	addr := strings.TrimPrefix(e.baseURL, "http://")
	for _, tc := range []struct{ name, head string }{
		{"api", "POST /api/v1/workspaces/ws1/images HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nAuthorization: Bearer " + e.token("alice") + "\r\n"},
		{"api without a token", "POST /api/v1/workspaces/ws1/images HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"},
		{"events", "POST /events HTTP/1.1\r\nHost: x\r\nContent-Type: application/cloudevents+json\r\nAuthorization: Bearer " + e.token("platform") + "\r\n"},
		{"registry", "POST /v2/team/trickle/blobs/uploads/ HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\n"},
	} {
		took, answer := trickle(t, addr, tc.head, 100000, bodyTimeout+10*time.Second)
		if took < bodyTimeout-200*time.Millisecond || took > bodyTimeout+3*time.Second {
			t.Errorf("%s: cut off after %s, want about %s", tc.name, took, bodyTimeout)
		}
		if tc.name == "api" && !strings.HasPrefix(answer, "HTTP/1.1 408") {
			t.Errorf("%s: answered %q, want 408", tc.name, answer)
		}
		t.Logf("%s: cut off after %s (%q)", tc.name, took.Round(10*time.Millisecond), strings.SplitN(answer, "\r\n", 2)[0])
	}
	var list struct {
		Images []image `json:"images"`
	}
	e.call("GET", "/api/v1/workspaces/ws1/images", "alice", nil, &list)
	if len(list.Images) != 0 {
		t.Fatalf("a trickled request stored %+v", list.Images)
	}
	// A request that sends its body in time, on a connection kept alive
	// past the timeout, is fine.
	time.Sleep(bodyTimeout + 500*time.Millisecond)
	want(t, e.call("POST", "/api/v1/workspaces/ws1/images", "alice", localImage("team/in-time", "FROM busybox\n"), nil), 201, "")
}

// TestFollowedLogOutlastsTheBodyTimeout: the body deadline is lifted once a
// request's body is in, so a followed log streams to the build's end.
func TestFollowedLogOutlastsTheBodyTimeout(t *testing.T) {
	e := buildEnv(t, func(c *server.Config) { c.BodyTimeout = time.Second })
	img := e.newImage(localImage("team/slowish", "FROM "+e.base()+"\nRUN echo start; sleep 4; echo finish\n"))
	n := e.startBuild(img.ID)
	req, _ := http.NewRequest("GET", fmt.Sprintf("%s/api/v1/images/%s/builds/%d/log?follow=true", e.baseURL, img.ID, n), nil)
	req.Header.Set("Authorization", "Bearer "+e.token("alice"))
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	begun := time.Now()
	log, err := io.ReadAll(res.Body)
	if err != nil || !strings.Contains(string(log), "finish") || time.Since(begun) < 2*time.Second {
		t.Fatalf("followed log after %s: %v\n%s", time.Since(begun), err, log)
	}
}

// rawJSON sends body as it is (invalid UTF-8 survives, which json.Marshal
// would replace) and returns the status and the error code.
func (e *env) rawJSON(method, path, subject, body string, headers ...string) (int, string) {
	e.t.Helper()
	req, _ := http.NewRequest(method, e.baseURL+path, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+e.token(subject))
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	res := e.c.Do(req)
	defer res.Body.Close()
	var eb errorBody
	b, _ := io.ReadAll(res.Body)
	_ = json.Unmarshal(b, &eb)
	return res.StatusCode, eb.Error.Code
}

// TestInvalidUTF8IsRefused: a string that is not valid UTF-8, as raw bytes
// or as an escaped lone surrogate, is 400 invalid_utf8 in every field and
// changes nothing; U+FFFD itself, sent as such, is a character like any.
func TestInvalidUTF8IsRefused(t *testing.T) {
	e := setup(t)
	img, tag := e.create("ws1", "alice", "team/utf8")
	for _, tc := range []struct{ method, path, body string }{
		{"POST", "/api/v1/workspaces/ws1/images", `{"name":"team/a","description":"bad ` + "\xff" + ` byte","context":{"type":"local","dockerfile":"FROM busybox\n"}}`},
		{"POST", "/api/v1/workspaces/ws1/images", `{"name":"team/b","description":"lone \ud800 surrogate","context":{"type":"local","dockerfile":"FROM busybox\n"}}`},
		{"POST", "/api/v1/workspaces/ws1/images", `{"name":"team/c","context":{"type":"local","dockerfile":"FROM busybox\nLABEL x=\"\udfff\"\n"}}`},
		{"PATCH", "/api/v1/images/" + img.ID, `{"description":"` + "\xc3\x28" + `"}`},
		{"PATCH", "/api/v1/images/" + img.ID, `{"destinations":[{"reference":"r.example/x:v1","credential":"\udc00"}]}`},
		{"PUT", "/api/v1/workspaces/ws1/credentials/hub", `{"kind":"registry","registry":"r.example","username":"` + "\xff" + `","password":"p"}`},
	} {
		if status, code := e.rawJSON(tc.method, tc.path, "alice", tc.body, "If-Match", tag); status != 400 || code != "invalid_utf8" {
			t.Errorf("%s %s %q: %d %q, want 400 invalid_utf8", tc.method, tc.path, tc.body, status, code)
		}
	}
	var got image
	res := e.call("GET", "/api/v1/images/"+img.ID, "alice", nil, &got)
	if res.Header.Get("ETag") != tag || got.Description != img.Description {
		t.Fatalf("a refused PATCH changed the image: %s %+v", res.Header.Get("ETag"), got)
	}
	var list struct {
		Images      []image          `json:"images"`
		Credentials []map[string]any `json:"credentials"`
	}
	e.call("GET", "/api/v1/workspaces/ws1/images", "alice", nil, &list)
	e.call("GET", "/api/v1/workspaces/ws1/credentials", "alice", nil, &list)
	if len(list.Images) != 1 || len(list.Credentials) != 0 {
		t.Fatalf("refused requests stored %d images, %d credentials", len(list.Images), len(list.Credentials))
	}
	// U+FFFD sent on purpose, raw or escaped, is kept.
	if status, _ := e.rawJSON("POST", "/api/v1/workspaces/ws1/images", "alice", `{"name":"team/d","description":"� and \uFFFD","context":{"type":"local","dockerfile":"FROM busybox\n"}}`); status != 201 {
		t.Fatalf("a description with U+FFFD itself: %d", status)
	}
	// Workspace events with invalid UTF-8 are malformed.
	for _, data := range []string{`{"id":"ws9","owner":"` + "\xff" + `"}`, `{"id":"ws9","owner":"eve","members":["\ud800"]}`} {
		req, _ := http.NewRequest("POST", e.baseURL+"/events", strings.NewReader(data))
		for k, v := range map[string]string{"Content-Type": "application/json", "Ce-Specversion": "1.0", "Ce-Id": data, "Ce-Source": "/platform", "Ce-Time": time.Now().UTC().Format(time.RFC3339Nano),
			"Ce-Type": events.WorkspaceCreated, "Authorization": "Bearer " + e.token("platform")} {
			req.Header.Set(k, v)
		}
		res := e.c.Do(req)
		res.Body.Close()
		if res.StatusCode != 400 {
			t.Errorf("workspace event %q: %d, want 400", data, res.StatusCode)
		}
	}
	e.callErr("GET", "/api/v1/workspaces/ws9", "eve", nil, 404, "not_found")
}
