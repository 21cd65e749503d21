package build

import (
	"errors"
	"testing"
	"time"
)

func TestPushTransitions(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	b := New("img", 1, "alice", TriggerManual, t0)
	dests := []Push{{Reference: "r/team/a:latest", Status: PushPushed}, {Reference: "ext/team/a:v1"}}
	if err := b.ClaimPushes(dests, time.Minute, t0); !errors.Is(err, ErrTransition) {
		t.Fatalf("claiming a queued build's pushes: %v", err)
	}
	b.Start(t0)
	if err := b.ClaimPushes(dests, time.Minute, t0); err != nil || b.Pushes[1].Status != PushPushing || !b.Pushes[1].At.Equal(t0) {
		t.Fatalf("claim: %v %+v", err, b.Pushes)
	}
	if err := b.ClaimPushes(dests, time.Minute, t0.Add(30*time.Second)); !errors.Is(err, ErrClaimed) {
		t.Fatalf("a second claim within the bound: %v", err)
	}
	if err := b.ClaimPushes(dests, time.Minute, t0.Add(2*time.Minute)); err != nil {
		t.Fatalf("a claim after the first lapsed: %v", err)
	}
	msg := "401 Unauthorized"
	t1 := t0.Add(3 * time.Minute)
	failed := []Push{dests[0], {Reference: "ext/team/a:v1", Status: PushFailed, Error: &msg, At: &t1}}
	if err := b.RecordPush(Push{Reference: "ext/team/a:v1", Status: PushPushed}); !errors.Is(err, ErrTransition) {
		t.Fatalf("push again before the build succeeded: %v", err)
	}
	// The build succeeds with a refused destination.
	if err := b.Succeed("sha256:x", "r/team/a@sha256:x", failed, t1); err != nil || b.Status != Succeeded || b.Failure != nil {
		t.Fatalf("succeed: %v %+v", err, b)
	}
	t3, t2 := t0.Add(5*time.Minute), t0.Add(4*time.Minute)
	if err := b.RecordPush(Push{Reference: "ext/team/a:v1", Status: PushPushed, At: &t3}); err != nil || b.Pushes[1].Status != PushPushed {
		t.Fatalf("push again: %v %+v", err, b.Pushes)
	}
	// An older attempt that ends later leaves the newer result.
	if err := b.RecordPush(Push{Reference: "ext/team/a:v1", Status: PushFailed, Error: &msg, At: &t2}); err != nil || b.Pushes[1].Status != PushPushed {
		t.Fatalf("an older attempt's result: %v %+v", err, b.Pushes)
	}
	for _, ref := range []string{"r/team/a:latest", "ext/team/other:v1"} {
		if err := b.RecordPush(Push{Reference: ref, Status: PushPushed, At: &t3}); !errors.Is(err, ErrNoDestination) {
			t.Errorf("push again to %s: %v", ref, err)
		}
	}
}
