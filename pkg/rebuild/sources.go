package rebuild

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/slipway-dev/slipway/pkg/build"
	"github.com/slipway-dev/slipway/pkg/gitctx"
	"github.com/slipway-dev/slipway/pkg/image"
	"github.com/slipway-dev/slipway/pkg/store"
)

// Opener opens sealed credentials.
type Opener interface {
	Open(sealed string) (string, error)
}

// InternalTokens mints the access tokens Slipway reads the internal
// registry with: pull on repo, if workspace ws may read it.
type InternalTokens interface {
	WatchToken(ctx context.Context, ws, repo string) (string, error)
}

// Registry resolves base image references to manifest digests with a
// registry HEAD request, as the workspace may read them: the internal
// registry with a token Slipway mints for the workspace, another registry
// with the workspace's registry credential for that host, anonymously
// when it has none.
type Registry struct {
	Store   store.Store
	Secrets Opener
	// Internal is the internal registry's HOST:PORT, and Tokens its
	// tokens (nil: anonymous); InsecureInternal: it speaks plain HTTP.
	Internal         string
	InsecureInternal bool
	Tokens           InternalTokens
	// Transport carries the requests (remote.DefaultTransport when nil).
	Transport http.RoundTripper
}

// Lookup returns a cache of answers for one pass.
func (r *Registry) Lookup() Lookup {
	return &lookup{r: r, digests: map[string]answer{}, creds: map[string][]store.Credential{}}
}

// Resolve returns the digests bases (a build's FROMs, after its build
// arguments: image.BaseImagesWith) resolve to now for workspace ws (a build
// records them when it starts). A base that does not resolve is left out
// (the build itself reports it), and said in the error.
func (r *Registry) Resolve(ctx context.Context, ws string, bases []name.Reference) ([]build.Base, error) {
	l := r.Lookup()
	var out []build.Base
	var errs []error
	for _, ref := range bases {
		if d, ok := ref.(name.Digest); ok {
			out = append(out, build.Base{Ref: ref.Name(), Digest: d.DigestStr()})
			continue
		}
		d, err := l.Digest(ctx, ws, ref.Name())
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", ref.Name(), err))
			continue
		}
		out = append(out, build.Base{Ref: ref.Name(), Digest: d})
	}
	return out, errors.Join(errs...)
}

type answer struct {
	digest string
	err    error
}

type lookup struct {
	r       *Registry
	mu      sync.Mutex
	digests map[string]answer
	creds   map[string][]store.Credential
}

// Digest implements Lookup: one request per reference and way of
// authenticating.
func (l *lookup) Digest(ctx context.Context, ws, ref string) (string, error) {
	var opts []name.Option
	if l.r.InsecureInternal && l.r.Internal != "" && strings.HasPrefix(ref, l.r.Internal+"/") {
		opts = append(opts, name.Insecure)
	}
	parsed, err := name.ParseReference(ref, opts...)
	if err != nil {
		return "", err
	}
	key, auth, err := l.auth(ctx, ws, parsed)
	if err != nil {
		return "", err
	}
	key += "|" + parsed.Name()
	l.mu.Lock()
	a, ok := l.digests[key]
	l.mu.Unlock()
	if ok {
		return a.digest, a.err
	}
	ropts := []remote.Option{remote.WithContext(ctx), remote.WithAuth(auth)}
	if l.r.Transport != nil {
		ropts = append(ropts, remote.WithTransport(l.r.Transport))
	}
	desc, err := remote.Head(parsed, ropts...)
	a = answer{err: err}
	if err == nil {
		a.digest = desc.Digest.String()
	}
	l.mu.Lock()
	l.digests[key] = a
	l.mu.Unlock()
	return a.digest, a.err
}

// auth is how workspace ws reads ref's registry, and the cache key of
// that way: the internal library/ is the same for everyone.
func (l *lookup) auth(ctx context.Context, ws string, ref name.Reference) (string, authn.Authenticator, error) {
	host := ref.Context().RegistryStr()
	if l.r.Internal != "" && image.SameRegistry(host, l.r.Internal) {
		if l.r.Tokens == nil {
			return "anonymous", authn.Anonymous, nil
		}
		repo := ref.Context().RepositoryStr()
		key := "internal/" + ws
		if strings.HasPrefix(repo, image.LibraryPrefix+"/") {
			key = "internal"
		}
		tok, err := l.r.Tokens.WatchToken(ctx, ws, repo)
		if err != nil {
			return "", nil, err
		}
		return key, authn.FromConfig(authn.AuthConfig{RegistryToken: tok}), nil
	}
	l.mu.Lock()
	cs, ok := l.creds[ws]
	l.mu.Unlock()
	if !ok {
		var err error
		if cs, err = l.r.Store.ListCredentials(ctx, ws); err != nil {
			return "", nil, err
		}
		l.mu.Lock()
		l.creds[ws] = cs
		l.mu.Unlock()
	}
	for _, c := range cs {
		if c.Kind == "registry" && c.Registry == host {
			pw, err := l.r.Secrets.Open(c.Secret)
			if err != nil {
				return "", nil, err
			}
			return "credential/" + ws + "/" + c.Name, &authn.Basic{Username: c.Username, Password: pw}, nil
		}
	}
	return "anonymous", authn.Anonymous, nil
}

// GitRemote tells the commits of git refs from the remotes' ref listings,
// with the workspace's git credential bound to its host.
type GitRemote struct {
	Refs    RefLister
	Store   store.Store
	Secrets Opener
}

// RefLister tells the commit a git ref names on its remote now:
// gitctx.Fetcher in this process, or buildcontext.Preparer in a bounded
// child process (what a server runs: the remote is any member's choice).
type RefLister interface {
	Head(ctx context.Context, g image.Git, auth *gitctx.Auth) (string, error)
}

// Head implements Commits.
func (g *GitRemote) Head(ctx context.Context, ws string, ctxGit image.Git) (string, error) {
	var auth *gitctx.Auth
	if name := ctxGit.Credential; name != "" {
		c, err := g.Store.GetCredential(ctx, ws, name)
		if errors.Is(err, store.ErrNotFound) {
			return "", fmt.Errorf("the git credential %q does not exist in this workspace", name)
		}
		if err != nil {
			return "", err
		}
		if err := c.CheckGit(ctxGit.URL); err != nil {
			return "", fmt.Errorf("not listing the remote: %w", err)
		}
		tok, err := g.Secrets.Open(c.Secret)
		if err != nil {
			return "", err
		}
		auth = &gitctx.Auth{Username: c.Username, Token: tok}
	}
	return g.Refs.Head(ctx, ctxGit, auth)
}
