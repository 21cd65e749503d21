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

// TestWorkspacesFromBeforeOrders: a database whose workspaces were stored
// before they kept their last event's order migrates; such a workspace has
// the zero order, so the next ordered event applies.
func TestWorkspacesFromBeforeOrders(t *testing.T) {
	path := filepath.Join(t.TempDir(), "slipway.db")
	s, err := sqlite.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	// Back to schema 2: the workspaces and images tables as they were.
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{"DROP TRIGGER catalogue_workspace", "DROP TRIGGER catalogue_insert", "DROP TRIGGER catalogue_update",
		"DROP TRIGGER catalogue_delete", "DROP TABLE catalogue_seq", "ALTER TABLE workspaces DROP COLUMN catalogue",
		"ALTER TABLE workspaces DROP COLUMN deleted", "ALTER TABLE workspaces DROP COLUMN seq", "ALTER TABLE workspaces DROP COLUMN time",
		"DROP INDEX images_automatic", "ALTER TABLE images DROP COLUMN automatic",
		`INSERT INTO workspaces (id, owner, members) VALUES ('ws1', 'alice', '["bob"]')`, "PRAGMA user_version = 2"} {
		if _, err := db.Exec(q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	db.Close()
	s, err = sqlite.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	if ws, err := s.GetWorkspace(ctx, "ws1"); err != nil || ws.Owner != "alice" || len(ws.Members) != 1 {
		t.Fatalf("after the migration: %+v, %v", ws, err)
	}
	if o, err := s.WorkspaceOrder(ctx, "ws1"); err != nil || !o.IsZero() {
		t.Fatalf("order after the migration: %+v, %v", o, err)
	}
	if err := s.ApplyWorkspace(ctx, "k2", store.Order{Sequence: "1"}, store.Workspace{ID: "ws1", Owner: "carol"}, false); err != nil {
		t.Fatal(err)
	}
	if ws, _ := s.GetWorkspace(ctx, "ws1"); ws.Owner != "carol" {
		t.Fatalf("the first ordered event did not apply: %+v", ws)
	}
}
