package store

import (
	"errors"
	"testing"
)

func TestCheckRegistry(t *testing.T) {
	hub := Credential{Name: "hub", Kind: "registry", Registry: "docker.io"}
	local := Credential{Name: "local", Kind: "registry", Registry: "127.0.0.1:5000"}
	for _, tc := range []struct {
		c    Credential
		ref  string
		want error
	}{
		{hub, "index.docker.io/team/x:v1", nil},
		{hub, "team/x", nil},
		{hub, "ghcr.io/team/x", ErrCredentialHost},
		{local, "127.0.0.1:5000/team/x", nil},
		{local, "127.0.0.1:5001/team/x", ErrCredentialHost},
		{local, "localhost:5000/team/x", ErrCredentialHost},
		{Credential{Name: "g", Kind: "git", Host: "127.0.0.1:5000"}, "127.0.0.1:5000/team/x", ErrCredentialKind},
	} {
		if err := tc.c.CheckRegistry(tc.ref); !errors.Is(err, tc.want) || (tc.want == nil) != (err == nil) {
			t.Errorf("%s for %s: %v, want %v", tc.c.Registry, tc.ref, err, tc.want)
		}
	}
}

func TestCheckGit(t *testing.T) {
	gh := Credential{Name: "gh", Kind: "git", Host: "github.com"}
	loop := Credential{Name: "loop", Kind: "git", Host: "127.0.0.1:8443"}
	for _, tc := range []struct {
		c    Credential
		url  string
		want error
	}{
		{gh, "https://github.com/a/b.git", nil},
		{gh, "https://GitHub.com:443/a/b.git", nil},
		{gh, "git@github.com:a/b.git", nil},
		{gh, "https://github.com:8443/a/b.git", ErrCredentialHost},
		{gh, "https://github.com.evil.example/a/b.git", ErrCredentialHost},
		{gh, "https://gitlab.com/a/b.git", ErrCredentialHost},
		{loop, "https://127.0.0.1:8443/a.git", nil},
		{loop, "https://127.0.0.1:9443/a.git", ErrCredentialHost},
		{loop, "https://127.0.0.1/a.git", ErrCredentialHost},
		{Credential{Name: "old", Kind: "git"}, "https://github.com/a/b.git", ErrCredentialHost},
		{Credential{Name: "hub", Kind: "registry", Registry: "github.com"}, "https://github.com/a/b.git", ErrCredentialKind},
	} {
		if err := tc.c.CheckGit(tc.url); !errors.Is(err, tc.want) || (tc.want == nil) != (err == nil) {
			t.Errorf("%q for %s: %v, want %v", tc.c.Host, tc.url, err, tc.want)
		}
	}
}

func TestParseHosts(t *testing.T) {
	for _, ok := range []string{"github.com", "127.0.0.1:8443", "[::1]:443", "Git.Example"} {
		if _, err := ParseGitHost(ok); err != nil {
			t.Errorf("ParseGitHost(%q): %v", ok, err)
		}
	}
	for _, bad := range []string{"", "https://github.com", "github.com/a", "u@github.com", "github.com:0", "github.com:x", "a b"} {
		if _, err := ParseGitHost(bad); err == nil {
			t.Errorf("ParseGitHost(%q) accepted", bad)
		}
	}
	if r, err := NormalizeRegistry("docker.io"); err != nil || r != "index.docker.io" {
		t.Errorf("NormalizeRegistry(docker.io) = %q, %v", r, err)
	}
	for _, bad := range []string{"", "https://ghcr.io", "ghcr.io/x", "u@ghcr.io"} {
		if _, err := NormalizeRegistry(bad); err == nil {
			t.Errorf("NormalizeRegistry(%q) accepted", bad)
		}
	}
}
