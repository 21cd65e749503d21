// Package oidc verifies the bearer tokens of the platform's OIDC issuer:
// the cluster's auth.Verifier, built on github.com/coreos/go-oidc/v3.
//
// A token is accepted when it is a JWS signed by a key of the issuer's JWKS
// with an asymmetric algorithm (RSA, RSA-PSS, ECDSA or EdDSA; never "none"
// or an HMAC), its "iss" is the issuer, its "aud" names the audience, its
// "exp" has not passed and its "nbf", if any, has (go-oidc allows five
// minutes of clock skew there), and it has the subject claim as a non-empty
// string. The JWKS is fetched on first use and again whenever a token names
// a key ID that is not in it, which is how issuers rotate keys: a new key is
// found, a removed one stops verifying.
package oidc

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/coreos/go-oidc/v3/oidc"

	"github.com/slipway-dev/slipway/pkg/auth"
)

// DefaultSubjectClaim is the claim that names the caller when
// Options.SubjectClaim is empty.
const DefaultSubjectClaim = "sub"

// algorithms are the signature algorithms accepted, whatever the issuer's
// discovery document advertises: all the asymmetric ones go-oidc supports.
var algorithms = []string{
	oidc.RS256, oidc.RS384, oidc.RS512,
	oidc.PS256, oidc.PS384, oidc.PS512,
	oidc.ES256, oidc.ES384, oidc.ES512,
	oidc.EdDSA,
}

// Options configure a Verifier.
type Options struct {
	// Issuer is the issuer's URL: the "iss" that tokens must carry and,
	// unless JWKSURL is set, where the discovery document is
	// (Issuer/.well-known/openid-configuration). Required.
	Issuer string
	// Audience must be one of a token's "aud". Required.
	Audience string
	// SubjectClaim is the string claim that becomes Identity.Subject;
	// DefaultSubjectClaim when empty.
	SubjectClaim string
	// JWKSURL, when set, is the issuer's key set: discovery is skipped.
	JWKSURL string
	// HTTPClient fetches the discovery document and the key set;
	// http.DefaultClient when nil.
	HTTPClient *http.Client
}

// Verifier verifies the issuer's tokens. It is safe for concurrent use.
type Verifier struct {
	verifier *oidc.IDTokenVerifier
	claim    string
}

var _ auth.Verifier = (*Verifier)(nil)

// New returns a Verifier for opts. Unless opts.JWKSURL is set it fetches the
// issuer's discovery document now, with ctx, and fails when the issuer is
// unreachable or the document names another issuer. The key set is fetched
// when the first token is verified.
func New(ctx context.Context, opts Options) (*Verifier, error) {
	if opts.Issuer == "" {
		return nil, errors.New("oidc: no issuer given")
	}
	if opts.Audience == "" {
		return nil, errors.New("oidc: no audience given")
	}
	if opts.SubjectClaim == "" {
		opts.SubjectClaim = DefaultSubjectClaim
	}
	if opts.HTTPClient != nil {
		ctx = oidc.ClientContext(ctx, opts.HTTPClient)
	}
	config := &oidc.Config{ClientID: opts.Audience, SupportedSigningAlgs: algorithms}
	v := &Verifier{claim: opts.SubjectClaim}
	if opts.JWKSURL != "" {
		// The key set keeps ctx's values (the HTTP client), not its end.
		v.verifier = oidc.NewVerifier(opts.Issuer, oidc.NewRemoteKeySet(ctx, opts.JWKSURL), config)
		return v, nil
	}
	p, err := oidc.NewProvider(ctx, opts.Issuer)
	if err != nil {
		return nil, fmt.Errorf("oidc: discovery: %w", err)
	}
	v.verifier = p.VerifierContext(ctx, config)
	return v, nil
}

// Verify implements auth.Verifier. Every error wraps
// auth.ErrUnauthenticated, also when the key set could not be fetched.
func (v *Verifier) Verify(ctx context.Context, token string) (auth.Identity, error) {
	t, err := v.verifier.Verify(ctx, token)
	if err != nil {
		return auth.Identity{}, fmt.Errorf("%w: %v", auth.ErrUnauthenticated, err)
	}
	var claims map[string]any
	if err := t.Claims(&claims); err != nil {
		return auth.Identity{}, fmt.Errorf("%w: %v", auth.ErrUnauthenticated, err)
	}
	subject, _ := claims[v.claim].(string)
	if subject == "" {
		return auth.Identity{}, fmt.Errorf("%w: token has no %q claim", auth.ErrUnauthenticated, v.claim)
	}
	return auth.Identity{Subject: subject, Expires: t.Expiry}, nil
}
