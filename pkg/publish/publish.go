// Package publish copies a built image from the internal registry to an
// image's external destinations, each with its workspace credential, and
// reports each destination's result on its own. Slipway pushes there
// itself, after the build: no destination credential is ever inside a
// build. Local builds publish from the dispatcher, cluster builds from the
// reporter, and a destination that refused can be pushed again from the
// API without a rebuild.
package publish

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/slipway-dev/slipway/pkg/build"
	"github.com/slipway-dev/slipway/pkg/image"
	"github.com/slipway-dev/slipway/pkg/store"
)

// Opener opens sealed credentials.
type Opener interface {
	Open(sealed string) (string, error)
}

// PullTokens mints the short-lived credential a build's image is read back
// with from the internal registry (the embedded registry's token flow).
type PullTokens interface {
	// PullCredential pulls repo alone, for ttl, as build number of image.
	PullCredential(image string, number int, repo string, ttl time.Duration) (string, error)
}

// Gate keeps the internal registry's garbage collection away while an
// image is read back (see package gate).
type Gate interface {
	Shared() (release func())
}

// Log takes the notes a publication writes to a build's log.
type Log interface {
	Notef(format string, args ...any)
}

// User is the user name the pull credential goes with (the token endpoint
// takes any).
const User = "slipway-build"

// readBackTTL bounds the pull credential a built image is read back with.
const readBackTTL = 15 * time.Minute

// DefaultPushTimeout caps one destination's push when Options.PushTimeout
// is zero; the caller's context bounds all of them.
const DefaultPushTimeout = 10 * time.Minute

// Options configure a Publisher. Store, Secrets and Registry are required.
type Options struct {
	Store   store.Store
	Secrets Opener
	// Registry is the internal registry, HOST:PORT.
	Registry string
	// Tokens mints the read-back credential; nil: the internal registry
	// is read anonymously (it authenticates Slipway otherwise).
	Tokens PullTokens
	// Gate, when set, is held while a build's image is pushed again.
	Gate        Gate
	PushTimeout time.Duration
	Now         func() time.Time
}

// Publisher pushes built images to external destinations.
type Publisher struct {
	o Options
}

// New returns a Publisher.
func New(o Options) *Publisher {
	if o.Now == nil {
		o.Now = func() time.Time { return time.Now().UTC() }
	}
	if o.PushTimeout <= 0 {
		o.PushTimeout = DefaultPushTimeout
	}
	return &Publisher{o: o}
}

// Publish copies build b of img, whose digest is digest, from the internal
// registry to each of dests, and returns one result per destination, in
// order: pushed, or failed with the registry's error (never a credential).
// ctx bounds it all (a local build's time limit): a destination that does
// not answer in time fails, saying so. log, when set, gets a note per push.
func (p *Publisher) Publish(ctx context.Context, img image.Image, b build.Build, digest string, dests []image.Destination, log Log) []build.Push {
	out := make([]build.Push, 0, len(dests))
	if len(dests) == 0 {
		return out
	}
	now := p.o.Now()
	built, err := p.readBack(ctx, img, b, digest)
	for _, dest := range dests {
		res := build.Push{Reference: dest.Reference, Status: build.PushPushed, At: &now}
		perr := err
		if perr != nil {
			perr = fmt.Errorf("reading the built image back: %w", perr)
		} else {
			if log != nil {
				log.Notef("pushing to %s", dest.Reference)
			}
			perr = p.pushOne(ctx, img.Workspace, dest, built)
		}
		if perr != nil {
			msg := explain(ctx, perr)
			res.Status, res.Error = build.PushFailed, &msg
			if log != nil {
				log.Notef("push to %s failed: %s", dest.Reference, msg)
			}
		}
		out = append(out, res)
		now = p.o.Now()
	}
	return out
}

// PushAgain pushes succeeded build b of img once more to dest, one of
// img's destinations, and returns the result; ctx bounds it.
func (p *Publisher) PushAgain(ctx context.Context, img image.Image, b build.Build, dest image.Destination) build.Push {
	if p.o.Gate != nil {
		defer p.o.Gate.Shared()()
	}
	if b.Digest == nil {
		msg := "the build has no image to push"
		now := p.o.Now()
		return build.Push{Reference: dest.Reference, Status: build.PushFailed, Error: &msg, At: &now}
	}
	return p.Publish(ctx, img, b, *b.Digest, []image.Destination{dest}, nil)[0]
}

// explain is err as a push's error; a push cut off by ctx's deadline says
// that it ran out of time.
func explain(ctx context.Context, err error) string {
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return "the push did not finish within the time limit: " + err.Error()
	}
	return err.Error()
}

// readBack reads build b's image of img from the internal registry, by
// digest, with a short-lived pull credential for its repository alone.
func (p *Publisher) readBack(ctx context.Context, img image.Image, b build.Build, digest string) (v1.Image, error) {
	src, err := name.ParseReference(p.o.Registry + "/" + img.Name + "@" + digest)
	if err != nil {
		return nil, fmt.Errorf("the built image's reference is invalid: %w", err)
	}
	auth := authn.Anonymous
	if p.o.Tokens != nil {
		cred, err := p.o.Tokens.PullCredential(b.Image, b.Number, img.Name, readBackTTL)
		if err != nil {
			return nil, fmt.Errorf("minting the internal registry's pull credential: %w", err)
		}
		auth = &authn.Basic{Username: User, Password: cred}
	}
	return remote.Image(src, remote.WithContext(ctx), remote.WithAuth(auth))
}

func (p *Publisher) pushOne(ctx context.Context, ws string, dest image.Destination, img v1.Image) error {
	ref, err := name.ParseReference(dest.Reference)
	if err != nil {
		return err
	}
	if image.SameRegistry(ref.Context().RegistryStr(), p.o.Registry) {
		// The internal registry: only the workspace's own repositories.
		own, err := store.OwnsRepository(ctx, p.o.Store, ws, ref.Context().RepositoryStr())
		if err != nil {
			return err
		}
		if !own {
			return fmt.Errorf("not pushing: %s is in the internal registry but is not an image of this workspace", dest.Reference)
		}
	}
	auth := authn.Anonymous
	if dest.Credential != "" {
		c, err := p.o.Store.GetCredential(ctx, ws, dest.Credential)
		if errors.Is(err, store.ErrNotFound) {
			return fmt.Errorf("the registry credential %q does not exist in this workspace", dest.Credential)
		}
		if err != nil {
			return err
		}
		// Checked again at push time: the credential may have changed
		// since the destination was saved.
		if err := c.CheckRegistry(dest.Reference); err != nil {
			return fmt.Errorf("not pushing: %w", err)
		}
		pw, err := p.o.Secrets.Open(c.Secret)
		if err != nil {
			return err
		}
		auth = &authn.Basic{Username: c.Username, Password: pw}
	}
	pctx, cancel := context.WithTimeout(ctx, p.o.PushTimeout)
	defer cancel()
	return remote.Write(ref, img, remote.WithAuth(auth), remote.WithContext(pctx))
}
