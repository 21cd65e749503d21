package dispatch

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/slipway-dev/slipway/pkg/build"
	"github.com/slipway-dev/slipway/pkg/buildcontext"
	"github.com/slipway-dev/slipway/pkg/secret"
)

// panicRunner is a runner whose executor panics: the stand-in for any
// library that panics on a build's input.
type panicRunner struct{}

func (panicRunner) Run(context.Context, build.Spec, io.Writer) (build.Outcome, error) {
	panic("a parser fell over")
}

// A panic in a slot fails that build with reason internal, naming the cause,
// and the slot goes on serving the next build.
func TestPanickingBuildFailsInternal(t *testing.T) {
	s := logStore(t) // img1 with build 1 queued, on a real SQLite file
	box, err := secret.LoadBox(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	work := t.TempDir()
	d := New(Options{
		Store: s, Runner: panicRunner{}, Events: &published{}, Secrets: box,
		Contexts: &buildcontext.Preparer{WorkDir: work}, Registry: "127.0.0.1:1",
		Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err := d.Start(time.Hour); err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	ctx := context.Background()
	wait := func(n int) build.Build {
		t.Helper()
		for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
			if b, err := s.GetBuild(ctx, "img1", n); err == nil && !b.Status.Active() {
				return b
			}
		}
		t.Fatalf("build %d did not end", n)
		return build.Build{}
	}
	b := wait(1)
	if b.Status != build.Failed || b.Failure == nil || b.Failure.Reason != build.ReasonInternal ||
		!strings.Contains(b.Failure.Message, "internal error: a parser fell over") {
		t.Fatalf("build 1: %s %+v", b.Status, b.Failure)
	}
	if entries, _ := os.ReadDir(work); len(entries) != 0 {
		t.Fatalf("the panicking build left %v", entries)
	}
	// The slot is still there.
	if _, err := s.CreateBuild(ctx, build.New("img1", 2, "alice", build.TriggerManual, time.Now())); err != nil {
		t.Fatal(err)
	}
	d.enqueue(ref{"img1", 2})
	if b := wait(2); b.Failure == nil || b.Failure.Reason != build.ReasonInternal {
		t.Fatalf("build 2: %s %+v", b.Status, b.Failure)
	}
}

// A context left behind by a crash (a killed server mid-fetch) is removed by
// the reconciler; a running build's is not.
func TestReconcileRemovesLeftContexts(t *testing.T) {
	s := logStore(t)
	work := t.TempDir()
	for _, id := range []string{"img0-7", "img9-1"} {
		if err := os.MkdirAll(filepath.Join(work, id, "repo"), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	d := New(Options{Store: s, Runner: panicRunner{}, Events: &published{}, Contexts: &buildcontext.Preparer{WorkDir: work},
		Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	d.running["img9-1"] = func() {}
	if err := d.Reconcile(context.Background()); err != nil {
		t.Fatal(err)
	}
	left, _ := os.ReadDir(work)
	if len(left) != 1 || left[0].Name() != "img9-1" {
		t.Fatalf("left after reconciling: %v", left)
	}
}
