package server_test

import (
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

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
