package firestore_test

// Smoke tests: what the npm emulator (@firestore-emulator/server)
// implements, run one step after another. They also check the documents
// themselves (log chunk sizes, what a delete leaves behind), which the
// conformance suite cannot see.

import (
	"bytes"
	"errors"
	"fmt"
	"testing"
	"time"

	fs "cloud.google.com/go/firestore"

	"github.com/slipway-dev/slipway/pkg/build"
	"github.com/slipway-dev/slipway/pkg/image"
	"github.com/slipway-dev/slipway/pkg/store"
	"github.com/slipway-dev/slipway/pkg/store/firestore"
	"github.com/slipway-dev/slipway/pkg/store/storetest"
)

var t0 = time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)

func check(t *testing.T, what string, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

func wantErr(t *testing.T, what string, got, want error) {
	t.Helper()
	if !errors.Is(got, want) {
		t.Fatalf("%s: got error %v, want %v", what, got, want)
	}
}

func workspace(t *testing.T, s *firestore.Store, id string) {
	t.Helper()
	check(t, "ApplyWorkspace "+id, s.ApplyWorkspace(t.Context(), "create/"+id, store.Order{}, store.Workspace{ID: id, Owner: "alice"}, false))
}

func newImage(t *testing.T, s *firestore.Store, id, ws, name string) image.Image {
	t.Helper()
	img := storetest.NewImage(id, ws, name)
	check(t, "CreateImage "+name, s.CreateImage(t.Context(), img))
	return img
}

func newBuild(t *testing.T, s *firestore.Store, imageID string) build.Build {
	t.Helper()
	b, err := s.CreateBuild(t.Context(), build.New(imageID, 1, "alice", build.TriggerManual, t0))
	check(t, "CreateBuild "+imageID, err)
	return b
}

func cancel(t *testing.T, s *firestore.Store, b build.Build) {
	t.Helper()
	_, err := s.UpdateBuild(t.Context(), b.Image, b.Number, func(b *build.Build) error { return b.Cancel("alice", t0) })
	check(t, "cancel", err)
}

func succeed(t *testing.T, s *firestore.Store, b build.Build) build.Build {
	t.Helper()
	b, err := s.UpdateBuild(t.Context(), b.Image, b.Number, func(b *build.Build) error {
		if err := b.Start(t0.Add(time.Second)); err != nil {
			return err
		}
		return b.Succeed("sha256:abc", "127.0.0.1:5000/x@sha256:abc", nil, t0.Add(time.Minute))
	})
	check(t, "succeed", err)
	return b
}

// count returns how many documents q matches.
func count(t *testing.T, q fs.Query) int {
	t.Helper()
	snaps, err := q.Documents(t.Context()).GetAll()
	check(t, "query", err)
	return len(snaps)
}

// exists reports whether the document at path exists.
func exists(t *testing.T, raw *fs.Client, path string) bool {
	t.Helper()
	snaps, err := raw.GetAll(t.Context(), []*fs.DocumentRef{raw.Doc(path)})
	check(t, "get "+path, err)
	return snaps[0].Exists()
}

func TestSmokeWorkspaces(t *testing.T) {
	s, _ := open(t)
	ctx := t.Context()
	check(t, "apply", s.ApplyWorkspace(ctx, "src/1", store.Order{}, store.Workspace{ID: "ws1", Owner: "alice", Members: []string{"bob"}}, false))
	wantErr(t, "redelivered event", s.ApplyWorkspace(ctx, "src/1", store.Order{}, store.Workspace{ID: "ws1", Owner: "mallory"}, false), store.ErrDuplicate)
	got, err := s.GetWorkspace(ctx, "ws1")
	if err != nil || got.Owner != "alice" || fmt.Sprint(got.Members) != "[bob]" {
		t.Fatalf("GetWorkspace = %+v, %v; want alice with member bob", got, err)
	}
	check(t, "update", s.ApplyWorkspace(ctx, "src/2", store.Order{}, store.Workspace{ID: "ws1", Owner: "bob"}, false))
	if got, _ := s.GetWorkspace(ctx, "ws1"); got.Owner != "bob" || len(got.Members) != 0 {
		t.Fatalf("after update: %+v", got)
	}
	_, err = s.GetWorkspace(ctx, "nope")
	wantErr(t, "unknown workspace", err, store.ErrNotFound)
	_, err = s.GetWorkspace(ctx, "")
	wantErr(t, "empty id", err, store.ErrNotFound)
}

func TestSmokeImages(t *testing.T) {
	s, raw := open(t)
	ctx := t.Context()
	workspace(t, s, "ws1")
	workspace(t, s, "ws2")
	img := storetest.NewImage("img1", "ws1", "team/pytorch")
	img.Context = image.Context{Type: image.ContextGit, Git: &image.Git{URL: "https://example.com/r.git", Ref: "main", Credential: "gh"}}
	img.Destinations = []image.Destination{{Reference: "registry.example.com/team/pytorch:latest", Credential: "hub"}}
	img.Created.At = t0.Add(123456789 * time.Nanosecond)
	check(t, "create", s.CreateImage(ctx, img))
	got, err := s.GetImage(ctx, "img1")
	check(t, "get", err)
	if got.ID != "img1" || got.Name != img.Name || got.Workspace != "ws1" || got.Version != 1 || *got.Context.Git != *img.Context.Git ||
		fmt.Sprint(got.Destinations) != fmt.Sprint(img.Destinations) || !got.Created.At.Equal(img.Created.At) ||
		got.Built != nil || got.LatestBuild != nil || got.Status() != image.StatusNotBuilt {
		t.Fatalf("GetImage = %+v, want %+v", got, img)
	}
	if !exists(t, raw, "names/team%2Fpytorch") {
		t.Fatal("no name claim for team/pytorch")
	}
	_, err = s.GetImage(ctx, "nope")
	wantErr(t, "unknown image", err, store.ErrNotFound)
	wantErr(t, "same name, other workspace", s.CreateImage(ctx, storetest.NewImage("img2", "ws2", "team/pytorch")), store.ErrNameTaken)
	wantErr(t, "same id", s.CreateImage(ctx, storetest.NewImage("img1", "ws1", "team/other")), store.ErrNameTaken)

	// Versions.
	next := got
	next.Description = "changed"
	got.Edit(next, "bob", t0.Add(time.Minute))
	check(t, "update", s.UpdateImage(ctx, got, 1))
	stale := got
	stale.Version = 3
	wantErr(t, "stale update", s.UpdateImage(ctx, stale, 1), store.ErrConflict)
	wantErr(t, "update of a missing image", s.UpdateImage(ctx, storetest.NewImage("nope", "ws1", "team/z"), 1), store.ErrNotFound)
	// A description edit keeps history's modified stamp (see image.Edit).
	if got, _ := s.GetImage(ctx, "img1"); got.Version != 2 || got.Description != "changed" || got.Modified.By != "alice" {
		t.Fatalf("after update: %+v", got)
	}

	// Renames move the name claim.
	newImage(t, s, "img2", "ws1", "team/b")
	got, _ = s.GetImage(ctx, "img1")
	next = got
	next.Name = "team/b"
	mine := got
	mine.Edit(next, "alice", t0)
	wantErr(t, "rename onto a taken name", s.UpdateImage(ctx, mine, got.Version), store.ErrNameTaken)
	next.Name = "team/c"
	mine = got
	mine.Edit(next, "alice", t0)
	check(t, "rename", s.UpdateImage(ctx, mine, got.Version))
	if got, _ := s.GetImage(ctx, "img1"); got.Name != "team/c" || got.Version != 3 || got.DefinitionRev != 1 { // a rename is no definition change
		t.Fatalf("after rename: %+v", got)
	}
	if exists(t, raw, "names/team%2Fpytorch") || !exists(t, raw, "names/team%2Fc") {
		t.Fatal("rename did not move the name claim")
	}
	newImage(t, s, "img3", "ws2", "team/pytorch")
	wantErr(t, "the new name is taken", s.CreateImage(ctx, storetest.NewImage("img4", "ws2", "team/c")), store.ErrNameTaken)

	// An edit based on a read from before a build succeeded keeps the
	// build's result.
	before, _ := s.GetImage(ctx, "img1")
	b := succeed(t, s, newBuild(t, s, "img1"))
	next = before
	next.Description = "edited while building"
	edit := before
	edit.Edit(next, "alice", t0)
	check(t, "edit", s.UpdateImage(ctx, edit, before.Version))
	got, _ = s.GetImage(ctx, "img1")
	if got.Reference != *b.Reference || got.LatestBuild == nil || got.LatestBuild.Status != build.Succeeded || got.Description != "edited while building" {
		t.Fatalf("an edit undid a build's result: %+v", got)
	}
}

func TestSmokeListImages(t *testing.T) {
	s, _ := open(t)
	ctx := t.Context()
	workspace(t, s, "ws1")
	workspace(t, s, "ws2")
	for _, i := range []int{3, 0, 6, 1, 5, 2, 4} {
		newImage(t, s, fmt.Sprintf("img%d", i), "ws1", fmt.Sprintf("team/i%d", i))
	}
	newImage(t, s, "other", "ws2", "team/other")
	var names []string
	cursor := ""
	for pages := 0; ; pages++ {
		imgs, next, err := s.ListImages(ctx, "ws1", store.ImageFilter{}, store.Page{Limit: 3, Cursor: cursor})
		check(t, "list", err)
		for _, img := range imgs {
			names = append(names, img.Name)
		}
		if next == "" {
			break
		}
		if pages > 5 {
			t.Fatal("pagination does not end")
		}
		cursor = next
	}
	if fmt.Sprint(names) != "[team/i0 team/i1 team/i2 team/i3 team/i4 team/i5 team/i6]" {
		t.Fatalf("paged names = %v", names)
	}
	succeed(t, s, newBuild(t, s, "img3"))
	succeed(t, s, newBuild(t, s, "other"))
	imgs, next, err := s.ListImages(ctx, "ws1", store.ImageFilter{Usable: true}, store.Page{Limit: 10})
	if err != nil || next != "" || len(imgs) != 1 || imgs[0].ID != "img3" || imgs[0].Reference == "" {
		t.Fatalf("usable images = %+v, %q, %v", imgs, next, err)
	}
	_, _, err = s.ListImages(ctx, "ws1", store.ImageFilter{}, store.Page{Limit: 3, Cursor: "!!not a cursor"})
	wantErr(t, "bad cursor", err, store.ErrBadCursor)
	if imgs, _, err := s.ListImages(ctx, "nope", store.ImageFilter{}, store.Page{Limit: 3}); err != nil || len(imgs) != 0 {
		t.Fatalf("images of an unknown workspace = %+v, %v", imgs, err)
	}
}

func TestSmokeBuilds(t *testing.T) {
	s, raw := open(t)
	ctx := t.Context()
	workspace(t, s, "ws1")
	img := newImage(t, s, "img1", "ws1", "team/a")
	b1 := newBuild(t, s, "img1")
	if b1.Number != 1 || b1.Status != build.Queued || !exists(t, raw, "images/img1/active/build") {
		t.Fatalf("first build = %+v", b1)
	}
	_, err := s.CreateBuild(ctx, build.New("img1", 1, "alice", build.TriggerManual, t0))
	wantErr(t, "second build while one is queued", err, store.ErrBuildActive)
	cancel(t, s, b1)
	if exists(t, raw, "images/img1/active/build") {
		t.Fatal("the active marker outlived its build")
	}
	b2 := newBuild(t, s, "img1")
	if got, _ := s.GetImage(ctx, "img1"); b2.Number != 2 || got.LatestBuild == nil || got.LatestBuild.Number != 2 || got.LatestBuild.Status != build.Queued {
		t.Fatalf("second build %+v, image's latest %+v", b2, got.LatestBuild)
	}
	_, err = s.CreateBuild(ctx, build.New("nope", 1, "alice", build.TriggerManual, t0))
	wantErr(t, "build of a missing image", err, store.ErrNotFound)
	_, err = s.UpdateBuild(ctx, "img1", 1, func(b *build.Build) error { return b.Cancel("alice", t0) })
	wantErr(t, "cancel a cancelled build", err, build.ErrTransition)
	_, err = s.UpdateBuild(ctx, "img1", 1, func(b *build.Build) error { b.Status = build.Queued; return nil })
	wantErr(t, "an ended build made active", err, build.ErrTransition)
	_, err = s.UpdateBuild(ctx, "img1", 9, func(b *build.Build) error { return nil })
	wantErr(t, "update of an unknown build", err, store.ErrNotFound)

	// Success records on the image; the build keeps its definition revision.
	b2 = succeed(t, s, b2)
	got, _ := s.GetImage(ctx, "img1")
	if got.Status() != image.StatusBuilt || got.Reference != *b2.Reference || got.Built == nil || !got.Built.At.Equal(t0.Add(time.Minute)) ||
		got.Version != img.Version || got.LatestBuild.Status != build.Succeeded || got.LatestBuild.DefinitionRev != 1 {
		t.Fatalf("image after success = %+v", got)
	}
	if b, err := s.GetBuild(ctx, "img1", 2); err != nil || b.Status != build.Succeeded || b.DefinitionRev != 1 || !b.QueuedAt.Equal(b2.QueuedAt) || b.QueuedAt.Equal(t0) {
		t.Fatalf("GetBuild = %+v, %v", b, err)
	}
	// An error from the change aborts it.
	boom := errors.New("boom")
	_, err = s.UpdateBuild(ctx, "img1", 2, func(b *build.Build) error { b.Status = build.Failed; return boom })
	wantErr(t, "aborted change", err, boom)
	if b, _ := s.GetBuild(ctx, "img1", 2); b.Status != build.Succeeded {
		t.Fatalf("aborted change was written: %+v", b)
	}

	for range 3 {
		cancel(t, s, newBuild(t, s, "img1"))
	}
	var numbers []int
	cursor := ""
	for {
		bs, next, err := s.ListBuilds(ctx, "img1", store.Page{Limit: 2, Cursor: cursor})
		check(t, "list builds", err)
		for _, b := range bs {
			numbers = append(numbers, b.Number)
		}
		if next == "" {
			break
		}
		cursor = next
	}
	if fmt.Sprint(numbers) != "[5 4 3 2 1]" {
		t.Fatalf("build numbers = %v, want newest first", numbers)
	}
	_, _, err = s.ListBuilds(ctx, "img1", store.Page{Limit: 2, Cursor: "bm90IGEgbnVtYmVy"})
	wantErr(t, "cursor that is no number", err, store.ErrBadCursor)
	_, err = s.GetBuild(ctx, "img1", 9)
	wantErr(t, "unknown build", err, store.ErrNotFound)
}

func TestSmokeLogs(t *testing.T) {
	s, raw := open(t)
	ctx := t.Context()
	workspace(t, s, "ws1")
	newImage(t, s, "img1", "ws1", "team/a")
	b := newBuild(t, s, "img1")
	// 1.9 MiB in appends of several sizes, the largest over 1 MiB.
	var want []byte
	for i, n := range []int{700 << 10, 10, 1200 << 10, 3, 512 << 10} {
		p := bytes.Repeat([]byte{byte('a' + i)}, n)
		for j := 0; j < n; j += 4096 {
			p[j] = '\n'
		}
		want = append(want, p...)
		check(t, "append", s.AppendLog(ctx, "img1", b.Number, p))
	}
	check(t, "empty append", s.AppendLog(ctx, "img1", b.Number, nil))
	chunks, err := raw.Collection("images/img1/builds/0000000001/log").Documents(ctx).GetAll()
	check(t, "chunks", err)
	if len(chunks) < 5 {
		t.Fatalf("%d log chunks for %d bytes in 5 appends", len(chunks), len(want))
	}
	for _, c := range chunks {
		if n := len(c.Data()["data"].([]byte)); n > 512<<10 {
			t.Fatalf("chunk %s holds %d bytes", c.Ref.ID, n)
		}
	}
	l := int64(len(want))
	for _, off := range []int64{0, 1, 4095, 512<<10 - 1, 512 << 10, 700 << 10, 700<<10 + 5, 1 << 20, l - 1, l, l + 10} {
		got, err := s.ReadLog(ctx, "img1", b.Number, off)
		check(t, "read", err)
		exp := []byte{}
		if off < l {
			exp = want[off:]
		}
		if !bytes.Equal(got, exp) {
			t.Fatalf("ReadLog(offset %d): %d bytes, want %d", off, len(got), len(exp))
		}
	}
	_, err = s.ReadLog(ctx, "img1", 7, 0)
	wantErr(t, "log of an unknown build", err, store.ErrNotFound)
	wantErr(t, "append to an unknown build", s.AppendLog(ctx, "img1", 7, []byte("x")), store.ErrNotFound)
}

func TestSmokeCredentials(t *testing.T) {
	s, _ := open(t)
	ctx := t.Context()
	workspace(t, s, "ws1")
	c := store.Credential{Workspace: "ws1", Name: "hub", Kind: "registry", Registry: "r.example", Username: "u", Secret: "sealed1"}
	check(t, "put", s.PutCredential(ctx, c))
	c.Secret = "sealed2"
	check(t, "replace", s.PutCredential(ctx, c))
	check(t, "put", s.PutCredential(ctx, store.Credential{Workspace: "ws1", Name: "gh", Kind: "git", Username: "u", Secret: "sealed3"}))
	check(t, "put elsewhere", s.PutCredential(ctx, store.Credential{Workspace: "ws2", Name: "aaa", Kind: "git"}))
	if got, err := s.GetCredential(ctx, "ws1", "hub"); err != nil || got != c {
		t.Fatalf("GetCredential = %+v, %v; want %+v", got, err, c)
	}
	cs, err := s.ListCredentials(ctx, "ws1")
	if err != nil || len(cs) != 2 || cs[0].Name != "gh" || cs[1].Name != "hub" || cs[0].Workspace != "ws1" {
		t.Fatalf("ListCredentials = %+v, %v", cs, err)
	}
	check(t, "delete", s.DeleteCredential(ctx, "ws1", "hub"))
	wantErr(t, "delete twice", s.DeleteCredential(ctx, "ws1", "hub"), store.ErrNotFound)
	_, err = s.GetCredential(ctx, "ws1", "hub")
	wantErr(t, "deleted credential", err, store.ErrNotFound)
}

// buildWithLog queues a build of imageID and writes a log of two chunks.
func buildWithLog(t *testing.T, s *firestore.Store, imageID string) build.Build {
	t.Helper()
	b := newBuild(t, s, imageID)
	check(t, "append", s.AppendLog(t.Context(), imageID, b.Number, bytes.Repeat([]byte("x"), 600<<10)))
	return b
}

// leftovers counts the documents an image's delete should have removed.
func leftovers(t *testing.T, raw *fs.Client, imageID, name string) int {
	t.Helper()
	n := count(t, raw.Collection("images/"+imageID+"/builds").Query) + count(t, raw.Collection("images/"+imageID+"/active").Query)
	for b := 1; b <= 2; b++ {
		n += count(t, raw.Collection(fmt.Sprintf("images/%s/builds/%010d/log", imageID, b)).Query)
	}
	for _, path := range []string{"images/" + imageID, "names/" + name} {
		if exists(t, raw, path) {
			n++
		}
	}
	return n
}

func TestSmokeDeleteImageCascades(t *testing.T) {
	s, raw := open(t)
	ctx := t.Context()
	workspace(t, s, "ws1")
	newImage(t, s, "img1", "ws1", "team/a")
	cancel(t, s, buildWithLog(t, s, "img1"))
	b := buildWithLog(t, s, "img1")
	if n := leftovers(t, raw, "img1", "team%2Fa"); n != 1+2+2+2+1+1 {
		t.Fatalf("%d documents before the delete", n)
	}
	check(t, "delete", s.DeleteImage(ctx, "img1"))
	if n := leftovers(t, raw, "img1", "team%2Fa"); n != 0 {
		t.Fatalf("%d documents left after the delete", n)
	}
	wantErr(t, "delete twice", s.DeleteImage(ctx, "img1"), store.ErrNotFound)
	_, err := s.GetBuild(ctx, "img1", b.Number)
	wantErr(t, "build of a deleted image", err, store.ErrNotFound)
	_, err = s.ReadLog(ctx, "img1", b.Number, 0)
	wantErr(t, "log of a deleted image", err, store.ErrNotFound)
	wantErr(t, "append to a deleted image's build", s.AppendLog(ctx, "img1", b.Number, []byte("x")), store.ErrNotFound)
	newImage(t, s, "img2", "ws1", "team/a")
	if b := newBuild(t, s, "img2"); b.Number != 1 {
		t.Fatalf("a new image's first build is %d", b.Number)
	}
}

func TestSmokeDeleteWorkspaceCascades(t *testing.T) {
	s, raw := open(t)
	ctx := t.Context()
	workspace(t, s, "ws1")
	workspace(t, s, "ws2")
	for _, name := range []string{"a", "b"} {
		newImage(t, s, "img-"+name, "ws1", "team/"+name)
		cancel(t, s, buildWithLog(t, s, "img-"+name))
		buildWithLog(t, s, "img-"+name)
	}
	newImage(t, s, "keep", "ws2", "team/keep")
	for _, c := range []store.Credential{{Workspace: "ws1", Name: "hub", Kind: "registry"}, {Workspace: "ws2", Name: "hub", Kind: "registry"}} {
		check(t, "put credential", s.PutCredential(ctx, c))
	}
	check(t, "delete", s.ApplyWorkspace(ctx, "src/del", store.Order{}, store.Workspace{ID: "ws1"}, true))
	_, err := s.GetWorkspace(ctx, "ws1")
	wantErr(t, "deleted workspace", err, store.ErrNotFound)
	for _, name := range []string{"a", "b"} {
		if n := leftovers(t, raw, "img-"+name, "team%2F"+name); n != 0 {
			t.Fatalf("%d documents of image %s left", n, name)
		}
	}
	if n := count(t, raw.Collection("workspaces/ws1/credentials").Query); n != 0 {
		t.Fatalf("%d credentials left", n)
	}
	if _, err := s.GetImage(ctx, "keep"); err != nil {
		t.Fatalf("another workspace's image: %v", err)
	}
	if _, err := s.GetCredential(ctx, "ws2", "hub"); err != nil {
		t.Fatalf("another workspace's credential: %v", err)
	}
	// The names are free; a redelivered delete changes nothing.
	check(t, "recreate", s.ApplyWorkspace(ctx, "src/again", store.Order{}, store.Workspace{ID: "ws1", Owner: "alice"}, false))
	newImage(t, s, "img-c", "ws1", "team/a")
	wantErr(t, "redelivered delete", s.ApplyWorkspace(ctx, "src/del", store.Order{}, store.Workspace{ID: "ws1"}, true), store.ErrDuplicate)
	if _, err := s.GetImage(ctx, "img-c"); err != nil {
		t.Fatalf("a redelivered delete deleted an image: %v", err)
	}
}

// TestSmokeOddIDs checks ids and names that are not valid document ids as
// they are.
func TestSmokeOddIDs(t *testing.T) {
	s, _ := open(t)
	ctx := t.Context()
	for _, id := range []string{"a/b", ".", "..", "__x__", "_y", "%2F"} {
		check(t, "workspace "+id, s.ApplyWorkspace(ctx, "odd/"+id, store.Order{}, store.Workspace{ID: id, Owner: id}, false))
		check(t, "image "+id, s.CreateImage(ctx, storetest.NewImage(id, "odd", id)))
	}
	for _, id := range []string{"a/b", ".", "..", "__x__", "_y", "%2F"} {
		ws, err := s.GetWorkspace(ctx, id)
		if err != nil || ws.Owner != id {
			t.Fatalf("workspace %q = %+v, %v", id, ws, err)
		}
		img, err := s.GetImage(ctx, id)
		if err != nil || img.ID != id || img.Name != id {
			t.Fatalf("image %q = %+v, %v", id, img, err)
		}
	}
}
