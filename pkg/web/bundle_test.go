package web_test

import (
	"bytes"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/slipway-dev/slipway/pkg/web"
)

// srcDir is the page's source, from this package's directory.
const srcDir = "../../web"

// TestBundleIsCurrent rebuilds the page from web/ (npm ci, then build.mjs)
// in a temporary copy and compares it byte for byte with the bundle that is
// committed in assets/ and embedded in the binary. It fails, naming the fix,
// when they differ or when Node is missing: a stale bundle must not pass.
func TestBundleIsCurrent(t *testing.T) {
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatal("node is not installed, so the committed bundle cannot be checked against web/: install Node.js 20+ and npm (Debian: apt-get install nodejs npm)")
	}
	npm, err := exec.LookPath("npm")
	if err != nil {
		t.Fatal("npm is not installed, so the committed bundle cannot be checked against web/: install npm (Debian: apt-get install npm)")
	}

	// Copy the source without node_modules, so the check never depends on
	// (or disturbs) a developer's installed tree.
	work := t.TempDir()
	for _, name := range []string{".npmrc", "package.json", "package-lock.json", "build.mjs", "src"} {
		if err := copyTree(filepath.Join(srcDir, name), filepath.Join(work, name)); err != nil {
			t.Fatal(err)
		}
	}
	run := func(name string, args ...string) {
		t.Helper()
		start := time.Now()
		cmd := exec.Command(name, args...)
		cmd.Dir = work
		cmd.Env = append(os.Environ(), "NO_UPDATE_NOTIFIER=1", "npm_config_fund=false", "npm_config_audit=false")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%s %s: %v\n%s", filepath.Base(name), strings.Join(args, " "), err, out)
		}
		t.Logf("%s %s (%s)", filepath.Base(name), strings.Join(args, " "), time.Since(start).Round(time.Millisecond))
	}
	run(npm, "ci", "--no-audit", "--no-fund", "--loglevel=error")
	out := filepath.Join(work, "out")
	run(node, "build.mjs", out)

	built := readAll(t, os.DirFS(out))
	committed := readAll(t, web.Assets())
	stale := false
	for _, name := range union(built, committed) {
		b, inBuilt := built[name]
		c, inCommitted := committed[name]
		switch {
		case !inCommitted:
			t.Errorf("web/ builds %s, which is not committed in pkg/web/assets", name)
		case !inBuilt:
			t.Errorf("pkg/web/assets/%s is committed but web/ no longer builds it", name)
		case !bytes.Equal(b, c):
			t.Errorf("pkg/web/assets/%s differs from what web/ builds (%d bytes committed, %d built)", name, len(c), len(b))
		default:
			continue
		}
		stale = true
	}
	if stale {
		t.Error("the committed bundle is stale: run `make web-bundle` and commit pkg/web/assets")
	}
}

func readAll(t *testing.T, fsys fs.FS) map[string][]byte {
	t.Helper()
	files := map[string][]byte{}
	err := fs.WalkDir(fsys, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := fs.ReadFile(fsys, p)
		files[p] = b
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return files
}

func union(a, b map[string][]byte) []string {
	var names []string
	for n := range a {
		names = append(names, n)
	}
	for n := range b {
		if _, ok := a[n]; !ok {
			names = append(names, n)
		}
	}
	slices.Sort(names)
	return names
}

// copyTree copies a file or a directory tree.
func copyTree(src, dst string) error {
	return filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		target := filepath.Join(dst, rel)
		if d.IsDir() {
			return os.MkdirAll(target, 0o755)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
			return err
		}
		return os.WriteFile(target, b, 0o644)
	})
}
