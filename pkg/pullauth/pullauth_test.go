package pullauth_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	ggcrregistry "github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/slipway-dev/slipway/pkg/pullauth"
	"github.com/slipway-dev/slipway/pkg/pullauth/pullauthtest"
	"github.com/slipway-dev/slipway/pkg/registry/baseimage"
)

const (
	reader, readerPassword = "reader", "long-lived-reader-password-0123"
	pusher, pusherPassword = "pusher", "long-lived-pusher-password-4567"
)

// private is a token-auth registry on loopback holding private/base:1 and
// private/other:1.
func private(t *testing.T) *pullauthtest.Registry {
	t.Helper()
	r := pullauthtest.New(t, reader, readerPassword, pusher, pusherPassword)
	for _, repo := range []string{"private/base", "private/other"} {
		if _, err := baseimage.PushBusybox(t.Context(), r.Host+"/"+repo+":1", remote.WithAuth(&authn.Basic{Username: pusher, Password: pusherPassword})); err != nil {
			t.Fatal(err)
		}
	}
	return r
}

func mustRef(s string) name.Reference {
	r, err := name.ParseReference(s)
	if err != nil {
		panic(err)
	}
	return r
}

func TestTokenFlowScopesThePullToken(t *testing.T) {
	r := private(t)
	cred := pullauth.Credential{Registry: r.Host, Username: reader, Password: readerPassword}
	tok, err := pullauth.TokenFlow{}.PullToken(t.Context(), cred, []string{"private/base"})
	if err != nil {
		t.Fatal(err)
	}
	if tok.Bearer == "" || tok.ExpiresIn != pullauthtest.TokenTTL {
		t.Fatalf("token %+v; want a bearer valid for %v", tok, pullauthtest.TokenTTL)
	}
	issued := r.Issued(reader)
	if len(issued) != 1 || !slices.Equal(issued[0].Scopes, []string{"repository:private/base:pull"}) || issued[0].Token != tok.Bearer {
		t.Fatalf("the token server was asked %+v; want one token for repository:private/base:pull", issued)
	}
	// The bearer pulls the base, as a build's go-containerregistry (Kaniko)
	// sends a docker config's registrytoken, and nothing else.
	withToken := remote.WithAuth(authn.FromConfig(authn.AuthConfig{RegistryToken: tok.Bearer}))
	if _, err := remote.Image(mustRef(r.Host+"/private/base:1"), withToken); err != nil {
		t.Fatalf("pulling the base with the token: %v", err)
	}
	if _, err := remote.Image(mustRef(r.Host+"/private/other:1"), withToken); err == nil {
		t.Fatal("the token pulls a repository it was not asked for")
	}
	if _, err := baseimage.PushBusybox(t.Context(), r.Host+"/private/base:2", withToken); err == nil {
		t.Fatal("the token pushes")
	}

	// A wrong password: an error that does not carry it.
	bad := pullauth.Credential{Registry: r.Host, Username: reader, Password: "wrong-password-89abcdef"}
	_, err = pullauth.TokenFlow{}.PullToken(t.Context(), bad, []string{"private/base"})
	if err == nil || errors.Is(err, pullauth.ErrNoTokenAuth) || strings.Contains(err.Error(), bad.Password) {
		t.Fatalf("a wrong password: %v", err)
	}
}

func TestRegistriesWithoutTokensGetNoPassword(t *testing.T) {
	host := pullauthtest.NewBasic(t, reader, readerPassword)
	cred := pullauth.Credential{Registry: host, Username: reader, Password: readerPassword}
	_, err := pullauth.TokenFlow{}.PullToken(t.Context(), cred, []string{"private/base"})
	if !errors.Is(err, pullauth.ErrNoTokenAuth) || strings.Contains(err.Error(), readerPassword) || !strings.Contains(err.Error(), host) {
		t.Errorf("basic auth: %v; want ErrNoTokenAuth naming %s", err, host)
	}
	_, _, err = pullauth.DockerConfig(t.Context(), pullauth.TokenFlow{}, []pullauth.Credential{cred}, []name.Reference{mustRef(host + "/private/base:1")})
	if !errors.Is(err, pullauth.ErrNoTokenAuth) {
		t.Errorf("basic auth: DockerConfig: %v; want ErrNoTokenAuth", err)
	}

	// A registry without authentication needs nothing: no token, no error.
	anonymous := httptest.NewServer(ggcrregistry.New(ggcrregistry.Logger(log.New(io.Discard, "", 0))))
	t.Cleanup(anonymous.Close)
	open := pullauth.Credential{Registry: strings.TrimPrefix(anonymous.URL, "http://"), Username: reader, Password: readerPassword}
	if tok, err := (pullauth.TokenFlow{}).PullToken(t.Context(), open, []string{"x"}); tok.Bearer != "" || err != nil {
		t.Errorf("anonymous registry: %+v, %v; want no token and no error", tok, err)
	}
	cfg, grants, err := pullauth.DockerConfig(t.Context(), pullauth.TokenFlow{}, []pullauth.Credential{open}, []name.Reference{mustRef(open.Registry + "/x:1")})
	if cfg != nil || grants != nil || err != nil {
		t.Errorf("anonymous registry: DockerConfig = %s, %+v, %v; want nothing", cfg, grants, err)
	}
}

// resolve is what a build's keychain (go-containerregistry's default one,
// which Kaniko uses) finds for repo in the docker config cfg.
func resolve(t *testing.T, cfg []byte, repo string) authn.AuthConfig {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "config.json"), cfg, 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("DOCKER_CONFIG", dir)
	a, err := authn.DefaultKeychain.Resolve(mustRef(repo).Context())
	if err != nil {
		t.Fatal(err)
	}
	c, err := a.Authorization()
	if err != nil {
		t.Fatal(err)
	}
	return *c
}

func TestDockerConfigHoldsOnlyScopedTokens(t *testing.T) {
	r := private(t)
	creds := []pullauth.Credential{{Registry: r.Host, Username: reader, Password: readerPassword}}
	refs := func(s ...string) []name.Reference {
		var out []name.Reference
		for _, x := range s {
			out = append(out, mustRef(x))
		}
		return out
	}
	// Two bases of the private registry (one twice), a public one and one of
	// another registry without a credential: one token, for the two.
	bases := refs(r.Host+"/private/base:1", "alpine:3.20", r.Host+"/private/other:1", r.Host+"/private/base:1", "127.0.0.1:1/internal/x")
	cfg, grants, err := pullauth.DockerConfig(t.Context(), pullauth.TokenFlow{}, creds, bases)
	if err != nil {
		t.Fatal(err)
	}
	if len(grants) != 1 || grants[0].Registry != r.Host || !slices.Equal(grants[0].Repos, []string{"private/base", "private/other"}) || grants[0].ExpiresIn != pullauthtest.TokenTTL {
		t.Fatalf("grants %+v", grants)
	}
	issued := r.Issued(reader)
	if len(issued) != 1 || !slices.Equal(issued[0].Scopes, []string{"repository:private/base:pull", "repository:private/other:pull"}) {
		t.Fatalf("tokens issued: %+v", issued)
	}
	var doc map[string]map[string]map[string]string
	if err := json.Unmarshal(cfg, &doc); err != nil {
		t.Fatal(err)
	}
	if len(doc) != 1 || len(doc["auths"]) != 1 || len(doc["auths"][r.Host]) != 1 || doc["auths"][r.Host]["registrytoken"] != issued[0].Token {
		t.Fatalf("docker config %s; want only the registrytoken for %s", cfg, r.Host)
	}
	if strings.Contains(string(cfg), readerPassword) || strings.Contains(string(cfg), reader) {
		t.Fatalf("the docker config names the credential: %s", cfg)
	}
	// The keychain a build uses finds the token, and nothing for the rest.
	if got := resolve(t, cfg, r.Host+"/private/base:1"); got.RegistryToken != issued[0].Token || got.Password != "" || got.Auth != "" {
		t.Fatalf("the keychain resolves %+v", got)
	}
	if got := resolve(t, cfg, "alpine:3.20"); got != (authn.AuthConfig{}) {
		t.Fatalf("the keychain resolves %+v for Docker Hub", got)
	}

	// No base of a credential's registry: no config, no exchange.
	cfg, grants, err = pullauth.DockerConfig(t.Context(), pullauth.TokenFlow{}, creds, refs("alpine:3.20"))
	if cfg != nil || grants != nil || err != nil || len(r.Issued(reader)) != 1 {
		t.Fatalf("DockerConfig without private bases = %s, %+v, %v", cfg, grants, err)
	}
}

// fixed stands in for Docker Hub's token server, which the tests cannot
// reach: it checks the Docker Hub entry's key, not the exchange.
type fixed string

func (f fixed) PullToken(context.Context, pullauth.Credential, []string) (pullauth.Token, error) {
	return pullauth.Token{Bearer: string(f)}, nil
}

func TestDockerHubKey(t *testing.T) {
	cfg, _, err := pullauth.DockerConfig(t.Context(), fixed("hub-token"), []pullauth.Credential{{Registry: "index.docker.io", Username: "u", Password: "p"}},
		[]name.Reference{mustRef("team/private:1")})
	if err != nil {
		t.Fatal(err)
	}
	if got := resolve(t, cfg, "team/private:1"); got.RegistryToken != "hub-token" {
		t.Fatalf("config %s: the keychain resolves %+v for Docker Hub", cfg, got)
	}
}
