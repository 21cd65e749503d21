package server_test

import (
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/slipway-dev/slipway/pkg/gitctx/gittest"
)

// Build contexts a hostile member may save: Dockerfiles that once panicked
// the server, Git repositories whose Dockerfile leads outside the tree, and
// repositories that expand far beyond their size.

// linterComment is a Dockerfile with a BuildKit linter directive below its
// first line: BuildKit accepts it; it once panicked Slipway's validation.
const linterComment = "# check=skip=all\nRUN echo checked > /checked\n"

// gitRepo serves a repository holding files (and symlinks: name -> target)
// on loopback with git daemon and returns its URL.
func gitRepo(t *testing.T, files map[string]string, symlinks map[string]string) string {
	t.Helper()
	root := t.TempDir()
	r := gittest.NewRepo(t, filepath.Join(root, "repo.git"))
	for name, target := range symlinks {
		r.Symlink(name, target)
	}
	r.Commit(files, "the context")
	return strings.TrimSuffix(gittest.ServeGit(t, root), "/") + "/repo.git"
}

// pullAs fetches an image from e's registry as subject.
func pullAs(t *testing.T, e *env, subject, ref string) v1.Image {
	t.Helper()
	r, err := name.ParseReference(ref)
	if err != nil {
		t.Fatal(err)
	}
	img, err := remote.Image(r, e.ts.RegistryAs(subject))
	if err != nil {
		t.Fatalf("pull %s: %v", ref, err)
	}
	return img
}

func gitContext(name, url string) map[string]any {
	return map[string]any{"name": name, "context": map[string]any{"type": "git", "git": map[string]any{"url": url}}}
}

func TestLinterCommentAtSave(t *testing.T) {
	e := start(t, serverConfig(t))
	e.announce("platform.workspace.created", "ws1", "alice")
	for _, df := range []string{
		"FROM busybox\n" + linterComment,
		"# syntax=docker/dockerfile:1\n# check=error=true\nFROM busybox\n# check=skip=all\nRUN true\n",
	} {
		var img image
		res := e.call("POST", "/api/v1/workspaces/ws1/images", "alice", localImage("team/linted", df), &img)
		if res.StatusCode != 201 || img.Context.Dockerfile != df {
			t.Fatalf("saving %q: %d %+v", df, res.StatusCode, img)
		}
		want(t, e.call("DELETE", "/api/v1/images/"+img.ID, "alice", nil, nil), 204, "")
	}
}

func TestLinterCommentInBuilds(t *testing.T) {
	e := buildEnv(t, nil)
	df := "FROM " + e.base() + "\n" + linterComment
	url := gitRepo(t, map[string]string{"Dockerfile": df}, nil)
	for _, def := range []map[string]any{gitContext("team/linted-git", url), localImage("team/linted-local", df)} {
		img := e.newImage(def)
		b := e.waitFor(img.ID, e.startBuild(img.ID), 2*time.Minute, ended)
		if b.Status != "succeeded" {
			t.Fatalf("build of %s: %+v %+v\n%s", def["name"], b, b.Failure, e.buildLog(img.ID, 1))
		}
		if got := files(t, pullAs(t, e, "alice", *b.Reference))["/checked"]; got != "checked\n" {
			t.Fatalf("%s: /checked = %q", def["name"], got)
		}
	}
}

// A Dockerfile that is a symlink to a host file, the server's environment or
// /dev/zero fails the build with reason dockerfile: nothing of the file
// reaches the build record, its log, the API or the server's log, and the
// server stays up.
func TestSymlinkedDockerfile(t *testing.T) {
	const secret = "slipway-canary-7f3a9c:$6$not-for-members"
	host := filepath.Join(t.TempDir(), "host-secret")
	if err := os.WriteFile(host, []byte(secret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("SLIPWAY_TEST_CANARY", "environ-canary-51d2e8") // in the server's /proc/self/environ
	shadow, _ := os.ReadFile("/etc/shadow")
	shadowLine, _, _ := strings.Cut(string(shadow), "\n")

	e := buildEnv(t, nil)
	url := gitRepo(t, map[string]string{"README": "x"}, map[string]string{
		"host/Dockerfile": host, "shadow/Dockerfile": "/etc/shadow",
		"environ/Dockerfile": "/proc/self/environ", "zero/Dockerfile": "/dev/zero",
	})
	var ids []string
	for _, dir := range []string{"host", "shadow", "environ", "zero"} {
		img := e.newImage(map[string]any{"name": "team/link-" + dir, "context": map[string]any{"type": "git",
			"git": map[string]any{"url": url, "dir": dir}}})
		ids = append(ids, img.ID)
		b := e.waitFor(img.ID, e.startBuild(img.ID), time.Minute, ended)
		if b.Status != "failed" || b.Failure == nil || b.Failure.Reason != "dockerfile" ||
			!strings.Contains(b.Failure.Message, "symlink that leads outside the build context") {
			t.Fatalf("%s: %+v %+v\n%s", dir, b, b.Failure, e.buildLog(img.ID, 1))
		}
	}
	for _, s := range []string{secret, "not-for-members", "environ-canary-51d2e8", shadowLine} {
		if s != "" {
			assertNoSecret(t, e, s, ids...)
		}
	}
	if res, err := http.Get(e.baseURL + "/health/liveness"); err != nil || res.StatusCode != 200 {
		t.Fatalf("the server is not alive: %v", err)
	}
}

// rss is this process's resident set, in bytes: the in-process server's.
func rss(t *testing.T) int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			var kb int64
			fmt.Sscanf(strings.TrimSpace(v), "%d kB", &kb)
			return kb << 10
		}
	}
	t.Fatal("no VmRSS in /proc/self/status")
	return 0
}

// A repository of a few kilobytes that checks out to a million files fails
// its build with reason git under the default limits, the server's memory
// stays flat, and no build directory or temporary clone is left behind.
func TestGitBomb(t *testing.T) {
	root := t.TempDir()
	gittest.NewBomb(t, filepath.Join(root, "bomb.git"), 100, 3) // 100^3 files
	url := strings.TrimSuffix(gittest.ServeGit(t, root), "/") + "/bomb.git"
	tmpBefore, _ := filepath.Glob(filepath.Join(os.TempDir(), "slipway-git-*"))

	e := buildEnv(t, nil)
	img := e.newImage(gitContext("team/bomb", url))
	before := rss(t)
	peak := before
	stop := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		for {
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
				peak = max(peak, rss(t))
			}
		}
	}()
	start := time.Now()
	b := e.waitFor(img.ID, e.startBuild(img.ID), 2*time.Minute, ended)
	close(stop)
	<-sampled
	t.Logf("bomb refused in %v; server RSS %d MiB before, peak %d MiB", time.Since(start).Round(time.Millisecond), before>>20, peak>>20)
	if b.Status != "failed" || b.Failure == nil || b.Failure.Reason != "git" ||
		!strings.Contains(b.Failure.Message, "more than 100000 files and directories") {
		t.Fatalf("bomb build: %+v %+v\n%s", b, b.Failure, e.buildLog(img.ID, 1))
	}
	if grew := peak - before; grew > 100<<20 {
		t.Errorf("the server's memory grew by %d MiB during the bomb", grew>>20)
	}
	if left, _ := os.ReadDir(filepath.Join(e.cfg.DataDir, "builds")); len(left) != 0 {
		t.Errorf("left in builds/: %v", left)
	}
	if tmpAfter, _ := filepath.Glob(filepath.Join(os.TempDir(), "slipway-git-*")); len(tmpAfter) > len(tmpBefore) {
		t.Errorf("temporary clones left: %v", tmpAfter)
	}
	if res, err := http.Get(e.baseURL + "/health/liveness"); err != nil || res.StatusCode != 200 {
		t.Fatalf("the server is not alive: %v", err)
	}
}

// An image built from one folder of a large repository: the build gets that
// folder as its context, and only that folder, less what its .dockerignore
// excludes, is checked out on the host (seen in the data dir while the
// build runs).
func TestBuildFromOneFolderOfALargeRepository(t *testing.T) {
	e := buildEnv(t, nil)
	tree := map[string]string{}
	blob := make([]byte, 1<<20)
	for i := range 40 {
		for j := range blob {
			blob[j] = byte(i*31 + j*7 + j>>9) // distinct, poorly compressible per folder
		}
		tree[fmt.Sprintf("f%02d/data.bin", i)] = string(blob)
		tree[fmt.Sprintf("f%02d/Dockerfile", i)] = "FROM " + e.base() + "\nCOPY . /ctx\nRUN sleep 3 && ls /ctx > /listing\n"
	}
	tree["f07/app.py"] = "print('f07')\n"
	tree["f07/.dockerignore"] = "scratch/\n"
	tree["f07/scratch/notes.txt"] = "excluded by the .dockerignore\n"
	url := gitRepo(t, tree, nil)
	var img image
	def := map[string]any{"name": "team/one-folder", "context": map[string]any{"type": "git", "git": map[string]any{"url": url, "dir": "f07"}}}
	if res := e.call("POST", "/api/v1/workspaces/ws1/images", "alice", def, &img); res.StatusCode != 201 {
		t.Fatalf("create: %d", res.StatusCode)
	}
	n := e.startBuild(img.ID)
	// While the executor runs its 3 s RUN (the checkout is complete and
	// still there), it holds f07 alone, less what the .dockerignore excludes.
	repo := filepath.Join(e.cfg.DataDir, "builds", fmt.Sprintf("%s-%d", img.ID, n), "repo")
	for deadline := time.Now().Add(time.Minute); !strings.Contains(e.buildLog(img.ID, n), "sleep 3 && ls /ctx"); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) || ended(e.getBuild(img.ID, n)) {
			t.Fatalf("the RUN step never ran:\n%s", e.buildLog(img.ID, n))
		}
	}
	var seen []string
	entries, err := os.ReadDir(repo)
	for _, en := range entries {
		seen = append(seen, en.Name())
	}
	if err != nil || len(seen) != 1 || seen[0] != "f07" {
		t.Errorf("the checkout on the host holds %v (%v), want [f07] only", seen, err)
	}
	if _, err := os.Stat(filepath.Join(repo, "f07", "data.bin")); err != nil {
		t.Errorf("f07/data.bin is not checked out: %v", err)
	}
	if _, err := os.Lstat(filepath.Join(repo, "f07", "scratch")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("f07/scratch, excluded by the .dockerignore, was checked out: %v", err)
	}
	b := e.waitFor(img.ID, n, 2*time.Minute, ended)
	if b.Status != "succeeded" || b.Reference == nil || b.Commit == nil {
		t.Fatalf("build: %+v\n%s", b, e.buildLog(img.ID, n))
	}
	fs := files(t, e.pull("alice", *b.Reference))
	if fs["/listing"] != "Dockerfile\napp.py\ndata.bin\n" || fs["/ctx/data.bin"] != tree["f07/data.bin"] {
		t.Errorf("/listing in the image = %q, want the folder's three files; /ctx/data.bin %d bytes", fs["/listing"], len(fs["/ctx/data.bin"]))
	}
}
