// Package pullauthtest serves, on loopback, a private registry of the kind
// pullauth speaks to: a real Distribution registry with its token
// authentication, and beside it, on the same address (a realm elsewhere on
// loopback is refused by go-containerregistry), a small token server that
// takes HTTP basic auth and issues scoped bearer tokens, as Docker Hub,
// GHCR or Harbor do. It records the scopes of every token it issues.
package pullauthtest

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/distribution/distribution/v3/configuration"
	_ "github.com/distribution/distribution/v3/registry/auth/htpasswd" // the access controllers
	_ "github.com/distribution/distribution/v3/registry/auth/token"
	"github.com/distribution/distribution/v3/registry/handlers"
	_ "github.com/distribution/distribution/v3/registry/storage/driver/filesystem" // the storage driver

	"golang.org/x/crypto/bcrypt"

	"github.com/slipway-dev/slipway/pkg/registry/token"
)

// TokenTTL is how long the tokens the server issues live.
const TokenTTL = 5 * time.Minute

// Registry is a private token-auth registry on loopback.
type Registry struct {
	// Host is its HOST:PORT.
	Host string
	// Port is its port.
	Port int

	users  map[string]user
	mu     sync.Mutex
	issued []Issued
}

type user struct {
	password string
	push     bool
}

// Issued is a token the server issued: to whom, for which scopes (as
// asked), granting what.
type Issued struct {
	User    string
	Scopes  []string
	Granted []token.Access
	Token   string
}

// New starts a registry whose reader (password readerPassword) pulls every
// repository and whose pusher (password pusherPassword) also pushes.
func New(t testing.TB, reader, readerPassword, pusher, pusherPassword string) *Registry {
	t.Helper()
	dir := t.TempDir()
	signer, err := token.LoadSigner(dir)
	if err != nil {
		t.Fatal(err)
	}
	r := &Registry{users: map[string]user{reader: {password: readerPassword}, pusher: {password: pusherPassword, push: true}}}
	mux := http.NewServeMux()
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	r.Host = strings.TrimPrefix(srv.URL, "http://")
	r.Port = srv.Listener.Addr().(*net.TCPAddr).Port
	cfg := &configuration.Configuration{
		Storage: configuration.Storage{
			"filesystem":  configuration.Parameters{"rootdirectory": filepath.Join(dir, "data")},
			"maintenance": configuration.Parameters{"uploadpurging": map[any]any{"enabled": false}},
		},
		Auth: configuration.Auth{"token": configuration.Parameters{
			"realm": srv.URL + "/token", "service": token.Service, "issuer": token.Issuer, "jwks": signer.JWKS(),
			"signingalgorithms": []any{"EdDSA"},
		}},
	}
	cfg.HTTP.Secret = "test"
	cfg.Log.Level = "error"
	cfg.Log.AccessLog.Disabled = true
	mux.Handle("/v2/", handlers.NewApp(context.Background(), cfg))
	mux.HandleFunc("/token", func(w http.ResponseWriter, req *http.Request) {
		name, pw, ok := req.BasicAuth()
		u, known := r.users[name]
		if !ok || !known || pw != u.password {
			w.Header().Set("WWW-Authenticate", `Basic realm="test token server"`)
			http.Error(w, `{"errors":[{"code":"UNAUTHORIZED","message":"bad credentials"}]}`, http.StatusUnauthorized)
			return
		}
		scopes := req.URL.Query()["scope"]
		var granted []token.Access
		for _, s := range scopes {
			typ, rest, _ := strings.Cut(s, ":")
			i := strings.LastIndex(rest, ":")
			if typ != "repository" || i < 0 {
				continue
			}
			var actions []string
			for _, a := range strings.Split(rest[i+1:], ",") {
				if a == "pull" || a == "push" && u.push {
					actions = append(actions, a)
				}
			}
			if len(actions) > 0 {
				granted = append(granted, token.Access{Type: typ, Name: rest[:i], Actions: actions})
			}
		}
		tok, err := signer.AccessToken(name, granted, time.Now().Add(TokenTTL))
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		r.mu.Lock()
		r.issued = append(r.issued, Issued{User: name, Scopes: slices.Clone(scopes), Granted: granted, Token: tok})
		r.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]any{"token": tok, "expires_in": int(TokenTTL.Seconds())})
	})
	return r
}

// Issued returns the tokens issued so far to user.
func (r *Registry) Issued(user string) []Issued {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []Issued
	for _, i := range r.issued {
		if i.User == user {
			out = append(out, i)
		}
	}
	return out
}

// NewBasic starts a real Distribution registry on loopback that takes
// user's password itself (HTTP basic auth, htpasswd), and returns its
// HOST:PORT.
func NewBasic(t testing.TB, user, password string) string {
	t.Helper()
	dir := t.TempDir()
	hash, err := bcrypt.GenerateFromPassword([]byte(password), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	htpasswd := filepath.Join(dir, "htpasswd")
	if err := os.WriteFile(htpasswd, []byte(user+":"+string(hash)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := &configuration.Configuration{
		Storage: configuration.Storage{
			"filesystem":  configuration.Parameters{"rootdirectory": filepath.Join(dir, "data")},
			"maintenance": configuration.Parameters{"uploadpurging": map[any]any{"enabled": false}},
		},
		Auth: configuration.Auth{"htpasswd": configuration.Parameters{"realm": "test", "path": htpasswd}},
	}
	cfg.HTTP.Secret = "test"
	srv := httptest.NewServer(handlers.NewApp(context.Background(), cfg))
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://")
}
