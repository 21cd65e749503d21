package commands

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/slipway-dev/slipway/pkg/gitctx/gittest"
	"github.com/slipway-dev/slipway/pkg/server"
)

func run(args ...string) (int, string, string) {
	var out, errb bytes.Buffer
	code := Main(args, &out, &errb)
	return code, out.String(), errb.String()
}

func TestUsageOnBadArguments(t *testing.T) {
	for _, args := range [][]string{
		{},
		{"frobnicate"},
		{"token"},
		{"token", "a", "b"},
		{"token", "alice", "--ttl", "-1h"},
		{"token", "alice", "--nope"},
		{"workspace", "ws1"},
		{"workspace", "--owner", "alice"},
		{"serve", "extra"},
		{"serve", "--addr"},
		{"serve", "--log-level", "loud"},
	} {
		code, _, stderr := run(args...)
		if code != 2 || !strings.Contains(stderr, "usage:") {
			t.Errorf("slipway %q: exit %d, stderr %q; want 2 and usage", args, code, stderr)
		}
	}
	if code, out, _ := run("help"); code != 0 || !strings.Contains(out, "slipway serve") {
		t.Errorf("help: %d %q", code, out)
	}
}

func TestTokenAndWorkspaceAgainstAServer(t *testing.T) {
	data := t.TempDir()
	cfg := server.DefaultConfig()
	cfg.DrainDelay = 0
	cfg.DataDir, cfg.Addr = data, "127.0.0.1:0"
	s, err := server.Listen(cfg, slog.New(slog.NewJSONHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- s.Serve(ctx) }()
	defer func() { stop(); <-done }()

	// Flags may follow the positional argument.
	code, tok, stderr := run("token", "alice", "--data", data)
	if code != 0 || strings.Count(tok, ".") != 2 {
		t.Fatalf("token: %d %q %q", code, tok, stderr)
	}
	code, out, stderr := run("workspace", "ws1", "--owner", "alice", "--member", "bob", "--member", "carol", "--server", s.URL(), "--data", data)
	if code != 0 || !strings.Contains(out, "ws1") {
		t.Fatalf("workspace: %d %q %q", code, out, stderr)
	}
	req, _ := http.NewRequest("GET", s.URL()+"/api/v1/workspaces/ws1/images", nil)
	req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(tok))
	res, err := http.DefaultClient.Do(req)
	if err != nil || res.StatusCode != 200 {
		t.Fatalf("alice lists ws1: %v %v", res, err)
	}
	// A member token works too; an outsider's does not.
	_, bobTok, _ := run("token", "bob", "--data", data)
	_, daveTok, _ := run("token", "dave", "--data", data)
	for tok, want := range map[string]int{bobTok: 200, daveTok: 404} {
		req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(tok))
		res, _ := http.DefaultClient.Do(req)
		if res.StatusCode != want {
			t.Errorf("list as another user: %d, want %d", res.StatusCode, want)
		}
	}
	// Announcing with a key the server does not know fails with the status.
	code, _, stderr = run("workspace", "ws2", "--owner", "x", "--server", s.URL(), "--data", t.TempDir())
	if code != 1 || !strings.Contains(stderr, "401") {
		t.Fatalf("workspace with a foreign key: %d %q", code, stderr)
	}
	// An unreachable server is an error, not a hang.
	start := time.Now()
	code, _, _ = run("workspace", "ws3", "--owner", "x", "--server", "http://127.0.0.1:1", "--data", data)
	if code != 1 || time.Since(start) > 35*time.Second {
		t.Fatalf("unreachable server: exit %d after %v", code, time.Since(start))
	}
}

func TestFetchContext(t *testing.T) {
	root := t.TempDir()
	fixture := gittest.NewFixture(t, filepath.Join(root, "repo.git"))
	gitURL := gittest.ServeGit(t, root)
	dest, term := t.TempDir(), filepath.Join(t.TempDir(), "termination-log")
	code, out, stderr := run("fetch-context", "--url", strings.TrimSuffix(gitURL, "/")+"/repo.git", "--ref", "v1.0", "--dir", "docker", "--dest", dest, "--termination-log", term)
	if code != 0 || strings.TrimSpace(out) != "commit "+fixture.Second {
		t.Fatalf("fetch-context: %d %q %q", code, out, stderr)
	}
	if msg, _ := os.ReadFile(term); strings.TrimSpace(string(msg)) != "commit "+fixture.Second {
		t.Fatalf("termination message %q", msg)
	}
	if b, _ := os.ReadFile(filepath.Join(dest, gittest.AppFile)); string(b) != "second\n" {
		t.Fatalf("checked out %q", b)
	}
	// The bases of the fetched Dockerfile, after the build's arguments,
	// follow the commit (the reporter records them).
	r := gittest.NewRepo(t, filepath.Join(root, "bases.git"))
	tip := r.Commit(map[string]string{"img/Dockerfile": "ARG BASE=busybox\nFROM ${BASE} AS b\nRUN x\nFROM b\nFROM registry.example/x:1\nFROM scratch\n"}, "bases")
	code, _, stderr = run("fetch-context", "--url", strings.TrimSuffix(gitURL, "/")+"/bases.git", "--dir", "img", "--dest", t.TempDir(),
		"--termination-log", term, "--build-arg", "BASE=127.0.0.1:5000/lib/base:2", "--build-arg", "OTHER=x")
	want := "commit " + tip + "\nbase 127.0.0.1:5000/lib/base:2\nbase registry.example/x:1\n"
	if msg, _ := os.ReadFile(term); code != 0 || string(msg) != want {
		t.Fatalf("fetch-context with bases: %d %q, want %q; %s", code, msg, want, stderr)
	}
	if code, _, _ := run("fetch-context", "--url", "x", "--dest", t.TempDir(), "--build-arg", "novalue"); code != 2 {
		t.Errorf("--build-arg without =: exit %d, want 2", code)
	}
	// A failure is reported in the termination message too, without the token.
	t.Setenv(GitTokenEnv, "tok-secret-123")
	code, _, stderr = run("fetch-context", "--url", strings.TrimSuffix(gitURL, "/")+"/repo.git", "--ref", "nope", "--dest", t.TempDir(), "--termination-log", term)
	msg, _ := os.ReadFile(term)
	if code != 1 || !strings.HasPrefix(string(msg), "fetching the build context failed: ") || strings.Contains(string(msg)+stderr, "tok-secret-123") {
		t.Fatalf("failing fetch: %d %q %q", code, msg, stderr)
	}
}
