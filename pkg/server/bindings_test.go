package server_test

import (
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/slipway-dev/slipway/events"
	"github.com/slipway-dev/slipway/pkg/gitctx/gittest"
	"github.com/slipway-dev/slipway/pkg/pullauth/pullauthtest"
	"github.com/slipway-dev/slipway/pkg/server"
	"github.com/slipway-dev/slipway/pkg/store"
)

// recorder is a member's own host on loopback: it records every request
// and the Authorization it carried, and answers 401 with a Basic challenge,
// as a registry or git host fishing for credentials would.
type recorder struct {
	srv  *httptest.Server
	mu   sync.Mutex
	seen []string // "METHOD PATH Authorization"
}

func newRecorder(t *testing.T, tls bool) *recorder {
	r := &recorder{}
	h := http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		r.mu.Lock()
		r.seen = append(r.seen, req.Method+" "+req.URL.Path+" "+req.Header.Get("Authorization"))
		r.mu.Unlock()
		w.Header().Set("WWW-Authenticate", `Basic realm="mine"`)
		http.Error(w, "credentials please", http.StatusUnauthorized)
	})
	if tls {
		r.srv = httptest.NewTLSServer(h)
	} else {
		r.srv = httptest.NewServer(h)
	}
	t.Cleanup(r.srv.Close)
	return r
}

func (r *recorder) host() string { return r.srv.Listener.Addr().String() }

func (r *recorder) requests() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.seen...)
}

// TestCredentialsStayWithTheirHost: a member names the owner's registry
// and git credentials on hosts of their own; Slipway refuses at save time,
// and a definition that slipped through (its credential stored later) is
// refused again at build time: the member's hosts receive nothing.
func TestCredentialsStayWithTheirHost(t *testing.T) {
	const user, password = "pusher", "owners-registry-password-31337"
	const token = "ghp_owners-git-token-0123456789"
	ext := pullauthtest.NewBasic(t, user, password)
	root := t.TempDir()
	gittest.NewFixture(t, filepath.Join(root, "private.git"))
	gitURL, gitCA := gittest.ServeHTTPS(t, root, "builder", token)
	gitHost := strings.TrimSuffix(strings.TrimPrefix(gitURL, "https://"), "/")
	regRec, gitRec := newRecorder(t, false), newRecorder(t, true)
	// Trust the member's git host too, so nothing but the binding stops the token.
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	os.WriteFile(caFile, append(gitCA, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: gitRec.srv.Certificate().Raw})...), 0o600)
	e := buildEnv(t, func(c *server.Config) { c.GitCAFile = caFile })
	e.announce(events.WorkspaceCreated, "ws2", "carol")

	cred := func(name string, body map[string]any) {
		t.Helper()
		want(t, e.call("PUT", "/api/v1/workspaces/ws1/credentials/"+name, "alice", body, nil), 204, "")
	}
	cred("hub", map[string]any{"kind": "registry", "registry": ext, "username": user, "password": password})
	cred("gh", map[string]any{"kind": "git", "host": gitHost, "username": "builder", "token": token})

	// A git credential names its host, a bare HOST[:PORT].
	for _, body := range []map[string]any{
		{"kind": "git", "username": "builder", "token": token},
		{"kind": "git", "host": "https://" + gitHost, "token": token},
		{"kind": "git", "host": gitHost + "/x", "token": token},
		{"kind": "registry", "registry": "https://" + ext, "password": password},
		{"kind": "registry", "registry": ext, "host": ext, "password": password},
	} {
		e.callErr("PUT", "/api/v1/workspaces/ws1/credentials/bad", "alice", body, 400, "invalid_argument")
	}
	var listed struct {
		Credentials []map[string]string `json:"credentials"`
	}
	e.call("GET", "/api/v1/workspaces/ws1/credentials", "bob", nil, &listed)
	if len(listed.Credentials) != 2 || listed.Credentials[0]["name"] != "gh" || listed.Credentials[0]["host"] != gitHost || listed.Credentials[1]["registry"] != ext {
		t.Fatalf("credentials: %+v", listed.Credentials)
	}

	df := "FROM " + e.base() + "\nRUN echo hi > /hi\n"
	local := map[string]any{"type": "local", "dockerfile": df}
	def := func(name string, ctx map[string]any, dests ...map[string]any) map[string]any {
		if dests == nil {
			dests = []map[string]any{}
		}
		return map[string]any{"name": name, "context": ctx, "destinations": dests}
	}
	gitCtx := func(url, credential string) map[string]any {
		return map[string]any{"type": "git", "git": map[string]any{"url": url, "credential": credential, "dir": "docker"}}
	}
	// Save time: refused, with the field at fault, and nothing stored.
	for _, tc := range []struct {
		body        map[string]any
		code, field string
	}{
		{def("team/steal-reg", local, map[string]any{"reference": regRec.host() + "/team/x:v1", "credential": "hub"}), "credential_wrong_host", "destinations[0].credential"},
		{def("team/steal-git", gitCtx("https://"+gitRec.host()+"/private.git", "gh")), "credential_wrong_host", "context.git.credential"},
		{def("team/wrong-kind", local, map[string]any{"reference": gitHost + "/team/x:v1", "credential": "gh"}), "credential_wrong_kind", "destinations[0].credential"},
		{def("team/wrong-kind-git", gitCtx("https://"+ext+"/private.git", "hub")), "credential_wrong_kind", "context.git.credential"},
	} {
		eb := e.callErr("POST", "/api/v1/workspaces/ws1/images", "bob", tc.body, 400, tc.code)
		if eb.Error.Field != tc.field || !strings.Contains(eb.Error.Message, "only to its own host") && tc.code == "credential_wrong_host" {
			t.Errorf("%v: field %q, message %q", tc.body["name"], eb.Error.Field, eb.Error.Message)
		}
	}
	// PATCH too, and the image stays as it was.
	var ok image
	res := e.call("POST", "/api/v1/workspaces/ws1/images", "bob", def("team/ok", local, map[string]any{"reference": ext + "/team/ok:v1", "credential": "hub"}), &ok)
	want(t, res, 201, "")
	tag := res.Header.Get("ETag")
	e.callErr("PATCH", "/api/v1/images/"+ok.ID, "bob", map[string]any{"destinations": []map[string]any{{"reference": regRec.host() + "/team/ok:v1", "credential": "hub"}}},
		400, "credential_wrong_host", "If-Match", tag)
	var after struct {
		Destinations []map[string]string `json:"destinations"`
	}
	res = e.call("GET", "/api/v1/images/"+ok.ID, "bob", nil, &after)
	if res.Header.Get("ETag") != tag || len(after.Destinations) != 1 || after.Destinations[0]["reference"] != ext+"/team/ok:v1" {
		t.Fatalf("a refused PATCH changed the image: %s %+v", res.Header.Get("ETag"), after)
	}

	// The internal registry: another workspace's repository (under any
	// name of this host) is refused; the workspace's own are fine.
	var carols image
	want(t, e.call("POST", "/api/v1/workspaces/ws2/images", "carol", def("other/app", local), &carols), 201, "")
	internal := e.srv.RegistryHost()
	port := internal[strings.LastIndex(internal, ":"):]
	for _, ref := range []string{internal + "/other/app:latest", "localhost" + port + "/other/app:v2", internal + "/library/busybox:latest"} {
		e.callErr("POST", "/api/v1/workspaces/ws1/images", "bob", def("team/overwrite", local, map[string]any{"reference": ref}), 400, "destination_not_allowed")
	}
	want(t, e.call("POST", "/api/v1/workspaces/ws1/images", "bob", def("team/copy", local, map[string]any{"reference": internal + "/team/ok:copy"}), nil), 201, "")

	// Build time: definitions naming credentials that did not exist yet,
	// which the owner then stores for their own hosts.
	var lateReg, lateGit image
	want(t, e.call("POST", "/api/v1/workspaces/ws1/images", "bob", def("team/late-reg", local, map[string]any{"reference": regRec.host() + "/team/late:v1", "credential": "later"}), &lateReg), 201, "")
	want(t, e.call("POST", "/api/v1/workspaces/ws1/images", "bob", def("team/late-git", gitCtx("https://"+gitRec.host()+"/private.git", "later-git")), &lateGit), 201, "")
	cred("later", map[string]any{"kind": "registry", "registry": ext, "username": user, "password": password})
	cred("later-git", map[string]any{"kind": "git", "host": gitHost, "username": "builder", "token": token})
	// And a git credential stored before hosts existed goes nowhere (at
	// save time it is refused like one of another host).
	var legacy image
	want(t, e.call("POST", "/api/v1/workspaces/ws1/images", "bob", def("team/legacy", gitCtx(gitURL+"private.git", "legacy")), &legacy), 201, "")
	if err := e.srv.Store.PutCredential(t.Context(), store.Credential{Workspace: "ws1", Name: "legacy", Kind: "git", Username: "builder", Secret: "sealed-long-ago"}); err != nil {
		t.Fatal(err)
	}
	e.callErr("POST", "/api/v1/workspaces/ws1/images", "bob", def("team/legacy2", gitCtx(gitURL+"private.git", "legacy")), 400, "credential_wrong_host")

	b := e.waitFor(lateReg.ID, e.startBuild(lateReg.ID), 2*time.Minute, ended)
	if b.Status != "succeeded" || len(b.Pushes) != 2 || b.Pushes[1].Status != "failed" ||
		b.Pushes[1].Error == nil || !strings.Contains(*b.Pushes[1].Error, "not pushing") {
		t.Fatalf("build pushing to the member's registry with the owner's credential: %+v %+v", b, b.Failure)
	}
	b = e.waitFor(lateGit.ID, e.startBuild(lateGit.ID), 2*time.Minute, ended)
	if b.Status != "failed" || b.Failure.Reason != "git" || !strings.Contains(b.Failure.Message, "not fetching") {
		t.Fatalf("build fetching from the member's git host with the owner's token: %+v", b.Failure)
	}
	b = e.waitFor(legacy.ID, e.startBuild(legacy.ID), 2*time.Minute, ended)
	if b.Status != "failed" || b.Failure.Reason != "git" || !strings.Contains(b.Failure.Message, "has no host") {
		t.Fatalf("build with a git credential without a host: %+v", b.Failure)
	}
	if got := append(regRec.requests(), gitRec.requests()...); len(got) != 0 {
		t.Fatalf("the member's hosts received requests: %q", got)
	}
	assertNoSecret(t, e, password, ok.ID, lateReg.ID)
	assertNoSecret(t, e, token, lateGit.ID, legacy.ID)
}
