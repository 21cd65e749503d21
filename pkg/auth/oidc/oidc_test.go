package oidc

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/slipway-dev/slipway/pkg/auth"
)

const audience = "slipway"

// key is a signing key with its ID and algorithm.
type key struct {
	id  string
	alg jose.SignatureAlgorithm
	key crypto.Signer
}

func rsaKey(t *testing.T, id string) key {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	return key{id: id, alg: jose.RS256, key: k}
}

func ecKey(t *testing.T, id string) key {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return key{id: id, alg: jose.ES256, key: k}
}

// issuer is a real OIDC issuer over TLS: a discovery document and a JWKS
// that the test can replace, counting the requests for each.
type issuer struct {
	srv        *httptest.Server
	mu         sync.Mutex
	keys       []key
	discovered atomic.Int32
	fetched    atomic.Int32
}

func newIssuer(t *testing.T, keys ...key) *issuer {
	t.Helper()
	is := &issuer{keys: keys}
	mux := http.NewServeMux()
	mux.HandleFunc("/.well-known/openid-configuration", func(w http.ResponseWriter, r *http.Request) {
		is.discovered.Add(1)
		json.NewEncoder(w).Encode(map[string]any{
			"issuer":                                is.srv.URL,
			"jwks_uri":                              is.srv.URL + "/keys",
			"authorization_endpoint":                is.srv.URL + "/auth",
			"token_endpoint":                        is.srv.URL + "/token",
			"id_token_signing_alg_values_supported": []string{"RS256"},
		})
	})
	mux.HandleFunc("/keys", func(w http.ResponseWriter, r *http.Request) {
		is.fetched.Add(1)
		is.mu.Lock()
		defer is.mu.Unlock()
		var set jose.JSONWebKeySet
		for _, k := range is.keys {
			set.Keys = append(set.Keys, jose.JSONWebKey{Key: k.key.Public(), KeyID: k.id, Algorithm: string(k.alg), Use: "sig"})
		}
		json.NewEncoder(w).Encode(set)
	})
	is.srv = httptest.NewTLSServer(mux)
	t.Cleanup(is.srv.Close)
	return is
}

// serve replaces the issuer's key set.
func (is *issuer) serve(keys ...key) {
	is.mu.Lock()
	defer is.mu.Unlock()
	is.keys = keys
}

// claims are valid claims of a token of is for user-1, for an hour.
func (is *issuer) claims() map[string]any {
	return map[string]any{
		"iss":   is.srv.URL,
		"aud":   []string{"another-service", audience},
		"sub":   "user-1",
		"email": "user-1@example.com",
		"iat":   time.Now().Unix(),
		"exp":   time.Now().Add(time.Hour).Unix(),
	}
}

func sign(t *testing.T, k key, claims map[string]any) string {
	t.Helper()
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: k.alg, Key: jose.JSONWebKey{Key: k.key, KeyID: k.id}}, (&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		t.Fatal(err)
	}
	payload, err := json.Marshal(claims)
	if err != nil {
		t.Fatal(err)
	}
	jws, err := signer.Sign(payload)
	if err != nil {
		t.Fatal(err)
	}
	s, err := jws.CompactSerialize()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// unsigned builds a token by hand with the given header and signature.
func unsigned(header map[string]any, claims map[string]any, sig []byte) string {
	enc := func(v any) string {
		b, _ := json.Marshal(v)
		return base64.RawURLEncoding.EncodeToString(b)
	}
	return enc(header) + "." + enc(claims) + "." + base64.RawURLEncoding.EncodeToString(sig)
}

func (is *issuer) verifier(t *testing.T, opts Options) *Verifier {
	t.Helper()
	if opts.Issuer == "" {
		opts.Issuer = is.srv.URL
	}
	if opts.Audience == "" {
		opts.Audience = audience
	}
	opts.HTTPClient = is.srv.Client()
	v, err := New(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func assertUnauthenticated(t *testing.T, v *Verifier, token string) {
	t.Helper()
	id, err := v.Verify(context.Background(), token)
	if !errors.Is(err, auth.ErrUnauthenticated) {
		t.Errorf("Verify = %+v, %v; want ErrUnauthenticated", id, err)
	}
}

func TestVerify(t *testing.T) {
	rsa1, ec1, rogue := rsaKey(t, "rsa-1"), ecKey(t, "ec-1"), rsaKey(t, "rogue")
	is := newIssuer(t, rsa1, ec1)
	v := is.verifier(t, Options{})

	t.Run("valid RSA", func(t *testing.T) {
		c := is.claims()
		id, err := v.Verify(context.Background(), sign(t, rsa1, c))
		if err != nil || id.Subject != "user-1" || !id.Expires.Equal(time.Unix(c["exp"].(int64), 0)) {
			t.Errorf("Verify = %+v, %v", id, err)
		}
	})
	t.Run("valid ES256", func(t *testing.T) {
		c := is.claims()
		c["aud"] = audience // a single audience as a string
		if id, err := v.Verify(context.Background(), sign(t, ec1, c)); err != nil || id.Subject != "user-1" {
			t.Errorf("Verify = %+v, %v", id, err)
		}
	})

	for name, change := range map[string]func(map[string]any){
		"expired":        func(c map[string]any) { c["exp"] = time.Now().Add(-time.Minute).Unix() },
		"no expiry":      func(c map[string]any) { delete(c, "exp") },
		"not yet valid":  func(c map[string]any) { c["nbf"] = time.Now().Add(time.Hour).Unix() },
		"wrong audience": func(c map[string]any) { c["aud"] = []string{"another-service"} },
		"no audience":    func(c map[string]any) { delete(c, "aud") },
		"wrong issuer":   func(c map[string]any) { c["iss"] = "https://evil.example.com" },
		"no subject":     func(c map[string]any) { delete(c, "sub") },
		"empty subject":  func(c map[string]any) { c["sub"] = "" },
	} {
		t.Run(name, func(t *testing.T) {
			c := is.claims()
			change(c)
			assertUnauthenticated(t, v, sign(t, rsa1, c))
		})
	}

	t.Run("unknown key", func(t *testing.T) {
		before := is.fetched.Load()
		assertUnauthenticated(t, v, sign(t, rogue, is.claims()))
		if is.fetched.Load() == before {
			t.Error("an unknown key ID did not make the verifier fetch the key set again")
		}
	})
	t.Run("known key ID, other key", func(t *testing.T) {
		assertUnauthenticated(t, v, sign(t, key{id: rsa1.id, alg: jose.RS256, key: rogue.key}, is.claims()))
	})
	t.Run("alg none", func(t *testing.T) {
		assertUnauthenticated(t, v, unsigned(map[string]any{"alg": "none", "typ": "JWT"}, is.claims(), nil))
		assertUnauthenticated(t, v, unsigned(map[string]any{"alg": "none", "typ": "JWT", "kid": rsa1.id}, is.claims(), []byte("x")))
	})
	t.Run("HMAC with the public key", func(t *testing.T) {
		// The classic algorithm confusion: the RSA public key as HMAC secret.
		pub, err := x509.MarshalPKIXPublicKey(rsa1.key.Public())
		if err != nil {
			t.Fatal(err)
		}
		signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.HS256, Key: pub}, (&jose.SignerOptions{}).WithType("JWT").WithHeader("kid", rsa1.id))
		if err != nil {
			t.Fatal(err)
		}
		payload, _ := json.Marshal(is.claims())
		jws, _ := signer.Sign(payload)
		token, _ := jws.CompactSerialize()
		assertUnauthenticated(t, v, token)
	})
	t.Run("garbage", func(t *testing.T) {
		assertUnauthenticated(t, v, "")
		assertUnauthenticated(t, v, "not.a.token")
		tok := sign(t, rsa1, is.claims())
		assertUnauthenticated(t, v, tok[:len(tok)-4]+"AAAA") // signature changed
	})
	if n := is.discovered.Load(); n != 1 {
		t.Errorf("discovery fetched %d times, want once (in New)", n)
	}
}

func TestKeyRotation(t *testing.T) {
	old, next := rsaKey(t, "2026-01"), rsaKey(t, "2026-02")
	is := newIssuer(t, old)
	v := is.verifier(t, Options{})
	if _, err := v.Verify(context.Background(), sign(t, old, is.claims())); err != nil {
		t.Fatal(err)
	}
	fetched := is.fetched.Load()

	is.serve(next)
	if id, err := v.Verify(context.Background(), sign(t, next, is.claims())); err != nil || id.Subject != "user-1" {
		t.Fatalf("token of the new key: %+v, %v", id, err)
	}
	if is.fetched.Load() != fetched+1 {
		t.Errorf("key set fetched %d more times, want 1 (the refresh on the new key ID)", is.fetched.Load()-fetched)
	}
	assertUnauthenticated(t, v, sign(t, old, is.claims()))
}

func TestSubjectClaim(t *testing.T) {
	k := rsaKey(t, "k")
	is := newIssuer(t, k)
	v := is.verifier(t, Options{SubjectClaim: "email"})
	if id, err := v.Verify(context.Background(), sign(t, k, is.claims())); err != nil || id.Subject != "user-1@example.com" {
		t.Errorf("Verify = %+v, %v", id, err)
	}
	c := is.claims()
	delete(c, "email")
	assertUnauthenticated(t, v, sign(t, k, c))
	c["email"] = 42
	assertUnauthenticated(t, v, sign(t, k, c))
}

func TestJWKSURLSkipsDiscovery(t *testing.T) {
	k := ecKey(t, "k")
	is := newIssuer(t, k)
	v := is.verifier(t, Options{JWKSURL: is.srv.URL + "/keys"})
	if id, err := v.Verify(context.Background(), sign(t, k, is.claims())); err != nil || id.Subject != "user-1" {
		t.Errorf("Verify = %+v, %v", id, err)
	}
	if n := is.discovered.Load(); n != 0 {
		t.Errorf("discovery fetched %d times with a JWKS URL", n)
	}
	c := is.claims()
	c["iss"] = "https://evil.example.com"
	assertUnauthenticated(t, v, sign(t, k, c))
}

func TestNew(t *testing.T) {
	is := newIssuer(t, rsaKey(t, "k"))
	ctx := context.Background()
	for name, opts := range map[string]Options{
		"no issuer":   {Audience: audience, HTTPClient: is.srv.Client()},
		"no audience": {Issuer: is.srv.URL, HTTPClient: is.srv.Client()},
		// Without the test server's client, its certificate is unknown:
		// New uses the client it is given.
		"default client": {Issuer: is.srv.URL, Audience: audience},
		// The discovery document names is.srv.URL, not this.
		"issuer mismatch": {Issuer: is.srv.URL + "/", Audience: audience, HTTPClient: is.srv.Client()},
		"unreachable":     {Issuer: "https://127.0.0.1:1", Audience: audience},
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := New(ctx, opts); err == nil {
				t.Error("New accepted")
			} else if name == "issuer mismatch" && !strings.Contains(err.Error(), "issuer") {
				t.Errorf("error %v does not say the issuer differs", err)
			}
		})
	}
}

func TestVerifyWithoutKeySet(t *testing.T) {
	k := rsaKey(t, "k")
	is := newIssuer(t, k)
	v := is.verifier(t, Options{JWKSURL: is.srv.URL + "/missing"})
	assertUnauthenticated(t, v, sign(t, k, is.claims()))
}
