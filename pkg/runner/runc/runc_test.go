package runc_test

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log"
	"net"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/slipway-dev/slipway/pkg/build"
	"github.com/slipway-dev/slipway/pkg/registry/baseimage"
	"github.com/slipway-dev/slipway/pkg/runner/runc"
)

// repoRoot is the repository's root, relative to this package.
const repoRoot = "../../.."

var (
	buildExecutorOnce sync.Once
	executorErr       error
)

// executor returns the path of bin/executor, building it with
// mk/kaniko.mk when it is missing.
func executor(t testing.TB) string {
	t.Helper()
	p, err := filepath.Abs(filepath.Join(repoRoot, "bin", "executor"))
	if err != nil {
		t.Fatal(err)
	}
	buildExecutorOnce.Do(func() {
		if _, err := os.Stat(p); err == nil {
			return
		}
		t.Logf("%s is missing: building it (minutes the first time)", p)
		cmd := exec.Command("make", "-f", "mk/kaniko.mk", "bin/executor")
		cmd.Dir = repoRoot
		if out, err := cmd.CombinedOutput(); err != nil {
			executorErr = fmt.Errorf("%v\n%s", err, out)
		}
	})
	if executorErr != nil {
		t.Fatalf("cannot build the Kaniko executor; run `make bin/executor`: %v", executorErr)
	}
	return p
}

// testEnv is a runner and a registry holding a busybox base image.
type testEnv struct {
	runner   *runc.Runner
	opts     runc.Options // the runner's
	stateDir string       // the runner's StateDir
	host     string       // the registry's HOST:PORT
	base     string       // the base image's reference
}

func newEnv(t testing.TB) *testEnv {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("runc builds need root: run these tests as root")
	}
	if _, err := exec.LookPath("runc"); err != nil {
		t.Fatal("runc is not installed: run `apt-get install runc` (or `make deps`)")
	}
	if _, err := exec.LookPath("pasta"); err != nil {
		t.Fatal("pasta is not installed: run `apt-get install passt` (or `make deps`)")
	}
	srv := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	t.Cleanup(srv.Close)
	host := strings.TrimPrefix(srv.URL, "http://")
	port := srv.Listener.Addr().(*net.TCPAddr).Port
	stateDir := t.TempDir()
	opts := runc.Options{
		Executor: executor(t),
		StateDir: stateDir,
		Root:     t.TempDir(),
		// The registry, named by the same HOST:PORT as on the host.
		Forwards: []runc.Forward{{Port: port, HostPort: port}},
	}
	r, err := runc.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	base := host + "/busybox:latest"
	if _, err := baseimage.PushBusybox(t.Context(), base); err != nil {
		t.Fatal(err)
	}
	return &testEnv{runner: r, opts: opts, stateDir: stateDir, host: host, base: base}
}

// spec returns a build spec whose context holds files and a Dockerfile of
// the given lines after FROM the busybox image.
func (e *testEnv) spec(t testing.TB, files map[string]string, lines ...string) build.Spec {
	t.Helper()
	dir := t.TempDir()
	files["Dockerfile"] = "FROM " + e.base + "\n" + strings.Join(lines, "\n") + "\n"
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return build.Spec{
		ID:                 "img-" + strings.ToLower(t.Name()) + "-1",
		ContextDir:         dir,
		Dockerfile:         "Dockerfile",
		Destinations:       []string{e.host + "/built/" + strings.ToLower(t.Name()) + ":1"},
		InsecureRegistries: []string{e.host},
	}
}

// checkNoLeftovers fails the test when a build left a bundle or container.
func (e *testEnv) checkNoLeftovers(t *testing.T) {
	t.Helper()
	ids, err := e.runner.Leftovers()
	if err != nil {
		t.Fatal(err)
	}
	if len(ids) > 0 {
		t.Errorf("Leftovers() = %v, want none", ids)
	}
}

// syncBuffer is a log that tests read while a build writes it.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// waitFor waits until the log contains s.
func waitFor(t *testing.T, log *syncBuffer, s string, timeout time.Duration) {
	t.Helper()
	for deadline := time.Now().Add(timeout); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if strings.Contains(log.String(), s) {
			return
		}
	}
	t.Fatalf("log has no %q after %s:\n%s", s, timeout, log.String())
}

func TestBuildPushesImage(t *testing.T) {
	start := time.Now()
	e := newEnv(t)
	spec := e.spec(t, map[string]string{"greeting.txt": "hello from the context\n"},
		"RUN echo hi > /hello",
		"COPY greeting.txt /greeting.txt",
	)
	var log bytes.Buffer
	runStart := time.Now()
	out, err := e.runner.Run(t.Context(), spec, &log)
	runTime := time.Since(runStart)
	if err != nil {
		t.Fatalf("Run: %v\n%s", err, log.String())
	}
	if out.ExitCode != 0 || out.Digest == "" || out.OOMKilled || out.Cancelled || out.TimedOut {
		t.Fatalf("Run = %+v, want success with a digest\n%s", out, log.String())
	}

	ref, err := name.ParseReference(spec.Destinations[0])
	if err != nil {
		t.Fatal(err)
	}
	img, err := remote.Image(ref, remote.WithContext(t.Context()))
	if err != nil {
		t.Fatal(err)
	}
	digest, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	if digest.String() != out.Digest {
		t.Errorf("pushed image's digest is %s, Outcome.Digest %s", digest, out.Digest)
	}
	files := imageFiles(t, mutate.Extract(img))
	for name, want := range map[string]string{
		"hello":        "hi\n",
		"greeting.txt": "hello from the context\n",
		"bin/busybox":  "", // from the base image; content not compared
	} {
		got, ok := files[name]
		switch {
		case !ok:
			t.Errorf("image has no /%s", name)
		case want != "" && got != want:
			t.Errorf("/%s = %q, want %q", name, got, want)
		}
	}
	for name := range files {
		if strings.HasPrefix(name, "kaniko/") || strings.HasPrefix(name, "workspace/") {
			t.Errorf("image has the runner's file /%s", name)
		}
	}
	e.checkNoLeftovers(t)
	t.Logf("Run took %s; the whole test %s", runTime.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
}

// imageFiles returns the regular files of a flattened image by path.
func imageFiles(t *testing.T, rc io.ReadCloser) map[string]string {
	t.Helper()
	defer rc.Close()
	files := map[string]string{}
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return files
		}
		if err != nil {
			t.Fatal(err)
		}
		if h.Typeflag == tar.TypeReg {
			b, err := io.ReadAll(tr)
			if err != nil {
				t.Fatal(err)
			}
			files[strings.TrimPrefix(h.Name, "/")] = string(b)
		}
	}
}

func TestFailingRun(t *testing.T) {
	e := newEnv(t)
	spec := e.spec(t, map[string]string{}, "RUN exit 3")
	var log bytes.Buffer
	out, err := e.runner.Run(t.Context(), spec, &log)
	if err != nil {
		t.Fatalf("Run: %v\n%s", err, log.String())
	}
	if out.ExitCode == 0 || out.Digest != "" || out.OOMKilled || out.Cancelled || out.TimedOut {
		t.Errorf("Run = %+v, want a plain failure", out)
	}
	if !strings.Contains(log.String(), "exit 3") {
		t.Errorf("log does not name the failing command:\n%s", log.String())
	}
	e.checkNoLeftovers(t)
}

// result is what Run returned.
type result struct {
	out build.Outcome
	err error
}

// runAsync runs spec in the background; its result comes on the channel.
func (e *testEnv) runAsync(ctx context.Context, spec build.Spec, log io.Writer) <-chan result {
	done := make(chan result, 1)
	go func() {
		out, err := e.runner.Run(ctx, spec, log)
		done <- result{out, err}
	}()
	return done
}

func TestCancel(t *testing.T) {
	e := newEnv(t)
	spec := e.spec(t, map[string]string{}, "RUN sleep 60")
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	var log syncBuffer
	done := e.runAsync(ctx, spec, &log)
	waitFor(t, &log, "RUN sleep 60", 30*time.Second)
	time.Sleep(300 * time.Millisecond) // let sleep start
	cancel()
	start := time.Now()
	select {
	case res := <-done:
		if res.err != nil {
			t.Fatalf("Run: %v\n%s", res.err, log.String())
		}
		if !res.out.Cancelled || res.out.TimedOut || res.out.Digest != "" {
			t.Errorf("Run = %+v, want Cancelled", res.out)
		}
		t.Logf("stopped %s after cancel", time.Since(start).Round(time.Millisecond))
	case <-time.After(5 * time.Second):
		t.Fatalf("Run has not returned 5s after cancel\n%s", log.String())
	}
	e.checkNoLeftovers(t)
}

func TestTimeout(t *testing.T) {
	e := newEnv(t)
	spec := e.spec(t, map[string]string{}, "RUN sleep 60")
	spec.Limits.Timeout = 2 * time.Second
	var log bytes.Buffer
	start := time.Now()
	out, err := e.runner.Run(t.Context(), spec, &log)
	if err != nil {
		t.Fatalf("Run: %v\n%s", err, log.String())
	}
	if !out.TimedOut || out.Cancelled || out.Digest != "" {
		t.Errorf("Run = %+v, want TimedOut", out)
	}
	if d := time.Since(start); d > 7*time.Second {
		t.Errorf("Run took %s with a 2s timeout", d)
	}
	if !strings.Contains(log.String(), "RUN sleep 60") {
		t.Errorf("the build did not reach its RUN before the timeout:\n%s", log.String())
	}
	e.checkNoLeftovers(t)
}

func TestOOMKilled(t *testing.T) {
	e := newEnv(t)
	// tail holds its input's last line, here all of it, in memory.
	spec := e.spec(t, map[string]string{}, "RUN head -c 300m /dev/zero | tail -n 1 >/dev/null")
	spec.Limits.MemoryBytes = 64 << 20
	var log bytes.Buffer
	out, err := e.runner.Run(t.Context(), spec, &log)
	if err != nil {
		t.Fatalf("Run: %v\n%s", err, log.String())
	}
	if !out.OOMKilled || out.ExitCode == 0 {
		t.Errorf("Run = %+v, want OOMKilled and a failure\n%s", out, log.String())
	}
	e.checkNoLeftovers(t)
}

func TestLimitsApplied(t *testing.T) {
	e := newEnv(t)
	spec := e.spec(t, map[string]string{}, "RUN sleep 2 && echo slept")
	spec.Limits = build.Limits{MemoryBytes: 256 << 20, CPUs: 0.5, Pids: 200, Timeout: time.Minute}
	var log syncBuffer
	done := e.runAsync(t.Context(), spec, &log)
	waitFor(t, &log, "Running: [/bin/sh -c sleep 2", 30*time.Second)

	pid, err := os.ReadFile(filepath.Join(e.stateDir, spec.ID, "pid"))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ controller, v1File, v2File, want string }{
		{"memory", "memory.limit_in_bytes", "memory.max", "268435456"},
		{"cpu", "cpu.cfs_quota_us", "cpu.max", "50000"},
		{"pids", "pids.max", "pids.max", "200"},
	} {
		got := readCgroupFile(t, string(pid), c.controller, c.v1File, c.v2File)
		if f := strings.Fields(got); len(f) == 0 || f[0] != c.want {
			t.Errorf("%s limit = %q, want %s", c.controller, got, c.want)
		}
	}

	res := <-done
	if res.err != nil || res.out.ExitCode != 0 || res.out.OOMKilled || res.out.Digest == "" {
		t.Errorf("Run = %+v, %v; want success\n%s", res.out, res.err, log.String())
	}
	if !strings.Contains(log.String(), "slept") {
		t.Errorf("log has no RUN output:\n%s", log.String())
	}
}

// readCgroupFile reads a file of process pid's cgroup: v1File in the
// controller's v1 hierarchy, or else v2File in the cgroup v2 one, both
// mounted where systemd mounts them.
func readCgroupFile(t *testing.T, pid, controller, v1File, v2File string) string {
	t.Helper()
	cg, err := os.ReadFile("/proc/" + pid + "/cgroup")
	if err != nil {
		t.Fatal(err)
	}
	file := ""
	for line := range strings.Lines(string(cg)) {
		f := strings.SplitN(strings.TrimSpace(line), ":", 3)
		switch {
		case len(f) != 3:
		case slices.Contains(strings.Split(f[1], ","), controller):
			file = filepath.Join("/sys/fs/cgroup", controller, f[2], v1File)
		case f[0] == "0" && file == "":
			file = filepath.Join("/sys/fs/cgroup", f[2], v2File)
		}
	}
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

func TestDockerConfigNotLogged(t *testing.T) {
	e := newEnv(t)
	secretBytes := make([]byte, 16)
	rand.Read(secretBytes)
	secret := "s3cr3t-" + hex.EncodeToString(secretBytes)
	auth := base64.StdEncoding.EncodeToString([]byte("slipway:" + secret))
	// The build prints the config itself: the runner must redact it.
	spec := e.spec(t, map[string]string{}, "RUN cat /kaniko/.docker/config.json; echo")
	spec.DockerConfig = fmt.Appendf(nil, `{"auths":{%q:{"auth":%q}}}`, e.host, auth)
	var log bytes.Buffer
	out, err := e.runner.Run(t.Context(), spec, &log)
	if err != nil {
		t.Fatalf("Run: %v\n%s", err, log.String())
	}
	if out.ExitCode != 0 {
		t.Fatalf("Run = %+v, want success\n%s", out, log.String())
	}
	for _, s := range []string{secret, auth} {
		if strings.Contains(log.String(), s) {
			t.Errorf("log contains the credential %q:\n%s", s, log.String())
		}
	}
	if !strings.Contains(log.String(), `"auth":"[redacted]"`) {
		t.Errorf("log does not show the redacted config:\n%s", log.String())
	}
	e.checkNoLeftovers(t)
}

func TestLeftoversAndCleanup(t *testing.T) {
	e := newEnv(t)
	spec := e.spec(t, map[string]string{}, "RUN sleep 60")
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	var log syncBuffer
	done := e.runAsync(ctx, spec, &log)
	waitFor(t, &log, "RUN sleep 60", 30*time.Second)

	ids, err := e.runner.Leftovers()
	if err != nil {
		t.Fatal(err)
	}
	if len(ids) != 1 || ids[0] != spec.ID {
		t.Fatalf("Leftovers() = %v while %s runs", ids, spec.ID)
	}
	if _, err := e.runner.Run(ctx, spec, io.Discard); !errors.Is(err, fs.ErrExist) {
		t.Errorf("second Run of a running build: err = %v, want one wrapping fs.ErrExist", err)
	}
	// A reconciler cleaning up a build this process still runs: the build
	// ends, and its own cleanup finds nothing left to do.
	if err := e.runner.Cleanup(spec.ID); err != nil {
		t.Fatal(err)
	}
	select {
	case res := <-done:
		if res.err != nil || res.out.ExitCode == 0 || res.out.Cancelled {
			t.Errorf("Run after Cleanup = %+v, %v; want the killed executor's status", res.out, res.err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run has not returned 5s after Cleanup")
	}
	e.checkNoLeftovers(t)
}
