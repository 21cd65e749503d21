package server_test

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/slipway-dev/slipway/internal/servertest"
	"github.com/slipway-dev/slipway/pkg/server"
)

// TestOneServerPerDataDir starts a server, then a second one on the same
// data dir, in-process and as the real binary: both refuse at once, naming
// the first one's pid, and the first one goes on serving. Once it stops, the
// data dir is free again.
func TestOneServerPerDataDir(t *testing.T) {
	e := start(t, serverConfig(t))
	cfg := e.cfg
	cfg.Addr = "127.0.0.1:0"
	_, err := server.Listen(cfg, slog.New(slog.NewJSONHandler(io.Discard, nil)))
	pid := fmt.Sprintf("pid %d", os.Getpid())
	if !errors.Is(err, server.ErrDataDirLocked) || !strings.Contains(err.Error(), pid) {
		t.Fatalf("second server in-process: %v, want ErrDataDirLocked naming %s", err, pid)
	}

	bin := filepath.Join(servertest.RepoRoot(), "bin", "slipway")
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("no %s: run `make build`", bin)
	}
	cmd := exec.Command(bin, "serve", "--data", cfg.DataDir, "--addr", fmt.Sprintf("127.0.0.1:%d", freePort(t)))
	begun := time.Now()
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 1 || !strings.Contains(string(out), pid) || time.Since(begun) > 10*time.Second {
		t.Fatalf("second server as a process: %v after %s, output %q; want exit 1 at once naming %s", err, time.Since(begun), out, pid)
	}
	want(t, e.call("GET", "/api/v1/info", "alice", nil, nil), 200, "")

	e.shutdown()
	again := start(t, cfg)
	want(t, again.call("GET", "/api/v1/info", "alice", nil, nil), 200, "")
}
