package server_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/slipway-dev/slipway/pkg/build"
)

// reproduciblePairs is how many pairs BenchmarkReproducible times per
// Dockerfile.
const reproduciblePairs = 7

// BenchmarkReproducible measures what Kaniko's --reproducible costs: for
// each Dockerfile, reproduciblePairs interleaved pairs of the same build without and with
// it (the order within a pair alternates), run by the runc runner against
// the embedded registry. It reports the median of the pairs' time ratios
// (with / without) and whether two reproducible builds gave one digest.
// Run it with a fixed count:
//
//	go test -run '^$' -bench Reproducible -benchtime 1x ./pkg/server/
//
// (or one Dockerfile: -bench Reproducible/64mib-copy).
func BenchmarkReproducible(b *testing.B) {
	e := benchBuildEnv(b, nil)
	host := e.srv.RegistryHost()
	work := b.TempDir()
	r := directRunner(b, e, work)
	// The builds push to library/ as an event publisher may.
	auth := base64.StdEncoding.EncodeToString([]byte("platform:" + e.token("platform")))
	dockerConfig := []byte(`{"auths":{"` + host + `":{"auth":"` + auth + `"}}}`)
	// 64 MiB of seeded pseudo-random bytes: incompressible and the same
	// every time, unlike /dev/urandom.
	blob := make([]byte, 64<<20)
	rng := rand.NewChaCha8([32]byte{1})
	rng.Read(blob)
	cases := []struct{ name, dockerfile string }{
		{"small", benchDockerfile},                     // the build benchmarks' Dockerfile
		{"test", "FROM %s\nRUN echo hello > /hello\n"}, // the build tests' Dockerfile
		{"64mib-run", "FROM %s\nRUN yes slipway | head -c 67108864 > /blob\n"},
		{"64mib-copy", "FROM %s\nCOPY blob /blob\n"},
	}
	n := 0
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			dir := filepath.Join(work, c.name)
			os.MkdirAll(dir, 0o700)
			os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte(fmt.Sprintf(c.dockerfile, e.base())), 0o600)
			if c.name == "64mib-copy" {
				os.WriteFile(filepath.Join(dir, "blob"), blob, 0o600)
			}
			run := func(reproducible bool) (time.Duration, string) {
				n++
				var log bytes.Buffer
				t0 := time.Now()
				o, err := r.Run(context.Background(), build.Spec{
					ID: fmt.Sprintf("repro-%d", n), ContextDir: dir, Dockerfile: "Dockerfile", Reproducible: reproducible,
					Destinations: []string{host + "/library/repro-" + c.name + ":latest"}, InsecureRegistries: []string{host},
					DockerConfig: dockerConfig,
					Limits:       build.Limits{MemoryBytes: 2 << 30, CPUs: 1, Pids: 4096, Timeout: 3 * time.Minute},
				}, &log)
				if err != nil || o.ExitCode != 0 || o.Digest == "" {
					b.Fatalf("%s build (reproducible %t) after %v: %+v %v\n%s", c.name, reproducible, time.Since(t0), o, err, log.String())
				}
				return time.Since(t0), o.Digest
			}
			run(false) // warm the base image's blobs and the page cache
			var ratios []float64
			var on, off []time.Duration
			digests := map[string]bool{}
			for i := range reproduciblePairs {
				var with, without time.Duration
				var d string
				if i%2 == 0 {
					without, _ = run(false)
					with, d = run(true)
				} else {
					with, d = run(true)
					without, _ = run(false)
				}
				digests[d] = true
				on, off = append(on, with), append(off, without)
				ratios = append(ratios, with.Seconds()/without.Seconds())
			}
			slices.Sort(ratios)
			slices.Sort(on)
			slices.Sort(off)
			b.Logf("%s: median with %v, without %v, ratio %.3f (min %.3f, max %.3f); reproducible digests: %d distinct",
				c.name, on[len(on)/2], off[len(off)/2], ratios[len(ratios)/2], ratios[0], ratios[len(ratios)-1], len(digests))
			b.ReportMetric(ratios[len(ratios)/2], "ratio")
			b.ReportMetric(float64(len(digests)), "digests")
		})
	}
}
