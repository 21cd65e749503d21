package server_test

import (
	"flag"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/slipway-dev/slipway/pkg/buildcontext"
	"github.com/slipway-dev/slipway/pkg/server"
)

// The Git fetch's limits are settings: defaults, flags with quantities, and
// SLIPWAY_GIT_* variables; a memory the fetch process cannot start in is
// refused.
func TestGitLimitSettings(t *testing.T) {
	parse := func(args ...string) (server.Config, error) {
		cfg := server.DefaultConfig()
		fs := flag.NewFlagSet("serve", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		cfg.RegisterFlags(fs)
		if err := server.ApplyEnv(fs); err != nil {
			return cfg, err
		}
		if err := fs.Parse(args); err != nil {
			return cfg, err
		}
		return cfg, cfg.Validate()
	}
	cfg, err := parse()
	if err != nil || cfg.GitMaxFiles != buildcontext.DefaultFiles || cfg.GitMaxBytes != 1<<30 || cfg.GitMemory != 2<<30 || cfg.GitTimeout != 5*time.Minute {
		t.Fatalf("defaults: %+v, %v", cfg, err)
	}
	t.Setenv("SLIPWAY_GIT_TIMEOUT", "90s")
	t.Setenv("SLIPWAY_GIT_MAX_FILES", "5000")
	cfg, err = parse("--git-max-bytes", "64Mi", "--git-memory", "3Gi")
	if err != nil || cfg.GitMaxFiles != 5000 || cfg.GitMaxBytes != 64<<20 || cfg.GitMemory != 3<<30 || cfg.GitTimeout != 90*time.Second {
		t.Fatalf("set: %+v, %v", cfg, err)
	}
	if _, err := parse("--git-memory", "512Mi"); err == nil || !strings.Contains(err.Error(), "at least 1Gi") {
		t.Fatalf("a 512Mi fetch memory: %v", err)
	}
}
