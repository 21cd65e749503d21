package runc_test

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/slipway-dev/slipway/pkg/build"
	"github.com/slipway-dev/slipway/pkg/runner/runc"
)

// multiStage is the multi-stage Dockerfile of pkg/server's
// TestBuildMultiStage, after its first FROM (the busybox base).
var multiStage = []string{
	"ARG GREETING=hello",
	`RUN mkdir -p /out && echo "$GREETING from the builder" > /out/greeting && echo built > /out/marker`,
	"FROM %s",
	"ENV APP_HOME=/srv/app MODE=test",
	"WORKDIR /srv/app",
	"COPY --from=0 /out/greeting ./greeting.txt",
	`RUN echo "$MODE" > mode && chown -R 65534 /srv/app`,
	"USER 65534",
	`LABEL org.example.team="images" org.example.tier=gold`,
	`CMD ["cat", "/srv/app/greeting.txt"]`,
}

// BenchmarkNetworkNamespace measures what a build's own network costs:
// the multi-stage test Dockerfile built in the host's network namespace, as
// builds ran before, and in a namespace of its own with pasta. Each
// iteration is a pair of builds, one in each mode, the first mode taking
// turns; it reports the median build time of each mode and the median of
// the pairs' ratios (own/host), so that a machine whose load drifts
// affects both sides of a pair alike:
//
//	go test -run '^$' -bench NetworkNamespace -benchtime 20x ./pkg/runner/runc/
func BenchmarkNetworkNamespace(b *testing.B) {
	e := newEnv(b)
	hostNet, err := runc.New(e.opts)
	if err != nil {
		b.Fatal(err)
	}
	runc.UseHostNetwork(hostNet)
	lines := append([]string(nil), multiStage...)
	lines[2] = fmt.Sprintf(lines[2], e.base)
	spec := e.spec(b, map[string]string{}, lines...)
	spec.Limits = build.Limits{MemoryBytes: 2 << 30, CPUs: 1, Pids: 4096, Timeout: time.Minute}
	modes := []struct {
		name   string
		runner *runc.Runner
	}{{"host", hostNet}, {"own", e.runner}}
	timed := func(i, m int) time.Duration {
		s := spec
		s.ID = fmt.Sprintf("bench-%s-%d", modes[m].name, i)
		var log strings.Builder
		start := time.Now()
		out, err := modes[m].runner.Run(b.Context(), s, &log)
		d := time.Since(start)
		if err != nil || out.ExitCode != 0 || out.Digest == "" {
			b.Fatalf("%s build: %+v %v\n%s", modes[m].name, out, err, log.String())
		}
		return d
	}
	var host, own, ratio []float64
	for i := range b.N {
		var d [2]time.Duration
		first := i % 2
		d[first] = timed(i, first)
		d[1-first] = timed(i, 1-first)
		host, own = append(host, d[0].Seconds()*1000), append(own, d[1].Seconds()*1000)
		ratio = append(ratio, d[1].Seconds()/d[0].Seconds())
	}
	b.ReportMetric(median(host), "host-ms")
	b.ReportMetric(median(own), "own-ms")
	b.ReportMetric(median(ratio), "own/host")
}

// median returns the median of xs, which it sorts.
func median(xs []float64) float64 {
	slices.Sort(xs)
	n := len(xs)
	if n%2 == 1 {
		return xs[n/2]
	}
	return (xs[n/2-1] + xs[n/2]) / 2
}
