package store

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"

	"github.com/go-git/go-git/v5/plumbing/transport"
	"github.com/google/go-containerregistry/pkg/name"
)

// Errors of binding a credential to where it is used, checked with
// errors.Is: the API answers 400 at save time and a build fails that push
// or fetch without sending anything.
var (
	// ErrCredentialKind: a destination names a git credential, or a git
	// context a registry credential.
	ErrCredentialKind = errors.New("credential of the wrong kind")
	// ErrCredentialHost: the credential belongs to another host than the
	// one it would be sent to (or, a git credential stored before hosts
	// existed, to none).
	ErrCredentialHost = errors.New("credential of another host")
)

// Git default ports by URL scheme, for comparing a credential's host with
// a URL that names no port.
var gitDefaultPorts = map[string]int{"https": 443, "http": 80, "ssh": 22, "git": 9418}

// NormalizeRegistry returns a registry host as go-containerregistry names
// it (docker.io is index.docker.io), lower case; an error when s is not a
// bare HOST[:PORT].
func NormalizeRegistry(s string) (string, error) {
	if s == "" || strings.ContainsAny(s, "/@ \t\r\n?#") {
		return "", fmt.Errorf("%q is not a registry host: give HOST or HOST:PORT, no scheme or path", s)
	}
	r, err := name.NewRegistry(s, name.StrictValidation)
	if err != nil {
		return "", fmt.Errorf("%q is not a registry host: %v", s, err)
	}
	return strings.ToLower(r.RegistryStr()), nil
}

// ParseGitHost checks a git credential's host, HOST or HOST:PORT, and
// returns it in lower case.
func ParseGitHost(s string) (string, error) {
	bad := fmt.Errorf("%q is not a host: give HOST or HOST:PORT, no scheme or path", s)
	if s == "" || strings.ContainsAny(s, "/@ \t\r\n?#\\") {
		return "", bad
	}
	u, err := url.Parse("//" + s)
	if err != nil || u.Host != s || u.Hostname() == "" {
		return "", bad
	}
	if p := u.Port(); p != "" {
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
			return "", bad
		}
	}
	return strings.ToLower(s), nil
}

// CheckRegistry reports whether c may authenticate a push to or a pull
// from reference: it must be a registry credential of reference's registry.
func (c Credential) CheckRegistry(reference string) error {
	if c.Kind != "registry" {
		return fmt.Errorf("%w: %q is a %s credential, not a registry credential", ErrCredentialKind, c.Name, c.Kind)
	}
	ref, err := name.ParseReference(reference)
	if err != nil {
		return err
	}
	want := strings.ToLower(ref.Context().RegistryStr())
	if own, err := NormalizeRegistry(c.Registry); err != nil || own != want {
		return fmt.Errorf("%w: the registry credential %q is for %s, not %s; a credential is sent only to its own host", ErrCredentialHost, c.Name, c.Registry, want)
	}
	return nil
}

// CheckSecret reports whether c may be mounted as a build secret: it must
// be a credential of kind secret (a registry password or a git token is
// never put inside a build).
func (c Credential) CheckSecret() error {
	if c.Kind != "secret" {
		return fmt.Errorf("%w: %q is a %s credential, not a secret credential", ErrCredentialKind, c.Name, c.Kind)
	}
	return nil
}

// CheckGit reports whether c may authenticate a fetch from the git URL
// rawURL: it must be a git credential whose host is the URL's host and
// port (a host without a port stands for the scheme's default port).
func (c Credential) CheckGit(rawURL string) error {
	if c.Kind != "git" {
		return fmt.Errorf("%w: %q is a %s credential, not a git credential", ErrCredentialKind, c.Name, c.Kind)
	}
	if c.Host == "" {
		return fmt.Errorf("%w: the git credential %q has no host (it was stored before credentials named one), so it is sent nowhere; store it again with its host", ErrCredentialHost, c.Name)
	}
	ep, err := transport.NewEndpoint(rawURL)
	if err != nil {
		return err
	}
	port := ep.Port
	if port == 0 {
		port = gitDefaultPorts[ep.Protocol]
	}
	host, credPort := c.Host, gitDefaultPorts[ep.Protocol]
	if h, p, err := net.SplitHostPort(c.Host); err == nil {
		host = h
		credPort, _ = strconv.Atoi(p)
	}
	host = strings.Trim(host, "[]")
	if !strings.EqualFold(host, ep.Host) || credPort != port || port == 0 {
		return fmt.Errorf("%w: the git credential %q is for %s, not %s; a credential is sent only to its own host", ErrCredentialHost, c.Name, c.Host, net.JoinHostPort(ep.Host, strconv.Itoa(port)))
	}
	return nil
}

// OwnsRepository reports whether workspace ws holds an image named repo,
// that is, whether repo is one of ws's repositories in the internal
// registry.
func OwnsRepository(ctx context.Context, s Store, ws, repo string) (bool, error) {
	p := Page{Limit: 200}
	for {
		imgs, next, err := s.ListImages(ctx, ws, ImageFilter{}, p)
		if err != nil {
			return false, err
		}
		for _, img := range imgs {
			if img.Name == repo {
				return true, nil
			}
		}
		if next == "" {
			return false, nil
		}
		p.Cursor = next
	}
}
