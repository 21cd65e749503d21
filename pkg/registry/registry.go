// Package registry is the embedded internal registry: CNCF Distribution
// with filesystem storage in the data dir, served under /v2/ on Slipway's
// own address. In the cluster the platform's registry takes its place.
package registry

import (
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"

	"github.com/distribution/distribution/v3/configuration"
	_ "github.com/distribution/distribution/v3/registry/auth/token" // token authentication
	"github.com/distribution/distribution/v3/registry/handlers"
	_ "github.com/distribution/distribution/v3/registry/storage/driver/filesystem" // the storage driver
	"github.com/sirupsen/logrus"
)

// Dir is the registry's storage directory's name in the data dir.
const Dir = "registry"

// TokenAuth configures Distribution's own token authentication: every
// request but the /v2/ probe needs a bearer token that Issuer signed for
// Service with a key of the JWKS file; clients without one are sent to
// Realm (Slipway's token endpoint) by a WWW-Authenticate challenge.
type TokenAuth struct {
	Realm, Service, Issuer, JWKS string
}

// New returns the registry's HTTP handler, storing under dataDir/registry
// and authenticating with auth. Its logs (logrus) go to log, or nowhere when
// log is nil.
func New(ctx context.Context, dataDir string, log io.Writer, auth TokenAuth) (http.Handler, error) {
	if auth.Realm == "" || auth.Service == "" || auth.Issuer == "" || auth.JWKS == "" {
		return nil, fmt.Errorf("registry: token authentication needs a realm, a service, an issuer and a key set")
	}
	root := filepath.Join(dataDir, Dir)
	if err := os.MkdirAll(root, 0o700); err != nil {
		return nil, fmt.Errorf("registry storage: %w", err)
	}
	if log == nil {
		log = io.Discard
	}
	// Distribution logs through logrus' standard logger.
	logrus.SetOutput(log)
	logrus.SetFormatter(&logrus.JSONFormatter{})
	logrus.SetLevel(logrus.WarnLevel)
	cfg := &configuration.Configuration{
		Storage: configuration.Storage{
			"filesystem": configuration.Parameters{"rootdirectory": root},
			"delete":     configuration.Parameters{"enabled": true},
			// Upload purging runs a background sweep; the reconciler owns
			// housekeeping here, so keep the registry passive.
			"maintenance": configuration.Parameters{"uploadpurging": map[any]any{"enabled": false}},
		},
	}
	cfg.Auth = configuration.Auth{"token": configuration.Parameters{
		"realm": auth.Realm, "service": auth.Service, "issuer": auth.Issuer, "jwks": auth.JWKS,
		"signingalgorithms": []any{"EdDSA"},
	}}
	// One registry process: the secret only signs upload state between
	// requests to the same process.
	cfg.HTTP.Secret = rand.Text()
	cfg.Log.Level = "warn"
	cfg.Log.AccessLog.Disabled = true
	return handlers.NewApp(ctx, cfg), nil
}
