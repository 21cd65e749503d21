package gitctx

import (
	"context"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/plumbing/object"

	"github.com/slipway-dev/slipway/pkg/gitctx/gittest"
	"github.com/slipway-dev/slipway/pkg/image"
)

const (
	user       = "builder"
	goodToken  = "ghp_GOODtoken0123456789abcdefghijklmnop"
	wrongToken = "ghp_WRONGtoken9876543210zyxwvutsrqpon"
)

// env is two fixture repositories served by git daemon and, behind basic
// auth, by git http-backend: "repo" refuses to serve unadvertised commits by
// SHA, "reachable" allows it (uploadpack.allowReachableSHA1InWant).
type env struct {
	root              string
	repo, reachable   *gittest.Fixture
	gitBase, httpBase string
	caPEM             []byte
}

func newEnv(t *testing.T) *env {
	t.Helper()
	start := time.Now()
	e := &env{root: t.TempDir()}
	e.repo = gittest.NewFixture(t, filepath.Join(e.root, "repo"))
	e.reachable = gittest.NewFixture(t, filepath.Join(e.root, "reachable"))
	e.reachable.AllowReachableSHA1InWant()
	e.gitBase = gittest.ServeGit(t, e.root)
	e.httpBase, e.caPEM = gittest.ServeHTTPS(t, e.root, user, goodToken)
	t.Logf("fixtures and servers ready in %v", time.Since(start).Round(time.Millisecond))
	return e
}

// via is a way to reach the fixtures.
type via struct {
	name string
	base string
	auth *Auth
}

func (e *env) transports() []via {
	return []via{
		{"git", e.gitBase, nil},
		{"https", e.httpBase, &Auth{Username: user, Token: goodToken}},
	}
}

func (e *env) fetcher() *Fetcher { return &Fetcher{CABundle: e.caPEM, Timeout: time.Minute} }

func TestFetchRefs(t *testing.T) {
	e := newEnv(t)
	r, rr := e.repo, e.reachable
	cases := []struct {
		name    string
		repo    string
		ref     string
		want    string // commit
		app     string // content of gittest.AppFile
		commits int    // commit objects fetched: 1 when shallow
	}{
		{"default branch", "repo", "", r.Third, "third\n", 1},
		{"branch main", "repo", "main", r.Third, "third\n", 1},
		{"branch dev", "repo", "dev", r.Dev, "dev\n", 1},
		{"full ref name", "repo", "refs/heads/dev", r.Dev, "dev\n", 1},
		{"annotated tag", "repo", "v1.0", r.Second, "second\n", 1},
		{"SHA of a branch tip", "repo", r.Dev, r.Dev, "dev\n", 1},
		{"SHA of a tag's commit", "repo", r.Second, r.Second, "second\n", 1},
		{"SHA, server refuses it in want: full clone", "repo", r.First, r.First, "first\n", 4},
		{"SHA, server allows reachable SHA in want: shallow", "reachable", rr.First, rr.First, "first\n", 1},
		{"upper-case SHA", "reachable", strings.ToUpper(rr.First), rr.First, "first\n", 1},
		{"short SHA: full clone", "repo", r.First[:7], r.First, "first\n", 4},
		{"short SHA, 39 digits", "reachable", rr.First[:39], rr.First, "first\n", 4},
	}
	for _, tr := range e.transports() {
		for _, c := range cases {
			t.Run(tr.name+"/"+c.name, func(t *testing.T) {
				g := image.Git{URL: tr.base + c.repo, Ref: c.ref}
				start := time.Now()
				dest := t.TempDir()
				commit, dir, err := e.fetcher().Fetch(context.Background(), g, tr.auth, dest)
				if err != nil {
					t.Fatalf("Fetch: %v", err)
				}
				elapsed := time.Since(start)
				if commit != c.want {
					t.Errorf("commit = %s, want %s", commit, c.want)
				}
				if want, _ := filepath.EvalSymlinks(dest); dir != want {
					t.Errorf("context dir = %s, want %s", dir, want)
				}
				if got := readFile(t, filepath.Join(dir, gittest.AppFile)); got != c.app {
					t.Errorf("%s = %q, want %q", gittest.AppFile, got, c.app)
				}
				if target, err := os.Readlink(filepath.Join(dir, "escape")); err != nil || target != "/etc" {
					t.Errorf("escape: symlink to %q, %v; want /etc", target, err)
				}
				if _, err := os.Lstat(filepath.Join(dest, ".git")); !errors.Is(err, fs.ErrNotExist) {
					t.Errorf("dest has a .git (%v)", err)
				}

				// Again, keeping the repository, to see what was fetched.
				repo, hash, err := e.fetcher().checkout(context.Background(), g, tr.auth, t.TempDir(), t.TempDir())
				if err != nil {
					t.Fatalf("checkout: %v", err)
				}
				if hash.String() != c.want {
					t.Errorf("checkout: commit = %s, want %s", hash, c.want)
				}
				if n := countCommits(t, repo); n != c.commits {
					t.Errorf("fetched %d commits, want %d", n, c.commits)
				}
				shallow, err := repo.Storer.Shallow()
				if err != nil {
					t.Fatal(err)
				}
				if isShallow := len(shallow) > 0; isShallow != (c.commits == 1) {
					t.Errorf("shallow = %v (%v), want %v", isShallow, shallow, c.commits == 1)
				}
				t.Logf("fetched %s in %v", commit[:12], elapsed.Round(time.Millisecond))
			})
		}
	}
}

func TestFetchDir(t *testing.T) {
	e := newEnv(t)
	url := e.gitBase + "repo"
	for _, dir := range []string{"docker", "./docker/", "docker/../docker"} {
		t.Run(dir, func(t *testing.T) {
			dest := t.TempDir()
			commit, got, err := e.fetcher().Fetch(context.Background(), image.Git{URL: url, Ref: "v1.0", Dir: dir}, nil, dest)
			if err != nil {
				t.Fatalf("Fetch: %v", err)
			}
			if commit != e.repo.Second {
				t.Errorf("commit = %s, want v1.0's %s", commit, e.repo.Second)
			}
			root, _ := filepath.EvalSymlinks(dest)
			if want := filepath.Join(root, "docker"); got != want {
				t.Errorf("context dir = %s, want %s", got, want)
			}
			if s := readFile(t, filepath.Join(got, "Dockerfile")); s != gittest.DockerDockerfile {
				t.Errorf("Dockerfile = %q, want %q", s, gittest.DockerDockerfile)
			}
			if s := readFile(t, filepath.Join(got, "app.txt")); s != "second\n" {
				t.Errorf("app.txt = %q, want second", s)
			}
			// Sparse: only the image's folder is checked out.
			for _, other := range []string{"README.md", "Dockerfile"} {
				if _, err := os.Lstat(filepath.Join(root, other)); !errors.Is(err, os.ErrNotExist) {
					t.Errorf("%s, outside the image's folder, was checked out: %v", other, err)
				}
			}
		})
	}

	refused := []struct{ dir, want string }{
		{"missing", `directory "missing" not found in the repository at commit ` + e.repo.Third},
		{"README.md", `"README.md" in the repository at commit ` + e.repo.Third + ` is not a directory`},
		{"escape", `directory "escape" leaves the repository (symlink)`},
		// Checked out sparsely, escape/ssl is nothing: the symlink
		// escape is not under it, so it is never written.
		{"escape/ssl", `directory "escape/ssl" not found in the repository`},
		{"../outside", `leaves the repository`},
		{"/etc", `must be relative to the repository root`},
	}
	for _, c := range refused {
		t.Run("refused "+c.dir, func(t *testing.T) {
			_, _, err := e.fetcher().Fetch(context.Background(), image.Git{URL: url, Dir: c.dir}, nil, t.TempDir())
			wantGitErr(t, err, c.want)
		})
	}
}

func TestFetchPrivateHTTPS(t *testing.T) {
	e := newEnv(t)
	url := e.httpBase + "repo"
	good := &Auth{Username: user, Token: goodToken}
	var errs []error

	t.Run("right token", func(t *testing.T) {
		dest := t.TempDir()
		commit, _, err := e.fetcher().Fetch(context.Background(), image.Git{URL: url, Ref: "dev"}, good, dest)
		if err != nil {
			t.Fatalf("Fetch: %v", err)
		}
		if commit != e.repo.Dev {
			t.Errorf("commit = %s, want %s", commit, e.repo.Dev)
		}
		// The token is kept nowhere in the build context.
		err = filepath.WalkDir(dest, func(p string, d fs.DirEntry, err error) error {
			if err != nil || !d.Type().IsRegular() {
				return err
			}
			if b, err := os.ReadFile(p); err != nil || strings.Contains(string(b), goodToken) {
				t.Errorf("%s holds the token (%v)", p, err)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	})

	t.Run("default username", func(t *testing.T) {
		base, ca := gittest.ServeHTTPS(t, e.root, "git", goodToken)
		f := &Fetcher{CABundle: ca}
		commit, _, err := f.Fetch(context.Background(), image.Git{URL: base + "repo"}, &Auth{Token: goodToken}, t.TempDir())
		if err != nil || commit != e.repo.Third {
			t.Errorf("Fetch = %s, %v; want %s", commit, err, e.repo.Third)
		}
	})

	cases := []struct {
		name string
		g    image.Git
		auth *Auth
		want string
	}{
		{"no credential", image.Git{URL: url}, nil,
			"authentication required for " + url + ": store a git credential and name it in the context"},
		{"wrong token", image.Git{URL: url}, &Auth{Username: user, Token: wrongToken},
			"authentication failed for " + url},
		{"right token, wrong username", image.Git{URL: url}, &Auth{Username: "someone", Token: goodToken},
			"authentication failed for " + url},
		{"right token, unknown repository", image.Git{URL: e.httpBase + "nope"}, good,
			"repository " + e.httpBase + "nope not found, or the credential cannot read it"},
		{"right token, unknown ref", image.Git{URL: url, Ref: "v9"}, good,
			`ref "v9" is neither a branch nor a tag of ` + url},
		{"right token, unknown commit", image.Git{URL: url, Ref: strings.Repeat("ab", 20)}, good,
			"commit " + strings.Repeat("ab", 20) + " not found in " + url},
		{"right token, missing dir", image.Git{URL: url, Dir: "nope"}, good,
			`directory "nope" not found`},
		{"wrong token, ssh URL", image.Git{URL: "ssh://git@127.0.0.1/repo"}, &Auth{Token: wrongToken},
			"ssh keys are not supported yet"},
		{"untrusted certificate", image.Git{URL: url}, good, "certificate"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := e.fetcher()
			if c.name == "untrusted certificate" {
				f.CABundle = nil
			}
			_, _, err := f.Fetch(context.Background(), c.g, c.auth, t.TempDir())
			wantGitErr(t, err, c.want)
			errs = append(errs, err)
		})
	}

	t.Run("no token in any error", func(t *testing.T) {
		if len(errs) != len(cases) {
			t.Fatalf("%d errors collected, want %d", len(errs), len(cases))
		}
		for _, err := range errs {
			for e := err; e != nil; e = errors.Unwrap(e) {
				if msg := e.Error(); strings.Contains(msg, goodToken) || strings.Contains(msg, wrongToken) {
					t.Errorf("error reveals a token: %s", msg)
				}
			}
		}
	})
}

// TestRedaction shows that a token a server echoes, which go-git puts in its
// errors (here a malformed ref advertisement), is removed from the error.
func TestRedaction(t *testing.T) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, token, _ := r.BasicAuth()
		w.Header().Set("Content-Type", "application/x-git-upload-pack-advertisement")
		line := "your token is " + token + "\n"
		fmt.Fprintf(w, "%04x%s", len(line)+4, line)
	}))
	defer srv.Close()
	f := &Fetcher{CABundle: pemOf(srv)}
	_, _, err := f.Fetch(context.Background(), image.Git{URL: srv.URL + "/repo"}, &Auth{Token: goodToken}, t.TempDir())
	wantGitErr(t, err, "your token is [redacted]")
	if strings.Contains(err.Error(), goodToken) {
		t.Errorf("error reveals the token: %v", err)
	}
}

func TestFetchErrors(t *testing.T) {
	e := newEnv(t)
	url := e.gitBase + "repo"
	gittest.NewRepo(t, filepath.Join(e.root, "empty"))
	cases := []struct {
		name string
		g    image.Git
		want string
	}{
		{"unknown ref", image.Git{URL: url, Ref: "v9"}, `ref "v9" is neither a branch nor a tag of ` + url},
		{"too short a SHA", image.Git{URL: url, Ref: e.repo.First[:6]}, `is neither a branch nor a tag`},
		{"unknown full SHA", image.Git{URL: url, Ref: strings.Repeat("0123456789", 4)},
			"commit " + strings.Repeat("0123456789", 4) + " not found in " + url},
		{"unknown full SHA, reachable allowed", image.Git{URL: e.gitBase + "reachable", Ref: strings.Repeat("0123456789", 4)},
			"commit " + strings.Repeat("0123456789", 4) + " not found in " + e.gitBase + "reachable"},
		{"unknown short SHA", image.Git{URL: url, Ref: "abcdef0"}, "commit abcdef0 not found in " + url},
		{"unknown repository", image.Git{URL: e.gitBase + "nope"}, "repository " + e.gitBase + "nope not found"},
		{"unknown repository, https", image.Git{URL: e.httpBase + "nope"}, "authentication required for " + e.httpBase + "nope"},
		{"empty repository", image.Git{URL: e.gitBase + "empty"}, "repository " + e.gitBase + "empty is empty"},
		{"nobody listening", image.Git{URL: "git://127.0.0.1:1/repo"}, "fetching git://127.0.0.1:1/repo: "},
		{"ssh", image.Git{URL: "git@example.com:org/repo.git"}, "ssh keys are not supported yet"},
		{"http", image.Git{URL: "http://127.0.0.1/repo"}, `scheme "http" of http://127.0.0.1/repo is not supported`},
		{"file URL", image.Git{URL: "file://" + filepath.Join(e.root, "repo")}, "file:// URLs are not allowed"},
		{"local path", image.Git{URL: filepath.Join(e.root, "repo")}, "file:// URLs are not allowed"},
		{"password in URL", image.Git{URL: "https://user:" + goodToken + "@127.0.0.1/repo"}, "must not embed a password"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			start := time.Now()
			_, _, err := e.fetcher().Fetch(context.Background(), c.g, nil, t.TempDir())
			wantGitErr(t, err, c.want)
			if strings.Contains(err.Error(), goodToken) {
				t.Errorf("error reveals a token: %v", err)
			}
			t.Logf("failed in %v: %v", time.Since(start).Round(time.Millisecond), err)
		})
	}

	t.Run("file URL allowed", func(t *testing.T) {
		f := e.fetcher()
		f.AllowFile = true
		commit, _, err := f.Fetch(context.Background(), image.Git{URL: "file://" + filepath.Join(e.root, "repo"), Ref: "dev"}, nil, t.TempDir())
		if err != nil || commit != e.repo.Dev {
			t.Errorf("Fetch = %s, %v; want %s", commit, err, e.repo.Dev)
		}
	})

	t.Run("destination missing: created", func(t *testing.T) {
		dest := filepath.Join(t.TempDir(), "work", "repo")
		commit, dir, err := e.fetcher().Fetch(context.Background(), image.Git{URL: url}, nil, dest)
		if err != nil || commit != e.repo.Third {
			t.Fatalf("Fetch = %s, %v; want %s", commit, err, e.repo.Third)
		}
		if s := readFile(t, filepath.Join(dir, gittest.AppFile)); s != "third\n" {
			t.Errorf("%s = %q, want third", gittest.AppFile, s)
		}
	})

	t.Run("destination not empty", func(t *testing.T) {
		dest := t.TempDir()
		if err := os.WriteFile(filepath.Join(dest, "x"), nil, 0o644); err != nil {
			t.Fatal(err)
		}
		_, _, err := e.fetcher().Fetch(context.Background(), image.Git{URL: url}, nil, dest)
		if err == nil || errors.Is(err, ErrGit) || !strings.Contains(err.Error(), "not empty") {
			t.Errorf("err = %v, want a platform error about a non-empty destination", err)
		}
	})
}

func TestFetchCancel(t *testing.T) {
	// Servers that accept connections and never answer.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		var held []net.Conn
		defer func() {
			for _, c := range held {
				c.Close()
			}
		}()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			held = append(held, c)
		}
	}()
	hang := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-r.Context().Done()
	}))
	defer hang.Close()

	urls := map[string]string{"git": "git://" + l.Addr().String() + "/repo", "https": hang.URL + "/repo"}
	for name, url := range urls {
		g := image.Git{URL: url}
		f := &Fetcher{CABundle: pemOf(hang)}

		t.Run(name+"/cancelled before", func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			wantPrompt(t, func() error { _, _, err := f.Fetch(ctx, g, nil, t.TempDir()); return err }, context.Canceled)
		})
		t.Run(name+"/cancelled during", func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			time.AfterFunc(200*time.Millisecond, cancel)
			wantPrompt(t, func() error { _, _, err := f.Fetch(ctx, g, nil, t.TempDir()); return err }, context.Canceled)
		})
		t.Run(name+"/deadline of the caller", func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
			defer cancel()
			wantPrompt(t, func() error { _, _, err := f.Fetch(ctx, g, nil, t.TempDir()); return err }, context.DeadlineExceeded)
		})
		t.Run(name+"/fetcher timeout", func(t *testing.T) {
			f := &Fetcher{CABundle: f.CABundle, Timeout: 200 * time.Millisecond}
			err := wantPrompt(t, func() error { _, _, err := f.Fetch(context.Background(), g, nil, t.TempDir()); return err }, ErrGit)
			if want := "fetching " + url + " took longer than 200ms"; err.Error() != want {
				t.Errorf("err = %q, want %q", err, want)
			}
		})
	}
}

func wantPrompt(t *testing.T, fetch func() error, want error) error {
	t.Helper()
	start := time.Now()
	err := fetch()
	elapsed := time.Since(start)
	if !errors.Is(err, want) {
		t.Errorf("err = %v, want %v", err, want)
	}
	if want != ErrGit && errors.Is(err, ErrGit) {
		t.Errorf("err = %v wraps ErrGit", err)
	}
	if elapsed > 2*time.Second {
		t.Errorf("returned after %v", elapsed)
	}
	t.Logf("returned after %v: %v", elapsed.Round(time.Millisecond), err)
	return err
}

func wantGitErr(t *testing.T, err error, want string) {
	t.Helper()
	if !errors.Is(err, ErrGit) {
		t.Fatalf("err = %v, want an ErrGit", err)
	}
	if !strings.Contains(err.Error(), want) {
		t.Errorf("err = %q, want it to contain %q", err, want)
	}
}

func countCommits(t *testing.T, repo *git.Repository) int {
	t.Helper()
	iter, err := repo.CommitObjects()
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	if err := iter.ForEach(func(*object.Commit) error { n++; return nil }); err != nil {
		t.Fatal(err)
	}
	return n
}

func readFile(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func pemOf(srv *httptest.Server) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
}

// A repository of a few kilobytes that checks out to a million files fails
// on the entry limit before a file is written, quickly and in little memory;
// a commit whose files add up to more than MaxBytes fails on that one.
func TestFetchLimits(t *testing.T) {
	root := t.TempDir()
	_, bomb := gittest.NewBomb(t, filepath.Join(root, "bomb"), 100, 3)
	big := gittest.NewRepo(t, filepath.Join(root, "big"))
	big.Commit(map[string]string{"Dockerfile": "FROM scratch\n", "blob": strings.Repeat("x", 64<<10)}, "big")
	base := gittest.ServeGit(t, root)

	f := &Fetcher{Timeout: time.Minute, MaxFiles: 10000, TempDir: t.TempDir()}
	for _, c := range []struct {
		repo     string
		maxBytes int64
		want     string
	}{
		{"bomb", 1 << 20, "commit " + bomb + " of " + base + "bomb has more than 10000 files and directories"},
		{"big", 32 << 10, "add up to more than 32768 bytes"},
	} {
		f.MaxBytes = c.maxBytes
		dest := filepath.Join(t.TempDir(), "ctx")
		start := time.Now()
		_, _, err := f.Fetch(context.Background(), image.Git{URL: base + c.repo}, nil, dest)
		if !errors.Is(err, ErrGit) || !strings.Contains(err.Error(), c.want) {
			t.Fatalf("%s: %v, want an ErrGit containing %q", c.repo, err, c.want)
		}
		if entries, _ := os.ReadDir(dest); len(entries) != 0 {
			t.Fatalf("%s: %d entries checked out", c.repo, len(entries))
		}
		t.Logf("%s refused in %v", c.repo, time.Since(start).Round(time.Millisecond))
	}
	if left, _ := os.ReadDir(f.TempDir); len(left) != 0 {
		t.Fatalf("metadata left in TempDir: %v", left)
	}
	// Within the limits the same fetcher checks the commit out.
	f.MaxBytes = 1 << 20
	if _, _, err := f.Fetch(context.Background(), image.Git{URL: base + "big"}, nil, filepath.Join(t.TempDir(), "ctx")); err != nil {
		t.Fatal(err)
	}
}

// The .dockerignore of the image's folder narrows the checkout: what it
// excludes is never written (exceptions with ! are kept, the Dockerfile and
// the .dockerignore always); modes and links are kept; outside the folder
// nothing is written.
func TestFetchDockerignore(t *testing.T) {
	root := t.TempDir()
	r := gittest.NewRepo(t, filepath.Join(root, "ign"))
	r.Symlink("app/link", "src/main.py")
	r.Commit(map[string]string{
		"app/Dockerfile":    "FROM scratch\nCOPY . /\n",
		"app/.dockerignore": "# generated data stays out\ndata/\n*.log\n!keep.log\nDockerfile\n.dockerignore\n",
		"app/src/main.py":   "print(1)\n",
		"app/run.sh":        "#!/bin/sh\n",
		"app/data/big.bin":  strings.Repeat("x", 1<<16),
		"app/x.log":         "noise\n",
		"app/keep.log":      "kept\n",
		"other/file":        "elsewhere\n",
		"Dockerfile":        "FROM scratch\n",
	}, "with a .dockerignore")
	r.Git("update-index", "--chmod=+x", "app/run.sh")
	r.Git("commit", "--quiet", "--message", "exec")
	url := gittest.ServeGit(t, root) + "ign"
	for _, dir := range []string{"app", ""} {
		t.Run("dir="+dir, func(t *testing.T) {
			dest := t.TempDir()
			_, got, err := (&Fetcher{Timeout: time.Minute}).Fetch(context.Background(), image.Git{URL: url, Dir: dir}, nil, dest)
			if err != nil {
				t.Fatal(err)
			}
			var files []string
			filepath.WalkDir(dest, func(p string, d fs.DirEntry, err error) error {
				if err == nil && !d.IsDir() {
					rel, _ := filepath.Rel(dest, p)
					files = append(files, rel)
				}
				return nil
			})
			want := []string{"app/.dockerignore", "app/Dockerfile", "app/keep.log", "app/link", "app/run.sh", "app/src/main.py"}
			if dir == "" {
				// The root has no .dockerignore: the whole tree.
				want = []string{"Dockerfile", "app/.dockerignore", "app/Dockerfile", "app/data/big.bin", "app/keep.log", "app/link", "app/run.sh", "app/src/main.py", "app/x.log", "other/file"}
			}
			if !slices.Equal(files, want) {
				t.Fatalf("checked out %v, want %v", files, want)
			}
			app := filepath.Join(dest, "app")
			if dir == "app" && got != mustEval(t, app) {
				t.Errorf("context dir %s, want %s", got, app)
			}
			if fi, err := os.Stat(filepath.Join(app, "run.sh")); err != nil || fi.Mode().Perm() != 0o755 {
				t.Errorf("run.sh: %v %v, want mode 0755", fi, err)
			}
			if l, err := os.Readlink(filepath.Join(app, "link")); err != nil || l != "src/main.py" {
				t.Errorf("link -> %q, %v", l, err)
			}
		})
	}
}

func mustEval(t *testing.T, p string) string {
	t.Helper()
	r, err := filepath.EvalSymlinks(p)
	if err != nil {
		t.Fatal(err)
	}
	return r
}
