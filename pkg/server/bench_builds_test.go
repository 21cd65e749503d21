package server_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/slipway-dev/slipway/pkg/build"
	"github.com/slipway-dev/slipway/pkg/dispatch"
	"github.com/slipway-dev/slipway/pkg/registry/token"
	"github.com/slipway-dev/slipway/pkg/runner/runc"
	"github.com/slipway-dev/slipway/pkg/server"
)

// The build benchmarks run real builds: run them with a fixed count, e.g.
// go test -run '^$' -bench Build -benchtime 10x ./pkg/server/

const benchDockerfile = "FROM %s\nRUN echo bench > /bench && ls /bin > /list\n"

// BenchmarkBuildThroughAPI: POST a build, poll until it ends. Reports the
// record's queue-to-start latency and the wall time seen by the client.
func BenchmarkBuildThroughAPI(b *testing.B) {
	e := benchBuildEnv(b, nil)
	img := e.newImage(localImage("bench/api", fmt.Sprintf(benchDockerfile, e.base())))
	var dispatch time.Duration
	b.ResetTimer()
	for i := range b.N {
		n := e.startBuild(img.ID)
		got := e.waitFor(img.ID, n, time.Minute, ended)
		if got.Status != "succeeded" {
			b.Fatalf("build %d: %+v", i, got)
		}
		dispatch += got.StartedAt.Sub(got.QueuedAt)
	}
	b.ReportMetric(float64(dispatch.Microseconds())/float64(b.N)/1000, "ms-queue-to-start")
}

// BenchmarkBuildDirect: the same Dockerfile, the same executor, run by the
// runc runner directly, without the API, the store or the queue.
func BenchmarkBuildDirect(b *testing.B) {
	e := benchBuildEnv(b, func(c *server.Config) { c.ReconcileInterval = 24 * time.Hour })
	dockerConfig := directCredential(b, e, "bench/direct")
	dir := b.TempDir()
	os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte(fmt.Sprintf(benchDockerfile, e.base())), 0o600)
	host := e.srv.RegistryHost()
	r := directRunner(b, e, dir)
	b.ResetTimer()
	for i := range b.N {
		o, err := r.Run(context.Background(), build.Spec{
			ID: fmt.Sprintf("direct-%d", i), ContextDir: dir, Dockerfile: "Dockerfile",
			Destinations: []string{host + "/bench/direct:latest"}, InsecureRegistries: []string{host},
			Limits: build.Limits{MemoryBytes: 2 << 30, CPUs: 1, Pids: 4096, Timeout: time.Minute}, DockerConfig: dockerConfig,
		}, io.Discard)
		if err != nil || o.ExitCode != 0 || o.Digest == "" {
			b.Fatalf("direct build: %+v %v", o, err)
		}
	}
}

// cacheDockerfile has a step worth caching: it writes 64 MiB.
const cacheDockerfile = "FROM %s\nRUN head -c 67108864 /dev/urandom > /blob && sha256sum /blob > /blob.sum\nRUN echo done > /done\n"

func benchRebuild(b *testing.B, cache bool) {
	e := benchBuildEnv(b, func(c *server.Config) { c.BuildCache = cache })
	img := e.newImage(localImage(fmt.Sprintf("bench/cache-%t", cache), fmt.Sprintf(cacheDockerfile, e.base())))
	first := e.waitFor(img.ID, e.startBuild(img.ID), 2*time.Minute, ended)
	if first.Status != "succeeded" {
		b.Fatalf("first build: %+v", first)
	}
	b.ResetTimer()
	for i := range b.N {
		got := e.waitFor(img.ID, e.startBuild(img.ID), 2*time.Minute, ended)
		if got.Status != "succeeded" {
			b.Fatalf("rebuild %d: %+v", i, got)
		}
	}
}

// BenchmarkRebuildCacheOff and BenchmarkRebuildCacheOn: a rebuild of an
// unchanged definition without and with Kaniko's layer cache.
func BenchmarkRebuildCacheOff(b *testing.B) { benchRebuild(b, false) }
func BenchmarkRebuildCacheOn(b *testing.B)  { benchRebuild(b, true) }

// directCredential is the docker config a build run by the runc runner
// directly (not by the dispatcher) needs to push to repo and pull the base
// from e's registry: the credential of a running build record made for it,
// which must stay active while it is used (so the env's reconciler, which
// would end it, must not run: ReconcileInterval 24h).
func directCredential(b *testing.B, e *env, repo string) []byte {
	img := e.newImage(localImage(repo, "FROM "+e.base()+"\n"))
	rec, err := e.srv.Store.CreateBuild(context.Background(), build.New(img.ID, 1, "alice", build.TriggerManual, time.Now()))
	if err != nil {
		b.Fatal(err)
	}
	// Running, so that the dispatcher does not take it from the queue.
	if _, err := e.srv.Store.UpdateBuild(context.Background(), rec.Image, rec.Number, func(b *build.Build) error { return b.Start(time.Now()) }); err != nil {
		b.Fatal(err)
	}
	cred, err := e.srv.RegistryTokens.BuildCredential(context.Background(), token.BuildClaims{
		Image: rec.Image, Number: rec.Number, Workspace: "ws1", Push: []string{repo}, Pull: []string{"library/busybox"},
	}, time.Hour)
	if err != nil {
		b.Fatal(err)
	}
	dockerConfig, _ := json.Marshal(map[string]any{"auths": map[string]any{e.srv.RegistryHost(): map[string]string{
		"auth": base64.StdEncoding.EncodeToString([]byte(dispatch.BuildUser + ":" + cred))}}})
	return dockerConfig
}

// directRunner is a runc runner, with its state under dir, that runs the
// executor as the server's does and reaches e's registry.
func directRunner(b *testing.B, e *env, dir string) *runc.Runner {
	_, port, _ := net.SplitHostPort(e.srv.RegistryHost())
	p, _ := strconv.Atoi(port)
	r, err := runc.New(runc.Options{Executor: e.cfg.Executor, StateDir: filepath.Join(dir, "bundles"), Root: filepath.Join(dir, "state"),
		Forwards: []runc.Forward{{Port: p, HostPort: p}}})
	if err != nil {
		b.Fatal(err)
	}
	return r
}

func benchBuildEnv(b *testing.B, configure func(*server.Config)) *env {
	cfg := serverConfig(b)
	cfg.Executor = requireBuilds(b)
	if configure != nil {
		configure(&cfg)
	}
	e := start(b, cfg)
	if _, err := pushBusybox(e); err != nil {
		b.Fatal(err)
	}
	e.announce("platform.workspace.created", "ws1", "alice")
	return e
}

// bigLayers are the two shapes of a large image's layer, generated inside
// the build (nothing large is kept in the repository).
var bigLayers = []struct{ name, run string }{
	{"random-1GiB", "head -c 1073741824 /dev/urandom > /big"},
	{"files-100k", "mkdir /many && cd /many && seq 100000 | while read i; do echo $i > $i; done"},
}

// executorTunings are the executor settings measured for big layers; nil
// is Slipway's DefaultTuning.
var executorTunings = []struct {
	name   string
	tuning []string
	memory int64 // the build's limit; 0: the default 2 GiB
}{
	{"kaniko-defaults", []string{}, 0},
	{"kaniko-defaults-8GiB", []string{}, 8 << 30},
	{"nocompcache-full", []string{"--compressed-caching=false", "--snapshot-mode=full"}, 0},
	{"nocompcache-redo", []string{"--compressed-caching=false", "--snapshot-mode=redo"}, 0},
	{"nocompcache-time", []string{"--compressed-caching=false", "--snapshot-mode=time"}, 0},
	{"nocompcache-newrun", []string{"--compressed-caching=false", "--use-new-run"}, 0},
	{"nocompcache-single", []string{"--compressed-caching=false", "--single-snapshot"}, 0},
	{"nocompcache-gzip1", []string{"--compressed-caching=false", "--compression-level=1"}, 0},
}

// BenchmarkExecutorTuning builds each big layer with each executor setting,
// by the runc runner directly, and reports the executor's peak resident
// set, the cgroup's peak (with page cache) and the time. Run it once:
// go test -run '^$' -bench ExecutorTuning -benchtime 1x ./pkg/server/
// (-count repeats each setting back to back; to interleave, run one setting
// per invocation in rounds:
//
//	go test -c -o /tmp/server.test ./pkg/server
//	for round in 1 2 3; do for s in nocompcache-full nocompcache-redo; do
//	  /tmp/server.test -test.run '^$' -test.bench "ExecutorTuning/random-1GiB/$s\$" -test.benchtime 1x
//	done; done
func BenchmarkExecutorTuning(b *testing.B) {
	// No reconciler while it runs: the build record below only stands for
	// the builds' credential, which needs an active build.
	e := benchBuildEnv(b, func(c *server.Config) { c.ReconcileInterval = 24 * time.Hour })
	host := e.srv.RegistryHost()
	dockerConfig := directCredential(b, e, "bench/tuning")
	state := b.TempDir()
	r := directRunner(b, e, state)
	n := 0
	for _, layer := range bigLayers {
		dir := b.TempDir()
		os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte(fmt.Sprintf("FROM %s\nRUN %s\n", e.base(), layer.run)), 0o600)
		for _, tu := range executorTunings {
			b.Run(layer.name+"/"+tu.name, func(b *testing.B) {
				limit := tu.memory
				if limit == 0 {
					limit = e.cfg.BuildMemory
				}
				var log bytes.Buffer
				for range b.N {
					n++
					start := time.Now()
					o, err := r.Run(context.Background(), build.Spec{
						ID: fmt.Sprintf("tuning-%d", n), ContextDir: dir, Dockerfile: "Dockerfile",
						Destinations: []string{host + "/bench/tuning:latest"}, InsecureRegistries: []string{host},
						Limits: build.Limits{MemoryBytes: limit, CPUs: e.cfg.BuildCPUs, Pids: e.cfg.BuildPids, Timeout: 15 * time.Minute},
						Tuning: tu.tuning, DockerConfig: dockerConfig,
					}, &log)
					if err != nil {
						b.Fatal(err)
					}
					ok := 1.0
					if o.ExitCode != 0 || o.Digest == "" {
						ok = 0
						tail := log.String()
						b.Logf("failed: %+v\n%s", o, tail[max(0, len(tail)-2000):])
					}
					log.Reset()
					b.ReportMetric(ok, "succeeded")
					b.ReportMetric(boolMetric(o.OOMKilled), "oom")
					b.ReportMetric(float64(o.Memory.MaxRSS>>20), "MiB-maxrss")
					b.ReportMetric(float64(o.Memory.CgroupPeak>>20), "MiB-cgroup-peak")
					b.ReportMetric(time.Since(start).Seconds(), "s-build")
				}
			})
		}
	}
}

func boolMetric(v bool) float64 {
	if v {
		return 1
	}
	return 0
}
