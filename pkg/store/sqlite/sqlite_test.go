package sqlite_test

import (
	"context"
	"database/sql"
	"os"
	"path/filepath"
	"testing"

	"github.com/slipway-dev/slipway/pkg/store"
	"github.com/slipway-dev/slipway/pkg/store/sqlite"
	"github.com/slipway-dev/slipway/pkg/store/storetest"
)

func open(t *testing.T) store.Store {
	s, err := sqlite.Open(filepath.Join(t.TempDir(), "slipway.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestConformance(t *testing.T) { storetest.Run(t, open) }

func TestReopenKeepsEverything(t *testing.T) {
	path := filepath.Join(t.TempDir(), "slipway.db")
	s, err := sqlite.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := s.ApplyWorkspace(ctx, "k1", store.Order{}, store.Workspace{ID: "ws1", Owner: "alice"}, false); err != nil {
		t.Fatal(err)
	}
	img := storetest.NewImage("img1", "ws1", "team/a")
	if err := s.CreateImage(ctx, img); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s, err = sqlite.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	got, err := s.GetImage(ctx, "img1")
	if err != nil || got.Name != "team/a" || got.Version != 1 {
		t.Fatalf("after reopen: %+v, %v", got, err)
	}
	if err := s.ApplyWorkspace(ctx, "k1", store.Order{}, store.Workspace{ID: "ws1", Owner: "x"}, false); err != store.ErrDuplicate {
		t.Fatalf("processed event forgotten across reopen: %v", err)
	}
}

func TestRefusesNewerSchema(t *testing.T) {
	path := filepath.Join(t.TempDir(), "slipway.db")
	s, err := sqlite.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	s2, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s2.Exec("PRAGMA user_version = 99"); err != nil {
		t.Fatal(err)
	}
	s2.Close()
	if _, err := sqlite.Open(path); err == nil {
		t.Fatal("opened a database with a newer schema")
	}
	if _, err := os.Stat(path); err != nil {
		t.Fatal(err)
	}
}
