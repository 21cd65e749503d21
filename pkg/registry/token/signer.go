// Package token is the internal registry's token authority, after the
// Docker registry token specification: the endpoint that exchanges a
// Slipway token (or a build's credential) for a short-lived bearer token
// scoped to repositories, the rights that decide those scopes from
// workspace membership, the build credentials Slipway mints for one build
// alone, and the signing key in the data dir whose public half
// Distribution's own token authentication trusts.
//
// Three kinds of JWT are in play, each refused where it does not belong:
// users' Slipway tokens (pkg/auth, another key and issuer) are accepted
// here as credentials; build credentials (audience CredentialAudience) are
// accepted only by this endpoint; registry access tokens (audience Service)
// only by the registry.
package token

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/slipway-dev/slipway/pkg/auth"
)

// Names the tokens carry.
const (
	// Service is the registry's service name: the audience of access
	// tokens and the service parameter of the token flow.
	Service = "slipway-registry"
	// Issuer is the issuer of access tokens and build credentials.
	Issuer = "slipway-registry-token"
	// CredentialAudience is the audience of build credentials: only the
	// token endpoint accepts them.
	CredentialAudience = "slipway-registry-credential"
)

// Files in the data dir.
const (
	// KeyFile holds the Ed25519 key that signs access tokens and build
	// credentials (mode 0600).
	KeyFile = "registry-token-key.pem"
	// JWKSFile holds the key's public half as a JSON Web Key Set, which
	// Distribution's token authentication reads.
	JWKSFile = "registry-token-jwks.json"
)

// ErrInvalid is what a token that is not a valid one of the expected kind is.
var ErrInvalid = errors.New("invalid registry token")

// Access is one resource's granted actions, as the "access" claim of the
// Docker registry token specification lists them.
type Access struct {
	Type    string   `json:"type"`
	Name    string   `json:"name"`
	Actions []string `json:"actions"`
}

// BuildClaims are what a build credential allows: pull on Pull, push and
// pull on Push, nothing else, while build Number of Image is queued or
// running. Build is their ID ("<image>-<number>"), set when signed. A
// Publish credential (Slipway's own, to copy the built image to external
// destinations) pulls Pull also once the build has succeeded, never
// pushes, and is never given to a build.
type BuildClaims struct {
	Build     string   `json:"build"`
	Image     string   `json:"image"`
	Number    int      `json:"number"`
	Workspace string   `json:"workspace"`
	Pull      []string `json:"pull"`
	Push      []string `json:"push"`
	Publish   bool     `json:"publish,omitempty"`
}

// claims is every claim of the tokens signed here.
type claims struct {
	jwt.Claims
	Access []Access     `json:"access,omitempty"`
	Build  *BuildClaims `json:"slipway_build,omitempty"`
}

// Signer signs and verifies access tokens and build credentials with the
// data dir's registry key.
type Signer struct {
	key    ed25519.PrivateKey
	kid    string
	signer jose.Signer
	jwks   string
	now    func() time.Time
}

// LoadSigner reads the registry key from dataDir (creating it on first use)
// and writes its public half to dataDir/JWKSFile for the registry.
func LoadSigner(dataDir string) (*Signer, error) {
	key, err := auth.LoadKey(filepath.Join(dataDir, KeyFile))
	if err != nil {
		return nil, fmt.Errorf("registry token key: %w", err)
	}
	pub := key.Public().(ed25519.PublicKey)
	sum := sha256.Sum256(pub)
	kid := base64.RawURLEncoding.EncodeToString(sum[:12])
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.EdDSA, Key: key},
		(&jose.SignerOptions{}).WithType("JWT").WithHeader(jose.HeaderKey("kid"), kid))
	if err != nil {
		return nil, err
	}
	set, err := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: pub, KeyID: kid, Algorithm: string(jose.EdDSA), Use: "sig"}}})
	if err != nil {
		return nil, err
	}
	path := filepath.Join(dataDir, JWKSFile)
	if err := writeFile(path, set); err != nil {
		return nil, fmt.Errorf("registry token key set: %w", err)
	}
	return &Signer{key: key, kid: kid, signer: signer, jwks: path, now: time.Now}, nil
}

// writeFile replaces path with b atomically.
func writeFile(path string, b []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".jwks-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// JWKS is the path of the key set file the registry trusts.
func (s *Signer) JWKS() string { return s.jwks }

func (s *Signer) sign(c claims) (string, error) {
	return jwt.Signed(s.signer).Claims(c).Serialize()
}

// AccessToken signs a registry access token for subject granting access,
// valid until expires.
func (s *Signer) AccessToken(subject string, access []Access, expires time.Time) (string, error) {
	now := s.now()
	if access == nil {
		access = []Access{}
	}
	return s.sign(claims{Claims: jwt.Claims{
		Issuer: Issuer, Subject: subject, Audience: jwt.Audience{Service},
		IssuedAt: jwt.NewNumericDate(now), NotBefore: jwt.NewNumericDate(now), Expiry: jwt.NewNumericDate(expires),
		ID: randomID(),
	}, Access: access})
}

// BuildCredential signs a credential for one build, valid for ttl, that the
// token endpoint exchanges for access tokens within b's repositories.
func (s *Signer) BuildCredential(b BuildClaims, ttl time.Duration) (string, error) {
	if b.Image == "" || b.Number < 1 || ttl <= 0 {
		return "", errors.New("a build credential needs an image, a build number and a lifetime")
	}
	b.Build = fmt.Sprintf("%s-%d", b.Image, b.Number)
	now := s.now()
	return s.sign(claims{Claims: jwt.Claims{
		Issuer: Issuer, Subject: "build:" + b.Build, Audience: jwt.Audience{CredentialAudience},
		IssuedAt: jwt.NewNumericDate(now), NotBefore: jwt.NewNumericDate(now), Expiry: jwt.NewNumericDate(now.Add(ttl)),
		ID: randomID(),
	}, Build: &b})
}

// verify checks a token's signature, issuer, audience and times.
func (s *Signer) verify(raw, audience string) (claims, error) {
	var c claims
	tok, err := jwt.ParseSigned(raw, []jose.SignatureAlgorithm{jose.EdDSA})
	if err != nil {
		return c, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	if len(tok.Headers) != 1 || tok.Headers[0].KeyID != s.kid {
		return c, fmt.Errorf("%w: signed by another key", ErrInvalid)
	}
	if err := tok.Claims(s.key.Public(), &c); err != nil {
		return c, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	if err := c.Claims.ValidateWithLeeway(jwt.Expected{Issuer: Issuer, AnyAudience: jwt.Audience{audience}, Time: s.now()}, 30*time.Second); err != nil {
		return c, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	if c.Expiry == nil || c.Subject == "" {
		return c, fmt.Errorf("%w: no expiry or subject", ErrInvalid)
	}
	return c, nil
}

// VerifyAccess checks a registry access token and returns its subject and
// grants.
func (s *Signer) VerifyAccess(raw string) (subject string, access []Access, err error) {
	c, err := s.verify(raw, Service)
	if err != nil {
		return "", nil, err
	}
	return c.Subject, c.Access, nil
}

// verifyCredential checks a build credential.
func (s *Signer) verifyCredential(raw string) (BuildClaims, time.Time, error) {
	c, err := s.verify(raw, CredentialAudience)
	if err != nil {
		return BuildClaims{}, time.Time{}, err
	}
	if c.Build == nil || c.Build.Image == "" || c.Subject != "build:"+c.Build.Build {
		return BuildClaims{}, time.Time{}, fmt.Errorf("%w: not a build credential", ErrInvalid)
	}
	return *c.Build, c.Expiry.Time(), nil
}

// Grants reports whether access allows action on the resource typ:name.
func Grants(access []Access, typ, name, action string) bool {
	for _, a := range access {
		if a.Type == typ && a.Name == name && (slices.Contains(a.Actions, action) || slices.Contains(a.Actions, "*")) {
			return true
		}
	}
	return false
}

func randomID() string { return rand.Text() }
