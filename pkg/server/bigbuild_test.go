package server_test

import (
	"archive/tar"
	"context"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/slipway-dev/slipway/pkg/build"
	"github.com/slipway-dev/slipway/pkg/server"
)

// Large images build within the default limits (2 GiB of memory): a layer
// of 1 GiB of random data, generated inside the build, is pushed whole.
// Slow (half a minute to a minute and a half): one build, not in parallel.
// It failed while builds reached the registry through pasta's own forward
// (its push stalled near the end) and while --build-reproducible was on by
// default (the executor was killed at 2071 MiB).
func TestBuildOneGiBLayerWithinDefaultLimits(t *testing.T) {
	e := buildEnv(t, nil)
	if def := server.DefaultConfig(); e.cfg.BuildMemory != def.BuildMemory || e.cfg.BuildMemory != 2<<30 {
		t.Fatalf("the test runs under the default memory limit, not %d", e.cfg.BuildMemory)
	}
	img := e.newImage(localImage("team/big", "FROM "+e.base()+"\nRUN head -c 1073741824 /dev/urandom > /big\n"))
	b := e.waitFor(img.ID, e.startBuild(img.ID), 10*time.Minute, ended)
	if b.Status != "succeeded" || b.Reference == nil {
		t.Fatalf("build: %+v\n%s", b, e.buildLog(img.ID, b.Number))
	}
	pulled := e.pull("alice", *b.Reference)
	layers, err := pulled.Layers()
	if err != nil || len(layers) < 2 {
		t.Fatalf("layers: %d, %v", len(layers), err)
	}
	top := layers[len(layers)-1]
	if n, err := top.Size(); err != nil || n < 1<<30 {
		t.Fatalf("the RUN layer is %d bytes compressed (%v); random data does not compress below 1 GiB", n, err)
	}
	rc, err := top.Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	tr := tar.NewReader(rc)
	var bigSize int64 = -1
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("reading the layer back: %v", err)
		}
		if strings.TrimPrefix(h.Name, "/") == "big" {
			bigSize = h.Size
		}
	}
	if bigSize != 1<<30 {
		t.Fatalf("/big in the pulled layer: %d bytes, want %d", bigSize, 1<<30)
	}
}

// A layer of 100,000 small files, generated inside the build, builds under
// the default limits and is all in the pushed image. Slow (a few minutes
// on a loaded machine): one build, not in parallel.
func TestBuildHundredThousandFiles(t *testing.T) {
	e := buildEnv(t, nil)
	img := e.newImage(localImage("team/many", "FROM "+e.base()+
		"\nRUN mkdir /many && cd /many && seq 100000 | while read i; do echo $i > $i; done\n"))
	b := e.waitFor(img.ID, e.startBuild(img.ID), 20*time.Minute, ended)
	if b.Status != "succeeded" || b.Reference == nil {
		t.Fatalf("build: %+v\n%s", b, e.buildLog(img.ID, b.Number))
	}
	layers, err := e.pull("alice", *b.Reference).Layers()
	if err != nil {
		t.Fatal(err)
	}
	rc, err := layers[len(layers)-1].Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	tr := tar.NewReader(rc)
	files, last := 0, ""
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if h.Typeflag == tar.TypeReg && strings.HasPrefix(strings.TrimPrefix(h.Name, "/"), "many/") {
			files++
			if h.Name == "many/100000" || h.Name == "/many/100000" {
				body, _ := io.ReadAll(tr)
				last = string(body)
			}
		}
	}
	if files != 100000 || last != "100000\n" {
		t.Fatalf("the layer holds %d files under /many (want 100000); many/100000 = %q", files, last)
	}
}

// A build that prints past a small log cap keeps the head and the tail of
// its log: a marker where the middle was cut, the build's last lines and the
// executor's push.
func TestLogCapKeepsHeadAndTail(t *testing.T) {
	e := buildEnv(t, func(c *server.Config) { c.BuildLogCap = 32 << 10 })
	img := e.newImage(localImage("team/chatty", "FROM "+e.base()+
		"\nRUN echo the-first-line && seq 1 20000 && echo the-very-last-line\nRUN echo after > /after\n"))
	b := e.waitFor(img.ID, e.startBuild(img.ID), 5*time.Minute, ended)
	log := e.buildLog(img.ID, b.Number)
	if b.Status != "succeeded" {
		t.Fatalf("build: %+v\n%s", b, log)
	}
	for _, want := range []string{
		"the-first-line",
		"[slipway: the log passed half of its cap of 32 KiB here: its middle is cut, and its last 16 KiB follow when the build ends]",
		"of the log's middle were cut here; its last ",
		"the-very-last-line",
		"RUN echo after > /after",
		"Pushing image to " + e.srv.RegistryHost() + "/team/chatty",
		"[slipway] the executor ended after",
		"MiB of the 2048 MiB limit (--build-memory)",
	} {
		if !strings.Contains(log, want) {
			t.Errorf("the log lacks %q", want)
		}
	}
	if strings.Contains(log, "\n10000\n") {
		t.Error("the log kept its middle")
	}
	if len(log) > 32<<10+512 {
		t.Errorf("the log is %d bytes, past its cap of 32 KiB", len(log))
	}
	if t.Failed() {
		t.Logf("log:\n%s", log)
	}
}

// The log retention keeps the logs of each image's newest builds: an older
// build's log answers 410 log_pruned, and its record stays.
func TestLogRetentionPrunesOldLogs(t *testing.T) {
	e := buildEnv(t, func(c *server.Config) { c.BuildLogKeep = 2 })
	img := e.newImage(localImage("team/kept", "FROM "+e.base()+"\nRUN echo kept > /kept\n"))
	other := e.newImage(localImage("team/other", "FROM "+e.base()+"\nRUN echo other > /other\n"))
	if b := e.waitFor(other.ID, e.startBuild(other.ID), 2*time.Minute, ended); b.Status != "succeeded" {
		t.Fatalf("other build: %+v", b)
	}
	for n := 1; n <= 3; n++ {
		if b := e.waitFor(img.ID, e.startBuild(img.ID), 2*time.Minute, ended); b.Status != "succeeded" {
			t.Fatalf("build %d: %+v\n%s", n, b, e.buildLog(img.ID, n))
		}
	}
	// Pruning follows the settlement: poll for it.
	path := fmt.Sprintf("/api/v1/images/%s/builds/1/log", img.ID)
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		res, _ := e.c.JSON("GET", path, e.token("alice"), nil)
		if res.StatusCode == http.StatusGone || time.Now().After(deadline) {
			break
		}
	}
	eb := e.callErr("GET", path, "alice", nil, http.StatusGone, "log_pruned")
	if !strings.Contains(eb.Error.Message, "log retention") {
		t.Fatalf("message: %q", eb.Error.Message)
	}
	var rec struct {
		Status    string `json:"status"`
		LogPruned bool   `json:"log_pruned"`
	}
	if res := e.call("GET", fmt.Sprintf("/api/v1/images/%s/builds/1", img.ID), "alice", nil, &rec); res.StatusCode != 200 || rec.Status != "succeeded" || !rec.LogPruned {
		t.Fatalf("build 1's record: %d %+v", res.StatusCode, rec)
	}
	for _, n := range []int{2, 3} {
		if log := e.buildLog(img.ID, n); !strings.Contains(log, "echo kept") {
			t.Fatalf("build %d's log was not kept: %q", n, log)
		}
		if b := e.getBuild(img.ID, n); b.Status != "succeeded" {
			t.Fatalf("build %d: %+v", n, b)
		}
	}
	if log := e.buildLog(other.ID, 1); !strings.Contains(log, "echo other") {
		t.Fatalf("another image's only log was pruned: %q", log)
	}
}

// With the default settings a manual rebuild uses Kaniko's layer cache; a
// scheduled build of the same definition does not (it is meant to pick up
// what changed upstream behind unchanged lines).
func TestManualRebuildsCacheScheduledDoNot(t *testing.T) {
	if !server.DefaultConfig().BuildCache {
		t.Fatal("the layer cache is off by default")
	}
	e := buildEnv(t, nil)
	img := e.newImage(localImage("team/cachepolicy", "FROM "+e.base()+"\nRUN echo cached > /c\n"))
	for n := 1; n <= 2; n++ {
		if b := e.waitFor(img.ID, e.startBuild(img.ID), 2*time.Minute, ended); b.Status != "succeeded" {
			t.Fatalf("build %d: %+v\n%s", n, b, e.buildLog(img.ID, n))
		}
	}
	if log := e.buildLog(img.ID, 2); !strings.Contains(log, "Found cached layer") && !strings.Contains(log, "Using caching version") {
		t.Fatalf("the manual rebuild did not use the cache:\n%s", log)
	}
	// A scheduled build, queued as the schedule queues it; the reconciler
	// (every second here) starts it.
	rec, err := e.srv.Store.CreateBuild(context.Background(), build.New(img.ID, 1, "scheduler", build.TriggerSchedule, time.Now()))
	if err != nil {
		t.Fatal(err)
	}
	b := e.waitFor(img.ID, rec.Number, 2*time.Minute, ended)
	log := e.buildLog(img.ID, rec.Number)
	if b.Status != "succeeded" {
		t.Fatalf("scheduled build: %+v\n%s", b, log)
	}
	for _, cached := range []string{"cached layer", "caching version", "slipway-cache"} {
		if strings.Contains(log, cached) {
			t.Fatalf("the scheduled build used the cache (%q):\n%s", cached, log)
		}
	}
}

// The page's template for a new image (GET /api/v1/info) passes SAVE and
// builds for real from the shared base image in the server's own registry
// (what `serve --demo` publishes), with no image hub: its only FROM is on
// the server's registry, on loopback.
func TestNewImageTemplateBuildsOffline(t *testing.T) {
	e := buildEnv(t, nil)
	var info struct {
		Registry   string `json:"registry"`
		Dockerfile string `json:"new_image_dockerfile"`
	}
	if res := e.call("GET", "/api/v1/info", "alice", nil, &info); res.StatusCode != 200 || info.Dockerfile == "" {
		t.Fatalf("info: %d %+v", res.StatusCode, info)
	}
	var froms []string
	for _, l := range strings.Split(info.Dockerfile, "\n") {
		if strings.HasPrefix(l, "FROM ") {
			froms = append(froms, strings.TrimPrefix(l, "FROM "))
		}
	}
	if len(froms) != 1 || froms[0] != e.srv.RegistryHost()+"/library/busybox" {
		t.Fatalf("the template's FROM lines: %q", froms)
	}
	if !strings.Contains(info.Dockerfile, "#   FROM python:3.12-slim") {
		t.Fatalf("the template does not show how to use a hub's image:\n%s", info.Dockerfile)
	}
	img := e.newImage(localImage("team/fromtemplate", info.Dockerfile)) // SAVE: 201
	b := e.waitFor(img.ID, e.startBuild(img.ID), 2*time.Minute, ended)
	if b.Status != "succeeded" || b.Reference == nil {
		t.Fatalf("build: %+v\n%s", b, e.buildLog(img.ID, b.Number))
	}
	if got := files(t, e.pull("alice", *b.Reference))["/hello"]; got != "hello from Slipway\n" {
		t.Fatalf("/hello in the built image: %q", got)
	}
}

// A burst of build requests for different images, with one build slot,
// runs in the order of the builds' queued_at (stamped as each is queued).
func TestBurstRunsInQueuedAtOrder(t *testing.T) {
	e := buildEnv(t, func(c *server.Config) { c.BuildSlots = 1 })
	const n = 6
	ids := make([]string, n)
	for i := range n {
		ids[i] = e.newImage(localImage(fmt.Sprintf("team/burst%d", i), "FROM "+e.base()+"\nRUN true\n")).ID
	}
	var wg sync.WaitGroup
	for _, id := range ids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, _ := http.NewRequest("POST", e.baseURL+"/api/v1/images/"+id+"/builds", nil)
			req.Header.Set("Authorization", "Bearer "+e.token("alice"))
			res, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Error(err)
				return
			}
			res.Body.Close()
			if res.StatusCode != 202 {
				t.Errorf("build %s: %d", id, res.StatusCode)
			}
		}()
	}
	wg.Wait()
	bs := make([]buildJSON, n)
	for i, id := range ids {
		bs[i] = e.waitFor(id, 1, 3*time.Minute, ended)
		if bs[i].Status != "succeeded" || bs[i].StartedAt == nil {
			t.Fatalf("build of %s: %+v", id, bs[i])
		}
	}
	slices.SortFunc(bs, func(a, b buildJSON) int { return a.QueuedAt.Compare(b.QueuedAt) })
	for i := 1; i < n; i++ {
		if !bs[i].StartedAt.After(*bs[i-1].StartedAt) {
			t.Fatalf("queued at %s, started at %s; but queued at %s started at %s", bs[i].QueuedAt, bs[i].StartedAt, bs[i-1].QueuedAt, bs[i-1].StartedAt)
		}
	}
}
