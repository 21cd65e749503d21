package server_test

import (
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
