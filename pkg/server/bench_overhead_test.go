package server_test

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/slipway-dev/slipway/pkg/build"
	"github.com/slipway-dev/slipway/pkg/gitctx/gittest"
	"github.com/slipway-dev/slipway/pkg/server"
)

// BenchmarkBuildOverhead measures what a build costs outside the executor,
// for a local context and for a git one (a small repository served by git
// daemon on loopback). Each iteration is an interleaved pair: the runc
// runner runs the executor on the same Dockerfile and files directly
// (the baseline), and the same build goes through the API, from POST to
// the ending its record states (finished_at). It reports medians over the
// pairs: the direct run, the API build, their difference and their ratio;
// the API build's time outside its own executor run (the fixed cost, free
// of the executor's run-to-run noise); and where the API build's time went
// (the dispatcher's phases, read from /metrics). The layer cache is off: it is work of the executor,
// which the baseline would not do. Run:
//
//	go test -run '^$' -bench BuildOverhead -benchtime 11x ./pkg/server/
func BenchmarkBuildOverhead(b *testing.B) {
	e := benchBuildEnv(b, func(c *server.Config) { c.BuildCache = false; c.ReconcileInterval = 24 * time.Hour })
	dockerConfig := directCredential(b, e, "bench/direct")
	dockerfile := fmt.Sprintf(benchDockerfile, e.base())
	files := map[string]string{"Dockerfile": dockerfile, "app/main.py": "print('hello')\n", "README.md": "# bench\n"}
	root := b.TempDir()
	repo := gittest.NewRepo(b, filepath.Join(root, "ctx.git"))
	repo.Commit(files, "the context")
	gitURL := strings.TrimSuffix(gittest.ServeGit(b, root), "/") + "/ctx.git"

	host := e.srv.RegistryHost()
	state := b.TempDir()
	r := directRunner(b, e, state)
	for _, kind := range []string{"local", "git"} {
		var img image
		dir := b.TempDir()
		switch kind {
		case "local":
			img = e.newImage(localImage("bench/overhead-local", dockerfile))
			os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte(dockerfile), 0o600)
		case "git":
			img = e.newImage(map[string]any{"name": "bench/overhead-git", "context": map[string]any{"type": "git", "git": map[string]any{"url": gitURL}}})
			for name, content := range files {
				os.MkdirAll(filepath.Dir(filepath.Join(dir, name)), 0o700)
				os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600)
			}
		}
		b.Run(kind, func(b *testing.B) {
			direct := func(i int) time.Duration {
				start := time.Now()
				var log strings.Builder
				o, err := r.Run(context.Background(), build.Spec{
					ID: fmt.Sprintf("overhead-%s-%d", kind, i), ContextDir: dir, Dockerfile: "Dockerfile",
					Destinations: []string{host + "/bench/direct:latest"}, InsecureRegistries: []string{host},
					Limits:       build.Limits{MemoryBytes: e.cfg.BuildMemory, CPUs: e.cfg.BuildCPUs, Pids: e.cfg.BuildPids, Timeout: time.Minute},
					DockerConfig: dockerConfig,
				}, &log)
				if err != nil || o.ExitCode != 0 || o.Digest == "" {
					b.Fatalf("direct build: %+v %v\n%s", o, err, log.String())
				}
				return time.Since(start)
			}
			api := func() (time.Duration, map[string]float64) {
				before := phaseSums(b, e)
				start := time.Now()
				n := e.startBuild(img.ID)
				var got buildJSON
				// Polled slowly, not to compete with the build for the
				// CPU: the build's end is its record's finished_at.
				for got = e.getBuild(img.ID, n); !ended(got); got = e.getBuild(img.ID, n) {
					time.Sleep(20 * time.Millisecond)
				}
				if got.Status != "succeeded" || got.FinishedAt == nil {
					b.Fatalf("build: %+v\n%s", got, e.buildLog(img.ID, n))
				}
				d := got.FinishedAt.Sub(start)
				after := phaseSums(b, e)
				for k := range after {
					after[k] -= before[k]
				}
				return d, after
			}
			var directs, apis, diffs, outside []float64
			phases := map[string][]float64{}
			b.ResetTimer()
			for i := range b.N {
				var dd, ad time.Duration
				var ph map[string]float64
				if i%2 == 0 {
					dd = direct(i)
					ad, ph = api()
				} else {
					ad, ph = api()
					dd = direct(i)
				}
				directs, apis = append(directs, ms(dd)), append(apis, ms(ad))
				diffs = append(diffs, ms(ad-dd))
				outside = append(outside, ms(ad)-ph["executor"]*1000)
				for k, v := range ph {
					phases[k] = append(phases[k], v*1000)
				}
			}
			b.ReportMetric(median(directs), "ms-direct")
			b.ReportMetric(median(apis), "ms-api")
			b.ReportMetric(median(diffs), "ms-overhead")
			b.ReportMetric(median(outside), "ms-outside-executor")
			b.ReportMetric(median(apis)/median(directs), "ratio")
			for k, v := range phases {
				b.ReportMetric(median(v), "ms-"+k)
			}
		})
	}
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Sorted(slices.Values(v))
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// phaseSums reads the sums of slipway_build_phase_seconds by phase.
func phaseSums(b *testing.B, e *env) map[string]float64 {
	res, err := http.Get(e.baseURL + "/metrics")
	if err != nil {
		b.Fatal(err)
	}
	defer res.Body.Close()
	sums := map[string]float64{}
	sc := bufio.NewScanner(res.Body)
	for sc.Scan() {
		rest, ok := strings.CutPrefix(sc.Text(), `slipway_build_phase_seconds_sum{phase="`)
		if !ok {
			continue
		}
		phase, value, _ := strings.Cut(rest, `"} `)
		sums[phase], _ = strconv.ParseFloat(value, 64)
	}
	return sums
}
