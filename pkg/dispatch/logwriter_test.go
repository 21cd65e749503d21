package dispatch

import (
	"bytes"
	"context"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/slipway-dev/slipway/pkg/build"
	"github.com/slipway-dev/slipway/pkg/store"
	"github.com/slipway-dev/slipway/pkg/store/sqlite"
	"github.com/slipway-dev/slipway/pkg/store/storetest"
)

// logStore is a real SQLite store with one image and one build.
func logStore(t *testing.T) store.Store {
	s, err := sqlite.Open(filepath.Join(t.TempDir(), "slipway.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	ctx := context.Background()
	s.ApplyWorkspace(ctx, "k", store.Order{}, store.Workspace{ID: "ws1", Owner: "alice"}, false)
	if err := s.CreateImage(ctx, storetest.NewImage("img1", "ws1", "team/log")); err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreateBuild(ctx, build.New("img1", 1, "alice", build.TriggerManual, time.Now())); err != nil {
		t.Fatal(err)
	}
	return s
}

func TestLogWriterCapsAndFlushes(t *testing.T) {
	s := logStore(t)
	w := newLogWriter(s, "img1", 1, 1<<20, 20*time.Millisecond)
	line := bytes.Repeat([]byte("x"), 1023)
	line = append(line, '\n')
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 400 { // 4 × 400 KiB: past the 1 MiB cap
				w.Write(line)
			}
		}()
	}
	// While the build runs, the log becomes readable in pieces: the timer
	// flushes before Close (polled, since a loaded machine
	// may delay the first flush past any fixed sleep).
	flushed := make(chan bool, 1)
	go func() {
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
			if got, _ := s.ReadLog(context.Background(), "img1", 1, 0); len(got) > 0 {
				flushed <- true
				return
			}
		}
		flushed <- false
	}()
	if !<-flushed {
		t.Fatal("nothing flushed while writing")
	}
	wg.Wait()
	w.Notef("the end")
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	got, _ := s.ReadLog(context.Background(), "img1", 1, 0)
	marker := "[slipway: the log is cut here at 1 MiB; the build goes on]"
	if !strings.HasSuffix(strings.TrimSpace(string(got)), marker) || len(got) > 1<<20+200 || len(got) < 1<<20 {
		t.Fatalf("log of %d bytes ends %q", len(got), got[len(got)-80:])
	}
	// The tail keeps what came after the cut, for classifying the failure.
	if !strings.HasSuffix(w.Tail(), "[slipway] the end\n") || len(w.Tail()) > tailSize {
		t.Fatalf("tail: %d bytes ending %q", len(w.Tail()), w.Tail()[len(w.Tail())-30:])
	}
}
