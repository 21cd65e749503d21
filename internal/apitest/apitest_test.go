package apitest

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/slipway-dev/slipway/functions"
	"github.com/slipway-dev/slipway/pkg/auth"
	"github.com/slipway-dev/slipway/pkg/store/sqlite"
)

// recorder is a testing.TB that records failures instead of failing.
type recorder struct {
	testing.TB
	mu     sync.Mutex
	errors []string
}

func (r *recorder) Errorf(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.errors = append(r.errors, fmt.Sprintf(format, args...))
}

func (r *recorder) Fatalf(format string, args ...any) { r.Errorf(format, args...) }

func (r *recorder) failures() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return strings.Join(r.errors, "\n")
}

// fake serves one canned answer for every request.
func fake(t *testing.T, status int, contentType, body string, headers ...string) string {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		for i := 0; i+1 < len(headers); i += 2 {
			w.Header().Set(headers[i], headers[i+1])
		}
		if contentType != "" {
			w.Header().Set("Content-Type", contentType)
		}
		w.WriteHeader(status)
		io.WriteString(w, body)
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

const validError = `{"error":{"code":"not_found","message":"no such resource"}}`

func TestClientCatchesUndocumentedResponses(t *testing.T) {
	for _, tc := range []struct {
		name, method, path      string
		status                  int
		contentType, body, want string
		headers                 []string
	}{
		{name: "undocumented status", method: "GET", path: "/api/v1/info", status: http.StatusTeapot,
			contentType: "application/json", body: `{}`, want: "GET /api/v1/info answered 418"},
		{name: "missing required field", method: "GET", path: "/api/v1/info", status: http.StatusOK,
			contentType: "application/json", body: `{"registry":"127.0.0.1:1"}`, want: "version"},
		{name: "wrong content type", method: "GET", path: "/api/v1/info", status: http.StatusOK,
			contentType: "text/html", body: `<p>hi</p>`, want: "answered 200"},
		{name: "error in another shape", method: "GET", path: "/api/v1/images/x", status: http.StatusNotFound,
			contentType: "text/plain", body: "404 page not found", want: "answered 404"},
		{name: "wrong error code", method: "GET", path: "/api/v1/images/x", status: http.StatusNotFound,
			contentType: "application/json", body: `{"error":{"code":"forbidden","message":"no"}}`, want: "answered 404"},
		{name: "nullable field missing", method: "GET", path: "/api/v1/images/x/builds/1", status: http.StatusOK,
			contentType: "application/json", body: `{"number":1,"image":"x","status":"queued","requested_by":"a","trigger":"manual",
			"queued_at":"2024-01-01T00:00:00Z","started_at":null,"finished_at":null,"duration_seconds":null,"digest":null,
			"reference":null,"pushes":[],"failure":null}`, want: "commit"},
		{name: "missing ETag", method: "GET", path: "/api/v1/images/x", status: http.StatusOK,
			contentType: "application/json", body: imageJSON, want: "ETag"},
		{name: "secret in a credential", method: "GET", path: "/api/v1/workspaces/ws/credentials", status: http.StatusOK,
			contentType: "application/json", body: `{"credentials":[{"name":"hub","kind":"registry","registry":"r.io","password":"x"}]}`, want: "password"},
		{name: "unknown path answered 200", method: "GET", path: "/api/v1/nope", status: http.StatusOK,
			contentType: "application/json", body: `{}`, want: "answered 200"},
		{name: "405 without Allow", method: "PUT", path: "/api/v1/info", status: http.StatusMethodNotAllowed,
			contentType: "application/json", body: `{"error":{"code":"method_not_allowed","message":"no"}}`, want: "Allow"},
		{name: "log without X-Build-Status", method: "GET", path: "/api/v1/images/x/builds/1/log", status: http.StatusOK,
			contentType: "text/plain; charset=utf-8", body: "hello\n", want: "X-Build-Status", headers: []string{"Cache-Control", "no-store"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := &recorder{TB: t}
			c := NewClient(rec, fake(t, tc.status, tc.contentType, tc.body, tc.headers...))
			resp, body := c.JSON(tc.method, tc.path, "token", nil)
			got := rec.failures()
			if !strings.Contains(got, tc.want) || !strings.Contains(got, tc.method+" "+tc.path) {
				t.Errorf("failures = %q; want one naming %s %s and mentioning %q", got, tc.method, tc.path, tc.want)
			}
			if resp.StatusCode != tc.status || string(body) != tc.body {
				t.Errorf("the caller got %d %q, want the server's %d %q", resp.StatusCode, body, tc.status, tc.body)
			}
		})
	}
}

const imageJSON = `{"id":"x","workspace":"ws","name":"team/app","description":"","status":"not_built",
	"context":{"type":"local","dockerfile":"FROM alpine\n"},
	"history":{"created":{"by":"alice","at":"2024-01-01T00:00:00Z"},"modified":{"by":"alice","at":"2024-01-01T00:00:00Z"},"built":null},
	"destinations":[],"build_args":{},"secrets":[],"target":"","reference":null,"latest_build":null,
	"rebuild":{"schedule":null,"on_base_image_update":false,"on_git_commit":false,"set_by":null,"checked_at":null,"up_to_date":false,"pending":false,"webhook":false}}`

func TestClientAcceptsDocumentedResponses(t *testing.T) {
	for _, tc := range []struct {
		name, method, path, contentType, body string
		status                                int
		headers                               []string
	}{
		{name: "info", method: "GET", path: "/api/v1/info", status: http.StatusOK,
			contentType: "application/json", body: `{"registry":"127.0.0.1:1","version":"dev"}`},
		{name: "image with ETag", method: "GET", path: "/api/v1/images/x", status: http.StatusOK,
			contentType: "application/json", body: imageJSON, headers: []string{"ETag", `"1"`}},
		{name: "not found", method: "GET", path: "/api/v1/images/x", status: http.StatusNotFound,
			contentType: "application/json", body: validError},
		{name: "unknown path", method: "GET", path: "/api/v1/nope", status: http.StatusNotFound,
			contentType: "application/json", body: validError},
		{name: "method not allowed", method: "PUT", path: "/api/v1/info", status: http.StatusMethodNotAllowed,
			contentType: "application/json", body: `{"error":{"code":"method_not_allowed","message":"no"}}`, headers: []string{"Allow", "GET, HEAD"}},
		{name: "no content", method: "DELETE", path: "/api/v1/images/x", status: http.StatusNoContent},
		{name: "streamed log", method: "GET", path: "/api/v1/images/x/builds/1/log?follow=true", status: http.StatusOK,
			contentType: "text/plain; charset=utf-8", body: "step 1\nstep 2\n", headers: []string{"X-Build-Status", "running", "Cache-Control", "no-store"}},
		{name: "invalid dockerfile", method: "POST", path: "/api/v1/workspaces/ws/images", status: http.StatusBadRequest,
			contentType: "application/json", body: `{"error":{"code":"invalid_dockerfile","message":"x","field":"context.dockerfile","line":3}}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := &recorder{TB: t}
			c := NewClient(rec, fake(t, tc.status, tc.contentType, tc.body, tc.headers...))
			var body any
			if tc.method == "POST" {
				body = map[string]any{"name": "Not A Valid Name", "bogus": true}
			}
			resp, got := c.JSON(tc.method, tc.path, "token", body)
			if f := rec.failures(); f != "" {
				t.Errorf("a documented response failed the test: %s", f)
			}
			if resp.StatusCode != tc.status || string(got) != tc.body {
				t.Errorf("the caller got %d %q, want %d %q", resp.StatusCode, got, tc.status, tc.body)
			}
			if tc.method == "POST" && len(c.RequestProblems()) != 1 {
				t.Errorf("RequestProblems() = %q, want the bad body recorded", c.RequestProblems())
			}
		})
	}
}

// nopPublisher drops the events the handlers announce.
type nopPublisher struct{}

func (nopPublisher) Publish(string, string, any) {}

// plainSealer "seals" by prefixing, which is enough for handlers.
type plainSealer struct{}

func (plainSealer) Seal(s string) (string, error) { return "sealed:" + s, nil }

// TestDocumentMatchesHandlers drives the real handlers through every
// operation and most of their documented answers, so that the document
// stays true to the code.
func TestDocumentMatchesHandlers(t *testing.T) {
	dir := t.TempDir()
	st, err := sqlite.Open(filepath.Join(dir, "slipway.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	issuer, err := auth.LoadIssuer(dir)
	if err != nil {
		t.Fatal(err)
	}
	token := func(sub string) string {
		tok, err := issuer.Issue(sub, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	platform, alice, bob, carol := token("platform"), token("alice"), token("bob"), token("carol")
	srv := httptest.NewServer(functions.New(functions.Deps{
		Store: st, Verifier: issuer, Events: nopPublisher{}, Sealer: plainSealer{},
		Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Registry: "127.0.0.1:5000", Version: "test",
		Publishers: []string{"platform"}, MaxBody: 512 << 10, LogPoll: 10 * time.Millisecond,
	}))
	t.Cleanup(srv.Close)
	c := NewClient(t, srv.URL)

	expect := func(resp *http.Response, body []byte, status int) {
		t.Helper()
		if resp.StatusCode != status {
			t.Errorf("got %d %s, want %d", resp.StatusCode, body, status)
		}
	}
	send := func(status int, method, path, token string, body any, headers ...string) (*http.Response, []byte) {
		t.Helper()
		resp, b := c.JSON(method, path, token, body, headers...)
		if resp != nil {
			expect(resp, b, status)
		}
		return resp, b
	}

	// Every /api/ endpoint needs a token; unknown paths and methods.
	send(401, "GET", "/api/v1/info", "", nil)
	send(200, "GET", "/api/v1/info", alice, nil)
	send(200, "GET", "/api/v1/openapi.yaml", alice, nil)
	send(200, "HEAD", "/api/v1/info", alice, nil)
	send(401, "GET", "/api/v1/workspaces/ws1/images", "", nil)
	send(401, "GET", "/api/v1/workspaces/ws1/images", "not-a-token", nil)
	send(404, "GET", "/api/v1/nope", alice, nil)
	send(405, "PUT", "/api/v1/images/x", alice, nil)
	send(405, "GET", "/events", platform, nil)

	// Events: binary and structured mode, ignored types, malformed, non-publishers.
	created := `{"id":"ws1","owner":"alice","members":["bob"]}`
	ce := func(id, typ string) []string {
		return []string{"ce-specversion", "1.0", "ce-id", id, "ce-source", "/platform", "ce-type", typ,
			"ce-time", time.Now().UTC().Format(time.RFC3339Nano)}
	}
	send(403, "POST", "/events", alice, created, ce("e1", "platform.workspace.created")...)
	send(204, "POST", "/events", platform, created, ce("e1", "platform.workspace.created")...)
	send(204, "POST", "/events", platform, created, ce("e1", "platform.workspace.created")...)
	send(204, "POST", "/events", platform, `{"specversion":"1.0","id":"e2","source":"/platform","type":"platform.workspace.updated","sequence":"2",
		"datacontenttype":"application/json","data":{"id":"ws1","owner":"alice","members":["bob"]}}`,
		"Content-Type", "application/cloudevents+json")
	send(202, "POST", "/events", platform, `{"x":1}`, ce("e3", "platform.something.else")...)
	send(400, "POST", "/events", platform, `{"id":"ws1"}`, ce("e4", "platform.workspace.created")...)
	send(400, "POST", "/events", platform, `{}`)
	send(401, "POST", "/events", "", created, ce("e5", "platform.workspace.created")...)
	send(413, "POST", "/events", platform, `{"id":"`+strings.Repeat("x", 600<<10)+`"}`, ce("e7", "platform.workspace.created")...)
	send(413, "POST", "/events", platform, `{"specversion":"1.0","id":"e8","source":"/p","type":"t","data":"`+strings.Repeat("x", 600<<10)+`"}`,
		"Content-Type", "application/cloudevents+json")

	// Images.
	ws := "/api/v1/workspaces/ws1"
	send(200, "GET", ws+"/images", alice, nil)
	send(200, "GET", ws+"/images?usable=true&limit=5", bob, nil)
	send(400, "GET", ws+"/images?limit=0", alice, nil)
	send(400, "GET", ws+"/images?usable=maybe", alice, nil)
	send(400, "GET", ws+"/images?page_token=%21%21", alice, nil)
	send(404, "GET", ws+"/images", carol, nil)
	send(404, "GET", "/api/v1/workspaces/nope/images", alice, nil)
	local := map[string]any{"type": "local", "dockerfile": "FROM alpine:3.20\nRUN echo hi\n"}
	resp, body := send(201, "POST", ws+"/images", bob, map[string]any{
		"name": "team/app", "description": "an app", "context": local,
		"destinations": []map[string]string{{"reference": "registry.example.com/team/app:latest", "credential": "hub"}},
	})
	var img struct {
		ID string `json:"id"`
	}
	if err := json.Unmarshal(body, &img); err != nil || img.ID == "" {
		t.Fatalf("created image: %s (%v)", body, err)
	}
	etag := resp.Header.Get("ETag")
	send(201, "POST", ws+"/images", alice, map[string]any{"name": "team/git", "context": map[string]any{
		"type": "git", "git": map[string]string{"url": "https://example.com/team/git.git", "ref": "main", "dir": "docker", "credential": "gh"},
	}})
	send(409, "POST", ws+"/images", alice, map[string]any{"name": "team/app", "context": local})
	send(400, "POST", ws+"/images", alice, map[string]any{"name": "team/bad", "context": map[string]any{"type": "local", "dockerfile": "FROM alpine\nNOPE x\n"}})
	send(400, "POST", ws+"/images", alice, map[string]any{"name": "Team/Bad", "context": local})
	send(400, "POST", ws+"/images", alice, map[string]any{"name": "team/x", "context": local, "bogus": 1})
	send(400, "POST", ws+"/images", alice, "")
	send(415, "POST", ws+"/images", alice, `name: x`, "Content-Type", "application/yaml")
	send(413, "POST", ws+"/images", alice, map[string]any{"name": "team/big", "description": strings.Repeat("x", 600<<10), "context": local})
	send(404, "POST", ws+"/images", carol, map[string]any{"name": "team/c", "context": local})

	im := "/api/v1/images/" + img.ID
	send(200, "GET", im, bob, nil)
	send(404, "GET", im, carol, nil)
	send(404, "GET", "/api/v1/images/nope", alice, nil)
	send(428, "PATCH", im, alice, map[string]any{"description": "new"})
	send(412, "PATCH", im, alice, map[string]any{"description": "new"}, "If-Match", `"999"`)
	send(400, "PATCH", im, alice, map[string]any{"context": map[string]any{"type": "git"}}, "If-Match", etag)
	send(409, "PATCH", im, alice, map[string]any{"name": "team/git"}, "If-Match", etag)
	send(200, "PATCH", im, bob, map[string]any{"description": "newer"}, "If-Match", etag)

	// Builds and logs.
	send(403, "POST", im+"/builds", bob, nil)
	resp, _ = send(202, "POST", im+"/builds", alice, nil)
	if loc := resp.Header.Get("Location"); loc != im+"/builds/1" {
		t.Errorf("Location: %q, want %q", loc, im+"/builds/1")
	}
	send(409, "POST", im+"/builds", alice, nil)
	send(200, "GET", im+"/builds", bob, nil)
	send(200, "GET", im+"/builds?limit=1", bob, nil)
	send(400, "GET", im+"/builds?limit=101", bob, nil)
	send(200, "GET", im+"/builds/1", bob, nil)
	send(404, "GET", im+"/builds/2", bob, nil)
	send(404, "GET", im+"/builds/x", bob, nil)
	resp, _ = send(200, "GET", im+"/builds/1/log", bob, nil)
	if resp.Header.Get("X-Next-Offset") != "0" || resp.Header.Get("X-Build-Status") != "queued" {
		t.Errorf("log headers: %v", resp.Header)
	}
	if err := st.AppendLog(t.Context(), img.ID, 1, []byte("step 1\n")); err != nil {
		t.Fatal(err)
	}
	send(200, "GET", im+"/builds/1/log?offset=2", bob, nil)
	send(400, "GET", im+"/builds/1/log?offset=-1", bob, nil)
	send(403, "POST", im+"/builds/1/cancel", bob, nil)
	send(202, "POST", im+"/builds/1/cancel", alice, nil)
	send(409, "POST", im+"/builds/1/cancel", alice, nil)
	send(404, "POST", im+"/builds/9/cancel", alice, nil)
	_, body = send(200, "GET", im+"/builds/1/log?follow=true", bob, nil)
	if string(body) != "step 1\n" {
		t.Errorf("followed log: %q", body)
	}
	send(200, "GET", im, alice, nil)

	// Credentials.
	cr := ws + "/credentials"
	send(204, "PUT", cr+"/hub", alice, map[string]string{"kind": "registry", "registry": "registry.example.com", "username": "u", "password": "p"})
	send(204, "PUT", cr+"/gh", alice, map[string]string{"kind": "git", "host": "git.example.com", "username": "u", "token": "t"})
	send(403, "PUT", cr+"/hub", bob, map[string]string{"kind": "git", "token": "t"})
	send(400, "PUT", cr+"/hub", alice, map[string]string{"kind": "ftp"})
	send(400, "PUT", cr+"/Bad_Name", alice, map[string]string{"kind": "git", "token": "t"})
	send(415, "PUT", cr+"/hub", alice, "kind=git", "Content-Type", "application/x-www-form-urlencoded")
	send(404, "PUT", cr+"/hub", carol, map[string]string{"kind": "git", "token": "t"})
	_, body = send(200, "GET", cr, bob, nil)
	if strings.Contains(string(body), `"p"`) || strings.Contains(string(body), `"t"`) || strings.Contains(string(body), "sealed") {
		t.Errorf("credentials listing shows a secret: %s", body)
	}
	send(403, "DELETE", cr+"/gh", bob, nil)
	send(204, "DELETE", cr+"/gh", alice, nil)
	send(404, "DELETE", cr+"/gh", alice, nil)

	// Deleting.
	send(403, "DELETE", im, bob, nil)
	send(204, "DELETE", im, alice, nil)
	send(404, "DELETE", im, alice, nil)
	send(204, "POST", "/events", platform, `{"id":"ws1"}`, ce("e6", "platform.workspace.deleted")...)
	send(404, "GET", ws+"/credentials", alice, nil)
}
