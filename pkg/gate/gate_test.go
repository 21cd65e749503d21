package gate

import (
	"testing"
	"time"
)

func TestExclusiveWaitsForNoOne(t *testing.T) {
	g := New()
	release := g.Shared()
	if _, ok := g.TryExclusive(0); ok {
		t.Fatal("exclusive while a build holds the gate")
	}
	release()
	release() // twice is harmless
	done, ok := g.TryExclusive(0)
	if !ok {
		t.Fatal("exclusive refused on a free gate")
	}
	if _, ok := g.TryExclusive(0); ok {
		t.Fatal("two exclusive holders")
	}
	entered := make(chan struct{})
	go func() { g.Shared()(); close(entered) }()
	select {
	case <-entered:
		t.Fatal("a shared holder entered during a collection")
	case <-time.After(50 * time.Millisecond):
	}
	done()
	select {
	case <-entered:
	case <-time.After(5 * time.Second):
		t.Fatal("a shared holder still waits after the collection ended")
	}
}

func TestExclusiveWaitsForQuiet(t *testing.T) {
	g := New()
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	g.now = func() time.Time { return now }
	g.Shared()()
	release, ok := g.TryExclusive(time.Minute)
	if !ok {
		t.Fatal("a holder that wrote nothing delays the collection")
	}
	release()
	g.Wrote()
	if _, ok := g.TryExclusive(time.Minute); ok {
		t.Fatal("exclusive right after a write")
	}
	now = now.Add(time.Minute)
	release, ok = g.TryExclusive(time.Minute)
	if !ok {
		t.Fatal("exclusive refused after a quiet minute")
	}
	release()
}
