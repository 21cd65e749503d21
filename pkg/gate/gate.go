// Package gate keeps the internal registry's garbage collection away from
// what writes to it: builds and content changes hold the gate shared while
// they run; a collection runs only when it gets the gate exclusively.
package gate

import (
	"sync"
	"time"
)

// Gate is a shared/exclusive gate whose exclusive side never waits: a
// collection that finds the gate held is skipped and tried again later, so
// a long build never makes other builds wait behind a pending collection.
type Gate struct {
	mu sync.RWMutex

	last   sync.Mutex
	lastAt time.Time // when a write was last accepted
	now    func() time.Time
}

// New returns an open gate.
func New() *Gate { return &Gate{now: time.Now} }

// Shared holds the gate shared until release is called. It waits only while
// a collection runs.
func (g *Gate) Shared() (release func()) {
	g.mu.RLock()
	var once sync.Once
	return func() { once.Do(g.mu.RUnlock) }
}

// Wrote records that a write was accepted: a push of several requests,
// each holding the gate alone, leaves gaps between them that a collection
// must not fall into (a blob uploaded but not yet referenced by the
// manifest that follows).
func (g *Gate) Wrote() {
	g.last.Lock()
	g.lastAt = g.now()
	g.last.Unlock()
}

// TryExclusive takes the gate exclusively if nobody holds it and no write
// was recorded within quiet. ok is false when it is busy; it never waits.
func (g *Gate) TryExclusive(quiet time.Duration) (release func(), ok bool) {
	if !g.mu.TryLock() {
		return nil, false
	}
	g.last.Lock()
	recent := !g.lastAt.IsZero() && g.now().Sub(g.lastAt) < quiet
	g.last.Unlock()
	if recent {
		g.mu.Unlock()
		return nil, false
	}
	return g.mu.Unlock, true
}
