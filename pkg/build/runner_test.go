package build

import (
	"slices"
	"testing"
)

func TestExecutorArgs(t *testing.T) {
	common := []string{
		"--dockerfile", "/workspace/sub/Dockerfile",
		"--context", "dir:///workspace/sub",
		"--digest-file", "/dev/termination-log",
		"--push-retry", "2", "--verbosity", "info", "--log-format", "text", "--force",
	}
	for _, tc := range []struct {
		name string
		spec Spec
		want []string
	}{
		{"destinations only", Spec{Destinations: []string{"r.internal:5000/app:latest"}},
			append(slices.Clone(common), "--destination", "r.internal:5000/app:latest", "--compressed-caching=false", "--snapshot-mode=full")},
		{"everything", Spec{
			ID:                 "app-1",
			ContextDir:         "/ignored",
			Dockerfile:         "ignored/Dockerfile",
			Destinations:       []string{"r.internal:5000/app:latest", "ghcr.io/acme/app:1"},
			DockerConfig:       []byte(`{"auths":{}}`),
			InsecureRegistries: []string{"r.internal:5000", "127.0.0.1:5001"},
			CacheRepo:          "r.internal:5000/slipway-cache/app",
			Limits:             Limits{MemoryBytes: 1 << 30},
		}, append(slices.Clone(common),
			"--destination", "r.internal:5000/app:latest",
			"--destination", "ghcr.io/acme/app:1",
			"--insecure-registry", "r.internal:5000", "--skip-tls-verify-registry", "r.internal:5000",
			"--insecure-registry", "127.0.0.1:5001", "--skip-tls-verify-registry", "127.0.0.1:5001",
			"--cache=true", "--cache-repo", "r.internal:5000/slipway-cache/app",
			"--compressed-caching=false", "--snapshot-mode=full",
		)},
		{"no destination", Spec{}, append(slices.Clone(common), "--compressed-caching=false", "--snapshot-mode=full")},
		{"own tuning", Spec{Tuning: []string{"--single-snapshot"}}, append(slices.Clone(common), "--single-snapshot")},
		{"Kaniko's own defaults", Spec{Tuning: []string{}}, common},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := ExecutorArgs(tc.spec, "/workspace/sub/Dockerfile", "/workspace/sub", "/dev/termination-log")
			if !slices.Equal(got, tc.want) {
				t.Errorf("args =\n%q\nwant\n%q", got, tc.want)
			}
		})
	}
}
