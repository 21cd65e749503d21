package runc_test

import (
	"archive/tar"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/slipway-dev/slipway/pkg/build"
	"github.com/slipway-dev/slipway/pkg/runner/runc"
)

// buildAndPull runs spec, expects it to succeed and returns the final file
// system of the image it pushed: tar headers and regular files' contents.
func (e *testEnv) buildAndPull(t *testing.T, spec build.Spec) (map[string]*tar.Header, map[string]string) {
	t.Helper()
	var log bytes.Buffer
	out, err := e.runner.Run(t.Context(), spec, &log)
	if err != nil {
		t.Fatalf("Run: %v\n%s", err, log.String())
	}
	if out.ExitCode != 0 || out.Digest == "" {
		t.Fatalf("Run = %+v, want success\n%s", out, log.String())
	}
	ref, err := name.ParseReference(spec.Destinations[0])
	if err != nil {
		t.Fatal(err)
	}
	img, err := remote.Image(ref, remote.WithContext(t.Context()))
	if err != nil {
		t.Fatal(err)
	}
	e.checkNoLeftovers(t)
	return imageTree(t, img)
}

// imageTree reads a flattened image: every entry's header by path, and
// the contents of its regular files.
func imageTree(t *testing.T, img v1.Image) (map[string]*tar.Header, map[string]string) {
	t.Helper()
	rc := mutate.Extract(img)
	defer rc.Close()
	headers, files := map[string]*tar.Header{}, map[string]string{}
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return headers, files
		}
		if err != nil {
			t.Fatal(err)
		}
		p := strings.TrimSuffix(strings.TrimPrefix(h.Name, "/"), "/")
		headers[p] = h
		if h.Typeflag == tar.TypeReg {
			b, err := io.ReadAll(tr)
			if err != nil {
				t.Fatal(err)
			}
			files[p] = string(b)
		}
	}
}

// hostService is a service on the host's loopback that no build may reach.
func hostService(t *testing.T) (port string) {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, "reached the host service")
	}))
	t.Cleanup(srv.Close)
	_, port, err := net.SplitHostPort(strings.TrimPrefix(srv.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	return port
}

// A RUN step has its own network: it cannot reach a service on the host's
// loopback, while the build still pulls its base from and pushes to the
// registry on the host's loopback, and it has a default route out and a
// resolver configuration. (busybox's wget -T crashes: timeout(1) bounds
// the probes.)
func TestBuildNetworkIsolation(t *testing.T) {
	e := newEnv(t)
	port := hostService(t)
	spec := e.spec(t, map[string]string{},
		"RUN mkdir /probe; timeout 10 wget -q -O - http://127.0.0.1:"+port+"/ >/probe/host 2>&1; echo \"exit $?\" >>/probe/host",
		"RUN timeout 10 wget -q -O - http://localhost:"+port+"/ >/probe/localhost 2>&1; echo \"exit $?\" >>/probe/localhost",
		"RUN ip route >/probe/route; ip addr >/probe/addr; cat /etc/resolv.conf >/probe/resolv.conf",
	)
	_, files := e.buildAndPull(t, spec)
	for _, f := range []string{"probe/host", "probe/localhost"} {
		got := files[f]
		if strings.Contains(got, "reached the host service") || strings.Contains(got, "exit 0") || !strings.Contains(got, "refused") {
			t.Errorf("a RUN step connecting to host loopback port %s got %q, want connection refused", port, got)
		}
	}
	if !strings.Contains(files["probe/route"], "default via") {
		t.Errorf("the build has no default route out:\n%s", files["probe/route"])
	}
	if !strings.Contains(files["probe/resolv.conf"], "nameserver") {
		t.Errorf("the build has no resolver configuration:\n%s", files["probe/resolv.conf"])
	}
	t.Logf("a build's network:\n%s%s", files["probe/addr"], files["probe/route"])
}

// A RUN step runs under the default seccomp profile with NoNewPrivileges:
// creating a user namespace (which needs no capability) is refused, and a
// setuid-root binary does not raise a USER's privileges (busybox's own
// applets drop them anyway: the probe is a small static Go program).
func TestBuildSeccompAndNoNewPrivileges(t *testing.T) {
	e := newEnv(t)
	spec := e.spec(t, map[string]string{},
		"RUN mkdir -m 777 /probe && grep -E '^(NoNewPrivs|Seccomp):' /proc/self/status >/probe/status",
		"RUN unshare -U true >/probe/unshare 2>&1; echo \"exit $?\" >>/probe/unshare",
		"COPY euid /euid",
		"RUN chmod 4755 /euid",
		"USER 65534",
		"RUN /euid >/probe/suid-euid",
	)
	buildEUID(t, filepath.Join(spec.ContextDir, "euid"))
	_, files := e.buildAndPull(t, spec)
	status := strings.Join(strings.Fields(files["probe/status"]), " ")
	if !strings.Contains(status, "NoNewPrivs: 1") || !strings.Contains(status, "Seccomp: 2") {
		t.Errorf("a RUN step's /proc/self/status says %q, want NoNewPrivs: 1 and Seccomp: 2", status)
	}
	if got := files["probe/unshare"]; strings.Contains(got, "exit 0") || !strings.Contains(got, "not permitted") {
		t.Errorf("unshare -U in a RUN step: %q, want it refused", got)
	}
	if got := strings.TrimSpace(files["probe/suid-euid"]); got != "65534" {
		t.Errorf("a setuid-root binary run by USER 65534 has effective uid %q, want 65534", got)
	}
}

// buildEUID builds a static program that prints its effective uid to path.
func buildEUID(t *testing.T, path string) {
	t.Helper()
	dir := t.TempDir()
	src := "package main\n\nimport (\n\t\"fmt\"\n\t\"os\"\n)\n\nfunc main() { fmt.Println(os.Geteuid()) }\n"
	if err := os.WriteFile(filepath.Join(dir, "main.go"), []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "go.mod"), []byte("module euid\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("go", "build", "-o", path, ".")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
}

// What Kaniko needs of its container still works under the profile:
// chown, setuid and setgid bits and device nodes, and a multi-stage COPY
// --from that carries ownership and modes over. (Kaniko cannot carry a
// device node across stages, with or without the profile: "copying
// ownership: chown /kaniko/0/...: no such file or directory".)
func TestBuildFileOwnershipAndModes(t *testing.T) {
	e := newEnv(t)
	spec := e.spec(t, map[string]string{},
		"RUN mkdir /out && echo x >/out/f && chown 123:456 /out/f && chmod 6755 /out/f",
		"FROM "+e.base,
		"COPY --from=0 /out /copied",
		"RUN touch /own && chown 321:654 /own && chmod u+s,g+s /own && mknod /null c 1 3",
	)
	headers, _ := e.buildAndPull(t, spec)
	for _, c := range []struct {
		path     string
		uid, gid int
		mode     int64
		modeMask int64
		typ      byte
	}{
		{"own", 321, 654, 0o6644, 0o7777, tar.TypeReg},
		// Kaniko drops the setuid and setgid bits of what COPY --from
		// copies, profile or not (Docker keeps them).
		{"copied/f", 123, 456, 0o755, 0o777, tar.TypeReg},
		{"null", 0, 0, -1, 0, tar.TypeChar},
	} {
		h, ok := headers[c.path]
		switch {
		case !ok:
			t.Errorf("image has no /%s", c.path)
		case h.Typeflag != c.typ:
			t.Errorf("/%s has type %q, want %q", c.path, h.Typeflag, c.typ)
		case h.Uid != c.uid || h.Gid != c.gid:
			t.Errorf("/%s is owned by %d:%d, want %d:%d", c.path, h.Uid, h.Gid, c.uid, c.gid)
		case c.mode >= 0 && h.Mode&c.modeMask != c.mode:
			t.Errorf("/%s has mode %o, want %o", c.path, h.Mode&c.modeMask, c.mode)
		case c.typ == tar.TypeChar && (h.Devmajor != 1 || h.Devminor != 3):
			t.Errorf("/%s is device %d,%d, want 1,3", c.path, h.Devmajor, h.Devminor)
		}
	}
}

// Without pasta the runner does not start, and says how to install it.
func TestNewWithoutPasta(t *testing.T) {
	dir := t.TempDir()
	fakeRunc := filepath.Join(dir, "runc")
	if err := os.WriteFile(fakeRunc, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	opts := runc.Options{Runc: fakeRunc, Executor: fakeRunc, StateDir: t.TempDir(), Root: t.TempDir()}
	t.Setenv("PATH", dir) // no pasta there
	for _, pasta := range []string{"", filepath.Join(dir, "pasta")} {
		opts.Pasta = pasta
		_, err := runc.New(opts)
		if err == nil || !strings.Contains(err.Error(), "apt-get install passt") {
			t.Errorf("New with Pasta %q and no pasta installed: err = %v, want one naming `apt-get install passt`", pasta, err)
		}
	}
}

// When pasta fails, the build fails naming it, and leaves nothing behind:
// no container, no bundle, no network namespace.
func TestPastaFailure(t *testing.T) {
	e := newEnv(t)
	fake := filepath.Join(t.TempDir(), "pasta")
	if err := os.WriteFile(fake, []byte("#!/bin/sh\necho 'cannot configure the namespace' >&2\nexit 1\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	opts := e.opts
	opts.Pasta = fake
	r, err := runc.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	spec := e.spec(t, map[string]string{}, "RUN echo unreachable")
	var log bytes.Buffer
	_, err = r.Run(t.Context(), spec, &log)
	if err == nil || !strings.Contains(err.Error(), "cannot configure the namespace") {
		t.Errorf("Run with a failing pasta: err = %v, want pasta's message\n%s", err, log.String())
	}
	e.checkNoLeftovers(t)
	if entries, err := os.ReadDir(e.stateDir); err != nil || len(entries) > 0 {
		t.Errorf("state dir after the build: %v, %v; want it empty", entries, err)
	}
}
