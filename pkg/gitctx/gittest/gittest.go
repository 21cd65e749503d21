// Package gittest makes Git repositories with the real git command and serves
// them on loopback with real Git servers (git daemon, git http-backend behind
// TLS and basic auth), for tests of code that fetches build contexts.
//
// It needs Debian's git package (apt-get install git); tests fail with a
// message saying so when it is missing.
package gittest

import (
	"bytes"
	"crypto/subtle"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/cgi"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Files of the fixture's first commit.
const (
	Dockerfile       = "FROM scratch\nCOPY README.md /\n"
	DockerDockerfile = "FROM scratch\nCOPY app.txt /\n"
	Readme           = "A fixture repository.\n"
)

// AppFile is the fixture file whose content names the commit checked out:
// "first\n", "second\n", "third\n" or "dev\n".
const AppFile = "docker/app.txt"

// Fixture is a repository with the layout tests of Git build contexts need:
//
//	First   main's root commit: Dockerfile, README.md, docker/Dockerfile,
//	        docker/app.txt ("first"), and a symlink escape -> /etc
//	Second  main: docker/app.txt is "second"; the annotated tag v1.0 points here
//	Dev     branch dev, child of Second: docker/app.txt is "dev"
//	Third   main's tip, child of Second: docker/app.txt is "third"
//
// main is the default branch (HEAD). First is no ref's tip.
type Fixture struct {
	*Repo
	First, Second, Third, Dev string // full commit SHAs
}

// NewFixture creates the fixture repository in dir (created if missing).
func NewFixture(t testing.TB, dir string) *Fixture {
	t.Helper()
	r := NewRepo(t, dir)
	f := &Fixture{Repo: r}
	r.Symlink("escape", "/etc")
	f.First = r.Commit(map[string]string{
		"Dockerfile":        Dockerfile,
		"README.md":         Readme,
		"docker/Dockerfile": DockerDockerfile,
		AppFile:             "first\n",
	}, "first")
	f.Second = r.Commit(map[string]string{AppFile: "second\n"}, "second")
	r.Tag("v1.0")
	r.Branch("dev")
	r.Checkout("dev")
	f.Dev = r.Commit(map[string]string{AppFile: "dev\n"}, "dev")
	r.Checkout("main")
	f.Third = r.Commit(map[string]string{AppFile: "third\n"}, "third")
	return f
}

// Repo is a non-bare repository made with the git command.
type Repo struct {
	Dir string
	t   testing.TB
}

// NewRepo initialises an empty repository in dir (created if missing) whose
// default branch is main.
func NewRepo(t testing.TB, dir string) *Repo {
	t.Helper()
	requireGit(t)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatalf("gittest: %v", err)
	}
	r := &Repo{Dir: dir, t: t}
	r.Git("init", "--quiet", "--initial-branch=main")
	return r
}

// Git runs git with args in the repository, isolated from the host's git
// configuration, and returns its output without the trailing newline. It
// fails the test if git fails.
func (r *Repo) Git(args ...string) string {
	r.t.Helper()
	out, err := gitCommand(r.Dir, args...).Output()
	if err != nil {
		var stderr []byte
		if ee, ok := errors.AsType[*exec.ExitError](err); ok {
			stderr = ee.Stderr
		}
		r.t.Fatalf("gittest: git %s: %v: %s", strings.Join(args, " "), err, stderr)
	}
	return strings.TrimSuffix(string(out), "\n")
}

// GitInput is Git with stdin as the command's standard input.
func (r *Repo) GitInput(stdin string, args ...string) string {
	r.t.Helper()
	cmd := gitCommand(r.Dir, args...)
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.Output()
	if err != nil {
		var stderr []byte
		if ee, ok := errors.AsType[*exec.ExitError](err); ok {
			stderr = ee.Stderr
		}
		r.t.Fatalf("gittest: git %s: %v: %s", strings.Join(args, " "), err, stderr)
	}
	return strings.TrimSuffix(string(out), "\n")
}

// NewBomb creates in dir a repository of a few kilobytes whose main branch
// checks out to fanout^depth copies of one small file: depth levels of
// trees, each of fanout entries naming the same tree below it (a "git
// bomb"). It returns the repository and main's commit.
func NewBomb(t testing.TB, dir string, fanout, depth int) (*Repo, string) {
	t.Helper()
	r := NewRepo(t, dir)
	obj := r.GitInput("boom\n", "hash-object", "-w", "--stdin")
	mode, typ := "100644", "blob"
	for range depth {
		var entries strings.Builder
		for i := range fanout {
			fmt.Fprintf(&entries, "%s %s %s\tf%d\n", mode, typ, obj, i)
		}
		obj = r.GitInput(entries.String(), "mktree")
		mode, typ = "040000", "tree"
	}
	commit := r.GitInput("", "commit-tree", obj, "-m", "bomb")
	r.Git("update-ref", "refs/heads/main", commit)
	return r, commit
}

// Commit writes files (slash-separated paths relative to the repository, and
// their contents), commits every change of the work tree with message msg on
// the current branch, and returns the commit's SHA.
func (r *Repo) Commit(files map[string]string, msg string) string {
	r.t.Helper()
	for name, content := range files {
		p := filepath.Join(r.Dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			r.t.Fatalf("gittest: %v", err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			r.t.Fatalf("gittest: %v", err)
		}
	}
	r.Git("add", "--all")
	r.Git("commit", "--quiet", "--allow-empty", "--message", msg)
	return r.Rev("HEAD")
}

// Symlink makes name a symlink to target in the work tree; the next Commit
// records it.
func (r *Repo) Symlink(name, target string) {
	r.t.Helper()
	p := filepath.Join(r.Dir, filepath.FromSlash(name))
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		r.t.Fatalf("gittest: %v", err)
	}
	if err := os.Symlink(target, p); err != nil {
		r.t.Fatalf("gittest: %v", err)
	}
}

// Branch creates branch name at the current commit.
func (r *Repo) Branch(name string) {
	r.t.Helper()
	r.Git("branch", name)
}

// Checkout switches the work tree to branch name.
func (r *Repo) Checkout(name string) {
	r.t.Helper()
	r.Git("checkout", "--quiet", name)
}

// Tag creates the annotated tag name at the current commit.
func (r *Repo) Tag(name string) {
	r.t.Helper()
	r.Git("tag", "--annotate", "--message", "release "+name, name)
}

// Rev returns the full SHA of the commit rev names.
func (r *Repo) Rev(rev string) string {
	r.t.Helper()
	return r.Git("rev-parse", "--verify", "--quiet", rev+"^{commit}")
}

// AllowReachableSHA1InWant lets clients of the repository's servers fetch any
// reachable commit by its SHA (git config uploadpack.allowReachableSHA1InWant).
func (r *Repo) AllowReachableSHA1InWant() {
	r.t.Helper()
	r.Git("config", "uploadpack.allowReachableSHA1InWant", "true")
}

// ServeGit serves the repositories under root with git daemon on loopback
// until the test ends, and returns the base URL "git://127.0.0.1:PORT/": the
// repository in root/NAME is at base URL + NAME.
func ServeGit(t testing.TB, root string) (baseURL string) {
	t.Helper()
	daemon := filepath.Join(execPath(t), "git-daemon")
	if _, err := os.Stat(daemon); err != nil {
		t.Fatalf("gittest: git daemon is missing (%v): install Debian's git package with `apt-get install git`", err)
	}
	root, err := filepath.Abs(root)
	if err != nil {
		t.Fatalf("gittest: %v", err)
	}
	port := freePort(t)
	var stderr bytes.Buffer
	cmd := gitCommand(root, "daemon", "--reuseaddr", "--base-path="+root, "--export-all",
		"--enable=upload-pack", "--listen=127.0.0.1", "--port="+strconv.Itoa(port), root)
	cmd.Stderr = &stderr
	// A process group, so that cleanup also kills the daemon's children.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatalf("gittest: starting git daemon: %v", err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-exited
	})
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	for deadline := time.Now().Add(10 * time.Second); ; {
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			c.Close()
			break
		}
		select {
		case <-exited:
			t.Fatalf("gittest: git daemon exited: %s", stderr.String())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("gittest: git daemon does not accept connections on %s", addr)
		}
	}
	return "git://" + addr + "/"
}

// ServeHTTPS serves the repositories under root over HTTPS with git
// http-backend until the test ends, and returns the base URL
// "https://127.0.0.1:PORT/" (the repository in root/NAME is at base URL +
// NAME) and the server's certificate in PEM, to trust. Unless token is empty,
// every request needs HTTP basic auth with exactly username and token, and
// gets 401 with a Basic challenge otherwise.
func ServeHTTPS(t testing.TB, root, username, token string) (baseURL string, caPEM []byte) {
	t.Helper()
	backend := filepath.Join(execPath(t), "git-http-backend")
	if _, err := os.Stat(backend); err != nil {
		t.Fatalf("gittest: git http-backend is missing (%v): install Debian's git package with `apt-get install git`", err)
	}
	root, err := filepath.Abs(root)
	if err != nil {
		t.Fatalf("gittest: %v", err)
	}
	h := &cgi.Handler{
		Path: backend,
		Env:  []string{"GIT_PROJECT_ROOT=" + root, "GIT_HTTP_EXPORT_ALL=1", "GIT_CONFIG_NOSYSTEM=1"},
	}
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if token != "" {
			u, p, ok := req.BasicAuth()
			if !ok || subtle.ConstantTimeCompare([]byte(u), []byte(username)) != 1 ||
				subtle.ConstantTimeCompare([]byte(p), []byte(token)) != 1 {
				w.Header().Set("WWW-Authenticate", `Basic realm="git"`)
				http.Error(w, "authentication required", http.StatusUnauthorized)
				return
			}
		}
		h.ServeHTTP(w, req)
	}))
	t.Cleanup(srv.Close)
	caPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	return srv.URL + "/", caPEM
}

// requireGit fails the test when the git command is missing.
func requireGit(t testing.TB) {
	t.Helper()
	if _, err := exec.LookPath("git"); err != nil {
		t.Fatalf("gittest: the git command is missing (%v): install it with `apt-get install git`", err)
	}
}

// execPath returns the directory of git's helper programs.
func execPath(t testing.TB) string {
	t.Helper()
	requireGit(t)
	out, err := exec.Command("git", "--exec-path").Output()
	if err != nil {
		t.Fatalf("gittest: git --exec-path: %v", err)
	}
	return strings.TrimSpace(string(out))
}

// gitCommand is git with args in dir, isolated from the host's configuration.
func gitCommand(dir string, args ...string) *exec.Cmd {
	cmd := exec.Command("git", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(),
		"GIT_CONFIG_GLOBAL=/dev/null", "GIT_CONFIG_NOSYSTEM=1", "GIT_TERMINAL_PROMPT=0",
		"GIT_AUTHOR_NAME=gittest", "GIT_AUTHOR_EMAIL=gittest@example.com",
		"GIT_COMMITTER_NAME=gittest", "GIT_COMMITTER_EMAIL=gittest@example.com",
	)
	return cmd
}

// freePort returns a loopback TCP port that was free a moment ago.
func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("gittest: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
