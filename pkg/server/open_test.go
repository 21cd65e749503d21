package server_test

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/slipway-dev/slipway/internal/servertest"
	"github.com/slipway-dev/slipway/pkg/server"
)

// TestListenReportsAStoreThatWillNotOpen checks that a store that fails to
// open is an error of Listen, not a panic on closing a store that was never
// there: SQLite on a data dir whose database path is a directory, and
// Firestore without credentials or an emulator.
func TestListenReportsAStoreThatWillNotOpen(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	t.Run("sqlite", func(t *testing.T) {
		cfg := serverConfig(t)
		if err := os.Mkdir(filepath.Join(cfg.DataDir, server.DatabaseFile), 0o700); err != nil {
			t.Fatal(err)
		}
		s, err := server.Listen(cfg, log)
		if err == nil || s != nil {
			t.Fatalf("Listen = %v, %v; want an error", s, err)
		}
		if !strings.Contains(err.Error(), server.DatabaseFile) {
			t.Errorf("error %q does not name the database", err)
		}
	})
	t.Run("firestore", func(t *testing.T) {
		t.Setenv("FIRESTORE_EMULATOR_HOST", "")
		os.Unsetenv("FIRESTORE_EMULATOR_HOST")
		t.Setenv("GOOGLE_APPLICATION_CREDENTIALS", filepath.Join(t.TempDir(), "no-such-credentials.json"))
		cfg := serverConfig(t)
		cfg.Store, cfg.FirestoreProject = "firestore", "slipway-test"
		s, err := server.Listen(cfg, log)
		if err == nil || s != nil {
			t.Fatalf("Listen = %v, %v; want an error", s, err)
		}
		if !strings.Contains(err.Error(), "Firestore") {
			t.Errorf("error %q does not say Firestore", err)
		}
	})
}

// TestReadinessTurnsNotReadyOnShutdown checks the order of a graceful stop:
// once asked to stop, the server answers its readiness probe with 503 while
// it still serves (liveness and the API answer), for the drain delay, and
// only then stops.
func TestReadinessTurnsNotReadyOnShutdown(t *testing.T) {
	cfg := serverConfig(t)
	cfg.DrainDelay = 2 * time.Second
	s, err := server.Listen(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx) }()
	servertest.WaitReady(t, s.URL())
	stop()
	status := func(path string) int {
		res, err := http.Get(s.URL() + path)
		if err != nil {
			t.Fatalf("GET %s while draining: %v", path, err)
		}
		res.Body.Close()
		return res.StatusCode
	}
	for status("/health/readiness") != http.StatusServiceUnavailable {
		select {
		case err := <-done:
			t.Fatalf("the server stopped (%v) before its readiness turned 503", err)
		default:
		}
	}
	if code := status("/health/liveness"); code != http.StatusOK {
		t.Errorf("liveness while draining: %d, want 200", code)
	}
	if code := status("/api/v1/info"); code != http.StatusUnauthorized {
		t.Errorf("the API while draining: %d, want 401 (served, no token)", code)
	}
	if err := <-done; err != nil {
		t.Fatalf("Serve: %v", err)
	}
	if _, err := http.Get(s.URL() + "/health/liveness"); err == nil {
		t.Error("the server still serves after Serve returned")
	}
}
