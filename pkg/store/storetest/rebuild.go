package storetest

import (
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/slipway-dev/slipway/pkg/build"
	"github.com/slipway-dev/slipway/pkg/image"
	"github.com/slipway-dev/slipway/pkg/store"
)

// rebuildRequests: the builds Slipway starts by itself are idempotent on
// their key, coalesced behind an active build, and started when it ends.
func rebuildRequests(t *testing.T, s store.Store) {
	mustWorkspace(t, s, "ws1", "alice")
	mustImage(t, s, "img1", "ws1", "team/a")
	slot := t0.Add(time.Hour)
	auto := func(reason string) build.Build {
		b := build.New("img1", 1, "alice", build.TriggerSchedule, t0)
		b.Cause = &build.Cause{Reason: reason}
		return b
	}
	b, pending, err := s.RequestBuild(ctx, "schedule/img1/1", auto("first"), func(st *image.RebuildState) { st.LastSlot = &slot })
	if err != nil || pending || b.Number != 1 || b.Cause == nil || b.Cause.Reason != "first" {
		t.Fatalf("RequestBuild = %+v, %v, %v", b, pending, err)
	}
	got, _ := s.GetImage(ctx, "img1")
	if got.LatestBuild == nil || got.LatestBuild.Number != 1 || got.RebuildState.LastSlot == nil || !got.RebuildState.LastSlot.Equal(slot) {
		t.Fatalf("after a request: latest %+v, state %+v", got.LatestBuild, got.RebuildState)
	}
	// The same key again changes nothing, not even the state.
	later := slot.Add(time.Hour)
	_, _, err = s.RequestBuild(ctx, "schedule/img1/1", auto("again"), func(st *image.RebuildState) { st.LastSlot = &later })
	wantErr(t, "a key requested twice", err, store.ErrDuplicate)
	if got, _ := s.GetImage(ctx, "img1"); !got.RebuildState.LastSlot.Equal(slot) {
		t.Fatal("a duplicate request changed the rebuild state")
	}
	// While build 1 is active, requests wait: one pending, the next counted.
	for i, key := range []string{"event/x", "event/y"} {
		if _, pending, err := s.RequestBuild(ctx, key, auto(key), nil); err != nil || !pending {
			t.Fatalf("request %d while active: pending %v, %v", i, pending, err)
		}
	}
	got, _ = s.GetImage(ctx, "img1")
	if p := got.RebuildState.Pending; p == nil || p.Cause.Reason != "event/x" || p.Cause.Coalesced != 1 || got.LatestBuild.Number != 1 {
		t.Fatalf("pending %+v, latest %d", p, got.LatestBuild.Number)
	}
	if bs, _, _ := s.ListBuilds(ctx, "img1", store.Page{Limit: 10}); len(bs) != 1 {
		t.Fatalf("%d builds while one is active", len(bs))
	}
	_, err = s.StartPending(ctx, "img1")
	wantErr(t, "starting a pending build while one is active", err, store.ErrBuildActive)
	// The definition changes while the build waits: it builds the new one.
	cur, _ := s.GetImage(ctx, "img1")
	cur.DefinitionRev, cur.Version = cur.DefinitionRev+1, cur.Version+1
	if err := s.UpdateImage(ctx, cur, cur.Version-1); err != nil {
		t.Fatal(err)
	}
	if _, err := s.UpdateBuild(ctx, "img1", 1, func(b *build.Build) error { return b.Cancel("alice", t0) }); err != nil {
		t.Fatal(err)
	}
	started, err := s.StartPending(ctx, "img1")
	if err != nil || started.Number != 2 || started.Status != build.Queued || started.Cause.Reason != "event/x" || started.DefinitionRev != cur.DefinitionRev {
		t.Fatalf("StartPending = %+v, %v", started, err)
	}
	_, err = s.StartPending(ctx, "img1")
	wantErr(t, "starting it again", err, store.ErrNotFound)
	got, _ = s.GetImage(ctx, "img1")
	if got.RebuildState.Pending != nil || got.LatestBuild.Number != 2 {
		t.Fatalf("after the start: pending %+v, latest %d", got.RebuildState.Pending, got.LatestBuild.Number)
	}
	_, err = s.StartPending(ctx, "nope")
	wantErr(t, "an unknown image", err, store.ErrNotFound)
	_, _, err = s.RequestBuild(ctx, "event/z", build.New("nope", 1, "a", build.TriggerEvent, t0), nil)
	wantErr(t, "a request for an unknown image", err, store.ErrNotFound)
}

// rebuildStateKept: the rebuild state changes without a version, and an
// edit keeps what triggers wrote (but takes who set the policy).
func rebuildStateKept(t *testing.T, s store.Store) {
	mustWorkspace(t, s, "ws1", "alice")
	img := mustImage(t, s, "img1", "ws1", "team/a")
	checked := t0.Add(time.Minute)
	if err := s.UpdateRebuildState(ctx, "img1", func(st *image.RebuildState) error {
		st.CheckedAt, st.UpToDate, st.Commit, st.HookSecret = &checked, true, "abc", "sealed"
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	boom := errors.New("boom")
	wantErr(t, "a change that fails", s.UpdateRebuildState(ctx, "img1", func(st *image.RebuildState) error { st.Commit = "x"; return boom }), boom)
	wantErr(t, "an unknown image", s.UpdateRebuildState(ctx, "nope", func(*image.RebuildState) error { return nil }), store.ErrNotFound)
	got, _ := s.GetImage(ctx, "img1")
	if got.Version != img.Version || got.RebuildState.Commit != "abc" || !got.RebuildState.UpToDate || got.RebuildState.HookSecret != "sealed" {
		t.Fatalf("after UpdateRebuildState: version %d, state %+v", got.Version, got.RebuildState)
	}
	// An edit based on the read before keeps the state, and sets the policy.
	img.Rebuild = image.Rebuild{OnBaseImageUpdate: true, Schedule: &image.Schedule{Cron: "@daily", Timezone: "UTC"}}
	img.RebuildState.SetBy = &image.Stamp{By: "alice", At: t0}
	img.Version++
	if err := s.UpdateImage(ctx, img, img.Version-1); err != nil {
		t.Fatal(err)
	}
	got, _ = s.GetImage(ctx, "img1")
	if !got.Rebuild.Equal(img.Rebuild) || got.RebuildState.SetBy == nil || got.RebuildState.SetBy.By != "alice" ||
		got.RebuildState.Commit != "abc" || got.RebuildState.CheckedAt == nil || got.RebuildState.HookSecret != "sealed" {
		t.Fatalf("after an edit: policy %+v, state %+v", got.Rebuild, got.RebuildState)
	}
}

// listAutomatic: images with a policy or a pending build, across
// workspaces, by name, in pages.
func listAutomatic(t *testing.T, s store.Store) {
	mustWorkspace(t, s, "ws1", "alice")
	mustWorkspace(t, s, "ws2", "carol")
	for i, n := range []string{"a/one", "b/two", "c/three", "d/four"} {
		img := NewImage("img"+n[:1], []string{"ws1", "ws2"}[i%2], n)
		if n != "c/three" {
			img.Rebuild.OnBaseImageUpdate = true
		}
		if err := s.CreateImage(ctx, img); err != nil {
			t.Fatal(err)
		}
	}
	// c/three gains a pending build (an event's, while a build is active).
	if _, err := s.CreateBuild(ctx, build.New("imgc", 1, "carol", build.TriggerManual, t0)); err != nil {
		t.Fatal(err)
	}
	if _, pending, err := s.RequestBuild(ctx, "event/1", build.New("imgc", 1, "platform", build.TriggerEvent, t0), nil); err != nil || !pending {
		t.Fatalf("pending %v, %v", pending, err)
	}
	mustImage(t, s, "imge", "ws1", "e/none")
	var names []string
	p := store.Page{Limit: 3}
	for {
		imgs, next, err := s.ListAutomatic(ctx, p)
		if err != nil {
			t.Fatal(err)
		}
		for _, img := range imgs {
			names = append(names, img.Name)
		}
		if next == "" {
			break
		}
		p.Cursor = next
	}
	if want := []string{"a/one", "b/two", "c/three", "d/four"}; !equal(names, want) {
		t.Fatalf("ListAutomatic = %v, want %v", names, want)
	}
}

// concurrentRequests: replicas requesting one key at once make one build.
func concurrentRequests(t *testing.T, s store.Store) {
	mustWorkspace(t, s, "ws1", "alice")
	mustImage(t, s, "img1", "ws1", "team/a")
	var wg sync.WaitGroup
	var mu sync.Mutex
	created, dup := 0, 0
	for range 8 {
		wg.Go(func() {
			_, pending, err := s.RequestBuild(ctx, "schedule/img1/slot", build.New("img1", 1, "alice", build.TriggerSchedule, t0), nil)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil && !pending:
				created++
			case errors.Is(err, store.ErrDuplicate):
				dup++
			default:
				t.Errorf("RequestBuild: pending %v, %v", pending, err)
			}
		})
	}
	wg.Wait()
	if created != 1 || dup != 7 {
		t.Fatalf("%d created, %d duplicates; want 1 and 7", created, dup)
	}
}

func equal(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
