package runc_test

import (
	"fmt"
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
// builds ran before, and in a namespace of its own with pasta. -count runs
// the two modes interleaved, one after the other:
//
//	go test -run '^$' -bench NetworkNamespace -benchtime 5x -count 10 ./pkg/runner/runc/
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
	for _, mode := range []struct {
		name   string
		runner *runc.Runner
	}{{"host", hostNet}, {"own", e.runner}} {
		b.Run(mode.name, func(b *testing.B) {
			for i := range b.N {
				s := spec
				s.ID = fmt.Sprintf("bench-%s-%d", mode.name, i)
				var log strings.Builder
				out, err := mode.runner.Run(b.Context(), s, &log)
				if err != nil || out.ExitCode != 0 || out.Digest == "" {
					b.Fatalf("build: %+v %v\n%s", out, err, log.String())
				}
			}
		})
	}
}
