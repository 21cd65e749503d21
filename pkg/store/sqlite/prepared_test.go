package sqlite

import (
	"context"
	"database/sql"
	"path/filepath"
	"testing"

	"github.com/slipway-dev/slipway/pkg/store/storetest"
)

// A statement that does not prepare reports its error, on the pool and in
// a transaction, through every way of running it.
func TestUnpreparableStatementReportsItsError(t *testing.T) {
	s, err := Open(filepath.Join(t.TempDir(), "slipway.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	const bad = "SELECT no_such_column FROM images"
	check := func(where string, c q) {
		t.Helper()
		if _, err := c.exec(ctx, bad); err == nil {
			t.Errorf("%s: exec: no error", where)
		}
		if rows, err := c.query(ctx, bad); err == nil {
			rows.Close()
			t.Errorf("%s: query: no error", where)
		}
		var v string
		if err := c.queryRow(ctx, bad).Scan(&v); err == nil {
			t.Errorf("%s: queryRow: no error", where)
		}
	}
	check("pool", s.pool())
	s.tx(ctx, func(tx q) error { check("transaction", tx); return nil })
}

// A database of the schema before catalogue numbers gets them for its
// workspaces when opened, and they change with its images from then on.
func TestMigrationNumbersExistingWorkspaces(t *testing.T) {
	path := filepath.Join(t.TempDir(), "slipway.db")
	db, err := sql.Open("sqlite", "file:"+path)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range migrations[:2] {
		if _, err := db.Exec(m); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := db.Exec(`PRAGMA user_version = 2; INSERT INTO workspaces (id, owner, members) VALUES ('ws1', 'alice', '[]'), ('ws2', 'bob', '[]')`); err != nil {
		t.Fatal(err)
	}
	db.Close()
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	ws1, err1 := s.GetWorkspace(ctx, "ws1")
	ws2, err2 := s.GetWorkspace(ctx, "ws2")
	if err1 != nil || err2 != nil || ws1.Catalogue == 0 || ws2.Catalogue == 0 || ws1.Catalogue == ws2.Catalogue {
		t.Fatalf("after migrating: %+v %v, %+v %v", ws1, err1, ws2, err2)
	}
	img := storetest.NewImage("img1", "ws1", "team/a")
	if err := s.CreateImage(ctx, img); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.GetWorkspace(ctx, "ws1"); got.Catalogue == ws1.Catalogue || got.Catalogue == ws2.Catalogue {
		t.Fatalf("catalogue %d after a create, was %d (ws2 %d)", got.Catalogue, ws1.Catalogue, ws2.Catalogue)
	}
}
