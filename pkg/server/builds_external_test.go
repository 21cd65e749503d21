package server_test

import (
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2"
	_ "github.com/distribution/distribution/v3/registry/auth/htpasswd" // the access controller
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/slipway-dev/slipway/events"
	"github.com/slipway-dev/slipway/pkg/gitctx/gittest"
	"github.com/slipway-dev/slipway/pkg/pullauth/pullauthtest"
	"github.com/slipway-dev/slipway/pkg/server"
)

func TestPushToExternalDestinations(t *testing.T) {
	const user, password = "pusher", "s3cret-registry-password"
	ext := pullauthtest.NewBasic(t, user, password)
	e := buildEnv(t, nil)
	want(t, e.call("PUT", "/api/v1/workspaces/ws1/credentials/ext", "alice",
		map[string]any{"kind": "registry", "registry": ext, "username": user, "password": password}, nil), 204, "")
	df := "FROM " + e.base() + "\nRUN echo shipped > /shipped\n"
	withCred := e.newImage(map[string]any{"name": "team/shipped", "context": map[string]any{"type": "local", "dockerfile": df},
		"destinations": []map[string]any{{"reference": ext + "/team/shipped:v1", "credential": "ext"}}})
	b := e.waitFor(withCred.ID, e.startBuild(withCred.ID), 2*time.Minute, ended)
	if b.Status != "succeeded" || len(b.Pushes) != 2 || b.Pushes[1].Reference != ext+"/team/shipped:v1" || b.Pushes[1].Status != "pushed" {
		t.Fatalf("build with an authenticated destination: %+v\n%s", b, e.buildLog(withCred.ID, 1))
	}
	// The external registry has it, under the same digest, for the right user only.
	ref, _ := name.ParseReference(ext + "/team/shipped:v1")
	if _, err := remote.Image(ref); err == nil {
		t.Fatal("the external registry served the image without credentials")
	}
	img, err := remote.Image(ref, remote.WithAuth(&authn.Basic{Username: user, Password: password}))
	if err != nil {
		t.Fatal(err)
	}
	if d, _ := img.Digest(); d.String() != *b.Digest {
		t.Fatalf("external digest %s, built %s", d, *b.Digest)
	}
	// Without a credential the destination refuses: reported per
	// destination, and the build has succeeded all the same (the internal
	// push decides that): the image is built, with its reference.
	noCred := e.newImage(map[string]any{"name": "team/refused", "context": map[string]any{"type": "local", "dockerfile": df},
		"destinations": []map[string]any{{"reference": ext + "/team/refused:v1"}}})
	b = e.waitFor(noCred.ID, e.startBuild(noCred.ID), 2*time.Minute, ended)
	if b.Status != "succeeded" || b.Failure != nil || len(b.Pushes) != 2 || b.Pushes[0].Status != "pushed" ||
		b.Pushes[1].Status != "failed" || b.Pushes[1].Error == nil || !strings.Contains(strings.ToUpper(*b.Pushes[1].Error), "UNAUTHORIZED") ||
		b.Pushes[1].At == nil || b.Digest == nil || b.Reference == nil {
		t.Fatalf("build with a refusing destination: %+v %+v", b, b.Failure)
	}
	var got image
	e.call("GET", "/api/v1/images/"+noCred.ID, "alice", nil, &got)
	if got.Status != "built" || got.Reference == nil || *got.Reference != *b.Reference {
		t.Fatalf("a build whose external push failed left the image unbuilt: %+v", got)
	}
	if d, _ := e.pull("bob", *got.Reference).Digest(); d.String() != *b.Digest {
		t.Fatalf("internal digest %s, built %s", d, *b.Digest)
	}
	// A credential named but missing.
	ghost := e.newImage(map[string]any{"name": "team/ghost", "context": map[string]any{"type": "local", "dockerfile": df},
		"destinations": []map[string]any{{"reference": ext + "/team/ghost:v1", "credential": "nope"}}})
	b = e.waitFor(ghost.ID, e.startBuild(ghost.ID), 2*time.Minute, ended)
	if b.Status != "succeeded" || b.Pushes[1].Status != "failed" || b.Pushes[1].Error == nil || !strings.Contains(*b.Pushes[1].Error, `"nope" does not exist`) {
		t.Fatalf("build with a missing credential: %+v", b)
	}
	assertNoSecret(t, e, password, withCred.ID, noCred.ID, ghost.ID)
}

// assertNoSecret checks that secret appears in no API response about the
// images and credentials, no build log and not the server's log.
func assertNoSecret(t *testing.T, e *env, secret string, ids ...string) {
	t.Helper()
	paths := []string{"/api/v1/workspaces/ws1/credentials", "/api/v1/workspaces/ws1/images", "/api/v1/workspaces/ws1"}
	for _, id := range ids {
		paths = append(paths, "/api/v1/images/"+id, "/api/v1/images/"+id+"/builds", "/api/v1/images/"+id+"/builds/1", "/api/v1/images/"+id+"/builds/1/log")
	}
	for _, p := range paths {
		for _, who := range []string{"alice", "bob"} {
			if _, body := e.c.JSON("GET", p, e.token(who), nil); strings.Contains(string(body), secret) {
				t.Errorf("GET %s as %s shows the secret", p, who)
			}
		}
	}
	if strings.Contains(e.logs.String(), secret) {
		t.Error("the server's log shows the secret")
	}
	// And the database (with its write-ahead log) holds it only sealed.
	for _, f := range []string{server.DatabaseFile, server.DatabaseFile + "-wal"} {
		if db, err := os.ReadFile(filepath.Join(e.cfg.DataDir, f)); err == nil && strings.Contains(string(db), secret) {
			t.Errorf("%s holds the secret in clear", f)
		}
	}
}

func TestGitContexts(t *testing.T) {
	root := t.TempDir()
	fixture := gittest.NewFixture(t, filepath.Join(root, "public.git"))
	// The private repository: same content, served over https with a token.
	gittest.NewFixture(t, filepath.Join(root, "private.git"))
	gitURL := gittest.ServeGit(t, root)
	const token = "ghp_secret-git-token-0123456789"
	httpsURL, caPEM := gittest.ServeHTTPS(t, root, "builder", token)
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	os.WriteFile(caFile, caPEM, 0o600)

	e := buildEnv(t, func(c *server.Config) { c.GitCAFile = caFile })
	gitImage := func(name, url, ref, dir, cred string) image {
		return e.newImage(map[string]any{"name": name, "context": map[string]any{"type": "git",
			"git": map[string]any{"url": url, "ref": ref, "dir": dir, "credential": cred}}})
	}
	// Public, over git://, a tag and a directory.
	pub := gitImage("team/from-git", strings.TrimSuffix(gitURL, "/")+"/public.git", "v1.0", "docker", "")
	b := e.waitFor(pub.ID, e.startBuild(pub.ID), 2*time.Minute, ended)
	if b.Status != "succeeded" || b.Commit == nil || *b.Commit != fixture.Second {
		t.Fatalf("git build: %+v (want commit %s)\n%s", b, fixture.Second, e.buildLog(pub.ID, 1))
	}
	if got := files(t, e.pull("alice", *b.Reference))["/app.txt"]; got != "second\n" {
		t.Fatalf("built from the wrong commit or directory: app.txt = %q", got)
	}
	// Private, over https: refused without the credential, built with it.
	want(t, e.call("PUT", "/api/v1/workspaces/ws1/credentials/git-token", "alice",
		map[string]any{"kind": "git", "host": strings.TrimSuffix(strings.TrimPrefix(httpsURL, "https://"), "/"), "username": "builder", "token": token}, nil), 204, "")
	privURL := strings.TrimSuffix(httpsURL, "/") + "/private.git"
	anon := gitImage("team/private-anon", privURL, "dev", "docker", "")
	b = e.waitFor(anon.ID, e.startBuild(anon.ID), 2*time.Minute, ended)
	if b.Status != "failed" || b.Failure.Reason != "git" || !strings.Contains(b.Failure.Message, "authentication required") {
		t.Fatalf("private repository without a credential: %+v", b.Failure)
	}
	priv := gitImage("team/private", privURL, "", "docker", "git-token")
	b = e.waitFor(priv.ID, e.startBuild(priv.ID), 2*time.Minute, ended)
	if b.Status != "succeeded" || b.Commit == nil || len(*b.Commit) != 40 {
		t.Fatalf("private repository with its credential: %+v\n%s", b, e.buildLog(priv.ID, 1))
	}
	if got := files(t, e.pull("alice", *b.Reference))["/app.txt"]; got != "third\n" {
		t.Fatalf("default branch build: app.txt = %q", got)
	}
	// A directory that is not there.
	missing := gitImage("team/no-dir", strings.TrimSuffix(gitURL, "/")+"/public.git", "", "nope", "")
	b = e.waitFor(missing.ID, e.startBuild(missing.ID), 2*time.Minute, ended)
	if b.Status != "failed" || b.Failure.Reason != "git" || !strings.Contains(b.Failure.Message, `"nope"`) {
		t.Fatalf("missing directory: %+v", b.Failure)
	}
	assertNoSecret(t, e, token, pub.ID, anon.ID, priv.ID, missing.ID)
}

// TestPushAgain: a destination whose credential is wrong refuses the push;
// the build succeeds with that push failed. Once the owner stores the right
// credential, POST .../pushes pushes the built image there without a
// rebuild, and the destination serves it under the built digest.
func TestPushAgain(t *testing.T) {
	const user, password, wrong = "pusher", "s3cret-registry-password", "not-the-password-at-all"
	ext := pullauthtest.NewBasic(t, user, password)
	announced := make(chan cloudevents.Event, 64)
	sink := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if ev, err := cloudevents.NewEventFromHTTPRequest(r); err == nil && ev.Type() == events.BuildPushed {
			announced <- *ev
		}
		w.WriteHeader(http.StatusAccepted)
	}))
	defer sink.Close()
	e := buildEnv(t, func(c *server.Config) { c.Sink = sink.URL })
	e.announce(events.WorkspaceCreated, "ws2", "carol")
	cred := func(pw string) {
		want(t, e.call("PUT", "/api/v1/workspaces/ws1/credentials/ext", "alice",
			map[string]any{"kind": "registry", "registry": ext, "username": user, "password": pw}, nil), 204, "")
	}
	cred(wrong)
	dest := ext + "/team/again:v1"
	img := e.newImage(map[string]any{"name": "team/again", "context": map[string]any{"type": "local",
		"dockerfile": "FROM " + e.base() + "\nRUN echo again > /again\n"},
		"destinations": []map[string]any{{"reference": dest, "credential": "ext"}}})
	b := e.waitFor(img.ID, e.startBuild(img.ID), 2*time.Minute, ended)
	if b.Status != "succeeded" || b.Reference == nil || len(b.Pushes) != 2 || b.Pushes[1].Reference != dest || b.Pushes[1].Status != "failed" ||
		b.Pushes[1].Error == nil || !strings.Contains(strings.ToUpper(*b.Pushes[1].Error), "UNAUTHORIZED") {
		t.Fatalf("build with a wrong destination credential: %+v\n%s", b, e.buildLog(img.ID, 1))
	}
	var got image
	e.call("GET", "/api/v1/images/"+img.ID, "alice", nil, &got)
	if got.Status != "built" || got.Reference == nil {
		t.Fatalf("image after a refused destination: %+v", got)
	}
	e.pull("alice", *got.Reference)
	path := "/api/v1/images/" + img.ID + "/builds/1/pushes"

	// Who may, and what is refused, changing nothing.
	e.callErr("POST", path, "bob", map[string]any{"reference": dest}, 403, "forbidden")
	e.callErr("POST", path, "carol", map[string]any{"reference": dest}, 404, "not_found")
	e.callErr("POST", "/api/v1/images/"+img.ID+"/builds/9/pushes", "alice", map[string]any{"reference": dest}, 404, "not_found")
	e.callErr("POST", path, "alice", map[string]any{}, 400, "invalid_argument")
	e.callErr("POST", path, "alice", map[string]any{"reference": dest, "credential": "x"}, 400, "invalid_json")
	e.callErr("POST", path, "alice", map[string]any{"reference": ext + "/team/other:v1"}, 409, "no_such_destination")
	e.callErr("POST", path, "alice", map[string]any{"reference": b.Pushes[0].Reference}, 409, "no_such_destination")
	if after := e.getBuild(img.ID, 1); after.Pushes[1].Status != "failed" || !after.Pushes[1].At.Equal(*b.Pushes[1].At) {
		t.Fatalf("a refused push again changed the build: %+v", after.Pushes)
	}
	// Still the wrong credential: failed again, with the registry's error.
	var again buildJSON
	want(t, e.call("POST", path, "alice", map[string]any{"reference": dest}, &again), 200, "")
	if again.Status != "succeeded" || again.Pushes[1].Status != "failed" || !strings.Contains(strings.ToUpper(*again.Pushes[1].Error), "UNAUTHORIZED") ||
		!again.Pushes[1].At.After(*b.Pushes[1].At) {
		t.Fatalf("push again with the wrong credential: %+v", again.Pushes)
	}
	// Fixed: pushed, recorded, and served by the destination.
	cred(password)
	want(t, e.call("POST", path, "alice", map[string]any{"reference": dest}, &again), 200, "")
	if again.Status != "succeeded" || len(again.Pushes) != 2 || again.Pushes[0].Status != "pushed" || again.Pushes[1].Status != "pushed" || again.Pushes[1].Error != nil {
		t.Fatalf("push again with the right credential: %+v", again.Pushes)
	}
	if stored := e.getBuild(img.ID, 1); stored.Pushes[1].Status != "pushed" || *stored.Digest != *b.Digest {
		t.Fatalf("the build record after push again: %+v", stored)
	}
	// Each push again is announced (build.pushed, the build as data).
	for seen := 0; seen < 2; seen++ {
		select {
		case ev := <-announced:
			var data buildJSON
			if err := ev.DataAs(&data); err != nil || len(data.Pushes) != 2 {
				t.Fatalf("build.pushed event: %s %v", ev.Data(), err)
			}
			if want := []string{"failed", "pushed"}[seen]; data.Pushes[1].Status != want {
				t.Fatalf("build.pushed event %d: push %s, want %s", seen+1, data.Pushes[1].Status, want)
			}
		case <-time.After(15 * time.Second):
			t.Fatalf("%d build.pushed events at the sink, want 2", seen)
		}
	}
	ref, _ := name.ParseReference(dest)
	pushed, err := remote.Image(ref, remote.WithAuth(&authn.Basic{Username: user, Password: password}))
	if err != nil {
		t.Fatal(err)
	}
	if d, _ := pushed.Digest(); d.String() != *b.Digest {
		t.Fatalf("the destination serves %s, the build made %s", d, *b.Digest)
	}
	// A build that did not succeed has nothing to push.
	e.call("PATCH", "/api/v1/images/"+img.ID, "alice", map[string]any{"context": map[string]any{"type": "local",
		"dockerfile": "FROM " + e.base() + "\nRUN exit 3\n"}}, nil, "If-Match", "*")
	if b2 := e.waitFor(img.ID, e.startBuild(img.ID), 2*time.Minute, ended); b2.Status != "failed" {
		t.Fatalf("build 2: %+v", b2)
	}
	e.callErr("POST", "/api/v1/images/"+img.ID+"/builds/2/pushes", "alice", map[string]any{"reference": dest}, 409, "build_not_succeeded")
	assertNoSecret(t, e, password, img.ID)
	assertNoSecret(t, e, wrong, img.ID)
}
