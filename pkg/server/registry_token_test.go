package server_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/slipway-dev/slipway/events"
	"github.com/slipway-dev/slipway/pkg/registry/token"
)

// tokenAnswer is the token endpoint's answer.
type tokenAnswer struct {
	Token       string `json:"token"`
	AccessToken string `json:"access_token"`
	ExpiresIn   int    `json:"expires_in"`
	IssuedAt    string `json:"issued_at"`
	Errors      []struct{ Code, Message string }
	Error       string `json:"error"`
	Description string `json:"error_description"`
}

func (e *env) tokenRequest(req *http.Request) (*http.Response, tokenAnswer) {
	e.t.Helper()
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer res.Body.Close()
	var a tokenAnswer
	b, _ := io.ReadAll(res.Body)
	if err := json.Unmarshal(b, &a); err != nil {
		e.t.Fatalf("token endpoint answered %d %q", res.StatusCode, b)
	}
	return res, a
}

// accessClaim decodes the access claim of a token (its signature is the
// registry's to check; this test reads what was granted).
func accessClaim(t *testing.T, tok string) []token.Access {
	t.Helper()
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		t.Fatalf("not a JWT: %q", tok)
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var c struct {
		Access []token.Access `json:"access"`
		Aud    any            `json:"aud"`
	}
	if err := json.Unmarshal(b, &c); err != nil {
		t.Fatal(err)
	}
	return c.Access
}

func TestRegistryTokenEndpoint(t *testing.T) {
	e := start(t, serverConfig(t))
	e.announce(events.WorkspaceCreated, "ws1", "alice", "bob")
	endpoint := e.baseURL + token.Path
	scope := url.Values{"service": {token.Service}, "scope": {"repository:library/busybox:pull,push repository:team/x:pull", "registry:catalog:*"}}

	// GET with basic auth: the answer of the token specification; denied
	// scopes are dropped, granted ones kept.
	req, _ := http.NewRequest("GET", endpoint+"?"+scope.Encode(), nil)
	req.SetBasicAuth("whoever", e.token("bob"))
	res, a := e.tokenRequest(req)
	if res.StatusCode != 200 || a.Token == "" || a.AccessToken != a.Token || a.ExpiresIn < 250 || a.ExpiresIn > 300 || res.Header.Get("Cache-Control") != "no-store" {
		t.Fatalf("GET: %d %+v", res.StatusCode, a)
	}
	if _, err := time.Parse(time.RFC3339, a.IssuedAt); err != nil {
		t.Fatalf("issued_at %q: %v", a.IssuedAt, err)
	}
	got, _ := json.Marshal(accessClaim(t, a.Token))
	if string(got) != `[{"type":"repository","name":"library/busybox","actions":["pull"]},{"type":"registry","name":"catalog","actions":["*"]}]` {
		t.Fatalf("granted %s", got)
	}
	// A bearer Slipway token works as well.
	req, _ = http.NewRequest("GET", endpoint+"?service="+token.Service, nil)
	req.Header.Set("Authorization", "Bearer "+e.token("bob"))
	if res, a := e.tokenRequest(req); res.StatusCode != 200 || a.Token == "" {
		t.Fatalf("GET with a bearer token: %d %+v", res.StatusCode, a)
	}
	// The OAuth2 form of containerd and docker: password and refresh_token.
	for _, form := range []url.Values{
		{"grant_type": {"password"}, "username": {"platform"}, "password": {e.token("platform")}, "service": {token.Service}, "scope": {"repository:library/busybox:pull,push"}, "client_id": {"containerd"}},
		{"grant_type": {"refresh_token"}, "refresh_token": {e.token("platform")}, "service": {token.Service}, "scope": {"repository:library/busybox:pull,push"}},
	} {
		res, err := http.PostForm(endpoint, form)
		if err != nil {
			t.Fatal(err)
		}
		var a tokenAnswer
		json.NewDecoder(res.Body).Decode(&a)
		res.Body.Close()
		got, _ := json.Marshal(accessClaim(t, a.AccessToken))
		if res.StatusCode != 200 || string(got) != `[{"type":"repository","name":"library/busybox","actions":["pull","push"]}]` {
			t.Fatalf("POST %s: %d %+v %s", form.Get("grant_type"), res.StatusCode, a, got)
		}
	}

	// Bad input: a clear error, the right status, no token.
	bad := []struct {
		what   string
		req    func() *http.Request
		status int
		code   string
	}{
		{"no credentials", func() *http.Request {
			r, _ := http.NewRequest("GET", endpoint+"?service="+token.Service, nil)
			return r
		}, 401, "UNAUTHORIZED"},
		{"a bad token", func() *http.Request {
			r, _ := http.NewRequest("GET", endpoint+"?service="+token.Service, nil)
			r.SetBasicAuth("alice", "garbage")
			return r
		}, 401, "UNAUTHORIZED"},
		{"another service", func() *http.Request {
			r, _ := http.NewRequest("GET", endpoint+"?service=docker.io", nil)
			r.SetBasicAuth("alice", e.token("alice"))
			return r
		}, 400, "INVALID_REQUEST"},
		{"a malformed scope", func() *http.Request {
			r, _ := http.NewRequest("GET", endpoint+"?scope=repository:UPPER/x:pull", nil)
			r.SetBasicAuth("alice", e.token("alice"))
			return r
		}, 400, "INVALID_SCOPE"},
		{"a scope without actions", func() *http.Request {
			r, _ := http.NewRequest("GET", endpoint+"?scope=repository", nil)
			r.SetBasicAuth("alice", e.token("alice"))
			return r
		}, 400, "INVALID_SCOPE"},
		{"an unknown grant", func() *http.Request {
			r, _ := http.NewRequest("POST", endpoint, strings.NewReader("grant_type=client_credentials&client_id=x"))
			r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			return r
		}, 400, "unsupported_grant_type"},
		{"a bad password grant", func() *http.Request {
			r, _ := http.NewRequest("POST", endpoint, strings.NewReader("grant_type=password&username=a&password=nope"))
			r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			return r
		}, 401, "invalid_grant"},
		{"a method", func() *http.Request { r, _ := http.NewRequest("DELETE", endpoint, nil); return r }, 405, "INVALID_REQUEST"},
	}
	for _, c := range bad {
		res, a := e.tokenRequest(c.req())
		code, msg := a.Error, a.Description
		if len(a.Errors) == 1 {
			code, msg = a.Errors[0].Code, a.Errors[0].Message
		}
		if res.StatusCode != c.status || code != c.code || msg == "" || a.Token != "" || a.AccessToken != "" {
			t.Errorf("%s: %d %+v, want %d %s", c.what, res.StatusCode, a, c.status, c.code)
		}
		if c.status == 401 && !strings.HasPrefix(res.Header.Get("WWW-Authenticate"), "Basic ") {
			t.Errorf("%s: WWW-Authenticate %q", c.what, res.Header.Get("WWW-Authenticate"))
		}
	}
}

// TestRegistryTokensStayInTheirPlace: each kind of token works only where
// it belongs. A Slipway token is no registry token, a registry token and a
// build credential are no API tokens, and a build credential is no
// registry token either: it is only exchanged at the token endpoint.
func TestRegistryTokensStayInTheirPlace(t *testing.T) {
	e := start(t, serverConfig(t))
	e.announce(events.WorkspaceCreated, "ws1", "alice")
	cred, err := e.srv.RegistryTokens.BuildCredential(context.Background(), token.BuildClaims{Image: "x", Number: 1, Workspace: "ws1", Push: []string{"team/x"}}, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	access := e.registryToken("alice", "repository:library/busybox:pull")
	get := func(path, bearer string) int {
		req, _ := http.NewRequest("GET", e.baseURL+path, nil)
		req.Header.Set("Authorization", "Bearer "+bearer)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		return res.StatusCode
	}
	for _, c := range []struct {
		what, path, bearer string
		want               int
	}{
		{"a registry token at /v2/", "/v2/", access, 200},
		{"a Slipway token at /v2/", "/v2/", e.token("alice"), 401},
		{"a build credential at /v2/", "/v2/", cred, 401},
		{"a registry token at /api/", "/api/v1/workspaces/ws1", access, 401},
		{"a build credential at /api/", "/api/v1/workspaces/ws1", cred, 401},
		{"a Slipway token at /api/", "/api/v1/workspaces/ws1", e.token("alice"), 200},
	} {
		if got := get(c.path, c.bearer); got != c.want {
			t.Errorf("%s: %d, want %d", c.what, got, c.want)
		}
	}
	// A registry token is not a credential of the token endpoint.
	req, _ := http.NewRequest("GET", e.baseURL+token.Path, nil)
	req.SetBasicAuth("alice", access)
	if res, _ := e.tokenRequest(req); res.StatusCode != 401 {
		t.Fatalf("a registry token exchanged for another: %d", res.StatusCode)
	}
	// The /v2/ probe without a token: the challenge clients expect.
	res, err := http.Get(e.baseURL + "/v2/")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if want := `Bearer realm="` + e.baseURL + `/auth/token",service="slipway-registry"`; res.StatusCode != 401 || res.Header.Get("WWW-Authenticate") != want {
		t.Fatalf("/v2/ probe: %d %q, want 401 %q", res.StatusCode, res.Header.Get("WWW-Authenticate"), want)
	}
	// Nor does a token leak into the log.
	if logs := e.logs.String(); strings.Contains(logs, cred) || strings.Contains(logs, access) || strings.Contains(logs, e.token("alice")) {
		t.Fatal("a token is in the server log")
	}
}

// TestReservedImageNames: library/ and the cache namespace cannot be
// claimed, at create or by a rename; the refusal changes nothing.
func TestReservedImageNames(t *testing.T) {
	e := start(t, serverConfig(t))
	e.announce(events.WorkspaceCreated, "ws1", "alice")
	for _, n := range []string{"library/busybox", "library/team/x", "slipway-cache/team/x"} {
		eb := e.callErr("POST", "/api/v1/workspaces/ws1/images", "alice", localImage(n, "FROM busybox\n"), 400, "reserved_name")
		if eb.Error.Field != "name" || !strings.Contains(eb.Error.Message, "reserved") {
			t.Fatalf("create %s: %+v", n, eb.Error)
		}
	}
	img, etag := e.create("ws1", "alice", "team/ok")
	eb := e.callErr("PATCH", "/api/v1/images/"+img.ID, "alice", map[string]any{"name": "library/ok"}, 400, "reserved_name", "If-Match", etag)
	if eb.Error.Field != "name" || !strings.Contains(eb.Error.Message, "library/") {
		t.Fatalf("rename: %+v", eb.Error)
	}
	var got image
	res := e.call("GET", "/api/v1/images/"+img.ID, "alice", nil, &got)
	if got.Name != "team/ok" || res.Header.Get("ETag") != etag {
		t.Fatalf("after a refused rename: %s, ETag %s (was %s)", got.Name, res.Header.Get("ETag"), etag)
	}
	var list struct{ Images []image }
	e.call("GET", "/api/v1/workspaces/ws1/images", "alice", nil, &list)
	if len(list.Images) != 1 {
		t.Fatalf("images after refused creates: %+v", list.Images)
	}
}
