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
	// The head (half the cap), a marker, a line saying what was cut, and
	// the tail (the rest of the cap, from a line start), ending with the
	// last line written.
	log := string(got)
	cutAt := strings.Index(log, "\n[slipway: the log passed half of its cap of 1 MiB here: its middle is cut, and its last 512 KiB follow when the build ends]\n")
	if cutAt != 512<<10 {
		t.Fatalf("the cut marker is at %d, want %d", cutAt, 512<<10)
	}
	if !strings.Contains(log, "KiB of the log's middle were cut here; its last ") || len(got) > 1<<20+400 || len(got) < 1<<20-2048 {
		t.Fatalf("log of %d bytes, without the cut's size", len(got))
	}
	if !strings.HasSuffix(log, "x\n[slipway] the end\n") {
		t.Fatalf("log ends %q", log[len(log)-80:])
	}
	mid := strings.Index(log, "were cut here;")
	if after := log[strings.Index(log[mid:], "\n")+mid+1:]; !strings.HasPrefix(after, strings.Repeat("x", 1023)+"\n") {
		t.Fatalf("the tail does not start at a line: %q", after[:40])
	}
	// The tail keeps what came after the cut, for classifying the failure.
	if !strings.HasSuffix(w.Tail(), "[slipway] the end\n") || len(w.Tail()) > tailSize {
		t.Fatalf("tail: %d bytes ending %q", len(w.Tail()), w.Tail()[len(w.Tail())-30:])
	}
}
