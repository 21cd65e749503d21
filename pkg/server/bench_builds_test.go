package server_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/slipway-dev/slipway/pkg/build"
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
	e := benchBuildEnv(b, nil)
	dir := b.TempDir()
	os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte(fmt.Sprintf(benchDockerfile, e.base())), 0o600)
	host := e.srv.RegistryHost()
	_, port, _ := net.SplitHostPort(host)
	p, _ := strconv.Atoi(port)
	r, err := runc.New(runc.Options{Executor: e.cfg.Executor, StateDir: filepath.Join(dir, "bundles"), Root: filepath.Join(dir, "state"),
		Forwards: []runc.Forward{{Port: p, HostPort: p}}})
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := range b.N {
		o, err := r.Run(context.Background(), build.Spec{
			ID: fmt.Sprintf("direct-%d", i), ContextDir: dir, Dockerfile: "Dockerfile",
			Destinations: []string{host + "/bench/direct:latest"}, InsecureRegistries: []string{host},
			Limits: build.Limits{MemoryBytes: 2 << 30, CPUs: 1, Pids: 4096, Timeout: time.Minute},
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
