package dispatch

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/slipway-dev/slipway/pkg/build"
	"github.com/slipway-dev/slipway/pkg/buildcontext"
	"github.com/slipway-dev/slipway/pkg/secret"
	"github.com/slipway-dev/slipway/pkg/store"
	"github.com/slipway-dev/slipway/pkg/store/sqlite"
	"github.com/slipway-dev/slipway/pkg/store/storetest"
)

// orderRunner records the order builds reach the runner in. It stands in
// for Kaniko because what is tested is the queue's order, not the build
// (a real build per entry would add minutes and change nothing here).
type orderRunner struct {
	mu  sync.Mutex
	ids []string
}

func (r *orderRunner) Run(_ context.Context, spec build.Spec, _ io.Writer) (build.Outcome, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.ids = append(r.ids, spec.ID)
	return build.Outcome{ExitCode: 1}, nil
}

func (r *orderRunner) started() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.ids)
}

// A burst of builds of different images, with one slot, starts in the
// order of their queued_at even when their build.queued events arrive in
// the reverse order (concurrent requests publish after their commits in
// any order): the queue follows the store.
func TestQueueFollowsQueuedAt(t *testing.T) {
	s, err := sqlite.Open(filepath.Join(t.TempDir(), "slipway.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	s.ApplyWorkspace(ctx, "k", store.Order{}, store.Workspace{ID: "ws1", Owner: "alice"}, false)
	box, err := secret.LoadBox(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	runner := &orderRunner{}
	d := New(Options{
		Store: s, Runner: runner, Events: &published{}, Secrets: box, Slots: 1,
		Contexts: &buildcontext.Preparer{WorkDir: t.TempDir()}, Registry: "127.0.0.1:1",
		Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err := d.Start(time.Hour); err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	const n = 8
	var want []string
	var refs []ref
	for i := range n {
		id := fmt.Sprintf("img%d", i)
		if err := s.CreateImage(ctx, storetest.NewImage(id, "ws1", "team/fifo"+fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
		// The callers' own times run backwards: the store's stamp counts.
		b, err := s.CreateBuild(ctx, build.New(id, 1, "alice", build.TriggerManual, time.Now().Add(-time.Duration(i)*time.Second)))
		if err != nil {
			t.Fatal(err)
		}
		want = append(want, b.ID())
		refs = append(refs, ref{b.Image, b.Number})
	}
	for _, r := range slices.Backward(refs) {
		d.enqueue(r)
	}
	for deadline := time.Now().Add(20 * time.Second); len(runner.started()) < n && time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond)
	}
	if got := runner.started(); !slices.Equal(got, want) {
		t.Fatalf("builds started in the order %v, want queued_at order %v", got, want)
	}
	// The last build reached the runner; its outcome is stored just after.
	var active []build.Build
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		active, err = s.ListActiveBuilds(ctx)
		if err != nil || len(active) == 0 || time.Now().After(deadline) {
			break
		}
	}
	if err != nil || len(active) != 0 {
		t.Fatalf("still active after the runner returned: %v, %v", active, err)
	}
}
