package auth

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

func TestIssueAndVerify(t *testing.T) {
	dir := t.TempDir()
	iss, err := LoadIssuer(dir)
	if err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(filepath.Join(dir, KeyFile))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v, %v", st, err)
	}
	tok, err := iss.Issue("alice", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	// The same data dir verifies it; another does not.
	again, _ := LoadIssuer(dir)
	if id, err := again.Verify(context.Background(), tok); err != nil || id.Subject != "alice" {
		t.Fatalf("Verify = %+v, %v", id, err)
	}
	other, _ := LoadIssuer(t.TempDir())
	expired, _ := iss.Issue("alice", -time.Minute)
	for name, bad := range map[string]string{
		"foreign key": func() string { s, _ := other.Issue("alice", time.Hour); return s }(),
		"expired":     expired,
		"garbage":     "not.a.jwt",
		"tampered":    tok[:len(tok)-3] + "AAA",
		"alg none":    "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiJhbGljZSIsImlzcyI6InNsaXB3YXktbG9jYWwiLCJleHAiOjQxMDI0NDQ4MDB9.",
	} {
		if _, err := iss.Verify(context.Background(), bad); !errors.Is(err, ErrUnauthenticated) {
			t.Errorf("%s: %v", name, err)
		}
	}
	if _, err := iss.Issue("", time.Hour); err == nil {
		t.Error("issued a token without subject")
	}
}

func TestConcurrentFirstUseAgreesOnOneKey(t *testing.T) {
	dir := t.TempDir()
	var wg sync.WaitGroup
	issuers := make([]*Issuer, 8)
	for i := range issuers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var err error
			if issuers[i], err = LoadIssuer(dir); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	tok, _ := issuers[0].Issue("bob", time.Hour)
	for i, iss := range issuers {
		if _, err := iss.Verify(context.Background(), tok); err != nil {
			t.Fatalf("issuer %d disagrees: %v", i, err)
		}
	}
}

// countingVerifier counts the verifications that reach it.
type countingVerifier struct {
	Verifier
	n int
}

func (c *countingVerifier) Verify(ctx context.Context, tok string) (Identity, error) {
	c.n++
	return c.Verifier.Verify(ctx, tok)
}

func TestCache(t *testing.T) {
	iss, _ := LoadIssuer(t.TempDir())
	inner := &countingVerifier{Verifier: iss}
	v := Cache(inner, 2, time.Minute)
	tok, _ := iss.Issue("alice", time.Hour)
	for range 3 {
		if id, err := v.Verify(context.Background(), tok); err != nil || id.Subject != "alice" {
			t.Fatal(id, err)
		}
	}
	if inner.n != 1 {
		t.Fatalf("%d verifications, want 1", inner.n)
	}
	// Failures are not cached, and a token is not served past its expiry.
	for range 2 {
		if _, err := v.Verify(context.Background(), "bad"); err == nil {
			t.Fatal("bad token accepted")
		}
	}
	if inner.n != 3 {
		t.Fatalf("%d verifications, want 3", inner.n)
	}
	short, _ := iss.Issue("bob", 1500*time.Millisecond)
	v.Verify(context.Background(), short)
	time.Sleep(2600 * time.Millisecond) // past expiry and the verifier's 30 s leeway does not apply to the cache
	inner.n = 0
	v.Verify(context.Background(), short)
	if inner.n != 1 {
		t.Fatal("an expired token was served from the cache")
	}
}

func TestAny(t *testing.T) {
	a, _ := LoadIssuer(t.TempDir())
	b, _ := LoadIssuer(t.TempDir())
	c, _ := LoadIssuer(t.TempDir())
	v := Any(a, b)
	for name, iss := range map[string]*Issuer{"first": a, "second": b} {
		tok, _ := iss.Issue("svc-"+name, time.Hour)
		if id, err := v.Verify(context.Background(), tok); err != nil || id.Subject != "svc-"+name {
			t.Errorf("%s verifier's token: %+v, %v", name, id, err)
		}
	}
	tok, _ := c.Issue("mallory", time.Hour)
	if _, err := v.Verify(context.Background(), tok); !errors.Is(err, ErrUnauthenticated) {
		t.Errorf("a token neither accepts: %v", err)
	}
}
