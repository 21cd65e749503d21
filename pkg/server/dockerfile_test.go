package server_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/slipway-dev/slipway/events"
	"github.com/slipway-dev/slipway/internal/imagetest"
)

// TestSaveRefusesWhatCannotBeBuilt: SAVE (create and PATCH) refuses, with
// the line, what BuildKit's stage resolution and flag parsing see and the
// forms the pinned executor would drop or mis-build (what it does with each
// is recorded by pkg/runner/runc's TestExecutorForms), and changes nothing;
// the legal variants next to them are accepted.
func TestSaveRefusesWhatCannotBeBuilt(t *testing.T) {
	e := start(t, serverConfig(t))
	e.announce(events.WorkspaceCreated, "ws1", "alice", "bob")
	refused := []struct {
		name, dockerfile string
		line             int
		msg              string
	}{
		{"unknown stage", "FROM busybox:1 AS build\nRUN true\nFROM busybox:1\nCOPY --from=nostage /x /y\n", 4, `no stage named "nostage"`},
		{"chmod abc", "FROM busybox:1\nCOPY --chmod=abc a /a\n", 2, `"abc" is not an octal file mode`},
		{"expose abc", "FROM busybox:1\nRUN true\nEXPOSE abc\n", 3, `"abc" is not a port`},
		{"unset ARG in FROM", "ARG image\nFROM ${image}\n", 2, "ARG image is unset"},
		{"RUN heredoc", "FROM busybox:1\nRUN <<EOF\necho hi > /f\nEOF\n", 2, "RUN with a heredoc"},
		{"COPY heredoc", "FROM busybox:1\nCOPY <<EOF /f\nhi\nEOF\n", 2, "COPY with a heredoc"},
		{"RUN --mount=type=cache", "FROM busybox:1\nRUN --mount=type=cache,target=/root/.cache true\n", 2, "type=cache"},
		{"RUN --mount=type=bind", "FROM busybox:1\nRUN --mount=type=bind,target=/x true\n", 2, "type=bind"},
		{"RUN --mount=type=secret of no secret", "FROM busybox:1\nRUN --mount=type=secret,id=token true\n", 2, `"token" is not one of the image's secrets`},
		{"COPY --parents", "FROM busybox:1\nCOPY --parents a/b /c/\n", 2, "COPY --parents"},
		{"COPY --exclude", "FROM busybox:1\nCOPY --exclude=*.md . /c/\n", 2, "COPY --exclude"},
		{"RUN --network=none", "FROM busybox:1\nRUN --network=none true\n", 2, "--network=none"},
	}
	good, etag := e.create("ws1", "alice", "team/good")
	for _, c := range refused {
		t.Run(c.name, func(t *testing.T) {
			eb := e.callErr("POST", "/api/v1/workspaces/ws1/images", "bob", localImage("team/refused", c.dockerfile), 400, "invalid_dockerfile")
			if eb.Error.Line != c.line || !strings.Contains(eb.Error.Message, c.msg) || eb.Error.Field != "context.dockerfile" {
				t.Errorf("create: line %d, %q; want line %d with %q", eb.Error.Line, eb.Error.Message, c.line, c.msg)
			}
			eb = e.callErr("PATCH", "/api/v1/images/"+good.ID, "bob", map[string]any{"context": map[string]any{"type": "local", "dockerfile": c.dockerfile}},
				400, "invalid_dockerfile", "If-Match", etag)
			if eb.Error.Line != c.line {
				t.Errorf("PATCH: line %d, want %d", eb.Error.Line, c.line)
			}
		})
	}
	var list struct{ Images []image }
	e.call("GET", "/api/v1/workspaces/ws1/images", "alice", nil, &list)
	var got image
	res := e.call("GET", "/api/v1/images/"+good.ID, "alice", nil, &got)
	if len(list.Images) != 1 || res.Header.Get("ETag") != etag || got.Context.Dockerfile != good.Context.Dockerfile {
		t.Fatalf("a refused SAVE changed something: %d images, ETag %s (was %s)", len(list.Images), res.Header.Get("ETag"), etag)
	}
	accepted := []string{
		"FROM busybox:1 AS build\nFROM busybox:1\nCOPY --from=build /x /y\nCOPY --from=0 /x /z\n",
		"FROM busybox:1\nCOPY --from=alpine:3 /bin/sh /sh\nCOPY --from=docker.io/library/alpine /bin/sh /sh2\n",
		"FROM busybox:1\nCOPY --chmod=0755 a /a\nEXPOSE 80 443/tcp 8000-8010\n",
		"ARG image=busybox:1\nFROM ${image}\n",
		"FROM busybox:1\nRUN --network=default echo hi\nCOPY --link a /a\n",
	}
	for i, df := range accepted {
		want(t, e.call("POST", "/api/v1/workspaces/ws1/images", "bob", localImage(fmt.Sprintf("team/ok%d", i), df), nil), 201, "")
	}
}

// TestBuildInputsAtSave: build arguments, secrets and target are checked at
// SAVE, a member may not name secrets, a secret credential is stored
// sealed and never shown.
func TestBuildInputsAtSave(t *testing.T) {
	e := start(t, serverConfig(t))
	e.announce(events.WorkspaceCreated, "ws1", "alice", "bob")
	const value = "a-long-enough-secret-7d41"
	df := "ARG V\nFROM busybox:1 AS build\nRUN --mount=type=secret,id=token true\nFROM busybox:1 AS final\n"
	def := func(extra map[string]any) map[string]any {
		d := localImage("team/inputs", df)
		d["secrets"] = []string{"token"}
		for k, v := range extra {
			d[k] = v
		}
		return d
	}
	for _, c := range []struct {
		extra map[string]any
		code  string
		field string
	}{
		{map[string]any{"build_args": map[string]string{"1BAD": "x"}}, "invalid_argument", "build_args"},
		{map[string]any{"build_args": map[string]string{"V": strings.Repeat("x", 5000)}}, "invalid_argument", "build_args.V"},
		{map[string]any{"target": "nostage"}, "invalid_argument", "target"},
		{map[string]any{"target": "Build"}, "invalid_argument", "target"},
		{map[string]any{"secrets": []string{"token", "token"}}, "invalid_argument", "secrets[1]"},
		{map[string]any{"secrets": []string{"Bad"}}, "invalid_argument", "secrets[0]"},
	} {
		eb := e.callErr("POST", "/api/v1/workspaces/ws1/images", "alice", def(c.extra), 400, c.code)
		if eb.Error.Field != c.field {
			t.Errorf("%v: field %q, want %q", c.extra, eb.Error.Field, c.field)
		}
	}
	// A secret credential: a value, nothing else, long enough to redact.
	for _, body := range []map[string]any{
		{"kind": "secret", "value": "short"},
		{"kind": "secret", "value": value, "username": "u"},
		{"kind": "secret"},
		{"kind": "registry", "registry": "r.example", "password": "pw-123456", "value": value},
	} {
		e.callErr("PUT", "/api/v1/workspaces/ws1/credentials/token", "alice", body, 400, "invalid_argument")
	}
	e.callErr("PUT", "/api/v1/workspaces/ws1/credentials/token", "bob", map[string]any{"kind": "secret", "value": value}, 403, "forbidden")
	want(t, e.call("PUT", "/api/v1/workspaces/ws1/credentials/token", "alice", map[string]any{"kind": "secret", "value": value}, nil), 204, "")
	want(t, e.call("PUT", "/api/v1/workspaces/ws1/credentials/hub", "alice", map[string]any{"kind": "registry", "registry": "r.example", "password": "pw-123456"}, nil), 204, "")
	res, body := e.c.JSON("GET", "/api/v1/workspaces/ws1/credentials", e.token("bob"), nil)
	if res.StatusCode != 200 || bytes.Contains(body, []byte(value)) || !strings.Contains(string(body), `{"name":"token","kind":"secret"}`) {
		t.Fatalf("credentials: %d %s", res.StatusCode, body)
	}
	// A registry credential is no build secret.
	eb := e.callErr("POST", "/api/v1/workspaces/ws1/images", "alice", def(map[string]any{"secrets": []string{"token", "hub"}}), 400, "credential_wrong_kind")
	if eb.Error.Field != "secrets[1]" {
		t.Errorf("field %q", eb.Error.Field)
	}
	// Only the owner names secrets.
	e.callErr("POST", "/api/v1/workspaces/ws1/images", "bob", def(nil), 403, "forbidden")
	var img struct {
		ID        string            `json:"id"`
		BuildArgs map[string]string `json:"build_args"`
		Secrets   []string          `json:"secrets"`
		Target    *string           `json:"target"`
		Status    string            `json:"status"`
	}
	res = e.call("POST", "/api/v1/workspaces/ws1/images", "alice", def(map[string]any{"build_args": map[string]string{"V": "1"}, "target": "build"}), &img)
	if res.StatusCode != 201 || img.BuildArgs["V"] != "1" || len(img.Secrets) != 1 || img.Target == nil || *img.Target != "build" {
		t.Fatalf("create: %d %+v", res.StatusCode, img)
	}
	etag := res.Header.Get("ETag")
	e.callErr("PATCH", "/api/v1/images/"+img.ID, "bob", map[string]any{"secrets": []string{}}, 403, "forbidden", "If-Match", etag)
	// Nor may a member change what a build with secrets runs: its
	// Dockerfile, build arguments or target (a RUN step could copy a secret
	// into a layer every member pulls). What is not the build definition
	// stays theirs to change.
	for _, change := range []map[string]any{
		{"build_args": map[string]string{"V": "2"}},
		{"target": ""},
		{"context": map[string]any{"type": "local", "dockerfile": "FROM busybox:1\nRUN --mount=type=secret,id=token cp /run/secrets/token /leak\n"}},
	} {
		e.callErr("PATCH", "/api/v1/images/"+img.ID, "bob", change, 403, "forbidden", "If-Match", etag)
	}
	res = e.call("PATCH", "/api/v1/images/"+img.ID, "bob", map[string]any{"description": "by bob"}, nil, "If-Match", etag)
	if res.StatusCode != 200 {
		t.Fatalf("a member's PATCH of the description: %d", res.StatusCode)
	}
	etag = res.Header.Get("ETag")
	// The owner may change what is not secrets; removing the secret the
	// Dockerfile mounts is refused with the line.
	res = e.call("PATCH", "/api/v1/images/"+img.ID, "alice", map[string]any{"build_args": map[string]string{"V": "2"}, "target": ""}, &img, "If-Match", etag)
	if res.StatusCode != 200 || img.BuildArgs["V"] != "2" || img.Target != nil {
		t.Fatalf("PATCH: %d %+v", res.StatusCode, img)
	}
	eb = e.callErr("PATCH", "/api/v1/images/"+img.ID, "alice", map[string]any{"secrets": []string{}}, 400, "invalid_dockerfile", "If-Match", res.Header.Get("ETag"))
	if eb.Error.Line != 3 {
		t.Errorf("line %d, want 3", eb.Error.Line)
	}
}

// TestBuildWithArgsSecretAndTarget: a real multi-stage build with a build
// argument, a build secret used by RUN --mount=type=secret and a target:
// the pushed image is the target stage, built with the argument and the
// secret (its hash), and the secret's value is found nowhere: not in a
// layer or the config pulled back from the registry, the log, an API
// response, the server's log, or any file of the data dir (the SQLite
// database and the registry's storage).
func TestBuildWithArgsSecretAndTarget(t *testing.T) {
	e := buildEnv(t, nil)
	const value = "hf_9GpQz7-model-hub-token-4c1e"
	var responses bytes.Buffer // every API response body the test saw
	call := func(method, path string, body any, out any, headers ...string) *http.Response {
		t.Helper()
		res, data := e.c.JSON(method, path, e.token("alice"), body, headers...)
		responses.Write(data)
		if out != nil && len(data) > 0 {
			if err := json.Unmarshal(data, out); err != nil {
				t.Fatalf("%s %s: %v", method, path, err)
			}
		}
		return res
	}
	want(t, call("PUT", "/api/v1/workspaces/ws1/credentials/token", map[string]any{"kind": "secret", "value": value}, nil), 204, "")
	dockerfile := fmt.Sprintf(`ARG BASE=%s
FROM $BASE AS app
ARG GREETING=hello
RUN --mount=type=secret,id=token cat /run/secrets/token | sha256sum > /hash
RUN --mount=type=secret,id=token,required=true echo "the token is $(cat /run/secrets/token)"
RUN echo "$GREETING" > /greeting
FROM $BASE AS final
RUN echo final > /final
`, e.base())
	def := localImage("team/inputs", dockerfile)
	def["build_args"] = map[string]string{"GREETING": "hej från bygget"}
	def["secrets"] = []string{"token"}
	def["target"] = "app"
	var img image
	if res := call("POST", "/api/v1/workspaces/ws1/images", def, &img); res.StatusCode != 201 {
		t.Fatalf("create: %d", res.StatusCode)
	}
	var b buildJSON
	if res := call("POST", "/api/v1/images/"+img.ID+"/builds", nil, &b); res.StatusCode != 202 {
		t.Fatalf("build: %d", res.StatusCode)
	}
	b = e.waitFor(img.ID, b.Number, 2*time.Minute, ended)
	call("GET", fmt.Sprintf("/api/v1/images/%s/builds/%d", img.ID, b.Number), nil, &b)
	if b.Status != "succeeded" || b.Reference == nil {
		t.Fatalf("build: %+v\n%s", b, e.buildLog(img.ID, b.Number))
	}
	res, log := e.c.JSON("GET", fmt.Sprintf("/api/v1/images/%s/builds/%d/log", img.ID, b.Number), e.token("alice"), nil)
	responses.Write(log)
	if res.StatusCode != 200 || !strings.Contains(string(log), "the token is [redacted]") {
		t.Fatalf("the log lacks the redacted line:\n%s", log)
	}
	call("GET", "/api/v1/images/"+img.ID, nil, &img)
	call("GET", "/api/v1/images/"+img.ID+"/builds", nil, nil)
	call("GET", "/api/v1/workspaces/ws1/images", nil, nil)
	call("GET", "/api/v1/workspaces/ws1/credentials", nil, nil)
	if img.Status != "built" {
		t.Fatalf("image %s", img.Status)
	}

	// The pushed image is the target stage, with the argument and the hash.
	pulled := e.pull("alice", *b.Reference)
	tree := files(t, pulled)
	sum := sha256.Sum256([]byte(value))
	if tree["/hash"] != hex.EncodeToString(sum[:])+"  -\n" || tree["/greeting"] != "hej från bygget\n" {
		t.Fatalf("/hash %q, /greeting %q", tree["/hash"], tree["/greeting"])
	}
	if _, ok := tree["/final"]; ok {
		t.Fatal("the image is the last stage, not the target")
	}
	for p := range tree {
		if strings.HasPrefix(p, "/run/secrets/") && p != "/run/secrets/" {
			t.Errorf("the image holds %s", p)
		}
	}
	// Every layer, compressed and not, the config and the manifest.
	for what, data := range imagetest.Blobs(t, pulled) {
		if bytes.Contains(data, []byte(value)) {
			t.Errorf("the image's %s holds the secret", what)
		}
	}
	if bytes.Contains(responses.Bytes(), []byte(value)) {
		t.Error("an API response holds the secret")
	}
	if strings.Contains(e.logs.String(), value) {
		t.Error("the server's log holds the secret")
	}
	// Every file of the data dir: the SQLite database (and its WAL), the
	// registry's blobs, the keys.
	e.shutdown()
	scanned := 0
	err := filepath.WalkDir(e.cfg.DataDir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		scanned++
		if bytes.Contains(data, []byte(value)) {
			t.Errorf("%s holds the secret in clear", p)
		}
		return nil
	})
	if err != nil || scanned == 0 {
		t.Fatalf("scanning the data dir: %v, %d files", err, scanned)
	}
}

// TestBuildInputsMakeModified: changing a built image's build arguments or
// target makes it modified; a build fails, saying so, when the secret it
// names is gone.
func TestBuildInputsMakeModified(t *testing.T) {
	e := buildEnv(t, nil)
	// The base comes from a build argument: the build's registry token
	// may pull it.
	def := localImage("team/args", "ARG BASE\nFROM $BASE AS one\nARG X=a\nRUN echo $X > /x\nFROM one AS two\nRUN --mount=type=secret,id=gone true\n")
	def["build_args"] = map[string]string{"X": "b", "BASE": e.base()}
	def["target"] = "one"
	def["secrets"] = []string{"gone"}
	img := e.newImage(def)
	b := e.waitFor(img.ID, e.startBuild(img.ID), 2*time.Minute, ended)
	if b.Status != "failed" || b.Failure == nil || b.Failure.Reason != "dockerfile" || !strings.Contains(b.Failure.Message, `secret "gone" does not exist`) {
		t.Fatalf("a build with a missing secret: %+v", b)
	}
	want(t, e.call("PUT", "/api/v1/workspaces/ws1/credentials/gone", "alice", map[string]any{"kind": "secret", "value": "back-again-1"}, nil), 204, "")
	b = e.waitFor(img.ID, e.startBuild(img.ID), 2*time.Minute, ended)
	if b.Status != "succeeded" {
		t.Fatalf("build: %+v\n%s", b, e.buildLog(img.ID, b.Number))
	}
	if got := files(t, e.pull("alice", *b.Reference))["/x"]; got != "b\n" {
		t.Fatalf("/x = %q", got)
	}
	for _, change := range []map[string]any{{"build_args": map[string]string{"X": "c", "BASE": e.base()}}, {"target": "two"}} {
		var got image
		res := e.call("GET", "/api/v1/images/"+img.ID, "alice", nil, &got)
		if got.Status != "built" {
			t.Fatalf("before %v: %s", change, got.Status)
		}
		e.call("PATCH", "/api/v1/images/"+img.ID, "alice", change, &got, "If-Match", res.Header.Get("ETag"))
		if got.Status != "modified" {
			t.Fatalf("after %v: %s, want modified", change, got.Status)
		}
		b = e.waitFor(img.ID, e.startBuild(img.ID), 2*time.Minute, ended)
		if b.Status != "succeeded" {
			t.Fatalf("build after %v: %+v\n%s", change, b, e.buildLog(img.ID, b.Number))
		}
	}
}

// TestGitDockerfileCheckedAtBuild: a git context's Dockerfile is seen
// first by the build, which checks it as SAVE checks a local one before the
// executor runs: what the executor would drop or mis-build, an unset ARG
// in FROM, a target that is no stage, each fails with reason dockerfile
// and the line; a good one builds its target with its secret.
func TestGitDockerfileCheckedAtBuild(t *testing.T) {
	e := buildEnv(t, nil)
	base := e.base()
	url := gitRepo(t, map[string]string{
		"heredoc/Dockerfile": "FROM " + base + "\nRUN <<EOF\necho hi > /f\nEOF\n",
		"unset/Dockerfile":   "ARG image\n\nFROM ${image}\nRUN true\n",
		"stages/Dockerfile": "FROM " + base + " AS one\nRUN --mount=type=secret,id=tok test -s /run/secrets/tok && echo one > /one\n" +
			"FROM " + base + " AS two\nRUN echo two > /two\n",
	}, nil)
	want(t, e.call("PUT", "/api/v1/workspaces/ws1/credentials/tok", "alice", map[string]any{"kind": "secret", "value": "git-build-secret-1"}, nil), 204, "")
	for _, c := range []struct {
		dir, target string
		msg         string // "" for success
	}{
		{"heredoc", "", "Dockerfile line 2: RUN with a heredoc"},
		{"unset", "", "Dockerfile line 3: FROM ${image}: the base image is empty: ARG image is unset"},
		{"stages", "three", `target: "three" is not a stage of the Dockerfile; its stages are one, two`},
		{"stages", "one", ""},
	} {
		def := map[string]any{"name": "team/git-" + c.dir + c.target, "context": map[string]any{"type": "git", "git": map[string]any{"url": url, "dir": c.dir}},
			"target": c.target, "secrets": []string{"tok"}}
		img := e.newImage(def)
		b := e.waitFor(img.ID, e.startBuild(img.ID), 2*time.Minute, ended)
		if c.msg == "" {
			if b.Status != "succeeded" {
				t.Fatalf("%s: %+v\n%s", c.dir, b, e.buildLog(img.ID, b.Number))
			}
			tree := files(t, e.pull("alice", *b.Reference))
			if _, two := tree["/two"]; tree["/one"] != "one\n" || two {
				t.Fatalf("%s: not the target stage one", c.dir)
			}
			continue
		}
		if b.Status != "failed" || b.Failure == nil || b.Failure.Reason != "dockerfile" || !strings.Contains(b.Failure.Message, c.msg) {
			t.Fatalf("%s %s: %+v %+v, want reason dockerfile with %q", c.dir, c.target, b, b.Failure, c.msg)
		}
		if log := e.buildLog(img.ID, b.Number); !strings.Contains(log, c.msg) || strings.Contains(log, "Retrieving image manifest") {
			t.Fatalf("%s: the log does not say why, or the executor ran:\n%s", c.dir, log)
		}
	}
}
