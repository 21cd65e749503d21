package auth

import (
	"context"
	"crypto/sha256"
	"sync"
	"time"
)

// Cache wraps a Verifier and remembers successful verifications for up to
// ttl (never past a token's expiry), so a client's repeated requests cost one
// signature check. At most size tokens are kept; when full, it starts over.
func Cache(v Verifier, size int, ttl time.Duration) Verifier {
	return &cache{next: v, size: size, ttl: ttl, m: map[[32]byte]cached{}}
}

type cached struct {
	id    Identity
	until time.Time
}

type cache struct {
	next Verifier
	size int
	ttl  time.Duration
	mu   sync.Mutex
	m    map[[32]byte]cached
}

func (c *cache) Verify(ctx context.Context, token string) (Identity, error) {
	key := sha256.Sum256([]byte(token))
	now := time.Now()
	c.mu.Lock()
	e, ok := c.m[key]
	c.mu.Unlock()
	if ok && now.Before(e.until) {
		return e.id, nil
	}
	id, err := c.next.Verify(ctx, token)
	if err != nil {
		return id, err
	}
	until := now.Add(c.ttl)
	if !id.Expires.IsZero() && id.Expires.Before(until) {
		until = id.Expires
	}
	c.mu.Lock()
	if len(c.m) >= c.size {
		clear(c.m)
	}
	c.m[key] = cached{id: id, until: until}
	c.mu.Unlock()
	return id, nil
}
