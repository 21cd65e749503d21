package buildcontext

import (
	"bufio"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/slipway-dev/slipway/pkg/build"
	"github.com/slipway-dev/slipway/pkg/gitctx/gittest"
	"github.com/slipway-dev/slipway/pkg/image"
)

// notes collects what Prepare notes for the build log.
type notes struct{ lines []string }

func (n *notes) Notef(format string, args ...any) {
	n.lines = append(n.lines, fmt.Sprintf(format, args...))
}
func (n *notes) String() string { return strings.Join(n.lines, "\n") }

// wantFailure checks that err is a Failure of reason whose message holds msg.
func wantFailure(t *testing.T, err error, reason build.Reason, msg string) *Failure {
	t.Helper()
	var f *Failure
	if !errors.As(err, &f) || f.Reason != reason || !strings.Contains(f.Message, msg) {
		t.Fatalf("err = %v, want a %s failure containing %q", err, reason, msg)
	}
	return f
}

// assertEmpty checks that dir holds nothing.
func assertEmpty(t *testing.T, dir string) {
	t.Helper()
	if entries, err := os.ReadDir(dir); err != nil || len(entries) != 0 {
		t.Fatalf("%s holds %v (%v): something was left behind", dir, entries, err)
	}
}

func TestPrepareLocal(t *testing.T) {
	p := &Preparer{WorkDir: t.TempDir()}
	df := "FROM busybox\n# check=skip=all\nRUN true\n"
	c, err := p.Prepare(context.Background(), Request{ID: "img-1", Context: image.Context{Type: image.ContextLocal, Dockerfile: df}})
	if err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(c.Dir, DockerfileName)); err != nil || string(b) != df || c.Dockerfile != df || c.Commit != "" {
		t.Fatalf("context %+v: Dockerfile %q, %v", c, b, err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	assertEmpty(t, p.WorkDir)
	// An invalid one fails dockerfile with its line, and leaves nothing.
	_, err = p.Prepare(context.Background(), Request{ID: "img-2", Context: image.Context{Type: image.ContextLocal, Dockerfile: "FROM a\nRUNN x\n"}})
	wantFailure(t, err, build.ReasonDockerfile, "line 2")
	assertEmpty(t, p.WorkDir)
	_, err = p.Prepare(context.Background(), Request{ID: "../x", Context: image.Context{Type: image.ContextLocal, Dockerfile: "FROM a\n"}})
	wantFailure(t, err, build.ReasonInternal, "bad build ID")
}

// A Dockerfile is read inside its context only, as a regular file of at
// most the editor's cap, and no failure shows any of what it points to.
func TestReadDockerfile(t *testing.T) {
	const secret = "root:$6$very-secret-hash:19000:0:99999:7:::"
	host := filepath.Join(t.TempDir(), "shadow")
	if err := os.WriteFile(host, []byte(secret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name   string
		make   func(t *testing.T, df string)
		reason build.Reason
		msg    string
	}{
		{"symlink to a host file", link(host), build.ReasonDockerfile, "leads outside the build context"},
		{"symlink to /etc/shadow", link("/etc/shadow"), build.ReasonDockerfile, "leads outside the build context"},
		{"symlink to /proc/self/environ", link("/proc/self/environ"), build.ReasonDockerfile, "leads outside the build context"},
		{"symlink to /dev/zero", link("/dev/zero"), build.ReasonDockerfile, "leads outside the build context"},
		{"relative symlink out", link("../../" + filepath.Base(filepath.Dir(host)) + "/shadow"), build.ReasonDockerfile, "leads outside the build context"},
		{"broken symlink", link("nowhere"), build.ReasonDockerfile, "broken symlink"},
		{"missing", func(*testing.T, string) {}, build.ReasonDockerfile, "there is no Dockerfile"},
		{"a directory", func(t *testing.T, df string) { os.Mkdir(df, 0o755) }, build.ReasonDockerfile, "not a regular file (a directory)"},
		{"a FIFO", func(t *testing.T, df string) {
			if err := syscall.Mkfifo(df, 0o644); err != nil {
				t.Fatal(err)
			}
		}, build.ReasonDockerfile, "not a regular file (a FIFO)"},
		{"a device", func(t *testing.T, df string) {
			if err := syscall.Mknod(df, syscall.S_IFCHR|0o644, int(mkdev(1, 5))); err != nil {
				t.Fatalf("mknod (as root): %v", err)
			}
		}, build.ReasonDockerfile, "not a regular file (a device)"},
		{"too large", func(t *testing.T, df string) {
			os.WriteFile(df, []byte("FROM a\n"+strings.Repeat("#", image.MaxDockerfileBytes)), 0o644)
		}, build.ReasonDockerfile, fmt.Sprintf("larger than %d bytes", image.MaxDockerfileBytes)},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "a", "ctx")
			os.MkdirAll(dir, 0o755)
			c.make(t, filepath.Join(dir, DockerfileName))
			done := make(chan error, 1)
			go func() { _, err := ReadDockerfile(dir, "docker"); done <- err }()
			select {
			case err := <-done:
				f := wantFailure(t, err, c.reason, c.msg)
				if strings.Contains(f.Message, "very-secret") || strings.Contains(f.Message, "root:") {
					t.Fatalf("the failure shows the file: %q", f.Message)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("reading the Dockerfile does not return")
			}
		})
	}
	// A link to another file inside the context is followed, and replaced
	// by a regular file holding what was read, which Kaniko then reads.
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "Dockerfile.real"), []byte("FROM a\n"), 0o644)
	os.Symlink("Dockerfile.real", filepath.Join(dir, DockerfileName))
	text, err := ReadDockerfile(dir, "docker")
	if err != nil || text != "FROM a\n" {
		t.Fatalf("link inside the context: %q, %v", text, err)
	}
	if fi, err := os.Lstat(filepath.Join(dir, DockerfileName)); err != nil || !fi.Mode().IsRegular() {
		t.Fatalf("the link was not replaced: %v %v", fi, err)
	}
}

func link(target string) func(*testing.T, string) {
	return func(t *testing.T, df string) {
		if err := os.Symlink(target, df); err != nil {
			t.Fatal(err)
		}
	}
}

// mkdev is makedev(3) for Linux, for small numbers.
func mkdev(major, minor uint32) uint64 {
	return uint64(major)<<8 | uint64(minor)
}

// gitServer serves repositories made under one root on loopback.
type gitServer struct {
	root string
	base string
}

func newGitServer(t *testing.T) *gitServer {
	root := t.TempDir()
	os.MkdirAll(filepath.Join(root, "placeholder"), 0o755)
	return &gitServer{root: root, base: gittest.ServeGit(t, root)}
}

func (s *gitServer) repo(t *testing.T, name string, files, symlinks map[string]string) string {
	t.Helper()
	r := gittest.NewRepo(t, filepath.Join(s.root, name))
	for n, target := range symlinks {
		r.Symlink(n, target)
	}
	r.Commit(files, "the context")
	return s.base + name
}

func gitRequest(id, url, dir string) Request {
	return Request{ID: id, Context: image.Context{Type: image.ContextGit, Git: &image.Git{URL: url, Dir: dir}}}
}

// Git contexts are fetched by a child process (this test binary, re-executed
// through the package's init) and read inside their tree.
func TestPrepareGit(t *testing.T) {
	s := newGitServer(t)
	good := s.repo(t, "good", map[string]string{"docker/Dockerfile.in": "FROM a\n# check=skip=all\nRUN true\n"},
		map[string]string{"docker/Dockerfile": "Dockerfile.in"})
	evil := s.repo(t, "evil", map[string]string{"README": "x"}, map[string]string{
		"Dockerfile": "/etc/shadow", "environ/Dockerfile": "/proc/self/environ", "zero/Dockerfile": "/dev/zero",
		"up/Dockerfile": "../README"})
	p := &Preparer{WorkDir: t.TempDir()}
	var log notes
	r := gitRequest("good-1", good, "docker")
	r.Log = &log
	c, err := p.Prepare(context.Background(), r)
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Commit) != 40 || c.Dockerfile != "FROM a\n# check=skip=all\nRUN true\n" || !strings.HasSuffix(c.Dir, "/good-1/repo/docker") {
		t.Fatalf("prepared %+v", c)
	}
	if !strings.Contains(log.String(), "fetching "+good) || !strings.Contains(log.String(), "building commit "+c.Commit) {
		t.Fatalf("log:\n%s", log.String())
	}
	if _, err := os.Stat(filepath.Join(p.WorkDir, "good-1", "tmp")); !os.IsNotExist(err) {
		t.Fatalf("the fetch's metadata is still there: %v", err)
	}
	c.Close()
	assertEmpty(t, p.WorkDir)

	for _, dir := range []string{"", "environ", "zero", "up"} {
		_, err := p.Prepare(context.Background(), gitRequest("evil-"+dir, evil, dir))
		wantFailure(t, err, build.ReasonDockerfile, "leads outside the build context")
		assertEmpty(t, p.WorkDir)
	}
	_, err = p.Prepare(context.Background(), gitRequest("missing-1", s.base+"nope", ""))
	wantFailure(t, err, build.ReasonGit, "not found")
	assertEmpty(t, p.WorkDir)
}

// A repository of a few kilobytes that checks out to a million files fails
// with reason git, quickly, and leaves nothing behind.
func TestPrepareGitBomb(t *testing.T) {
	s := newGitServer(t)
	gittest.NewBomb(t, filepath.Join(s.root, "bomb"), 100, 3)
	p := &Preparer{WorkDir: t.TempDir(), Limits: Limits{Files: 10_000}}
	start := time.Now()
	_, err := p.Prepare(context.Background(), gitRequest("bomb-1", s.base+"bomb", ""))
	wantFailure(t, err, build.ReasonGit, "more than 10000 files and directories")
	t.Logf("refused in %v", time.Since(start).Round(time.Millisecond))
	assertEmpty(t, p.WorkDir)
}

// The child's own limits hold when the entry count would not: a fetch with
// too little memory fails with reason git, one that writes a file larger
// than Bytes fails too, and one past its time is stopped.
func TestPrepareGitChildLimits(t *testing.T) {
	s := newGitServer(t)
	// History holds 256 KiB of random bytes the tip no longer has: a full
	// clone (a short SHA) receives them in its pack.
	r := gittest.NewRepo(t, filepath.Join(s.root, "history"))
	noise := make([]byte, 256<<10)
	rand.Read(noise)
	r.Commit(map[string]string{"Dockerfile": "FROM a\n", "noise": string(noise)}, "noise")
	os.Remove(filepath.Join(r.Dir, "noise"))
	tip := r.Commit(nil, "no noise")
	url := s.base + "history"
	for _, c := range []struct {
		name   string
		ref    string
		limits Limits
		reason build.Reason
		msg    string
	}{
		{"memory", "", Limits{Memory: 600 << 20}, build.ReasonGit, "needed more memory than the 600 MiB"},
		{"file size", tip[:10], Limits{Bytes: 64 << 10}, build.ReasonGit, "larger than this server's limit"},
	} {
		t.Run(c.name, func(t *testing.T) {
			p := &Preparer{WorkDir: t.TempDir(), Limits: c.limits}
			req := gitRequest("big-1", url, "")
			req.Context.Git.Ref = c.ref
			_, err := p.Prepare(context.Background(), req)
			wantFailure(t, err, c.reason, c.msg)
			assertEmpty(t, p.WorkDir)
		})
	}
}

// A cancelled build stops its fetch and leaves nothing behind.
func TestPrepareGitCancelled(t *testing.T) {
	s := newGitServer(t)
	url := s.repo(t, "r", map[string]string{"Dockerfile": "FROM a\n"}, nil)
	p := &Preparer{WorkDir: t.TempDir()}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := p.Prepare(ctx, gitRequest("r-1", url, ""))
	wantFailure(t, err, build.ReasonCancelled, "cancelled")
	assertEmpty(t, p.WorkDir)
}

// FuzzPrepareLocal runs what a build runs on an editor's Dockerfile: the
// context written, the Dockerfile read back inside it and validated, and the
// base registries looked up for the build's credentials. None of it may
// panic; a Dockerfile fails only with reason dockerfile, and one that passes
// is built exactly as saved. testdata/fuzz keeps the input that once
// panicked BuildKit's instruction parser here.
func FuzzPrepareLocal(f *testing.F) {
	for _, s := range []string{
		"FROM a\nRUN b\n", "FROM a\n# check=skip=all\nRUN b\n", "# syntax=x\n# check=error=true\nFROM a\n",
		"FROM a AS b\nFROM b\nCOPY --from=b / /\n", "# escape=`\nFROM a\nRUN a`\n b", "\x00", "",
	} {
		f.Add(s)
	}
	p := &Preparer{WorkDir: f.TempDir()}
	f.Fuzz(func(t *testing.T, src string) {
		c, err := p.Prepare(context.Background(), Request{ID: "fuzz-1", Context: image.Context{Type: image.ContextLocal, Dockerfile: src}})
		if err != nil {
			if f, ok := errors.AsType[*Failure](err); !ok || f.Reason != build.ReasonDockerfile {
				t.Fatalf("Prepare(%q) = %v, want a dockerfile failure", src, err)
			}
			return
		}
		defer c.Close()
		if c.Dockerfile != src {
			t.Fatalf("prepared %q from %q", c.Dockerfile, src)
		}
		image.BaseRegistries(c.Dockerfile)
	})
}

// A Git server that accepts and then says nothing holds the fetch no longer
// than Limits.Timeout.
func TestPrepareGitTimeout(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	p := &Preparer{WorkDir: t.TempDir(), Limits: Limits{Timeout: time.Second}}
	start := time.Now()
	_, err = p.Prepare(context.Background(), gitRequest("slow-1", "git://"+ln.Addr().String()+"/repo", ""))
	wantFailure(t, err, build.ReasonGit, "took longer than 1s")
	if d := time.Since(start); d > 8*time.Second {
		t.Fatalf("the fetch took %v", d)
	}
	assertEmpty(t, p.WorkDir)
}

// The server's own binary (bin/slipway, as `make run` runs it) serves as the
// fetch child too: any binary that links this package does.
func TestPrepareGitWithTheSlipwayBinary(t *testing.T) {
	_, file, _, _ := runtime.Caller(0)
	self := filepath.Join(filepath.Dir(file), "..", "..", "bin", "slipway")
	if _, err := os.Stat(self); err != nil {
		t.Fatalf("no %s: run `make build`", self)
	}
	s := newGitServer(t)
	gittest.NewBomb(t, filepath.Join(s.root, "bomb"), 100, 3)
	url := s.repo(t, "good", map[string]string{"Dockerfile": "FROM a\n"}, nil)
	p := &Preparer{WorkDir: t.TempDir(), Self: self}
	c, err := p.Prepare(context.Background(), gitRequest("good-1", url, ""))
	if err != nil || len(c.Commit) != 40 || c.Dockerfile != "FROM a\n" {
		t.Fatalf("prepared %+v, %v", c, err)
	}
	c.Close()
	_, err = p.Prepare(context.Background(), gitRequest("bomb-1", s.base+"bomb", ""))
	wantFailure(t, err, build.ReasonGit, "more than 100000 files and directories")
	assertEmpty(t, p.WorkDir)
}

// endlessRefs serves git:// on loopback, advertising refs without end, as a
// hostile remote may; it returns the URL.
func endlessRefs(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.Read(make([]byte, 4096)) // the request
				w := bufio.NewWriterSize(c, 1<<16)
				for i := 0; ; i++ {
					line := fmt.Sprintf("%040x refs/heads/b%d\n", i+1, i)
					if i == 0 {
						line = fmt.Sprintf("%040x HEAD\x00symref=HEAD:refs/heads/b1\n", i+1)
					}
					if _, err := fmt.Fprintf(w, "%04x%s", len(line)+4, line); err != nil {
						return
					}
				}
			}()
		}
	}()
	return "git://" + ln.Addr().String() + "/repo"
}

// Listing a remote's refs (the git trigger's poll) runs in the bounded child
// too: a remote that advertises refs without end exhausts the child's
// memory or time (under load, its garbage collector near GOMEMLIMIT slows it
// down before it reaches its address-space limit), not the server's, and
// the poll fails with a clear message.
func TestHeadOfEndlessRefs(t *testing.T) {
	p := &Preparer{Limits: Limits{Timeout: 20 * time.Second}}
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	url := endlessRefs(t)
	_, err := p.Head(context.Background(), image.Git{URL: url}, nil)
	runtime.ReadMemStats(&after)
	f := wantFailure(t, err, build.ReasonGit, url)
	if !strings.Contains(f.Message, "needed more memory than the 2048 MiB") && !strings.Contains(f.Message, "took longer than 20s") {
		t.Errorf("failure %q, want the child's memory or time limit", f.Message)
	}
	if grown := int64(after.HeapInuse) - int64(before.HeapInuse); grown > 64<<20 {
		t.Errorf("the server's heap grew by %d MiB", grown>>20)
	}

	// A real remote's head, through the child.
	s := newGitServer(t)
	url = s.repo(t, "r", map[string]string{"Dockerfile": "FROM a\n"}, nil)
	head, err := p.Head(context.Background(), image.Git{URL: url}, nil)
	if err != nil || len(head) != 40 {
		t.Fatalf("Head = %q, %v", head, err)
	}
}

// The child's last words under its address-space limit, as the Go runtime
// says them: out of memory, or no stack for a new thread (seen under load:
// the fetch then failed "internal" instead of saying what to raise).
func TestOutOfMemory(t *testing.T) {
	for _, c := range []struct {
		stderr string
		want   bool
	}{
		{"fatal error: out of memory\n\ngoroutine 1 [running]:\n", true},
		{"runtime: out of memory: cannot allocate 4194304-byte block (3 in use)\nfatal error: out of memory\n", true},
		{"runtime/cgo: pthread_create failed: Resource temporarily unavailable\nSIGABRT: abort\nPC=0x7fe23a820eec m=0\n", true},
		{"runtime: failed to create new OS thread (have 5 already; errno=11)\nruntime: may need to increase max user processes (ulimit -u)\nfatal error: newosproc\n", true},
		{"panic: runtime error: index out of range [3] with length 3\n", false},
		{"fatal error: all goroutines are asleep - deadlock!\n", false},
		{"", false},
	} {
		if got := outOfMemory(c.stderr); got != c.want {
			t.Errorf("outOfMemory(%q) = %v, want %v", c.stderr, got, c.want)
		}
	}
}
