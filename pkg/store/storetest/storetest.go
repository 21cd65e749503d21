// Package storetest is the conformance suite every store.Store backend must
// pass: the same cases, run against SQLite locally and Firestore's emulator.
package storetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/slipway-dev/slipway/pkg/build"
	"github.com/slipway-dev/slipway/pkg/image"
	"github.com/slipway-dev/slipway/pkg/store"
)

// Opener returns a fresh, empty store for one test.
type Opener func(t *testing.T) store.Store

// Run runs every conformance case against the stores open returns.
func Run(t *testing.T, open Opener) {
	cases := []struct {
		name string
		f    func(*testing.T, store.Store)
	}{
		{"WorkspaceEventsAreIdempotent", workspaceEvents},
		{"WorkspaceDeleteCascades", workspaceDelete},
		{"WorkspaceEventsApplyInOrder", workspaceOrder},
		{"WorkspaceEventsOrderBySequence", workspaceSequence},
		{"ImageRoundTrip", imageRoundTrip},
		{"NamesAreUniqueAcrossWorkspaces", uniqueNames},
		{"ConcurrentCreatesOfOneName", concurrentCreates},
		{"UpdateChecksVersion", updateChecksVersion},
		{"ConcurrentUpdatesOneWins", concurrentUpdates},
		{"UpdateKeepsBuildResults", updateKeepsBuildResults},
		{"RenameKeepsNamesUnique", renames},
		{"ListPaginatesAndFilters", listImages},
		{"BuildsAreNumberedOneActiveAtATime", buildNumbering},
		{"BuildsQueuedAtStampedByTheStore", queuedAtStamped},
		{"BuildSuccessRecordsOnImage", buildSuccess},
		{"BuildsKeepTheirDefinitions", buildDefinitions},
		{"BuildListNewestFirst", buildList},
		{"LogsAppendAndReadFromOffset", logs},
		{"LogRetentionKeepsTheNewest", pruneLogs},
		{"Credentials", credentials},
		{"DeleteImageFreesNameAndBuilds", deleteImage},
		{"ImageByNameFollowsRenamesAndDeletes", imageByName},
		{"OutboxHoldsAnnouncedEventsInOrder", outboxInOrder},
		{"OutboxEventsOnlyWithTheirChange", outboxAtomic},
		{"OutboxHoldsImageChanges", outboxImages},
		{"RebuildRequestsAreIdempotentAndCoalesced", rebuildRequests},
		{"RebuildStateKeptAcrossEdits", rebuildStateKept},
		{"ListAutomaticAcrossWorkspaces", listAutomatic},
		{"ConcurrentRebuildRequestsOneBuild", concurrentRequests},
		{"CatalogueChangesWithEveryImageChange", catalogueChanges},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) { c.f(t, open(t)) })
	}
}

var ctx = context.Background()

var t0 = time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)

// seq numbers the events mustWorkspace applies, so that each comes after
// the one before.
var seq atomic.Int64

func mustWorkspace(t *testing.T, s store.Store, id, owner string, members ...string) {
	t.Helper()
	n := seq.Add(1)
	if err := s.ApplyWorkspace(ctx, "test/"+id+fmt.Sprint(n), store.Order{Sequence: fmt.Sprint(n)}, store.Workspace{ID: id, Owner: owner, Members: members}, false); err != nil {
		t.Fatalf("ApplyWorkspace(%s): %v", id, err)
	}
}

// NewImage returns a valid image definition for tests.
func NewImage(id, ws, name string) image.Image {
	return image.Image{
		ID: id, Workspace: ws, Name: name, Description: "test image",
		Context: image.Context{Type: image.ContextLocal, Dockerfile: "FROM busybox\n"},
		Created: image.Stamp{By: "alice", At: t0}, Modified: image.Stamp{By: "alice", At: t0},
		Version: 1, DefinitionRev: 1,
	}
}

func mustImage(t *testing.T, s store.Store, id, ws, name string) image.Image {
	t.Helper()
	img := NewImage(id, ws, name)
	if err := s.CreateImage(ctx, img); err != nil {
		t.Fatalf("CreateImage(%s): %v", name, err)
	}
	return img
}

func wantErr(t *testing.T, what string, got, want error) {
	t.Helper()
	if !errors.Is(got, want) {
		t.Fatalf("%s: got error %v, want %v", what, got, want)
	}
}

func workspaceEvents(t *testing.T, s store.Store) {
	ws := store.Workspace{ID: "ws1", Owner: "alice", Members: []string{"bob"}}
	if err := s.ApplyWorkspace(ctx, "src/1", store.Order{Time: t0}, ws, false); err != nil {
		t.Fatal(err)
	}
	// Redelivery of the same event changes nothing, even with other data.
	wantErr(t, "redelivered event", s.ApplyWorkspace(ctx, "src/1", store.Order{Time: t0.Add(time.Hour)}, store.Workspace{ID: "ws1", Owner: "mallory"}, false), store.ErrDuplicate)
	got, err := s.GetWorkspace(ctx, "ws1")
	if err != nil || got.Owner != "alice" || len(got.Members) != 1 || got.Members[0] != "bob" {
		t.Fatalf("GetWorkspace = %+v, %v; want alice with member bob", got, err)
	}
	if got.RoleOf("alice") != store.RoleOwner || got.RoleOf("bob") != store.RoleMember || got.RoleOf("carol") != store.RoleNone {
		t.Fatalf("roles wrong for %+v", got)
	}
	// An update replaces owner and members.
	if err := s.ApplyWorkspace(ctx, "src/2", store.Order{Time: t0.Add(time.Second)}, store.Workspace{ID: "ws1", Owner: "bob"}, false); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.GetWorkspace(ctx, "ws1"); got.Owner != "bob" || len(got.Members) != 0 {
		t.Fatalf("after update: %+v", got)
	}
	_, err = s.GetWorkspace(ctx, "nope")
	wantErr(t, "unknown workspace", err, store.ErrNotFound)
}

func workspaceDelete(t *testing.T, s store.Store) {
	mustWorkspace(t, s, "ws1", "alice")
	mustImage(t, s, "img1", "ws1", "team/a")
	if err := s.PutCredential(ctx, store.Credential{Workspace: "ws1", Name: "hub", Kind: "registry", Registry: "r.example", Secret: "sealed"}); err != nil {
		t.Fatal(err)
	}
	if err := s.ApplyWorkspace(ctx, "src/del", store.Order{Sequence: fmt.Sprint(seq.Add(1))}, store.Workspace{ID: "ws1"}, true); err != nil {
		t.Fatal(err)
	}
	_, err := s.GetWorkspace(ctx, "ws1")
	wantErr(t, "deleted workspace", err, store.ErrNotFound)
	_, err = s.GetImage(ctx, "img1")
	wantErr(t, "image of deleted workspace", err, store.ErrNotFound)
	_, err = s.GetCredential(ctx, "ws1", "hub")
	wantErr(t, "credential of deleted workspace", err, store.ErrNotFound)
	// The name is free again.
	mustWorkspace(t, s, "ws2", "bob")
	mustImage(t, s, "img2", "ws2", "team/a")
}

// apply applies a workspace event at order and wants err (nil for none).
func apply(t *testing.T, s store.Store, key string, order store.Order, ws store.Workspace, deleted bool, want error) {
	t.Helper()
	err := s.ApplyWorkspace(ctx, key, order, ws, deleted)
	if want == nil && err != nil || want != nil && !errors.Is(err, want) {
		t.Fatalf("ApplyWorkspace(%s at %+v): got error %v, want %v", key, order, err, want)
	}
}

// wantMembers wants workspace id to exist with owner and exactly members.
func wantMembers(t *testing.T, s store.Store, id, owner string, members ...string) {
	t.Helper()
	got, err := s.GetWorkspace(ctx, id)
	if err != nil || got.Owner != owner || strings.Join(got.Members, ",") != strings.Join(members, ",") {
		t.Fatalf("GetWorkspace(%s) = %+v, %v; want owner %s, members %v", id, got, err, owner, members)
	}
}

func workspaceOrder(t *testing.T, s store.Store) {
	at := func(minutes int) store.Order { return store.Order{Time: t0.Add(time.Duration(minutes) * time.Minute)} }
	ws := func(owner string, members ...string) store.Workspace {
		return store.Workspace{ID: "ws1", Owner: owner, Members: members}
	}
	if o, err := s.WorkspaceOrder(ctx, "ws1"); err != nil || !o.IsZero() {
		t.Fatalf("WorkspaceOrder of an unknown workspace = %+v, %v; want the zero order", o, err)
	}
	apply(t, s, "p/1", at(1), ws("alice", "bob", "carol"), false, nil)
	apply(t, s, "p/3", at(3), ws("alice", "bob"), false, nil) // carol removed
	// An older update arriving late changes nothing: carol stays removed.
	apply(t, s, "p/2", at(2), ws("alice", "bob", "carol"), false, store.ErrStale)
	wantMembers(t, s, "ws1", "alice", "bob")
	// It was recorded: its redelivery is a duplicate.
	apply(t, s, "p/2", at(2), ws("alice", "bob", "carol"), false, store.ErrDuplicate)
	// An event at the same time as the last applied one is not after it.
	apply(t, s, "p/3b", at(3), ws("mallory"), false, store.ErrStale)
	wantMembers(t, s, "ws1", "alice", "bob")
	if o, err := s.WorkspaceOrder(ctx, "ws1"); err != nil || !o.Time.Equal(at(3).Time) {
		t.Fatalf("WorkspaceOrder = %+v, %v; want the time of p/3", o, err)
	}

	// A deletion older than the last update changes nothing: the images and
	// credentials stay.
	mustImage(t, s, "img1", "ws1", "team/a")
	if err := s.PutCredential(ctx, store.Credential{Workspace: "ws1", Name: "hub", Kind: "registry", Registry: "r.example", Secret: "sealed"}); err != nil {
		t.Fatal(err)
	}
	apply(t, s, "p/del-old", at(2), store.Workspace{ID: "ws1"}, true, store.ErrStale)
	wantMembers(t, s, "ws1", "alice", "bob")
	if _, err := s.GetImage(ctx, "img1"); err != nil {
		t.Fatalf("a stale deletion deleted an image: %v", err)
	}
	if _, err := s.GetCredential(ctx, "ws1", "hub"); err != nil {
		t.Fatalf("a stale deletion deleted a credential: %v", err)
	}

	// A deletion leaves a tombstone that no older update undoes.
	apply(t, s, "p/del", at(5), store.Workspace{ID: "ws1"}, true, nil)
	_, err := s.GetWorkspace(ctx, "ws1")
	wantErr(t, "deleted workspace", err, store.ErrNotFound)
	if o, err := s.WorkspaceOrder(ctx, "ws1"); err != nil || !o.Time.Equal(at(5).Time) {
		t.Fatalf("WorkspaceOrder of the tombstone = %+v, %v; want the deletion's time", o, err)
	}
	apply(t, s, "p/4", at(4), ws("alice", "bob"), false, store.ErrStale)
	apply(t, s, "p/4c", at(4), ws("alice", "bob"), false, store.ErrStale) // a create, too
	_, err = s.GetWorkspace(ctx, "ws1")
	wantErr(t, "deleted workspace after an older update", err, store.ErrNotFound)
	_, err = s.GetImage(ctx, "img1")
	wantErr(t, "image of the deleted workspace", err, store.ErrNotFound)

	// A newer create makes the workspace anew, without what the deletion
	// removed.
	apply(t, s, "p/6", at(6), ws("dave"), false, nil)
	wantMembers(t, s, "ws1", "dave")
	if _, err := s.GetCredential(ctx, "ws1", "hub"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("credential came back with the recreated workspace: %v", err)
	}
	if imgs, _, err := s.ListImages(ctx, "ws1", store.ImageFilter{}, store.Page{Limit: 10}); err != nil || len(imgs) != 0 {
		t.Fatalf("images of the recreated workspace = %d, %v; want none", len(imgs), err)
	}
	// The name of the deleted workspace's image is free.
	mustImage(t, s, "img2", "ws1", "team/a")
	// Other workspaces keep their own order.
	apply(t, s, "p/other", at(0), store.Workspace{ID: "ws2", Owner: "erin"}, false, nil)
	wantMembers(t, s, "ws2", "erin")
}

func workspaceSequence(t *testing.T, s store.Store) {
	late, early := t0.Add(time.Hour), t0
	ws := func(owner string) store.Workspace { return store.Workspace{ID: "ws1", Owner: owner} }
	apply(t, s, "q/9", store.Order{Sequence: "9", Time: late}, ws("alice"), false, nil)
	// Both have a sequence: it decides, numerically for integers ("10"
	// after "9"), whatever the times say.
	apply(t, s, "q/10", store.Order{Sequence: "10", Time: early}, ws("bob"), false, nil)
	wantMembers(t, s, "ws1", "bob")
	apply(t, s, "q/2", store.Order{Sequence: "2", Time: late.Add(time.Hour)}, ws("mallory"), false, store.ErrStale)
	apply(t, s, "q/10b", store.Order{Sequence: "10", Time: late.Add(time.Hour)}, ws("mallory"), false, store.ErrStale)
	wantMembers(t, s, "ws1", "bob")
	// Without a sequence on one side, the times decide.
	apply(t, s, "q/t-old", store.Order{Time: early.Add(-time.Minute)}, ws("mallory"), false, store.ErrStale)
	apply(t, s, "q/t-new", store.Order{Time: early.Add(time.Minute)}, ws("carol"), false, nil)
	wantMembers(t, s, "ws1", "carol")
	// The order kept is the last applied event's, sequence and all.
	if o, err := s.WorkspaceOrder(ctx, "ws1"); err != nil || o.Sequence != "" || !o.Time.Equal(early.Add(time.Minute)) {
		t.Fatalf("WorkspaceOrder = %+v, %v; want q/t-new's", o, err)
	}
	// Sequences that are not integers compare as strings.
	apply(t, s, "q/s1", store.Order{Sequence: "b-001"}, store.Workspace{ID: "ws2", Owner: "alice"}, false, nil)
	apply(t, s, "q/s2", store.Order{Sequence: "a-999"}, store.Workspace{ID: "ws2", Owner: "mallory"}, false, store.ErrStale)
	apply(t, s, "q/s3", store.Order{Sequence: "b-002"}, store.Workspace{ID: "ws2", Owner: "bob"}, false, nil)
	wantMembers(t, s, "ws2", "bob")
	// An event with only a time cannot be placed after one with only a
	// sequence: it changes nothing.
	apply(t, s, "q/s4", store.Order{Time: late}, store.Workspace{ID: "ws2", Owner: "mallory"}, false, store.ErrStale)
	wantMembers(t, s, "ws2", "bob")
	// Times keep their nanoseconds.
	ns := store.Order{Time: time.Date(2026, 11, 27, 12, 0, 0, 123456789, time.UTC)}
	apply(t, s, "q/ns1", ns, store.Workspace{ID: "ws3", Owner: "alice"}, false, nil)
	apply(t, s, "q/ns2", store.Order{Time: ns.Time.Add(time.Nanosecond)}, store.Workspace{ID: "ws3", Owner: "bob"}, false, nil)
	apply(t, s, "q/ns3", store.Order{Time: ns.Time.Add(time.Nanosecond)}, store.Workspace{ID: "ws3", Owner: "mallory"}, false, store.ErrStale)
	wantMembers(t, s, "ws3", "bob")
}

func imageRoundTrip(t *testing.T, s store.Store) {
	mustWorkspace(t, s, "ws1", "alice")
	img := NewImage("img1", "ws1", "team/pytorch")
	img.Context = image.Context{Type: image.ContextGit, Git: &image.Git{URL: "https://example.com/r.git", Ref: "main", Dir: "docker", Credential: "gh"}}
	img.Destinations = []image.Destination{{Reference: "registry.example.com/team/pytorch:latest", Credential: "hub"}}
	img.BuildArgs = map[string]string{"PYTHON": "3.12", "INDEX": "https://pypi.example.com/simple?a=1&b=2"}
	img.Secrets = []string{"hf-token", "pip-conf"}
	img.Target = "runtime"
	if err := s.CreateImage(ctx, img); err != nil {
		t.Fatal(err)
	}
	got, err := s.GetImage(ctx, "img1")
	if err != nil {
		t.Fatal(err)
	}
	if !maps.Equal(got.BuildArgs, img.BuildArgs) || !slices.Equal(got.Secrets, img.Secrets) || got.Target != img.Target {
		t.Fatalf("build inputs: got %v %v %q, want %v %v %q", got.BuildArgs, got.Secrets, got.Target, img.BuildArgs, img.Secrets, img.Target)
	}
	if got.Name != img.Name || got.Workspace != "ws1" || got.Version != 1 || *got.Context.Git != *img.Context.Git ||
		len(got.Destinations) != 1 || got.Destinations[0] != img.Destinations[0] || !got.Created.At.Equal(t0) ||
		got.Created.By != "alice" || got.Built != nil || got.Status() != image.StatusNotBuilt {
		t.Fatalf("GetImage = %+v, want %+v", got, img)
	}
	_, err = s.GetImage(ctx, "nope")
	wantErr(t, "unknown image", err, store.ErrNotFound)
}

func uniqueNames(t *testing.T, s store.Store) {
	mustWorkspace(t, s, "ws1", "alice")
	mustWorkspace(t, s, "ws2", "bob")
	mustImage(t, s, "img1", "ws1", "team/a")
	wantErr(t, "same name, other workspace", s.CreateImage(ctx, NewImage("img2", "ws2", "team/a")), store.ErrNameTaken)
	wantErr(t, "same name, same workspace", s.CreateImage(ctx, NewImage("img3", "ws1", "team/a")), store.ErrNameTaken)
}

func concurrentCreates(t *testing.T, s store.Store) {
	mustWorkspace(t, s, "ws1", "alice")
	mustWorkspace(t, s, "ws2", "bob")
	var ok, taken atomic.Int32
	var wg sync.WaitGroup
	for i := range 40 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ws := []string{"ws1", "ws2"}[i%2]
			switch err := s.CreateImage(ctx, NewImage(fmt.Sprintf("img%d", i), ws, "race/name")); {
			case err == nil:
				ok.Add(1)
			case errors.Is(err, store.ErrNameTaken):
				taken.Add(1)
			default:
				t.Errorf("create %d: %v", i, err)
			}
		}()
	}
	wg.Wait()
	if ok.Load() != 1 || taken.Load() != 39 {
		t.Fatalf("40 concurrent creates: %d created, %d name_taken; want 1 and 39", ok.Load(), taken.Load())
	}
}

func updateChecksVersion(t *testing.T, s store.Store) {
	mustWorkspace(t, s, "ws1", "alice")
	img := mustImage(t, s, "img1", "ws1", "team/a")
	next := img
	next.Description = "changed"
	img.Edit(next, "bob", t0.Add(time.Minute))
	if err := s.UpdateImage(ctx, img, 1); err != nil {
		t.Fatal(err)
	}
	got, _ := s.GetImage(ctx, "img1")
	// A description edit is no change of the definition: history's
	// modified stamp stays the creator's.
	if got.Version != 2 || got.Description != "changed" || got.Modified.By != "alice" || got.DefinitionRev != 1 {
		t.Fatalf("after update: %+v", got)
	}
	stale := got
	stale.Version = 3
	wantErr(t, "stale update", s.UpdateImage(ctx, stale, 1), store.ErrConflict)
	missing := NewImage("nope", "ws1", "team/z")
	wantErr(t, "update of missing image", s.UpdateImage(ctx, missing, 1), store.ErrNotFound)
}

func concurrentUpdates(t *testing.T, s store.Store) {
	mustWorkspace(t, s, "ws1", "alice")
	img := mustImage(t, s, "img1", "ws1", "team/a")
	var ok, conflict atomic.Int32
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			mine := img
			next := img
			next.Description = fmt.Sprintf("edit %d", i)
			mine.Edit(next, "alice", t0)
			switch err := s.UpdateImage(ctx, mine, img.Version); {
			case err == nil:
				ok.Add(1)
			case errors.Is(err, store.ErrConflict):
				conflict.Add(1)
			default:
				t.Errorf("update %d: %v", i, err)
			}
		}()
	}
	wg.Wait()
	if ok.Load() != 1 || conflict.Load() != 19 {
		t.Fatalf("20 concurrent updates with one version: %d won, %d conflicts; want 1 and 19", ok.Load(), conflict.Load())
	}
}

func renames(t *testing.T, s store.Store) {
	mustWorkspace(t, s, "ws1", "alice")
	a := mustImage(t, s, "img1", "ws1", "team/a")
	mustImage(t, s, "img2", "ws1", "team/b")
	next := a
	next.Name = "team/b"
	a.Edit(next, "alice", t0)
	wantErr(t, "rename onto a taken name", s.UpdateImage(ctx, a, 1), store.ErrNameTaken)
	a, _ = s.GetImage(ctx, "img1")
	next = a
	next.Name = "team/c"
	a.Edit(next, "alice", t0)
	if err := s.UpdateImage(ctx, a, 1); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.GetImage(ctx, "img1"); got.Name != "team/c" || got.Version != 2 || got.DefinitionRev != 1 {
		t.Fatalf("after rename: %+v", got)
	}
	// The old name is free.
	mustImage(t, s, "img3", "ws1", "team/a")
}

func listImages(t *testing.T, s store.Store) {
	mustWorkspace(t, s, "ws1", "alice")
	mustWorkspace(t, s, "ws2", "alice")
	for i := range 7 {
		mustImage(t, s, fmt.Sprintf("img%d", i), "ws1", fmt.Sprintf("team/i%d", i))
	}
	mustImage(t, s, "other", "ws2", "team/other")
	var names []string
	cursor := ""
	for pages := 0; ; pages++ {
		imgs, next, err := s.ListImages(ctx, "ws1", store.ImageFilter{}, store.Page{Limit: 3, Cursor: cursor})
		if err != nil {
			t.Fatal(err)
		}
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
	// Usable: only images with a successful build.
	b := mustBuild(t, s, "img3", 1)
	succeed(t, s, b)
	imgs, _, err := s.ListImages(ctx, "ws1", store.ImageFilter{Usable: true}, store.Page{Limit: 10})
	if err != nil || len(imgs) != 1 || imgs[0].ID != "img3" || imgs[0].Reference == "" {
		t.Fatalf("usable images = %+v, %v", imgs, err)
	}
	_, _, err = s.ListImages(ctx, "ws1", store.ImageFilter{}, store.Page{Limit: 3, Cursor: "!!not a cursor"})
	wantErr(t, "bad cursor", err, store.ErrBadCursor)
}

func mustBuild(t *testing.T, s store.Store, imageID string, rev int64) build.Build {
	t.Helper()
	b, err := s.CreateBuild(ctx, build.New(imageID, rev, "alice", build.TriggerManual, t0))
	if err != nil {
		t.Fatalf("CreateBuild(%s): %v", imageID, err)
	}
	return b
}

func succeed(t *testing.T, s store.Store, b build.Build) build.Build {
	t.Helper()
	b, err := s.UpdateBuild(ctx, b.Image, b.Number, func(b *build.Build) error {
		if err := b.Start(t0.Add(time.Second)); err != nil {
			return err
		}
		return b.Succeed("sha256:abc", "127.0.0.1:5000/x@sha256:abc", nil, t0.Add(time.Minute))
	})
	if err != nil {
		t.Fatalf("settling build: %v", err)
	}
	return b
}

func buildNumbering(t *testing.T, s store.Store) {
	mustWorkspace(t, s, "ws1", "alice")
	mustImage(t, s, "img1", "ws1", "team/a")
	b1 := mustBuild(t, s, "img1", 1)
	if b1.Number != 1 || b1.Status != build.Queued {
		t.Fatalf("first build = %+v", b1)
	}
	_, err := s.CreateBuild(ctx, build.New("img1", 1, "alice", build.TriggerManual, t0))
	wantErr(t, "second build while one is queued", err, store.ErrBuildActive)
	// Concurrent requests while none is active: exactly one is queued.
	if _, err := s.UpdateBuild(ctx, "img1", 1, func(b *build.Build) error { return b.Cancel("alice", t0) }); err != nil {
		t.Fatal(err)
	}
	var ok atomic.Int32
	var wg sync.WaitGroup
	for range 10 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := s.CreateBuild(ctx, build.New("img1", 1, "alice", build.TriggerManual, t0))
			if err == nil {
				ok.Add(1)
			} else if !errors.Is(err, store.ErrBuildActive) {
				t.Errorf("concurrent build: %v", err)
			}
		}()
	}
	wg.Wait()
	if ok.Load() != 1 {
		t.Fatalf("10 concurrent build requests queued %d builds, want 1", ok.Load())
	}
	active, err := s.ListActiveBuilds(ctx)
	if err != nil || len(active) != 1 || active[0].Number != 2 {
		t.Fatalf("active builds = %+v, %v; want build 2", active, err)
	}
	img, _ := s.GetImage(ctx, "img1")
	if img.LatestBuild == nil || img.LatestBuild.Number != 2 || img.LatestBuild.Status != build.Queued {
		t.Fatalf("image's latest build = %+v", img.LatestBuild)
	}
	_, err = s.CreateBuild(ctx, build.New("nope", 1, "alice", build.TriggerManual, t0))
	wantErr(t, "build of a missing image", err, store.ErrNotFound)
	_, err = s.UpdateBuild(ctx, "img1", 1, func(b *build.Build) error { return b.Cancel("alice", t0) })
	wantErr(t, "cancel a cancelled build", err, build.ErrTransition)
}

func buildDefinitions(t *testing.T, s store.Store) {
	mustWorkspace(t, s, "ws1", "alice")
	img := mustImage(t, s, "img1", "ws1", "team/a")
	// The store records the stored image's definition on the build, whatever
	// the caller passed.
	first := build.New("img1", 0, "alice", build.TriggerManual, t0)
	b1, err := s.CreateBuild(ctx, first)
	if err != nil {
		t.Fatal(err)
	}
	want := img.Definition()
	if b1.Definition == nil || b1.Definition.Digest() != want.Digest() || b1.DefinitionRev != img.DefinitionRev {
		t.Fatalf("created build: definition %+v rev %d, want %+v rev %d", b1.Definition, b1.DefinitionRev, want, img.DefinitionRev)
	}
	succeed(t, s, b1)
	stored, _ := s.GetBuild(ctx, "img1", 1)
	if stored.Definition == nil || stored.Definition.Digest() != want.Digest() {
		t.Fatalf("stored build's definition: %+v", stored.Definition)
	}
	got, _ := s.GetImage(ctx, "img1")
	if got.BuiltDefinition != want.Digest() || got.Built == nil || got.Built.Build != 1 || got.Status() != image.StatusBuilt {
		t.Fatalf("image after success: built definition %q, built %+v, status %s", got.BuiltDefinition, got.Built, got.Status())
	}
	// Edit, then edit back: modified, then built again, with the build's
	// result kept through both updates.
	edit := func(dockerfile string, wantStatus image.Status) {
		t.Helper()
		cur, _ := s.GetImage(ctx, "img1")
		next := cur
		next.Context.Dockerfile = dockerfile
		cur.Edit(next, "bob", t0.Add(time.Hour))
		if err := s.UpdateImage(ctx, cur, cur.Version-1); err != nil {
			t.Fatal(err)
		}
		if got, _ := s.GetImage(ctx, "img1"); got.Status() != wantStatus || got.BuiltDefinition != want.Digest() {
			t.Fatalf("after saving %q: status %s (built definition %q)", dockerfile, got.Status(), got.BuiltDefinition)
		}
	}
	edit("FROM busybox\nRUN true\n", image.StatusModified)
	b2 := mustBuild(t, s, "img1", 0)
	if b2.Definition == nil || b2.Definition.Dockerfile != "FROM busybox\nRUN true\n" {
		t.Fatalf("second build's definition: %+v", b2.Definition)
	}
	if _, err := s.UpdateBuild(ctx, "img1", b2.Number, func(b *build.Build) error { return b.Cancel("alice", t0) }); err != nil {
		t.Fatal(err)
	}
	edit(img.Context.Dockerfile, image.StatusBuilt)
}

// queuedAtStamped: CreateBuild stamps queued_at itself, in the order builds
// are queued, whatever time the caller put on them (a request stamped
// before it waited for the store must not jump the queue).
func queuedAtStamped(t *testing.T, s store.Store) {
	mustWorkspace(t, s, "ws1", "alice")
	var want []string
	var last time.Time
	for i := range 6 {
		id := fmt.Sprintf("img%d", i)
		mustImage(t, s, id, "ws1", "team/q"+strconv.Itoa(i))
		before := time.Now()
		// Each caller's time is earlier than the one before it.
		b, err := s.CreateBuild(ctx, build.New(id, 1, "alice", build.TriggerManual, t0.Add(-time.Duration(i)*time.Minute)))
		after := time.Now()
		if err != nil {
			t.Fatal(err)
		}
		if b.QueuedAt.Before(before.Add(-time.Millisecond)) || b.QueuedAt.After(after.Add(time.Millisecond)) || b.QueuedAt.Before(last) {
			t.Fatalf("build of %s queued at %s: want between %s and %s, not before %s", id, b.QueuedAt, before, after, last)
		}
		if got, err := s.GetBuild(ctx, id, b.Number); err != nil || !got.QueuedAt.Equal(b.QueuedAt) {
			t.Fatalf("stored queued_at %v, %v; returned %v", got.QueuedAt, err, b.QueuedAt)
		}
		last = b.QueuedAt
		want = append(want, id)
	}
	active, err := s.ListActiveBuilds(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, b := range active {
		got = append(got, b.Image)
	}
	if !slices.Equal(got, want) {
		t.Fatalf("active builds oldest first: %v, want %v", got, want)
	}
}

func buildSuccess(t *testing.T, s store.Store) {
	mustWorkspace(t, s, "ws1", "alice")
	img := mustImage(t, s, "img1", "ws1", "team/a")
	b := succeed(t, s, mustBuild(t, s, "img1", img.DefinitionRev))
	got, _ := s.GetImage(ctx, "img1")
	if got.Status() != image.StatusBuilt || got.Reference != *b.Reference || got.Built == nil ||
		got.Built.By != "alice" || !got.Built.At.Equal(t0.Add(time.Minute)) || got.Version != img.Version {
		t.Fatalf("image after success = %+v (built %+v)", got, got.Built)
	}
	if got.LatestBuild == nil || got.LatestBuild.Status != build.Succeeded {
		t.Fatalf("latest build after success = %+v", got.LatestBuild)
	}
	// A definition change makes it modified; a failed build keeps it so.
	next := got
	next.Context.Dockerfile = "FROM busybox\nRUN true\n"
	got.Edit(next, "bob", t0.Add(2*time.Minute))
	if err := s.UpdateImage(ctx, got, img.Version); err != nil {
		t.Fatal(err)
	}
	b2 := mustBuild(t, s, "img1", got.DefinitionRev)
	if _, err := s.UpdateBuild(ctx, "img1", b2.Number, func(b *build.Build) error {
		b.Start(t0)
		return b.Fail(build.ReasonDockerfile, "RUN false: exit 1", t0)
	}); err != nil {
		t.Fatal(err)
	}
	got, _ = s.GetImage(ctx, "img1")
	if got.Status() != image.StatusModified || got.Reference != *b.Reference {
		t.Fatalf("after a failed build of a modified image: status %s, reference %s", got.Status(), got.Reference)
	}
	// An error from the change aborts it.
	boom := errors.New("boom")
	_, err := s.UpdateBuild(ctx, "img1", b2.Number, func(b *build.Build) error { b.Status = build.Running; return boom })
	wantErr(t, "aborted change", err, boom)
	if b, _ := s.GetBuild(ctx, "img1", b2.Number); b.Status != build.Failed || b.Failure.Reason != build.ReasonDockerfile {
		t.Fatalf("aborted change was written: %+v", b)
	}
}

func buildList(t *testing.T, s store.Store) {
	mustWorkspace(t, s, "ws1", "alice")
	mustImage(t, s, "img1", "ws1", "team/a")
	for range 5 {
		b := mustBuild(t, s, "img1", 1)
		if _, err := s.UpdateBuild(ctx, "img1", b.Number, func(b *build.Build) error { return b.Cancel("alice", t0) }); err != nil {
			t.Fatal(err)
		}
	}
	var numbers []int
	cursor := ""
	for {
		bs, next, err := s.ListBuilds(ctx, "img1", store.Page{Limit: 2, Cursor: cursor})
		if err != nil {
			t.Fatal(err)
		}
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
	_, err := s.GetBuild(ctx, "img1", 9)
	wantErr(t, "unknown build", err, store.ErrNotFound)
}

func logs(t *testing.T, s store.Store) {
	mustWorkspace(t, s, "ws1", "alice")
	mustImage(t, s, "img1", "ws1", "team/a")
	b := mustBuild(t, s, "img1", 1)
	var want bytes.Buffer
	for i := range 20 {
		line := []byte(fmt.Sprintf("step %d\n", i))
		want.Write(line)
		if err := s.AppendLog(ctx, "img1", b.Number, line); err != nil {
			t.Fatal(err)
		}
	}
	for _, off := range []int64{0, 1, 7, 50, int64(want.Len()) - 1, int64(want.Len()), int64(want.Len()) + 10} {
		got, err := s.ReadLog(ctx, "img1", b.Number, off)
		if err != nil {
			t.Fatal(err)
		}
		exp := []byte{}
		if off < int64(want.Len()) {
			exp = want.Bytes()[off:]
		}
		if !bytes.Equal(got, exp) {
			t.Fatalf("ReadLog(offset %d) = %q, want %q", off, got, exp)
		}
	}
	_, err := s.ReadLog(ctx, "img1", 7, 0)
	wantErr(t, "log of unknown build", err, store.ErrNotFound)
	// Bounded reads: any offset and bound, pieced together, give the log.
	for _, max := range []int64{1, 3, 7, 64, 1 << 20} {
		for _, from := range []int64{0, 5, int64(want.Len())} {
			var got []byte
			for off := from; ; {
				p, size, err := s.ReadLogPart(ctx, "img1", b.Number, off, max)
				if err != nil {
					t.Fatal(err)
				}
				if size != int64(want.Len()) || int64(len(p)) > max {
					t.Fatalf("ReadLogPart(%d, %d): %d bytes, size %d; want at most %d bytes, size %d", off, max, len(p), size, max, want.Len())
				}
				if len(p) == 0 {
					break
				}
				got, off = append(got, p...), off+int64(len(p))
			}
			if !bytes.Equal(got, want.Bytes()[from:]) {
				t.Fatalf("ReadLogPart pieces of %d from %d = %q, want %q", max, from, got, want.Bytes()[from:])
			}
		}
	}
	if p, size, err := s.ReadLogPart(ctx, "img1", b.Number, int64(want.Len())+10, 8); err != nil || len(p) != 0 || size != int64(want.Len()) {
		t.Fatalf("ReadLogPart past the end = %q, %d, %v", p, size, err)
	}
	_, _, err = s.ReadLogPart(ctx, "img1", 7, 0, 8)
	wantErr(t, "part of the log of an unknown build", err, store.ErrNotFound)
}

// pruneLogs: the retention deletes the logs of all but the newest builds,
// ended ones only, and keeps every build record.
func pruneLogs(t *testing.T, s store.Store) {
	mustWorkspace(t, s, "ws1", "alice")
	mustImage(t, s, "img1", "ws1", "team/a")
	mustImage(t, s, "img2", "ws1", "team/b")
	other := mustBuild(t, s, "img2", 1)
	if err := s.AppendLog(ctx, "img2", other.Number, []byte("other image\n")); err != nil {
		t.Fatal(err)
	}
	for n := 1; n <= 5; n++ {
		b := mustBuild(t, s, "img1", 1)
		if err := s.AppendLog(ctx, "img1", b.Number, []byte(fmt.Sprintf("log of build %d\n", n))); err != nil {
			t.Fatal(err)
		}
		if n < 5 {
			succeed(t, s, b)
		}
	}
	// Build 5 is still queued; keeping 2 keeps builds 4 and 5.
	pruned, err := s.PruneLogs(ctx, "img1", 2)
	if err != nil || pruned != 3 {
		t.Fatalf("PruneLogs = %d, %v; want 3", pruned, err)
	}
	for n := 1; n <= 5; n++ {
		b, err := s.GetBuild(ctx, "img1", n)
		if err != nil {
			t.Fatalf("build %d after pruning: %v", n, err)
		}
		log, _ := s.ReadLog(ctx, "img1", n, 0)
		if kept := n >= 4; b.LogPruned == kept || (len(log) > 0) != kept {
			t.Fatalf("build %d: log_pruned %v, log %q", n, b.LogPruned, log)
		}
	}
	if pruned, err := s.PruneLogs(ctx, "img1", 2); err != nil || pruned != 0 {
		t.Fatalf("PruneLogs again = %d, %v; want 0", pruned, err)
	}
	if log, _ := s.ReadLog(ctx, "img2", other.Number, 0); string(log) != "other image\n" {
		t.Fatalf("another image's log: %q", log)
	}
	if _, err := s.PruneLogs(ctx, "img1", 0); err == nil {
		t.Fatal("PruneLogs keeping 0: no error")
	}
}

func credentials(t *testing.T, s store.Store) {
	mustWorkspace(t, s, "ws1", "alice")
	c := store.Credential{Workspace: "ws1", Name: "hub", Kind: "registry", Registry: "r.example", Username: "u", Secret: "sealed1"}
	if err := s.PutCredential(ctx, c); err != nil {
		t.Fatal(err)
	}
	c.Secret = "sealed2"
	if err := s.PutCredential(ctx, c); err != nil {
		t.Fatal(err)
	}
	gh := store.Credential{Workspace: "ws1", Name: "gh", Kind: "git", Host: "git.example:8443", Username: "u", Secret: "sealed3"}
	if err := s.PutCredential(ctx, gh); err != nil {
		t.Fatal(err)
	}
	got, err := s.GetCredential(ctx, "ws1", "hub")
	if err != nil || got != c {
		t.Fatalf("GetCredential = %+v, %v; want %+v", got, err, c)
	}
	// A git credential keeps the host it is bound to.
	if got, err := s.GetCredential(ctx, "ws1", "gh"); err != nil || got != gh {
		t.Fatalf("GetCredential = %+v, %v; want %+v", got, err, gh)
	}
	cs, err := s.ListCredentials(ctx, "ws1")
	if err != nil || len(cs) != 2 || cs[0].Name != "gh" || cs[1].Name != "hub" {
		t.Fatalf("ListCredentials = %+v, %v", cs, err)
	}
	if err := s.DeleteCredential(ctx, "ws1", "hub"); err != nil {
		t.Fatal(err)
	}
	wantErr(t, "delete twice", s.DeleteCredential(ctx, "ws1", "hub"), store.ErrNotFound)
	_, err = s.GetCredential(ctx, "ws1", "hub")
	wantErr(t, "deleted credential", err, store.ErrNotFound)
}

func deleteImage(t *testing.T, s store.Store) {
	mustWorkspace(t, s, "ws1", "alice")
	mustImage(t, s, "img1", "ws1", "team/a")
	b := mustBuild(t, s, "img1", 1)
	if err := s.AppendLog(ctx, "img1", b.Number, []byte("hello\n")); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteImage(ctx, "img1"); err != nil {
		t.Fatal(err)
	}
	wantErr(t, "delete twice", s.DeleteImage(ctx, "img1"), store.ErrNotFound)
	_, err := s.GetBuild(ctx, "img1", b.Number)
	wantErr(t, "build of deleted image", err, store.ErrNotFound)
	if active, _ := s.ListActiveBuilds(ctx); len(active) != 0 {
		t.Fatalf("builds of a deleted image still active: %+v", active)
	}
	// The name is free, and a new image of that name starts at build 1.
	mustImage(t, s, "img2", "ws1", "team/a")
	if b := mustBuild(t, s, "img2", 1); b.Number != 1 {
		t.Fatalf("new image's first build is %d", b.Number)
	}
}

func updateKeepsBuildResults(t *testing.T, s store.Store) {
	mustWorkspace(t, s, "ws1", "alice")
	img := mustImage(t, s, "img1", "ws1", "team/a")
	stale, _ := s.GetImage(ctx, "img1") // read before the build ends
	b := succeed(t, s, mustBuild(t, s, "img1", img.DefinitionRev))
	next := stale
	next.Description = "edited while the build ran"
	stale.Edit(next, "bob", t0.Add(time.Hour))
	if err := s.UpdateImage(ctx, stale, img.Version); err != nil {
		t.Fatal(err)
	}
	got, _ := s.GetImage(ctx, "img1")
	if got.Description != "edited while the build ran" || got.Reference != *b.Reference || got.Built == nil ||
		got.Status() != image.StatusBuilt || got.LatestBuild == nil || got.LatestBuild.Status != build.Succeeded {
		t.Fatalf("an edit from a copy read before the build ended undid the build: %+v", got)
	}
}

// imageByName: a name leads to the image that holds it now, across
// workspaces, renames and deletes (the internal registry's owner lookup).
func imageByName(t *testing.T, s store.Store) {
	mustWorkspace(t, s, "ws1", "alice")
	mustWorkspace(t, s, "ws2", "bob")
	mustImage(t, s, "img1", "ws1", "team/a")
	mustImage(t, s, "img2", "ws2", "other/b")
	for name, want := range map[string]string{"team/a": "ws1", "other/b": "ws2"} {
		got, err := s.GetImageByName(ctx, name)
		if err != nil || got.Workspace != want || got.Name != name {
			t.Fatalf("GetImageByName(%s): %+v, %v; want workspace %s", name, got, err, want)
		}
	}
	_, err := s.GetImageByName(ctx, "team")
	wantErr(t, "a prefix of a name", err, store.ErrNotFound)
	_, err = s.GetImageByName(ctx, "nope/x")
	wantErr(t, "unknown name", err, store.ErrNotFound)
	a, _ := s.GetImage(ctx, "img1")
	next := a
	next.Name = "team/renamed"
	a.Edit(next, "alice", t0)
	if err := s.UpdateImage(ctx, a, 1); err != nil {
		t.Fatal(err)
	}
	_, err = s.GetImageByName(ctx, "team/a")
	wantErr(t, "the old name after a rename", err, store.ErrNotFound)
	if got, err := s.GetImageByName(ctx, "team/renamed"); err != nil || got.ID != "img1" {
		t.Fatalf("the new name after a rename: %+v, %v", got, err)
	}
	if err := s.DeleteImage(ctx, "img2"); err != nil {
		t.Fatal(err)
	}
	_, err = s.GetImageByName(ctx, "other/b")
	wantErr(t, "a deleted image's name", err, store.ErrNotFound)
}

// announceStatus announces each build change as "build.<status>" with the
// build's status as data.
func announceStatus(changed any) []store.Event {
	b, ok := changed.(build.Build)
	if !ok {
		img := changed.(image.Image)
		return []store.Event{{Type: "image.v" + fmt.Sprint(img.Version), Subject: img.ID, Data: img.Name}}
	}
	return []store.Event{{Type: "build." + string(b.Status), Subject: b.ID(), Data: map[string]string{"status": string(b.Status)}}}
}

func outboxInOrder(t *testing.T, s store.Store) {
	mustWorkspace(t, s, "ws1", "alice")
	mustImage(t, s, "img1", "ws1", "team/a")
	mustImage(t, s, "img2", "ws1", "team/b")
	actx := store.Announce(ctx, announceStatus)
	b1, err := s.CreateBuild(actx, build.New("img1", 1, "alice", build.TriggerManual, t0))
	if err != nil {
		t.Fatal(err)
	}
	b2, err := s.CreateBuild(actx, build.New("img2", 1, "alice", build.TriggerManual, t0))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.UpdateBuild(actx, "img1", b1.Number, func(b *build.Build) error { return b.Start(t0) }); err != nil {
		t.Fatal(err)
	}
	if _, err := s.UpdateBuild(ctx, "img2", b2.Number, func(b *build.Build) error { return b.Start(t0) }); err != nil {
		t.Fatal(err) // announces nothing: no Announcement
	}
	if _, err := s.UpdateBuild(actx, "img1", b1.Number, func(b *build.Build) error { return b.Cancel("alice", t0) }); err != nil {
		t.Fatal(err)
	}
	evs, err := s.PendingEvents(ctx, 100)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	seq := map[string]int64{}
	ids := map[string]bool{}
	for _, e := range evs {
		got = append(got, e.Subject+" "+e.Type+" "+string(e.Data))
		if e.Sequence <= seq[e.Subject] {
			t.Errorf("event %s of %s has sequence %d after %d", e.Type, e.Subject, e.Sequence, seq[e.Subject])
		}
		seq[e.Subject] = e.Sequence
		if e.ID == "" || ids[e.ID] || e.Time.IsZero() {
			t.Errorf("event %+v: want a unique ID and a time", e)
		}
		ids[e.ID] = true
	}
	want := []string{
		`img1-1 build.queued {"status":"queued"}`, `img2-1 build.queued {"status":"queued"}`,
		`img1-1 build.running {"status":"running"}`, `img1-1 build.cancelled {"status":"cancelled"}`,
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("outbox:\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if first, err := s.PendingEvents(ctx, 1); err != nil || len(first) != 1 || first[0].ID != evs[0].ID {
		t.Errorf("PendingEvents(1) = %v, %v; want the oldest", first, err)
	}
	if err := s.DeliveredEvents(ctx, evs[0].ID, evs[2].ID, "no-such-event"); err != nil {
		t.Fatal(err)
	}
	left, err := s.PendingEvents(ctx, 100)
	if err != nil || len(left) != 2 || left[0].ID != evs[1].ID || left[1].ID != evs[3].ID {
		t.Errorf("after delivery: %v, %v; want the second and the fourth", left, err)
	}
}

func outboxAtomic(t *testing.T, s store.Store) {
	mustWorkspace(t, s, "ws1", "alice")
	mustImage(t, s, "img1", "ws1", "team/a")
	actx := store.Announce(ctx, announceStatus)
	b, err := s.CreateBuild(actx, build.New("img1", 1, "alice", build.TriggerManual, t0))
	if err != nil {
		t.Fatal(err)
	}
	// A refused change writes no event; so does a second active build.
	if _, err := s.UpdateBuild(actx, "img1", b.Number, func(*build.Build) error { return build.ErrTransition }); !errors.Is(err, build.ErrTransition) {
		t.Fatalf("UpdateBuild = %v", err)
	}
	if _, err := s.CreateBuild(actx, build.New("img1", 1, "alice", build.TriggerManual, t0)); !errors.Is(err, store.ErrBuildActive) {
		t.Fatalf("second CreateBuild = %v", err)
	}
	evs, err := s.PendingEvents(ctx, 100)
	if err != nil || len(evs) != 1 || evs[0].Type != "build.queued" {
		t.Errorf("outbox = %v, %v; want the one queued event", evs, err)
	}
}

func outboxImages(t *testing.T, s store.Store) {
	mustWorkspace(t, s, "ws1", "alice")
	actx := store.Announce(ctx, announceStatus)
	img := NewImage("img1", "ws1", "team/a")
	if err := s.CreateImage(actx, img); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateImage(actx, NewImage("img2", "ws1", "team/a")); !errors.Is(err, store.ErrNameTaken) {
		t.Fatalf("a second team/a: %v", err)
	}
	next := img
	next.Name, next.Version = "team/b", 2
	if err := s.UpdateImage(actx, next, 1); err != nil {
		t.Fatal(err)
	}
	if err := s.UpdateImage(actx, next, 1); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("a stale update: %v", err)
	}
	if err := s.DeleteImage(actx, "img1"); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteImage(actx, "img1"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("deleting again: %v", err)
	}
	evs, err := s.PendingEvents(ctx, 100)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range evs {
		got = append(got, e.Subject+" "+e.Type+" "+string(e.Data))
	}
	want := []string{`img1 image.v1 "team/a"`, `img1 image.v2 "team/b"`, `img1 image.v2 "team/b"`}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("outbox:\n%s\nwant (created, updated, deleted)\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// catalogueChanges: a workspace's Catalogue takes a new value, never one
// seen before, with every change of its images (builds too), also across a
// delete and a new announcement of the workspace; or it is always 0 (the
// backend keeps none, and nothing is cached).
func catalogueChanges(t *testing.T, s store.Store) {
	mustWorkspace(t, s, "ws1", "alice")
	mustWorkspace(t, s, "ws2", "alice")
	first, err := s.GetWorkspace(ctx, "ws1")
	if err != nil {
		t.Fatal(err)
	}
	seen := map[int64]string{first.Catalogue: "announced"}
	step := func(what string) {
		t.Helper()
		ws, err := s.GetWorkspace(ctx, "ws1")
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if first.Catalogue == 0 {
			if ws.Catalogue != 0 {
				t.Fatalf("%s: catalogue %d after a 0 one: a backend keeps it always or never", what, ws.Catalogue)
			}
			return
		}
		if before, ok := seen[ws.Catalogue]; ok {
			t.Fatalf("%s: catalogue %d again, as after %q", what, ws.Catalogue, before)
		}
		seen[ws.Catalogue] = what
	}
	img := mustImage(t, s, "img1", "ws1", "team/a")
	step("create")
	next := img
	next.Description = "changed"
	img.Edit(next, "alice", t0.Add(time.Minute))
	if err := s.UpdateImage(ctx, img, 1); err != nil {
		t.Fatal(err)
	}
	step("update")
	b := mustBuild(t, s, "img1", img.DefinitionRev)
	step("build queued")
	succeed(t, s, b)
	step("build succeeded")
	mustImage(t, s, "img2", "ws2", "team/b")
	if ws2, _ := s.GetWorkspace(ctx, "ws2"); first.Catalogue != 0 && ws2.Catalogue == 0 {
		t.Fatal("ws2's catalogue did not change with its image")
	}
	if err := s.DeleteImage(ctx, "img1"); err != nil {
		t.Fatal(err)
	}
	step("delete")
	if err := s.ApplyWorkspace(ctx, "test/catalogue-delete", store.Order{Sequence: fmt.Sprint(seq.Add(1))}, store.Workspace{ID: "ws1"}, true); err != nil {
		t.Fatal(err)
	}
	mustWorkspace(t, s, "ws1", "alice")
	mustImage(t, s, "img3", "ws1", "team/a")
	step("deleted, announced again, image created")
}
