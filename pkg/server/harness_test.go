package server_test

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2"
	"github.com/google/uuid"

	"github.com/slipway-dev/slipway/events"
	"github.com/slipway-dev/slipway/internal/apitest"
	"github.com/slipway-dev/slipway/internal/servertest"
	"github.com/slipway-dev/slipway/pkg/server"
)

// env is a real server on a real SQLite file in a temporary data dir, and
// a client that checks every exchange against the OpenAPI document. A
// server in another process has no ts.
type env struct {
	t       testing.TB
	cfg     server.Config
	srv     *server.Server
	ts      *servertest.Server
	c       *apitest.Client
	tokens  *tokenJar
	baseURL string
	logs    *servertest.LockedBuffer // the server's structured log
}

// serverConfig is the default configuration on a fresh data dir.
func serverConfig(t testing.TB) server.Config { return servertest.Config(t) }

// start serves cfg (a fresh data dir when cfg.DataDir is empty).
func start(t testing.TB, cfg server.Config) *env {
	t.Helper()
	if cfg.DataDir == "" {
		cfg = servertest.Config(t)
	}
	cfg.Addr = "127.0.0.1:0"
	ts := servertest.Start(t, cfg)
	return &env{t: t, cfg: cfg, srv: ts.Server, ts: ts, c: apitest.NewClient(t, ts.URL), tokens: &tokenJar{m: map[string]string{}}, baseURL: ts.URL, logs: ts.Logs}
}

// shutdown stops the server and waits for it; safe to call twice.
func (e *env) shutdown() {
	if e.ts != nil {
		e.ts.Stop()
	}
}

// restart stops the server and starts another on the same data dir.
func (e *env) restart() *env {
	e.shutdown()
	return start(e.t, e.cfg)
}

// tokenJar keeps one token per subject; tests' goroutines share it.
type tokenJar struct {
	mu sync.Mutex
	m  map[string]string
}

func (j *tokenJar) set(subject, tok string) {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.m[subject] = tok
}

func (e *env) token(subject string) string {
	e.tokens.mu.Lock()
	defer e.tokens.mu.Unlock()
	if tok, ok := e.tokens.m[subject]; ok {
		return tok
	}
	tok, err := e.srv.Issuer.Issue(subject, time.Hour)
	if err != nil {
		e.t.Fatal(err)
	}
	e.tokens.m[subject] = tok
	return tok
}

// call sends a JSON request as subject ("" for no token) and decodes the
// answer into out when out is not nil.
func (e *env) call(method, path, subject string, body any, out any, headers ...string) *http.Response {
	e.t.Helper()
	tok := ""
	if subject != "" {
		tok = e.token(subject)
	}
	res, data := e.c.JSON(method, path, tok, body, headers...)
	if out != nil && len(data) > 0 {
		if err := json.Unmarshal(data, out); err != nil {
			e.t.Fatalf("%s %s: decoding %q: %v", method, path, data, err)
		}
	}
	return res
}

// want checks a response's status and, for errors, its code.
func want(t testing.TB, res *http.Response, status int, code string) {
	t.Helper()
	if res.StatusCode != status {
		t.Fatalf("%s %s: status %d, want %d", res.Request.Method, res.Request.URL.Path, res.StatusCode, status)
	}
}

// errorBody is the contract's error shape.
type errorBody struct {
	Error struct {
		Code    string `json:"code"`
		Message string `json:"message"`
		Line    int    `json:"line"`
		Field   string `json:"field"`
	} `json:"error"`
}

// callErr sends a request expected to fail with status and code.
func (e *env) callErr(method, path, subject string, body any, status int, code string, headers ...string) errorBody {
	e.t.Helper()
	var eb errorBody
	res := e.call(method, path, subject, body, &eb, headers...)
	if res.StatusCode != status || eb.Error.Code != code {
		e.t.Fatalf("%s %s as %q: %d %q (%s), want %d %q", method, path, subject, res.StatusCode, eb.Error.Code, eb.Error.Message, status, code)
	}
	if eb.Error.Message == "" {
		e.t.Fatalf("%s %s: error without a message", method, path)
	}
	return eb
}

// announce sends a workspace event as the platform would.
func (e *env) announce(typ, id, owner string, members ...string) {
	e.t.Helper()
	ev := cloudevents.NewEvent()
	ev.SetID(uuid.NewString())
	ev.SetSource("/platform")
	ev.SetType(typ)
	ev.SetTime(time.Now())
	ev.SetData(cloudevents.ApplicationJSON, events.Workspace{ID: id, Owner: owner, Members: members})
	if res := e.postEvent(ev, "platform"); res.StatusCode != http.StatusNoContent {
		e.t.Fatalf("announcing %s: %d", id, res.StatusCode)
	}
}

// postEvent posts ev in structured mode as subject.
func (e *env) postEvent(ev cloudevents.Event, subject string) *http.Response {
	e.t.Helper()
	body, err := json.Marshal(ev)
	if err != nil {
		e.t.Fatal(err)
	}
	req, _ := http.NewRequest("POST", e.baseURL+"/events", strings.NewReader(string(body)))
	req.Header.Set("Content-Type", "application/cloudevents+json")
	if subject != "" {
		req.Header.Set("Authorization", "Bearer "+e.token(subject))
	}
	res := e.c.Do(req)
	io.Copy(io.Discard, res.Body)
	res.Body.Close()
	return res
}

// image is the part of an Image response the tests read.
type image struct {
	ID          string `json:"id"`
	Workspace   string `json:"workspace"`
	Name        string `json:"name"`
	Description string `json:"description"`
	Status      string `json:"status"`
	Context     struct {
		Type       string `json:"type"`
		Dockerfile string `json:"dockerfile"`
	} `json:"context"`
	History struct {
		Created  stamp  `json:"created"`
		Modified stamp  `json:"modified"`
		Built    *stamp `json:"built"`
	} `json:"history"`
	Reference   *string         `json:"reference"`
	LatestBuild json.RawMessage `json:"latest_build"`
}

type stamp struct {
	By string    `json:"by"`
	At time.Time `json:"at"`
}

func localImage(name, dockerfile string) map[string]any {
	return map[string]any{"name": name, "description": "about " + name,
		"context": map[string]any{"type": "local", "dockerfile": dockerfile}}
}

// create makes an image as subject in ws and returns it with its ETag.
func (e *env) create(ws, subject, name string) (image, string) {
	e.t.Helper()
	var img image
	res := e.call("POST", "/api/v1/workspaces/"+ws+"/images", subject, localImage(name, "FROM busybox\nRUN echo hi\n"), &img)
	if res.StatusCode != http.StatusCreated {
		e.t.Fatalf("create %s: %d", name, res.StatusCode)
	}
	return img, res.Header.Get("ETag")
}
