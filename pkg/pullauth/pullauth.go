// Package pullauth gives a build what it needs to pull its private base
// images, and nothing more. A workspace's registry credential (a user name
// and a long-lived password) never goes into a build, where any RUN step
// could read it: for each registry that the Dockerfile's FROM lines name
// and that the workspace holds a credential for, Slipway does the
// registry's token exchange itself (the Docker/OCI token flow, through
// go-containerregistry's transport) and hands the build only the bearer
// token, scoped to pulling exactly those base repositories and as
// short-lived as that registry's token server makes it, as the
// "registrytoken" of a docker config, which Kaniko (go-containerregistry's
// authn) sends as `Authorization: Bearer`.
//
// A registry that takes the password itself (HTTP basic auth) has no token
// to give: its credential is not handed to the build either, and the build
// fails with ErrNoTokenAuth's message before it runs. A registry that asks
// for no authentication gets nothing, as it needs nothing.
package pullauth

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
)

// ErrNoTokenAuth is the error of a registry that does not do the token
// flow: it would take the long-lived password from the build itself.
var ErrNoTokenAuth = errors.New("the registry does not issue tokens")

// Credential is a workspace's registry credential, opened. It stays in
// Slipway's process.
type Credential struct {
	Registry string // HOST[:PORT], as go-containerregistry names it
	Username string
	Password string
}

// Token is a bearer token for pulling some repositories of one registry.
type Token struct {
	Bearer string
	// ExpiresIn is the lifetime the registry gave it; 0 when it said
	// nothing (the token flow's default is 60 s).
	ExpiresIn time.Duration
}

// Exchanger trades a registry credential for a token that pulls repos of
// its registry and nothing else; a Token without Bearer when the registry
// asks for no authentication at all (then the build needs nothing).
type Exchanger interface {
	PullToken(ctx context.Context, cred Credential, repos []string) (Token, error)
}

// exchangeTimeout bounds one registry's token exchange.
const exchangeTimeout = 30 * time.Second

// TokenFlow is the Exchanger of the Docker/OCI token flow: it asks the
// registry's /v2/ for its challenge and, when that is Bearer, the realm the
// challenge names for a token of the scopes `repository:REPO:pull`,
// authenticated with the credential (go-containerregistry's
// transport.Exchange: HTTP basic auth, or the OAuth2 form where the
// realm takes it). Realms that point elsewhere than the registry's own
// host at a private or link-local address are refused, as
// go-containerregistry refuses them.
type TokenFlow struct {
	// Transport carries the requests; nil is remote.DefaultTransport.
	Transport http.RoundTripper
}

var _ Exchanger = TokenFlow{}

// PullToken implements Exchanger.
func (f TokenFlow) PullToken(ctx context.Context, cred Credential, repos []string) (Token, error) {
	ctx, cancel := context.WithTimeout(ctx, exchangeTimeout)
	defer cancel()
	reg, err := name.NewRegistry(cred.Registry)
	if err != nil {
		return Token{}, err
	}
	t := f.Transport
	if t == nil {
		t = remote.DefaultTransport
	}
	challenge, err := transport.Ping(ctx, reg, t)
	if err != nil {
		return Token{}, fmt.Errorf("asking %s for its authentication: %w", reg.RegistryStr(), err)
	}
	if challenge.Scheme == "" {
		return Token{}, nil // anonymous: nothing to hand over
	}
	if !strings.EqualFold(challenge.Scheme, "bearer") {
		return Token{}, fmt.Errorf("%w: %s answers with HTTP basic auth, so a build could pull from it only with the long-lived password, which Slipway does not hand to a build; "+
			"pull the base from a registry that does the token flow, or push it to the internal registry (library/ or one of the workspace's images)",
			ErrNoTokenAuth, reg.RegistryStr())
	}
	scopes := make([]string, len(repos))
	for i, r := range repos {
		scopes[i] = reg.Repo(r).Scope(transport.PullScope)
	}
	tok, err := transport.Exchange(ctx, reg, authn.FromConfig(authn.AuthConfig{Username: cred.Username, Password: cred.Password}), t, scopes, challenge)
	if err != nil {
		return Token{}, fmt.Errorf("getting a pull token from %s: %w", reg.RegistryStr(), err)
	}
	bearer := tok.Token
	if bearer == "" {
		bearer = tok.AccessToken // some registries set only this
	}
	if bearer == "" {
		return Token{}, fmt.Errorf("getting a pull token from %s: the token endpoint gave none", reg.RegistryStr())
	}
	return Token{Bearer: bearer, ExpiresIn: time.Duration(tok.ExpiresIn) * time.Second}, nil
}

// Grant is what a build was given for one registry: a pull token for
// Repos, valid for ExpiresIn (0: the registry did not say).
type Grant struct {
	Registry  string
	Repos     []string
	ExpiresIn time.Duration
}

// DockerConfig returns the docker config.json ({"auths":{HOST:
// {"registrytoken":BEARER}}}) that lets a build pull bases: for each
// registry some base names and creds holds a credential for (the first one
// there), a token from x for exactly those bases' repositories. Bases of
// other registries get nothing (they are public, or the internal registry's
// own), and so do registries that ask for no authentication. It returns
// nil and no grants when no base needs a token; an error
// (wrapping ErrNoTokenAuth for a registry without the token flow) when a
// registry gives none.
func DockerConfig(ctx context.Context, x Exchanger, creds []Credential, bases []name.Reference) ([]byte, []Grant, error) {
	var grants []Grant
	for _, ref := range bases {
		host, repo := strings.ToLower(ref.Context().RegistryStr()), ref.Context().RepositoryStr()
		if !slices.ContainsFunc(creds, func(c Credential) bool { return strings.EqualFold(c.Registry, host) }) {
			continue
		}
		i := slices.IndexFunc(grants, func(g Grant) bool { return g.Registry == host })
		if i < 0 {
			grants = append(grants, Grant{Registry: host})
			i = len(grants) - 1
		}
		if !slices.Contains(grants[i].Repos, repo) {
			grants[i].Repos = append(grants[i].Repos, repo)
		}
	}
	if len(grants) == 0 {
		return nil, nil, nil
	}
	auths := map[string]map[string]string{}
	var given []Grant
	for _, g := range grants {
		c := creds[slices.IndexFunc(creds, func(c Credential) bool { return strings.EqualFold(c.Registry, g.Registry) })]
		tok, err := x.PullToken(ctx, c, g.Repos)
		if err != nil {
			return nil, nil, err
		}
		if tok.Bearer == "" {
			continue // the registry is anonymous
		}
		auths[configKey(g.Registry)] = map[string]string{"registrytoken": tok.Bearer}
		g.ExpiresIn = tok.ExpiresIn
		given = append(given, g)
	}
	if len(given) == 0 {
		return nil, nil, nil
	}
	cfg, err := json.Marshal(map[string]any{"auths": auths})
	return cfg, given, err
}

// configKey is the docker config's key of registry host: Docker Hub's is
// the legacy URL that docker login writes and keychains look up.
func configKey(host string) string {
	if host == name.DefaultRegistry {
		return authn.DefaultAuthKey
	}
	return host
}
