package buildcontext

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/slipway-dev/slipway/pkg/build"
	"github.com/slipway-dev/slipway/pkg/gitctx"
	"github.com/slipway-dev/slipway/pkg/image"
)

// A Git fetch runs in a child process: the same binary, started with
// childEnv set, which this package's init turns into the fetch and nothing
// else before main (or a test binary's flag parsing) runs. It reads one
// childRequest on stdin, writes one childResult on stdout and exits. The
// parent sets its limits with prlimit before it sends the request, so the
// child does nothing unbounded.
const childEnv = "SLIPWAY_BUILDCONTEXT_CHILD"

func init() {
	if os.Getenv(childEnv) == "fetch" {
		os.Exit(child(os.Stdin, os.Stdout))
	}
}

// childRequest is what the child fetches, and how. Op is "" for a fetch,
// or "head" to list the remote's refs only (gitctx.Fetcher.Head), which
// runs here too: a hostile remote's listing is as unbounded as its pack.
type childRequest struct {
	Op        string        `json:"op,omitempty"`
	Git       image.Git     `json:"git"`
	Username  string        `json:"username,omitempty"`
	Token     string        `json:"token,omitempty"`
	Dest      string        `json:"dest"`
	TempDir   string        `json:"temp_dir"`
	CABundle  []byte        `json:"ca_bundle,omitempty"`
	AllowFile bool          `json:"allow_file,omitempty"`
	MaxFiles  int64         `json:"max_files"`
	MaxBytes  int64         `json:"max_bytes"`
	Timeout   time.Duration `json:"timeout"`
}

// childResult is what the child fetched, or why it could not: Git says the
// error is the repository's or the context's (gitctx.ErrGit).
type childResult struct {
	Commit string `json:"commit,omitempty"`
	Dir    string `json:"dir,omitempty"`
	Error  string `json:"error,omitempty"`
	Git    bool   `json:"git,omitempty"`
}

// child runs in the child process: the fetch, reported on out.
func child(in io.Reader, out io.Writer) int {
	var req childRequest
	if err := json.NewDecoder(io.LimitReader(in, 4<<20)).Decode(&req); err != nil {
		fmt.Fprintf(os.Stderr, "buildcontext child: reading the request: %v\n", err)
		return 3
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	var auth *gitctx.Auth
	if req.Token != "" {
		auth = &gitctx.Auth{Username: req.Username, Token: req.Token}
	}
	f := &gitctx.Fetcher{CABundle: req.CABundle, AllowFile: req.AllowFile, Timeout: req.Timeout,
		MaxFiles: req.MaxFiles, MaxBytes: req.MaxBytes, TempDir: req.TempDir}
	var res childResult
	var err error
	if req.Op == "head" {
		res.Commit, err = f.Head(ctx, req.Git, auth)
	} else {
		res.Commit, res.Dir, err = f.Fetch(ctx, req.Git, auth, req.Dest)
	}
	if err != nil {
		res = childResult{Error: err.Error(), Git: errors.Is(err, gitctx.ErrGit)}
	}
	if err := json.NewEncoder(out).Encode(res); err != nil {
		return 3
	}
	return 0
}

// passedEnv are the variables of the server's environment a fetch child
// gets; no other (the server's may hold secrets).
var passedEnv = []string{"PATH", "SSL_CERT_FILE", "SSL_CERT_DIR",
	"HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "NO_PROXY", "no_proxy"}

// cappedBuffer keeps the first max bytes written to it and drops the rest.
type cappedBuffer struct {
	bytes.Buffer
	max int
}

func (b *cappedBuffer) Write(p []byte) (int, error) {
	if room := b.max - b.Len(); room > 0 {
		b.Buffer.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}

// fetch runs the Git fetch of g into work/repo in a child process bounded
// by p.Limits, and returns the commit and the context directory.
func (p *Preparer) fetch(ctx context.Context, work string, g image.Git, auth *gitctx.Auth) (commit, dir string, err error) {
	l := p.Limits.withDefaults()
	dest, tmp := filepath.Join(work, "repo"), filepath.Join(work, "tmp")
	if err := os.Mkdir(tmp, 0o700); err != nil {
		return "", "", failure(build.ReasonInternal, "preparing the build context: %v", err)
	}
	res, err := p.runChild(ctx, work, childRequest{Git: g, Dest: dest, TempDir: tmp, MaxFiles: l.Files, MaxBytes: l.Bytes}, auth, "fetching")
	if err != nil {
		return "", "", err
	}
	// The child's answer is checked, not trusted: the directory is the
	// checkout or inside it.
	if rel, err := filepath.Rel(dest, res.Dir); err != nil || rel == ".." || strings.HasPrefix(rel, "../") || filepath.IsAbs(rel) {
		return "", "", failure(build.ReasonInternal, "the fetch answered a directory outside its checkout")
	}
	if err := os.RemoveAll(tmp); err != nil {
		return "", "", failure(build.ReasonInternal, "cleaning up the fetch: %v", err)
	}
	return res.Commit, res.Dir, nil
}

// Head returns the commit g.Ref names on the remote now, as
// gitctx.Fetcher.Head does, listing the remote's refs in a child process
// bounded by p.Limits (a remote that advertises refs without end exhausts
// the child, not the server). Its error is a *Failure.
func (p *Preparer) Head(ctx context.Context, g image.Git, auth *gitctx.Auth) (string, error) {
	work, err := os.MkdirTemp("", "slipway-head-")
	if err != nil {
		return "", failure(build.ReasonInternal, "listing the refs of %s: %v", g.URL, err)
	}
	defer os.RemoveAll(work)
	res, err := p.runChild(ctx, work, childRequest{Op: "head", Git: g, TempDir: work}, auth, "listing the refs of")
	if err != nil {
		return "", err
	}
	return res.Commit, nil
}

// runChild runs req in a child process bounded by p.Limits, with work as
// its directory and req.TempDir as its temporary one, and returns its
// answer; what says what it does in messages ("fetching" URL).
func (p *Preparer) runChild(ctx context.Context, work string, req childRequest, auth *gitctx.Auth, what string) (childResult, error) {
	l := p.Limits.withDefaults()
	g := req.Git
	self := p.Self
	if self == "" {
		var err error
		if self, err = os.Executable(); err != nil {
			return childResult{}, failure(build.ReasonInternal, "finding this server's binary for the fetch: %v", err)
		}
	}
	req.CABundle, req.AllowFile, req.Timeout = p.CABundle, p.AllowFile, l.Timeout
	if auth != nil {
		req.Username, req.Token = auth.Username, auth.Token
	}
	body, err := json.Marshal(req)
	if err != nil {
		return childResult{}, failure(build.ReasonInternal, "preparing the fetch: %v", err)
	}
	// The child's own timeout reports in its words; this one, a little
	// later, stops a child that cannot.
	cctx, cancel := context.WithTimeout(ctx, l.Timeout+10*time.Second)
	defer cancel()
	cmd := exec.CommandContext(cctx, self)
	// Of the server's environment only what a fetch needs: where git is
	// (file:// URLs run it), the TLS roots and the proxies.
	cmd.Env = []string{childEnv + "=fetch", "TMPDIR=" + req.TempDir, "HOME=" + req.TempDir,
		"GOMEMLIMIT=" + strconv.FormatInt(max(l.Memory-(1<<30), 64<<20), 10), "GOMAXPROCS=2"}
	for _, name := range passedEnv {
		if v, ok := os.LookupEnv(name); ok {
			cmd.Env = append(cmd.Env, name+"="+v)
		}
	}
	cmd.Dir = work
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	stdout, stderr := &cappedBuffer{max: 64 << 10}, &cappedBuffer{max: 16 << 10}
	cmd.Stdout, cmd.Stderr = stdout, stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return childResult{}, failure(build.ReasonInternal, "starting the fetch: %v", err)
	}
	if err := cmd.Start(); err != nil {
		if ctx.Err() != nil {
			return childResult{}, failure(build.ReasonCancelled, "the build was cancelled")
		}
		return childResult{}, failure(build.ReasonInternal, "starting the fetch (%s): %v", self, err)
	}
	if err := limit(cmd.Process.Pid, l); err != nil {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		cmd.Wait()
		return childResult{}, failure(build.ReasonInternal, "limiting the fetch: %v", err)
	}
	_, werr := stdin.Write(body)
	stdin.Close()
	err = cmd.Wait()
	var res childResult
	switch {
	case ctx.Err() != nil:
		return childResult{}, failure(build.ReasonCancelled, "the build was cancelled")
	case cctx.Err() != nil:
		return childResult{}, failure(build.ReasonGit, "%s %s took longer than %s", what, g.URL, l.Timeout)
	case err == nil && werr == nil && json.Unmarshal(stdout.Bytes(), &res) == nil:
	case outOfMemory(stderr.String()):
		return childResult{}, failure(build.ReasonGit, "%s %s needed more memory than the %d MiB a fetch may use", what, g.URL, l.Memory>>20)
	default:
		return childResult{}, failure(build.ReasonInternal, "%s %s failed: %v%s", what, g.URL, errOr(err, werr), lastLine(stderr.String(), auth))
	}
	switch {
	case res.Error != "" && res.Git:
		return childResult{}, failure(build.ReasonGit, "%s", redact(res.Error, auth))
	case res.Error != "":
		return childResult{}, failure(build.ReasonInternal, "%s %s: %s", what, g.URL, redact(res.Error, auth))
	}
	return res, nil
}

// limit bounds the child process pid: its address space, the size of any
// file it writes, its open files, and no core dumps.
func limit(pid int, l Limits) error {
	for _, r := range []struct {
		resource int
		value    uint64
	}{
		{unix.RLIMIT_AS, uint64(l.Memory)},
		{unix.RLIMIT_FSIZE, uint64(l.Bytes)},
		{unix.RLIMIT_NOFILE, 1024},
		{unix.RLIMIT_CORE, 0},
	} {
		lim := unix.Rlimit{Cur: r.value, Max: r.value}
		if err := unix.Prlimit(pid, r.resource, &lim, nil); err != nil {
			return fmt.Errorf("prlimit %d: %w", r.resource, err)
		}
	}
	return nil
}

// outOfMemory tells whether the Go runtime's last words on stderr say it
// ran out of memory (of address space, under RLIMIT_AS): an allocation
// that failed, or a new thread whose stack could not be mapped (with cgo,
// pthread_create's EAGAIN; without, newosproc's).
func outOfMemory(stderr string) bool {
	for line := range strings.Lines(stderr) {
		switch {
		case strings.HasPrefix(line, "fatal error:") && strings.Contains(line, "memory"),
			strings.HasPrefix(line, "runtime/cgo: pthread_create failed"),
			strings.HasPrefix(line, "runtime: failed to create new OS thread"):
			return true
		}
	}
	return false
}

func errOr(errs ...error) error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return errors.New("no answer")
}

// lastLine is the child's last line of stderr, as ": line", or "".
func lastLine(stderr string, auth *gitctx.Auth) string {
	lines := strings.Split(strings.TrimSpace(stderr), "\n")
	if last := strings.TrimSpace(lines[len(lines)-1]); last != "" {
		return ": " + redact(last, auth)
	}
	return ""
}

func redact(msg string, auth *gitctx.Auth) string {
	if auth == nil || auth.Token == "" {
		return msg
	}
	return strings.ReplaceAll(msg, auth.Token, "[redacted]")
}
