package server_test

import (
	"context"
	"errors"
	"io/fs"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"

	"github.com/slipway-dev/slipway/events"
	"github.com/slipway-dev/slipway/pkg/registry"
	"github.com/slipway-dev/slipway/pkg/server"
)

// The registry's content follows the catalogue: deleted with its image or
// workspace, moved with a rename, collected once nothing references it.

// pullAs fetches ref from e's registry as subject, with every layer read.
func (e *env) pullAs(subject, ref string) (v1.Image, error) {
	r, err := name.ParseReference(ref)
	if err != nil {
		return nil, err
	}
	img, err := remote.Image(r, e.ts.RegistryAs(subject))
	if err != nil {
		return nil, err
	}
	layers, err := img.Layers()
	if err != nil {
		return nil, err
	}
	for _, l := range layers {
		rc, err := l.Compressed()
		if err != nil {
			return nil, err
		}
		rc.Close()
	}
	return img, nil
}

// mustPull pulls ref as subject or fails the test.
func (e *env) mustPull(subject, ref string) v1.Image {
	e.t.Helper()
	img, err := e.pullAs(subject, ref)
	if err != nil {
		e.t.Fatalf("pull %s as %s: %v", ref, subject, err)
	}
	return img
}

// mustNotResolve checks that ref is unknown to e's registry: a 404 with a
// distribution-spec code, not an error of another kind.
func (e *env) mustNotResolve(subject, ref string) {
	e.t.Helper()
	r, err := name.ParseReference(ref)
	if err != nil {
		e.t.Fatal(err)
	}
	_, err = remote.Head(r, e.ts.RegistryAs(subject))
	var te *transport.Error
	if err == nil {
		e.t.Fatalf("%s still resolves", ref)
	}
	if !errors.As(err, &te) || te.StatusCode != http.StatusNotFound {
		e.t.Fatalf("%s: %v, want 404", ref, err)
	}
}

// tags lists repo's tags in e's registry as subject (none when unknown).
func (e *env) tags(subject, repo string) []string {
	e.t.Helper()
	r, _ := name.NewRepository(e.srv.RegistryHost() + "/" + repo)
	tags, err := remote.List(r, e.ts.RegistryAs(subject))
	var te *transport.Error
	if errors.As(err, &te) && te.StatusCode == http.StatusNotFound {
		return nil
	}
	if err != nil {
		e.t.Fatalf("tags of %s: %v", repo, err)
	}
	return tags
}

// built builds a new image of ws1 from dockerfile and returns it built.
func (e *env) built(imageName, dockerfile string) image {
	e.t.Helper()
	img := e.newImage(localImage(imageName, dockerfile))
	n := e.startBuild(img.ID)
	if b := e.waitFor(img.ID, n, 2*time.Minute, ended); b.Status != "succeeded" {
		e.t.Fatalf("build of %s: %+v\n%s", imageName, b, e.buildLog(img.ID, n))
	}
	e.call("GET", "/api/v1/images/"+img.ID, "alice", nil, &img)
	if img.Reference == nil {
		e.t.Fatalf("%s built without a reference", imageName)
	}
	return img
}

// du is the bytes of regular files under dir.
func du(t *testing.T, dir string) int64 {
	t.Helper()
	var n int64
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() {
			fi, err := d.Info()
			if err != nil {
				return err
			}
			n += fi.Size()
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// blobFile is where the registry stores the blob of digest d.
func blobFile(e *env, d v1.Hash) string {
	return filepath.Join(e.cfg.DataDir, registry.Dir, "docker/registry/v2/blobs", d.Algorithm, d.Hex[:2], d.Hex, "data")
}

func layerDigests(t *testing.T, img v1.Image) []v1.Hash {
	t.Helper()
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	var ds []v1.Hash
	for _, l := range layers {
		d, err := l.Digest()
		if err != nil {
			t.Fatal(err)
		}
		ds = append(ds, d)
	}
	return ds
}

func exists(p string) bool { _, err := os.Stat(p); return err == nil }

// repoDir is where the registry keeps repository repo.
func repoDir(e *env, repo string) string {
	return filepath.Join(e.cfg.DataDir, registry.Dir, "docker/registry/v2/repositories", repo)
}

// hasContent reports whether the registry stores manifests for repo,
// whoever may pull them.
func hasContent(e *env, repo string) bool {
	return exists(filepath.Join(repoDir(e, repo), "_manifests"))
}

// plant leaves content in repo as a deletion that failed or a push that
// outlived its image would: pushed by the publisher to a library/
// repository (the one place a test may push to), then moved in storage.
// It returns the image and its reference by digest under repo.
func (e *env) plant(repo string) (v1.Image, string) {
	e.t.Helper()
	img := randomImage(e.t, 1024)
	via := "library/plant-" + strings.ReplaceAll(repo, "/", "-")
	if _, err := e.pushImage(via, img); err != nil {
		e.t.Fatalf("push %s: %v", via, err)
	}
	for _, d := range []string{"_manifests", "_layers"} {
		if err := os.MkdirAll(repoDir(e, repo), 0o755); err != nil {
			e.t.Fatal(err)
		}
		if err := os.Rename(filepath.Join(repoDir(e, via), d), filepath.Join(repoDir(e, repo), d)); err != nil {
			e.t.Fatal(err)
		}
	}
	dg, _ := img.Digest()
	return img, e.srv.RegistryHost() + "/" + repo + "@" + dg.String()
}

// TestRegistryFollowsTheCatalogue: a deleted image's tags, manifests and
// layer cache go from the registry, so that the next claimer of its name
// starts empty; a rename takes the content along and the image's
// reference names the new repository; garbage collection, never while a
// build pushes, reclaims the deleted image's blobs and keeps the others'.
func TestRegistryFollowsTheCatalogue(t *testing.T) {
	e := buildEnv(t, func(c *server.Config) { c.BuildCache = true; c.RegistryGCQuiet = 0 })
	e.announce(events.WorkspaceCreated, "ws2", "carol")
	host := e.srv.RegistryHost()

	// Two images: one to delete (with a 4 MB layer of its own), one to rename.
	gone := e.built("team/app", "FROM "+e.base()+"\nRUN head -c 4000000 /dev/urandom > /big\n")
	kept := e.newImage(localImage("team/other", "FROM "+e.base()+"\nRUN echo other > /other; sleep 2\n"))
	n := e.startBuild(kept.ID)
	e.waitFor(kept.ID, n, time.Minute, running)
	// While a build runs, the collection stays away.
	if err := e.srv.CollectRegistry(context.Background()); !errors.Is(err, registry.ErrBusy) {
		t.Fatalf("garbage collection while a build pushes: %v, want registry.ErrBusy", err)
	}
	// Nor may the image be renamed from under its build's push.
	e.callErr("PATCH", "/api/v1/images/"+kept.ID, "alice", map[string]any{"name": "team/early"}, 409, "build_active", "If-Match", "*")
	if b := e.waitFor(kept.ID, n, time.Minute, ended); b.Status != "succeeded" {
		t.Fatalf("build of team/other: %+v", b)
	}
	goneImg := e.mustPull("alice", *gone.Reference)
	if !hasContent(e, "slipway-cache/team/app") {
		t.Fatal("the layer cache of team/app is empty: the test needs one")
	}
	goneDigest := (*gone.Reference)[strings.Index(*gone.Reference, "@")+1:]

	// Rename: the content moves, the reference follows the name.
	var k image
	e.call("GET", "/api/v1/images/"+kept.ID, "alice", nil, &k)
	oldRef := *k.Reference
	res := e.call("PATCH", "/api/v1/images/"+kept.ID, "bob", map[string]any{"name": "team/renamed"}, &k, "If-Match", "*")
	if res.StatusCode != 200 || k.Reference == nil || !strings.HasPrefix(*k.Reference, host+"/team/renamed@sha256:") {
		t.Fatalf("rename: %d %+v", res.StatusCode, k.Reference)
	}
	if got := files(t, e.mustPull("bob", *k.Reference))["/other"]; got != "other\n" {
		t.Fatalf("/other of the renamed image = %q", got)
	}
	e.mustPull("bob", host+"/team/renamed:latest")
	if hasContent(e, "team/other") {
		t.Fatal("the old name keeps content after the rename")
	}
	e.call("POST", "/api/v1/workspaces/ws2/images", "carol", localImage("team/other", "FROM busybox\n"), nil)
	e.mustNotResolve("carol", oldRef)
	e.mustNotResolve("carol", host+"/team/other:latest")
	var usable struct{ Images []image }
	e.call("GET", "/api/v1/workspaces/ws1/images?usable=true", "bob", nil, &usable)
	for _, u := range usable.Images {
		if u.Name == "team/renamed" && *u.Reference != *k.Reference {
			t.Fatalf("the picker offers %s, the image says %s", *u.Reference, *k.Reference)
		}
	}
	keptImg := e.mustPull("bob", *k.Reference)

	// Delete: nothing of team/app resolves, by tag or by digest, even once
	// another workspace has claimed the name.
	before := du(t, filepath.Join(e.cfg.DataDir, registry.Dir))
	res = e.call("DELETE", "/api/v1/images/"+gone.ID, "alice", nil, nil)
	want(t, res, 204, "")
	var claimed image
	if res := e.call("POST", "/api/v1/workspaces/ws2/images", "carol", localImage("team/app", "FROM busybox\n"), &claimed); res.StatusCode != 201 {
		t.Fatalf("claiming the freed name: %d", res.StatusCode)
	}
	e.mustNotResolve("carol", host+"/team/app:latest")
	e.mustNotResolve("carol", host+"/team/app@"+goneDigest)
	if tags := e.tags("carol", "team/app"); len(tags) != 0 {
		t.Fatalf("team/app's tags after its deletion: %v", tags)
	}
	if hasContent(e, "team/app") || hasContent(e, "slipway-cache/team/app") {
		t.Fatal("team/app or its layer cache keeps manifests after its deletion")
	}

	// Collection: the deleted image's own blobs go, shared and other
	// images' blobs stay and still pull.
	goneLayers, keptLayers := layerDigests(t, goneImg), layerDigests(t, keptImg)
	unique := goneLayers[len(goneLayers)-1]
	if !exists(blobFile(e, unique)) {
		t.Fatalf("no blob file for %s", unique)
	}
	if err := e.srv.CollectRegistry(context.Background()); err != nil {
		t.Fatal(err)
	}
	after := du(t, filepath.Join(e.cfg.DataDir, registry.Dir))
	t.Logf("registry storage: %d bytes before deleting team/app and collecting, %d after", before, after)
	if before-after < 4_000_000 {
		t.Fatalf("collection reclaimed %d bytes, want at least the 4 MB layer of the deleted image", before-after)
	}
	if exists(blobFile(e, unique)) {
		t.Fatalf("the deleted image's layer %s survived the collection", unique)
	}
	for _, d := range keptLayers {
		if !exists(blobFile(e, d)) {
			t.Fatalf("the collection took layer %s of team/renamed", d)
		}
	}
	if got := files(t, e.mustPull("bob", *k.Reference))["/other"]; got != "other\n" {
		t.Fatalf("/other after the collection = %q", got)
	}
	e.mustPull("alice", e.base())
	// The base, shared by both, is still there to build from.
	b := e.startBuild(kept.ID)
	if got := e.waitFor(kept.ID, b, time.Minute, ended); got.Status != "succeeded" {
		t.Fatalf("rebuild after the collection: %+v\n%s", got, e.buildLog(kept.ID, b))
	}
}

// TestDeletedWorkspaceLeavesNothingPullable: the platform deletes a
// workspace; its images' content goes with it.
func TestDeletedWorkspaceLeavesNothingPullable(t *testing.T) {
	e := buildEnv(t, func(c *server.Config) { c.RegistryGCQuiet = 0 })
	e.announce(events.WorkspaceCreated, "ws2", "carol")
	host := e.srv.RegistryHost()
	img := e.built("team/ws-img", "FROM "+e.base()+"\nRUN echo mine > /mine\n")
	e.mustPull("alice", *img.Reference)
	e.announce(events.WorkspaceDeleted, "ws1", "alice")
	if res := e.call("POST", "/api/v1/workspaces/ws2/images", "carol", localImage("team/ws-img", "FROM busybox\n"), nil); res.StatusCode != 201 {
		t.Fatalf("claiming the freed name: %d", res.StatusCode)
	}
	e.mustNotResolve("carol", *img.Reference)
	e.mustNotResolve("carol", host+"/team/ws-img:latest")
}

// TestClaimPurgesLeftovers: content left under a free name (a deletion
// that failed after the registry answered, a push that outlived its
// image) is gone once an image claims the name, by create or by rename.
func TestClaimPurgesLeftovers(t *testing.T) {
	e := start(t, server.Config{})
	e.announce(events.WorkspaceCreated, "ws1", "alice")
	host := e.srv.RegistryHost()
	_, left := e.plant("team/leftover")
	e.plant("slipway-cache/team/leftover")
	e.create("ws1", "alice", "team/leftover")
	e.mustNotResolve("alice", left)
	e.mustNotResolve("alice", host+"/team/leftover:latest")
	if hasContent(e, "team/leftover") || hasContent(e, "slipway-cache/team/leftover") {
		t.Fatal("leftovers survived the claim")
	}

	// A rename onto a name with leftovers replaces them.
	_, left = e.plant("team/target")
	e.plant("team/target/nested")
	img, _ := e.create("ws1", "alice", "team/source")
	res := e.call("PATCH", "/api/v1/images/"+img.ID, "alice", map[string]any{"name": "team/target"}, nil, "If-Match", "*")
	want(t, res, 200, "")
	e.mustNotResolve("alice", left)
	// Repositories nested under a name are other images' and stay.
	if !hasContent(e, "team/target/nested") {
		t.Fatal("claiming team/target emptied team/target/nested")
	}
}

// TestFailedContentDeletionKeepsTheName: when the registry content of an
// image cannot be removed (here its repository is a read-only mount), the
// deletion fails with 500 and changes nothing visible: the image stays,
// its name stays taken, and nobody else can claim what it still serves.
func TestFailedContentDeletionKeepsTheName(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("a read-only bind mount needs root")
	}
	e := start(t, server.Config{})
	e.announce(events.WorkspaceCreated, "ws1", "alice")
	e.announce(events.WorkspaceCreated, "ws2", "carol")
	img, _ := e.create("ws1", "alice", "team/stuck")
	_, ref := e.plant("team/stuck")
	dir := repoDir(e, "team/stuck")
	for _, args := range [][]string{{"--bind", dir, dir}, {"-o", "remount,bind,ro", dir}} {
		if out, err := exec.Command("mount", args...).CombinedOutput(); err != nil {
			t.Fatalf("mount %v: %v: %s", args, err, out)
		}
	}
	t.Cleanup(func() { exec.Command("umount", dir).Run() })
	e.callErr("DELETE", "/api/v1/images/"+img.ID, "alice", nil, 500, "internal")
	var got image
	if res := e.call("GET", "/api/v1/images/"+img.ID, "alice", nil, &got); res.StatusCode != 200 || got.Name != "team/stuck" {
		t.Fatalf("the image after a failed deletion: %d %+v", res.StatusCode, got)
	}
	e.callErr("POST", "/api/v1/workspaces/ws2/images", "carol", localImage("team/stuck", "FROM busybox\n"), 409, "name_taken")
	e.mustPull("alice", ref)
	if !strings.Contains(e.logs.String(), "deleting the registry content of team/stuck") {
		t.Fatalf("the failure is not in the server log:\n%s", e.logs.String())
	}
	// Once the registry can be written again, the deletion goes through.
	if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
		t.Fatalf("umount: %v: %s", err, out)
	}
	want(t, e.call("DELETE", "/api/v1/images/"+img.ID, "alice", nil, nil), 204, "")
	if hasContent(e, "team/stuck") {
		t.Fatal("team/stuck keeps manifests after its deletion")
	}
}
