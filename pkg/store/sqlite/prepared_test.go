package sqlite

import (
	"context"
	"path/filepath"
	"testing"
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
