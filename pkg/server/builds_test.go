package server_test

import (
	"archive/tar"
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/slipway-dev/slipway/events"
	"github.com/slipway-dev/slipway/internal/apitest"
	"github.com/slipway-dev/slipway/internal/servertest"
	"github.com/slipway-dev/slipway/pkg/registry/baseimage"
	"github.com/slipway-dev/slipway/pkg/server"
)

// Real builds: the Kaniko executor in runc, pushing to the registry the
// server embeds, read back with go-containerregistry.

// requireBuilds returns the Kaniko executor, or skips without root and
// fails without runc or the executor (see servertest.Executor).
func requireBuilds(t testing.TB) string { return servertest.Executor(t) }

// buildEnv is a server that can build, with busybox in its registry as
// HOST/library/busybox and workspace ws1 (owner alice, member bob).
func buildEnv(t *testing.T, configure func(*server.Config)) *env {
	t.Helper()
	cfg := serverConfig(t)
	cfg.Executor = requireBuilds(t)
	cfg.ReconcileInterval = time.Second
	if configure != nil {
		configure(&cfg)
	}
	e := start(t, cfg)
	if _, err := pushBusybox(e); err != nil {
		t.Fatal(err)
	}
	e.announce(events.WorkspaceCreated, "ws1", "alice", "bob")
	return e
}

// pushBusybox puts the test base image into e's registry, pushed to
// library/ as the platform (an event publisher) through the token flow.
func pushBusybox(e *env) (v1.Hash, error) {
	return baseimage.PushBusybox(context.Background(), e.base(), e.ts.RegistryAs("platform"))
}

// base is the test base image's reference.
func (e *env) base() string { return e.srv.RegistryHost() + "/library/busybox" }

// buildJSON is the part of a Build the tests read.
type buildJSON struct {
	Number      int        `json:"number"`
	Status      string     `json:"status"`
	RequestedBy string     `json:"requested_by"`
	QueuedAt    time.Time  `json:"queued_at"`
	StartedAt   *time.Time `json:"started_at"`
	FinishedAt  *time.Time `json:"finished_at"`
	Duration    *float64   `json:"duration_seconds"`
	Digest      *string    `json:"digest"`
	Reference   *string    `json:"reference"`
	Commit      *string    `json:"commit"`
	Pushes      []struct {
		Reference string     `json:"reference"`
		Status    string     `json:"status"`
		Error     *string    `json:"error"`
		At        *time.Time `json:"at"`
	} `json:"pushes"`
	Failure *struct {
		Reason  string `json:"reason"`
		Message string `json:"message"`
	} `json:"failure"`
}

// newImage creates an image from a raw definition as alice.
func (e *env) newImage(def map[string]any) image {
	e.t.Helper()
	var img image
	if res := e.call("POST", "/api/v1/workspaces/ws1/images", "alice", def, &img); res.StatusCode != 201 {
		e.t.Fatalf("create %v: %d", def["name"], res.StatusCode)
	}
	return img
}

// startBuild requests a build of img as alice.
func (e *env) startBuild(id string) int {
	e.t.Helper()
	var b buildJSON
	if res := e.call("POST", "/api/v1/images/"+id+"/builds", "alice", nil, &b); res.StatusCode != 202 {
		e.t.Fatalf("build %s: %d", id, res.StatusCode)
	}
	if b.Status != "queued" || b.RequestedBy != "alice" {
		e.t.Fatalf("new build: %+v", b)
	}
	return b.Number
}

func (e *env) getBuild(id string, n int) buildJSON {
	var b buildJSON
	e.call("GET", fmt.Sprintf("/api/v1/images/%s/builds/%d", id, n), "alice", nil, &b)
	return b
}

// waitFor polls build n of id until ok says so.
func (e *env) waitFor(id string, n int, within time.Duration, ok func(buildJSON) bool) buildJSON {
	e.t.Helper()
	deadline := time.Now().Add(within)
	for {
		b := e.getBuild(id, n)
		if ok(b) {
			return b
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("build %s/%d: still %s after %v; log:\n%s", id, n, b.Status, within, e.buildLog(id, n))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func ended(b buildJSON) bool   { return b.Status != "queued" && b.Status != "running" }
func running(b buildJSON) bool { return b.Status == "running" }

func (e *env) buildLog(id string, n int) string {
	res, body := e.c.JSON("GET", fmt.Sprintf("/api/v1/images/%s/builds/%d/log", id, n), e.token("alice"), nil)
	if res.StatusCode != 200 {
		return fmt.Sprintf("(log: %d)", res.StatusCode)
	}
	return string(body)
}

// pull fetches an image by reference from e's registry as subject.
func (e *env) pull(subject, ref string) v1.Image {
	e.t.Helper()
	r, err := name.ParseReference(ref)
	if err != nil {
		e.t.Fatal(err)
	}
	img, err := remote.Image(r, e.ts.RegistryAs(subject))
	if err != nil {
		e.t.Fatalf("pull %s as %s: %v", ref, subject, err)
	}
	return img
}

// files reads the final file system of img: path -> content (symlinks as
// "-> target"), honouring whiteouts.
func files(t *testing.T, img v1.Image) map[string]string {
	t.Helper()
	rc := mutate.Extract(img)
	defer rc.Close()
	out := map[string]string{}
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		p := "/" + strings.TrimPrefix(h.Name, "./")
		switch h.Typeflag {
		case tar.TypeReg:
			b, _ := io.ReadAll(tr)
			out[p] = string(b)
		case tar.TypeSymlink:
			out[p] = "-> " + h.Linkname
		case tar.TypeDir:
			out[strings.TrimSuffix(p, "/")+"/"] = ""
		}
	}
}

func TestBuildMultiStage(t *testing.T) {
	e := buildEnv(t, nil)
	dockerfile := fmt.Sprintf(`ARG BASE=%s
FROM $BASE AS builder
ARG GREETING=hello
RUN mkdir -p /out && echo "$GREETING from the builder" > /out/greeting && echo built > /out/marker
FROM $BASE
ENV APP_HOME=/srv/app MODE=test
WORKDIR /srv/app
COPY --from=builder /out/greeting ./greeting.txt
RUN echo "$MODE" > mode && chown -R 65534 /srv/app
USER 65534
LABEL org.example.team="images" org.example.tier=gold
CMD ["cat", "/srv/app/greeting.txt"]
`, e.base())
	img := e.newImage(localImage("team/multi", dockerfile))
	n := e.startBuild(img.ID)
	b := e.waitFor(img.ID, n, 2*time.Minute, ended)
	if b.Status != "succeeded" || b.Digest == nil || b.Reference == nil || b.StartedAt == nil || b.FinishedAt == nil ||
		b.Duration == nil || *b.Duration <= 0 || b.Commit != nil || b.Failure != nil || len(b.Pushes) != 1 || b.Pushes[0].Status != "pushed" {
		t.Fatalf("build: %+v\n%s", b, e.buildLog(img.ID, n))
	}
	host := e.srv.RegistryHost()
	if *b.Reference != host+"/team/multi@"+*b.Digest {
		t.Fatalf("reference %s", *b.Reference)
	}
	// The image now is built, with who built it and where it is.
	var got image
	e.call("GET", "/api/v1/images/"+img.ID, "bob", nil, &got)
	if got.Status != "built" || got.History.Built == nil || got.History.Built.By != "alice" || got.Reference == nil || *got.Reference != *b.Reference {
		t.Fatalf("image after the build: %+v", got)
	}
	var usable struct{ Images []image }
	e.call("GET", "/api/v1/workspaces/ws1/images?usable=true", "bob", nil, &usable)
	if len(usable.Images) != 1 || usable.Images[0].ID != img.ID {
		t.Fatalf("usable images: %+v", usable.Images)
	}
	// Pull it: by digest and by the latest tag, and check config and files.
	pulled := e.pull("bob", *b.Reference)
	if d, _ := pulled.Digest(); d.String() != *b.Digest {
		t.Fatalf("pulled %s, build says %s", d, *b.Digest)
	}
	if d, _ := e.pull("alice", host+"/team/multi:latest").Digest(); d.String() != *b.Digest {
		t.Fatalf(":latest is %s", d)
	}
	cfg, err := pulled.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	c := cfg.Config
	env := strings.Join(c.Env, " ")
	if c.WorkingDir != "/srv/app" || c.User != "65534" || !strings.Contains(env, "APP_HOME=/srv/app") || !strings.Contains(env, "MODE=test") ||
		c.Labels["org.example.team"] != "images" || c.Labels["org.example.tier"] != "gold" || strings.Join(c.Cmd, " ") != "cat /srv/app/greeting.txt" {
		t.Fatalf("config: %+v", c)
	}
	fs := files(t, pulled)
	if fs["/srv/app/greeting.txt"] != "hello from the builder\n" || fs["/srv/app/mode"] != "test\n" || fs["/bin/busybox"] == "" {
		t.Fatalf("files: greeting %q, mode %q, busybox %d bytes", fs["/srv/app/greeting.txt"], fs["/srv/app/mode"], len(fs["/bin/busybox"]))
	}
	if _, leaked := fs["/out/marker"]; leaked {
		t.Fatal("the builder stage's files leaked into the final image")
	}
	for p := range fs {
		if strings.HasPrefix(p, "/kaniko") || strings.HasPrefix(p, "/workspace") {
			t.Fatalf("the build's own mounts leaked into the image: %s", p)
		}
	}
	// The log: whole, from an offset (the refresh button), and followed.
	log := e.buildLog(img.ID, n)
	if !strings.Contains(log, "RUN mkdir -p /out") || !strings.Contains(log, "Pushed "+host+"/team/multi") {
		t.Fatalf("log lacks the build's steps:\n%s", log)
	}
	res, rest := e.c.JSON("GET", fmt.Sprintf("/api/v1/images/%s/builds/%d/log?offset=10", img.ID, n), e.token("bob"), nil)
	if string(rest) != log[10:] || res.Header.Get("X-Next-Offset") != fmt.Sprint(len(log)) {
		t.Fatalf("log from offset 10: %d bytes, next %s; want %d bytes", len(rest), res.Header.Get("X-Next-Offset"), len(log)-10)
	}
	_, followed := e.c.JSON("GET", fmt.Sprintf("/api/v1/images/%s/builds/%d/log?follow=true", img.ID, n), e.token("bob"), nil)
	if string(followed) != log {
		t.Fatal("a followed log of a finished build differs from the log")
	}
	// Edit the Dockerfile: modified; build again: built.
	res = e.call("GET", "/api/v1/images/"+img.ID, "alice", nil, nil)
	e.call("PATCH", "/api/v1/images/"+img.ID, "bob", map[string]any{"context": map[string]any{"type": "local",
		"dockerfile": strings.Replace(dockerfile, "GREETING=hello", "GREETING=bonjour", 1)}}, &got, "If-Match", res.Header.Get("ETag"))
	if got.Status != "modified" {
		t.Fatalf("after an edit: %s", got.Status)
	}
	n2 := e.startBuild(img.ID)
	b2 := e.waitFor(img.ID, n2, 2*time.Minute, ended)
	e.call("GET", "/api/v1/images/"+img.ID, "bob", nil, &got)
	if b2.Status != "succeeded" || got.Status != "built" || *got.Reference != *b2.Reference || *b2.Digest == *b.Digest {
		t.Fatalf("rebuild: %+v; image %+v", b2, got)
	}
	if files(t, e.pull("alice", *b2.Reference))["/srv/app/greeting.txt"] != "bonjour from the builder\n" {
		t.Fatal("the rebuild did not build the new definition")
	}
	var list struct{ Builds []buildJSON }
	e.call("GET", "/api/v1/images/"+img.ID+"/builds", "bob", nil, &list)
	if len(list.Builds) != 2 || list.Builds[0].Number != n2 || list.Builds[1].Number != n {
		t.Fatalf("build list: %+v", list.Builds)
	}
}

func TestFailedBuildKeepsTheLastGoodImage(t *testing.T) {
	e := buildEnv(t, nil)
	img := e.newImage(localImage("team/fails", "FROM "+e.base()+"\nRUN echo ok > /ok\n"))
	good := e.waitFor(img.ID, e.startBuild(img.ID), 2*time.Minute, ended)
	if good.Status != "succeeded" {
		t.Fatalf("first build: %+v", good)
	}
	res := e.call("GET", "/api/v1/images/"+img.ID, "alice", nil, nil)
	e.call("PATCH", "/api/v1/images/"+img.ID, "alice", map[string]any{"context": map[string]any{"type": "local",
		"dockerfile": "FROM " + e.base() + "\nRUN echo step one\nRUN echo failing; exit 3\nRUN echo never\n"}}, nil, "If-Match", res.Header.Get("ETag"))
	n := e.startBuild(img.ID)
	b := e.waitFor(img.ID, n, 2*time.Minute, ended)
	if b.Status != "failed" || b.Failure == nil || b.Failure.Reason != "dockerfile" ||
		!strings.Contains(b.Failure.Message, `"RUN echo failing; exit 3"`) || !strings.Contains(b.Failure.Message, "exit code 3") || b.Digest != nil {
		t.Fatalf("failing build: %+v", b)
	}
	var got image
	e.call("GET", "/api/v1/images/"+img.ID, "alice", nil, &got)
	if got.Status != "modified" || got.Reference == nil || *got.Reference != *good.Reference || got.History.Built == nil {
		t.Fatalf("a failed build changed the image: %+v", got)
	}
	if log := e.buildLog(img.ID, n); !strings.Contains(log, "exit status 3") || strings.Contains(log, "echo never") && strings.Contains(log, "Running: [/bin/sh -c echo never]") {
		t.Fatalf("log:\n%s", log)
	}
	// A base image that does not exist.
	missing := e.newImage(localImage("team/nobase", "FROM "+e.srv.RegistryHost()+"/library/nope:1\nRUN true\n"))
	b = e.waitFor(missing.ID, e.startBuild(missing.ID), 2*time.Minute, ended)
	if b.Status != "failed" || b.Failure.Reason != "base_image" || !strings.Contains(b.Failure.Message, "library/nope") {
		t.Fatalf("missing base image: %+v", b.Failure)
	}
}

func TestCancelActiveAndTimeout(t *testing.T) {
	e := buildEnv(t, func(c *server.Config) { c.BuildTimeout = 4 * time.Second })
	img := e.newImage(localImage("team/slow", "FROM "+e.base()+"\nRUN echo sleeping; sleep 60\n"))
	n := e.startBuild(img.ID)
	e.waitFor(img.ID, n, time.Minute, running)
	// One active build per image; only the owner cancels.
	e.callErr("POST", "/api/v1/images/"+img.ID+"/builds", "alice", nil, 409, "build_active")
	e.callErr("POST", fmt.Sprintf("/api/v1/images/%s/builds/%d/cancel", img.ID, n), "bob", nil, 403, "forbidden")
	// Wait until the RUN is under way, then cancel.
	deadline := time.Now().Add(time.Minute)
	for !strings.Contains(e.buildLog(img.ID, n), "sleeping") && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	t0 := time.Now()
	want(t, e.call("POST", fmt.Sprintf("/api/v1/images/%s/builds/%d/cancel", img.ID, n), "alice", nil, nil), 202, "")
	b := e.getBuild(img.ID, n)
	if b.Status != "cancelled" || b.Failure == nil || b.Failure.Reason != "cancelled" {
		t.Fatalf("after cancel: %+v", b)
	}
	e.callErr("POST", fmt.Sprintf("/api/v1/images/%s/builds/%d/cancel", img.ID, n), "alice", nil, 409, "build_finished")
	// The container goes within seconds.
	bundles := filepath.Join(e.cfg.DataDir, "runc", "bundles")
	for {
		entries, _ := os.ReadDir(bundles)
		if len(entries) == 0 {
			break
		}
		if time.Since(t0) > 10*time.Second {
			t.Fatalf("the cancelled build's container is still there after %v: %v", time.Since(t0), entries)
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("cancelled build stopped within %v", time.Since(t0))
	// The timeout stops the next one.
	n = e.startBuild(img.ID)
	b = e.waitFor(img.ID, n, time.Minute, ended)
	if b.Status != "failed" || b.Failure.Reason != "timeout" || !strings.Contains(b.Failure.Message, "4s") {
		t.Fatalf("timed-out build: %+v", b)
	}
	if *b.Duration > 15 {
		t.Fatalf("the timeout took %.1f s to stop a 4 s build", *b.Duration)
	}
}

func TestQueueIsFIFOWithinSlots(t *testing.T) {
	e := buildEnv(t, func(c *server.Config) { c.BuildSlots = 1 })
	var ids []string
	for i := range 3 {
		img := e.newImage(localImage(fmt.Sprintf("team/q%d", i), "FROM "+e.base()+"\nRUN sleep 1\n"))
		ids = append(ids, img.ID)
	}
	for _, id := range ids {
		e.startBuild(id)
	}
	// With one slot the builds run one after the other, in the order they
	// were queued: their [started, finished] intervals do not overlap.
	var bs []buildJSON
	for _, id := range ids {
		b := e.waitFor(id, 1, 2*time.Minute, ended)
		if b.Status != "succeeded" {
			t.Fatalf("queued build: %+v", b)
		}
		bs = append(bs, b)
	}
	for i := 1; i < len(bs); i++ {
		if bs[i].StartedAt.Before(*bs[i-1].FinishedAt) {
			t.Fatalf("build %d started at %v, before build %d finished at %v", i, bs[i].StartedAt, i-1, bs[i-1].FinishedAt)
		}
	}
}

// TestKillDuringBuild kills the server process with SIGKILL while a build
// runs, starts it again on the same data dir, and expects the build settled
// as interrupted and its container and bundle gone.
func TestKillDuringBuild(t *testing.T) {
	executor := requireBuilds(t)
	bin := filepath.Join(servertest.RepoRoot(), "bin", "slipway")
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("no %s: run `make build`", bin)
	}
	data := t.TempDir()
	cfg := serverConfig(t)
	cfg.DataDir, cfg.Executor, cfg.ReconcileInterval = data, executor, time.Second
	// First run: the real binary, so it can be killed.
	e := start(t, cfg) // creates the keys; stopped at once to free the data dir
	e.shutdown()
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	cmd := exec.Command(bin, "serve", "--data", data, "--addr", addr, "--executor", executor)
	stderr, _ := cmd.StderrPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go io.Copy(io.Discard, bufio.NewReader(stderr))
	defer cmd.Process.Kill()
	servertest.WaitReady(t, "http://"+addr)
	// The process's env shares the first env's issuer: the key is the data dir's.
	proc := &env{t: t, c: apitest.NewClient(t, "http://"+addr), tokens: e.tokens, srv: e.srv, baseURL: "http://" + addr}
	publisher := &authn.Basic{Username: "platform", Password: e.token("platform")}
	if _, err := baseimage.PushBusybox(context.Background(), addr+"/library/busybox", remote.WithAuth(publisher)); err != nil {
		t.Fatal(err)
	}
	proc.announce(events.WorkspaceCreated, "ws1", "alice")
	img := proc.newImage(localImage("team/killed", "FROM "+addr+"/library/busybox\nRUN echo long; sleep 120\n"))
	n := proc.startBuild(img.ID)
	deadline := time.Now().Add(time.Minute)
	for !strings.Contains(proc.buildLog(img.ID, n), "long") {
		if time.Now().After(deadline) {
			t.Fatalf("the build did not start: %+v", proc.getBuild(img.ID, n))
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
	// Second run, in-process, on the same data dir.
	e2 := start(t, cfg)
	e2.tokens = e.tokens
	b := e2.waitFor(img.ID, n, 30*time.Second, ended)
	if b.Status != "failed" || b.Failure.Reason != "interrupted" {
		t.Fatalf("after the kill: %+v", b)
	}
	for {
		bundles, _ := os.ReadDir(filepath.Join(data, "runc", "bundles"))
		out, _ := exec.Command("runc", "--root", filepath.Join(data, "runc", "state"), "list", "-q").Output()
		if len(bundles) == 0 && strings.TrimSpace(string(out)) == "" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("left over: bundles %v, containers %q", bundles, out)
		}
		time.Sleep(100 * time.Millisecond)
	}
	// And the image builds again.
	if b := e2.waitFor(img.ID, e2.startBuild(img.ID), time.Minute, running); b.Status != "running" {
		t.Fatalf("rebuild after the kill: %+v", b)
	}
}

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func TestBuildEvents(t *testing.T) {
	got := make(chan cloudevents.Event, 32)
	sink := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if ev, err := cloudevents.NewEventFromHTTPRequest(r); err == nil {
			got <- *ev
		}
		w.WriteHeader(http.StatusAccepted)
	}))
	defer sink.Close()
	e := buildEnv(t, func(c *server.Config) { c.Sink = sink.URL })
	img := e.newImage(localImage("team/evented-build", "FROM "+e.base()+"\nRUN true\n"))
	n := e.startBuild(img.ID)
	e.waitFor(img.ID, n, time.Minute, ended)
	slow := e.newImage(localImage("team/evented-cancel", "FROM "+e.base()+"\nRUN sleep 60\n"))
	m := e.startBuild(slow.ID)
	e.waitFor(slow.ID, m, time.Minute, running)
	e.call("POST", fmt.Sprintf("/api/v1/images/%s/builds/%d/cancel", slow.ID, m), "alice", nil, nil)
	want := map[string]bool{
		img.ID + " " + events.BuildQueued: true, img.ID + " " + events.BuildStarted: true, img.ID + " " + events.BuildSucceeded: true,
		slow.ID + " " + events.BuildStarted: true, slow.ID + " " + events.BuildCancelled: true,
	}
	deadline := time.After(15 * time.Second)
	for len(want) > 0 {
		select {
		case ev := <-got:
			var data buildJSON
			var ref struct{ Image string }
			if err := ev.DataAs(&data); err != nil || ev.DataAs(&ref) != nil || ev.Source() != events.Source {
				t.Fatalf("event %v: %v", ev, err)
			}
			if ev.Type() == events.BuildSucceeded && (data.Digest == nil || data.Status != "succeeded") {
				t.Fatalf("succeeded event without its result: %s", ev.Data())
			}
			delete(want, ref.Image+" "+ev.Type())
		case <-deadline:
			t.Fatalf("events not seen at the sink: %v", want)
		}
	}
}

// TestDeletingAWorkspaceStopsItsBuilds: the platform deletes a workspace
// while one of its images builds; the build is cancelled and its container
// goes, so nothing keeps building or pushing for a workspace that is gone.
func TestDeletingAWorkspaceStopsItsBuilds(t *testing.T) {
	e := buildEnv(t, nil)
	img := e.newImage(localImage("team/orphan", "FROM "+e.base()+"\nRUN echo running; sleep 60\n"))
	n := e.startBuild(img.ID)
	e.waitFor(img.ID, n, time.Minute, running)
	b := e.getBuild(img.ID, n)
	e.announce(events.WorkspaceDeleted, "ws1", "alice")
	e.callErr("GET", "/api/v1/images/"+img.ID, "alice", nil, 404, "not_found")
	deadline := time.Now().Add(15 * time.Second)
	for {
		bundles, _ := os.ReadDir(filepath.Join(e.cfg.DataDir, "runc", "bundles"))
		if len(bundles) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the build of a deleted workspace still runs (%+v): %v", b, bundles)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if strings.Contains(e.logs.String(), `"level":"ERROR"`) {
		t.Fatalf("errors in the server log:\n%s", e.logs.String())
	}
}

// TestDemoBuildsOffline: `make run`'s demo workspace holds an image whose
// base is in the server's own registry, so a newcomer's first BUILD works
// without an image hub.
func TestDemoBuildsOffline(t *testing.T) {
	cfg := serverConfig(t)
	cfg.Executor, cfg.Demo, cfg.Stdout = requireBuilds(t), true, io.Discard
	e := start(t, cfg)
	var list struct{ Images []image }
	e.call("GET", "/api/v1/workspaces/demo/images", "demo", nil, &list)
	if len(list.Images) != 1 || list.Images[0].Name != server.DemoImage {
		t.Fatalf("demo images: %+v", list.Images)
	}
	id := list.Images[0].ID
	var b buildJSON
	if res := e.call("POST", "/api/v1/images/"+id+"/builds", "demo", nil, &b); res.StatusCode != 202 {
		t.Fatalf("build the demo image: %d", res.StatusCode)
	}
	deadline := time.Now().Add(time.Minute)
	for n := b.Number; !ended(b) || b.Number == 0; {
		if time.Now().After(deadline) {
			t.Fatalf("demo build still %s", b.Status)
		}
		time.Sleep(50 * time.Millisecond)
		e.call("GET", fmt.Sprintf("/api/v1/images/%s/builds/%d", id, n), "demo", nil, &b)
	}
	if b.Status != "succeeded" {
		t.Fatalf("demo build: %+v", b)
	}
	if got := files(t, e.pull("demo", *b.Reference))["/hello"]; got != "hello from Slipway\n" {
		t.Fatalf("/hello = %q", got)
	}
	// A restart neither duplicates nor loses it.
	e = e.restart()
	e.call("GET", "/api/v1/workspaces/demo/images", "demo", nil, &list)
	if len(list.Images) != 1 || list.Images[0].Status != "built" {
		t.Fatalf("after a restart: %+v", list.Images)
	}
}
