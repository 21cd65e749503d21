package runc_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/slipway-dev/slipway/internal/imagetest"
)

// TestExecutorForms records what the pinned executor (Kaniko v1.25.6)
// does with the Dockerfile forms that SAVE refuses (image.CheckDockerfile),
// run here past SAVE: each one either fails only at build time or, worse,
// "succeeds" without doing what the Dockerfile says. Should an executor
// update build one of them right, this test fails, and the refusal can go.
func TestExecutorForms(t *testing.T) {
	e := newEnv(t)
	type result struct {
		exit  int
		files map[string]string // the image's files, on success
		log   string
	}
	run := func(t *testing.T, id string, lines ...string) result {
		t.Helper()
		spec := e.spec(t, map[string]string{"ctx.txt": "from the context\n", "keep.txt": "k\n", "drop.skip": "s\n"}, lines...)
		if err := os.MkdirAll(filepath.Join(spec.ContextDir, "sub", "deep"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(spec.ContextDir, "sub", "deep", "f.txt"), []byte("deep\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		spec.ID = "forms-" + id + "-1"
		spec.Destinations = []string{e.host + "/forms/" + id + ":1"}
		var log bytes.Buffer
		out, err := e.runner.Run(t.Context(), spec, &log)
		if err != nil {
			t.Fatalf("Run: %v\n%s", err, log.String())
		}
		r := result{exit: out.ExitCode, log: log.String()}
		if out.ExitCode == 0 {
			ref, err := name.ParseReference(spec.Destinations[0])
			if err != nil {
				t.Fatal(err)
			}
			img, err := remote.Image(ref, remote.WithContext(t.Context()))
			if err != nil {
				t.Fatal(err)
			}
			r.files = imageFiles(t, mutate.Extract(img))
		}
		return r
	}
	cases := []struct {
		id    string
		lines []string
		check func(t *testing.T, r result) // what the executor did wrong
	}{
		{"run-heredoc", []string{"RUN <<EOF\necho hi > /heredoc\nEOF"}, func(t *testing.T, r result) {
			if _, ok := r.files["heredoc"]; r.exit != 0 || ok {
				t.Errorf("exit %d, /heredoc present %v: want a success that never ran the heredoc", r.exit, ok)
			}
		}},
		{"run-heredoc-stdin", []string{"RUN cat <<EOF > /heredoc\nhello\nEOF"}, func(t *testing.T, r result) {
			if f, ok := r.files["heredoc"]; r.exit != 0 || !ok || f != "" {
				t.Errorf("exit %d, /heredoc %q: want a success with the file empty", r.exit, f)
			}
		}},
		{"copy-heredoc", []string{"COPY <<EOF /heredoc\nhello\nEOF"}, func(t *testing.T, r result) {
			if r.exit == 0 || !strings.Contains(r.log, "resolved envs is empty") {
				t.Errorf("exit %d: want the failure \"resolved envs is empty\"", r.exit)
			}
		}},
		{"mount-cache", []string{"RUN --mount=type=cache,target=/cache mkdir -p /cache && touch /cache/f"}, func(t *testing.T, r result) {
			if _, ok := r.files["cache/f"]; r.exit != 0 || !ok {
				t.Errorf("exit %d, /cache/f in the image %v: want a success with the cache's file in the layer", r.exit, ok)
			}
		}},
		{"mount-tmpfs", []string{"RUN --mount=type=tmpfs,target=/tmpm mkdir -p /tmpm && touch /tmpm/f"}, func(t *testing.T, r result) {
			if _, ok := r.files["tmpm/f"]; r.exit != 0 || !ok {
				t.Errorf("exit %d, /tmpm/f in the image %v: want a success with the tmpfs's file in the layer", r.exit, ok)
			}
		}},
		{"mount-bind", []string{"RUN --mount=type=bind,source=ctx.txt,target=/m.txt cat /m.txt"}, func(t *testing.T, r result) {
			if r.exit == 0 || !strings.Contains(r.log, "can't open '/m.txt'") {
				t.Errorf("exit %d: want the RUN to fail without its mount", r.exit)
			}
		}},
		{"mount-ssh", []string{"RUN --mount=type=ssh test -z \"$SSH_AUTH_SOCK\" && touch /no-agent"}, func(t *testing.T, r result) {
			if _, ok := r.files["no-agent"]; r.exit != 0 || !ok {
				t.Errorf("exit %d: want a success without an ssh agent", r.exit)
			}
		}},
		{"mount-secret-unmounted", []string{"RUN --mount=type=secret,id=x test -f /run/secrets/x"}, func(t *testing.T, r result) {
			if r.exit == 0 {
				t.Error("a secret mount with no secret given succeeded: the executor would mount secrets itself")
			}
		}},
		{"copy-parents", []string{"COPY --parents sub/deep/f.txt /p/"}, func(t *testing.T, r result) {
			if _, ok := r.files["p/sub/deep/f.txt"]; r.exit != 0 || ok || r.files["p/f.txt"] != "deep\n" {
				t.Errorf("exit %d, files %v: want /p/f.txt without its parents", r.exit, keys(r.files, "p/"))
			}
		}},
		{"copy-exclude", []string{"COPY --exclude=*.skip . /ex/"}, func(t *testing.T, r result) {
			if _, ok := r.files["ex/drop.skip"]; r.exit != 0 || !ok {
				t.Errorf("exit %d, files %v: want the excluded file copied", r.exit, keys(r.files, "ex/"))
			}
		}},
		{"add-checksum", []string{"ADD --checksum=sha256:" + strings.Repeat("0", 64) + " ctx.txt /a.txt"}, func(t *testing.T, r result) {
			if r.exit != 0 || r.files["a.txt"] != "from the context\n" {
				t.Errorf("exit %d: want a success that verified nothing", r.exit)
			}
		}},
		{"run-network-none", []string{"RUN --network=none ip link show | grep -v ' lo:' | grep -q mtu && touch /had-network"}, func(t *testing.T, r result) {
			if _, ok := r.files["had-network"]; r.exit != 0 || !ok {
				t.Errorf("exit %d: want the step to have had a network interface besides lo", r.exit)
			}
		}},
		{"chmod-abc", []string{"COPY --chmod=abc ctx.txt /c.txt"}, func(t *testing.T, r result) {
			if r.exit == 0 || !strings.Contains(r.log, `parsing "abc"`) {
				t.Errorf("exit %d: want the failure at build time", r.exit)
			}
		}},
		{"expose-abc", []string{"EXPOSE abc"}, func(t *testing.T, r result) {
			if r.exit != 0 {
				t.Errorf("exit %d: want a success with a port named abc", r.exit)
			}
		}},
		{"from-unset-arg", []string{"ARG image", "FROM ${image}", "RUN true"}, func(t *testing.T, r result) {
			if r.exit == 0 || strings.Contains(r.log, "image") && strings.Contains(r.log, "unset") {
				t.Errorf("exit %d: want a failure that does not say the ARG is unset", r.exit)
			}
		}},
		{"copy-from-nostage", []string{"COPY --from=nostage /x /y"}, func(t *testing.T, r result) {
			if r.exit == 0 || !strings.Contains(r.log, "index.docker.io") {
				t.Errorf("exit %d: want a failed pull from Docker Hub", r.exit)
			}
		}},
	}
	for _, c := range cases {
		t.Run(c.id, func(t *testing.T) {
			r := run(t, c.id, c.lines...)
			c.check(t, r)
			if t.Failed() {
				t.Logf("log:\n%s", r.log)
			}
		})
	}
}

func keys(files map[string]string, prefix string) []string {
	var out []string
	for k := range files {
		if strings.HasPrefix(k, prefix) {
			out = append(out, k)
		}
	}
	return out
}

// TestBuildSecret: a build secret is mounted for RUN --mount=type=secret
// at /run/secrets/ID and is in no layer, nor the image's config, nor the
// log (redacted when a step prints it).
func TestBuildSecret(t *testing.T) {
	e := newEnv(t)
	const value = "s3cr3t-Token-4f9a2c"
	spec := e.spec(t, map[string]string{},
		"RUN --mount=type=secret,id=token cat /run/secrets/token | sha256sum > /hash",
		"RUN --mount=type=secret,id=token,required=true echo \"printed: $(cat /run/secrets/token)\"",
	)
	spec.Secrets = map[string][]byte{"token": []byte(value)}
	var log bytes.Buffer
	out, err := e.runner.Run(t.Context(), spec, &log)
	if err != nil || out.ExitCode != 0 {
		t.Fatalf("Run = %+v, %v\n%s", out, err, log.String())
	}
	if strings.Contains(log.String(), value) || !strings.Contains(log.String(), "printed: [redacted]") {
		t.Fatalf("the log holds the secret, or not its redaction:\n%s", log.String())
	}
	ref, err := name.ParseReference(spec.Destinations[0])
	if err != nil {
		t.Fatal(err)
	}
	img, err := remote.Image(ref, remote.WithContext(t.Context()))
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256([]byte(value))
	files := imageFiles(t, mutate.Extract(img))
	if want := hex.EncodeToString(sum[:]) + "  -\n"; files["hash"] != want {
		t.Fatalf("/hash = %q, want %q", files["hash"], want)
	}
	for p := range files {
		if strings.HasPrefix(p, "run/secrets") {
			t.Errorf("the image holds %s", p)
		}
	}
	// Every layer, compressed and not, and the config and manifest.
	for what, b := range imagetest.Blobs(t, img) {
		if bytes.Contains(b, []byte(value)) {
			t.Errorf("the image's %s holds the secret", what)
		}
	}
	e.checkNoLeftovers(t)
}

// A build argument reaches ARG; a target builds and pushes that stage.
func TestBuildArgsAndTarget(t *testing.T) {
	e := newEnv(t)
	spec := e.spec(t, map[string]string{})
	dockerfile := "FROM " + e.base + " AS first\nARG GREETING=hello\nRUN echo \"$GREETING\" > /greeting\n" +
		"FROM first AS second\nRUN echo second > /second\n"
	if err := os.WriteFile(filepath.Join(spec.ContextDir, "Dockerfile"), []byte(dockerfile), 0o644); err != nil {
		t.Fatal(err)
	}
	spec.BuildArgs = []string{"GREETING=bonjour tout le monde"}
	spec.Target = "first"
	var log bytes.Buffer
	out, err := e.runner.Run(t.Context(), spec, &log)
	if err != nil || out.ExitCode != 0 {
		t.Fatalf("Run = %+v, %v\n%s", out, err, log.String())
	}
	ref, err := name.ParseReference(spec.Destinations[0])
	if err != nil {
		t.Fatal(err)
	}
	img, err := remote.Image(ref, remote.WithContext(t.Context()))
	if err != nil {
		t.Fatal(err)
	}
	files := imageFiles(t, mutate.Extract(img))
	if _, ok := files["second"]; ok || files["greeting"] != "bonjour tout le monde\n" {
		t.Fatalf("greeting %q, /second present %v: want the first stage with the build argument", files["greeting"], ok)
	}
}
