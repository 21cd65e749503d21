// Package auth identifies callers. A Verifier turns a bearer token into an
// Identity; the local Issuer signs tokens with a key kept in the data dir and
// verifies them, and the cluster's OIDC verifier implements the same Verifier.
package auth

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// ErrUnauthenticated is returned for a missing, malformed, expired or
// otherwise unacceptable token.
var ErrUnauthenticated = errors.New("unauthenticated")

// Identity is who a verified token speaks for.
type Identity struct {
	Subject string
	Expires time.Time // when the token stops being valid
}

// Verifier checks bearer tokens.
type Verifier interface {
	Verify(ctx context.Context, token string) (Identity, error)
}

// LocalIssuer is the issuer name of locally signed tokens.
const LocalIssuer = "slipway-local"

// KeyFile is the signing key's file name in the data dir.
const KeyFile = "token-signing-key.pem"

// Issuer signs and verifies local tokens with an Ed25519 key.
type Issuer struct {
	key ed25519.PrivateKey
}

var _ Verifier = (*Issuer)(nil)

// LoadIssuer reads the signing key from dataDir, creating it (mode 0600) on
// first use. Concurrent first uses agree on one key.
func LoadIssuer(dataDir string) (*Issuer, error) {
	key, err := LoadKey(filepath.Join(dataDir, KeyFile))
	if err != nil {
		return nil, err
	}
	return &Issuer{key: key}, nil
}

// LoadKey reads the Ed25519 private key (PKCS #8 PEM) at path, creating it
// and its directory (mode 0600, 0700) on first use. Concurrent first uses
// agree on one key.
func LoadKey(path string) (ed25519.PrivateKey, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("creating data dir: %w", err)
	}
	for range 3 {
		b, err := os.ReadFile(path)
		if err == nil {
			return parseKey(path, b)
		}
		if !errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("reading signing key: %w", err)
		}
		if err := createKey(path); err != nil && !errors.Is(err, os.ErrExist) {
			return nil, err
		}
	}
	return nil, fmt.Errorf("signing key %s could not be created", path)
}

func createKey(path string) error {
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return err
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return err
	}
	// Write to a temporary file and link it into place, so no reader ever
	// sees a half-written key and only one creator wins.
	tmp, err := os.CreateTemp(filepath.Dir(path), ".key-*")
	if err != nil {
		return fmt.Errorf("creating signing key: %w", err)
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return err
	}
	if err := pem.Encode(tmp, &pem.Block{Type: "PRIVATE KEY", Bytes: der}); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Link(tmp.Name(), path)
}

func parseKey(path string, b []byte) (ed25519.PrivateKey, error) {
	block, _ := pem.Decode(b)
	if block == nil {
		return nil, fmt.Errorf("signing key %s is not PEM", path)
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("signing key %s: %w", path, err)
	}
	key, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("signing key %s is not Ed25519", path)
	}
	return key, nil
}

// Issue returns a signed token for subject valid for ttl.
func (i *Issuer) Issue(subject string, ttl time.Duration) (string, error) {
	if subject == "" {
		return "", errors.New("subject is empty")
	}
	now := time.Now()
	claims := jwt.RegisteredClaims{
		Issuer:    LocalIssuer,
		Subject:   subject,
		IssuedAt:  jwt.NewNumericDate(now),
		ExpiresAt: jwt.NewNumericDate(now.Add(ttl)),
	}
	return jwt.NewWithClaims(jwt.SigningMethodEdDSA, claims).SignedString(i.key)
}

// Verify implements Verifier.
func (i *Issuer) Verify(_ context.Context, token string) (Identity, error) {
	var claims jwt.RegisteredClaims
	_, err := jwt.ParseWithClaims(token, &claims, func(*jwt.Token) (any, error) {
		return i.key.Public(), nil
	}, jwt.WithValidMethods([]string{jwt.SigningMethodEdDSA.Alg()}), jwt.WithIssuer(LocalIssuer),
		jwt.WithExpirationRequired(), jwt.WithLeeway(30*time.Second))
	if err != nil {
		return Identity{}, fmt.Errorf("%w: %v", ErrUnauthenticated, err)
	}
	if claims.Subject == "" {
		return Identity{}, fmt.Errorf("%w: token has no subject", ErrUnauthenticated)
	}
	return Identity{Subject: claims.Subject, Expires: claims.ExpiresAt.Time}, nil
}
