// Package sqlite is the embedded Store: one SQLite file in the data dir,
// through the pure-Go modernc.org/sqlite driver, in WAL mode. Platform-wide
// name uniqueness and the one-active-build rule are held by the schema.
package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/slipway-dev/slipway/pkg/build"
	"github.com/slipway-dev/slipway/pkg/image"
	"github.com/slipway-dev/slipway/pkg/store"
	sqlite3 "modernc.org/sqlite"
	sqlite3lib "modernc.org/sqlite/lib"
)

var _ store.Store = (*Store)(nil)

// migrations are applied in order; PRAGMA user_version counts those applied.
var migrations = []string{`
CREATE TABLE workspaces (
	id      TEXT PRIMARY KEY,
	owner   TEXT NOT NULL,
	members TEXT NOT NULL
);
CREATE TABLE processed_events (
	key TEXT PRIMARY KEY
);
CREATE TABLE images (
	id        TEXT PRIMARY KEY,
	workspace TEXT NOT NULL,
	name      TEXT NOT NULL UNIQUE,
	version   INTEGER NOT NULL,
	usable    INTEGER NOT NULL DEFAULT 0,
	doc       TEXT NOT NULL
);
CREATE INDEX images_by_workspace ON images (workspace, name);
CREATE TABLE builds (
	image  TEXT NOT NULL REFERENCES images (id) ON DELETE CASCADE,
	number INTEGER NOT NULL,
	status TEXT NOT NULL,
	doc    TEXT NOT NULL,
	PRIMARY KEY (image, number)
);
CREATE UNIQUE INDEX one_active_build ON builds (image) WHERE status IN ('queued', 'running');
CREATE INDEX active_builds ON builds (status) WHERE status IN ('queued', 'running');
CREATE TABLE build_logs (
	image  TEXT NOT NULL,
	number INTEGER NOT NULL,
	start  INTEGER NOT NULL,
	data   BLOB NOT NULL,
	PRIMARY KEY (image, number, start),
	FOREIGN KEY (image, number) REFERENCES builds (image, number) ON DELETE CASCADE
);
CREATE TABLE credentials (
	workspace TEXT NOT NULL,
	name      TEXT NOT NULL,
	doc       TEXT NOT NULL,
	PRIMARY KEY (workspace, name)
);
`,
	// The event outbox: seq orders every event, and so each subject's.
	`CREATE TABLE outbox (
	seq     INTEGER PRIMARY KEY AUTOINCREMENT,
	id      TEXT NOT NULL UNIQUE,
	type    TEXT NOT NULL,
	subject TEXT NOT NULL,
	time    TEXT NOT NULL,
	data    TEXT NOT NULL
);
`,
	// Workspace events apply in the platform's order: each workspace keeps
	// its last event's (store.Order), and a deletion leaves a tombstone.
	`ALTER TABLE workspaces ADD COLUMN deleted INTEGER NOT NULL DEFAULT 0;
ALTER TABLE workspaces ADD COLUMN seq TEXT NOT NULL DEFAULT '';
ALTER TABLE workspaces ADD COLUMN time TEXT NOT NULL DEFAULT '';
`,
	// The images the rebuild policy looks at (image.Image.Automatic).
	`ALTER TABLE images ADD COLUMN automatic INTEGER NOT NULL DEFAULT 0;
CREATE INDEX images_automatic ON images (name) WHERE automatic = 1;
`,
	// A workspace's catalogue number (store.Workspace.Catalogue): the
	// triggers give it the next number of one sequence on every change of
	// its images, so that no write path can forget it and a workspace
	// deleted and announced again never repeats an old number.
	`CREATE TABLE catalogue_seq (n INTEGER NOT NULL);
INSERT INTO catalogue_seq (n) VALUES (0);
ALTER TABLE workspaces ADD COLUMN catalogue INTEGER NOT NULL DEFAULT 0;
UPDATE workspaces SET catalogue = rowid;
UPDATE catalogue_seq SET n = COALESCE((SELECT MAX(rowid) FROM workspaces), 0);
CREATE TRIGGER catalogue_workspace AFTER INSERT ON workspaces BEGIN
	UPDATE catalogue_seq SET n = n + 1;
	UPDATE workspaces SET catalogue = (SELECT n FROM catalogue_seq) WHERE id = NEW.id;
END;
CREATE TRIGGER catalogue_insert AFTER INSERT ON images BEGIN
	UPDATE catalogue_seq SET n = n + 1;
	UPDATE workspaces SET catalogue = (SELECT n FROM catalogue_seq) WHERE id = NEW.workspace;
END;
CREATE TRIGGER catalogue_update AFTER UPDATE ON images BEGIN
	UPDATE catalogue_seq SET n = n + 1;
	UPDATE workspaces SET catalogue = (SELECT n FROM catalogue_seq) WHERE id IN (OLD.workspace, NEW.workspace);
END;
CREATE TRIGGER catalogue_delete AFTER DELETE ON images BEGIN
	UPDATE catalogue_seq SET n = n + 1;
	UPDATE workspaces SET catalogue = (SELECT n FROM catalogue_seq) WHERE id = OLD.workspace;
END;
`}

// Store is a SQLite-backed store.Store.
type Store struct {
	db     *sql.DB
	images decoded
	// stmts holds every statement prepared once: preparing one again on
	// each call cost about as much as running it.
	stmts sync.Map // query string -> *sql.Stmt
	// writer admits one write transaction at a time, in arrival order.
	// SQLite has a single writer; writers that queued in its busy handler
	// instead slept in growing steps (up to 100 ms) and starved under load.
	writer chan struct{}
	// gen counts the write transactions committed. A read made through
	// the pool under one count is served again from memory while the
	// count holds (see fresh): the store is the only writer of its file,
	// as the server locks its data dir.
	gen        atomic.Int64
	workspaces readWorkspaces
	now        func() time.Time // stamps queued builds
}

// readWorkspaces remembers workspaces read under a write count.
type readWorkspaces struct {
	mu sync.Mutex
	m  map[string]readWorkspace
}

type readWorkspace struct {
	ws  store.Workspace
	gen int64
}

// maxConns bounds the pool: readers run concurrently in WAL mode, and
// connections are kept rather than opened again per request.
const maxConns = 16

// q runs statements prepared once and reused, on the pool or in a
// transaction.
type q struct {
	s  *Store
	tx *sql.Tx
}

func (s *Store) pool() q { return q{s: s} }

// stmt is query prepared, for tx when in one; nil if it does not prepare
// (the caller then runs it unprepared, which reports the error).
func (c q) stmt(ctx context.Context, query string) *sql.Stmt {
	st, ok := c.s.stmts.Load(query)
	if !ok {
		prepared, err := c.s.db.PrepareContext(ctx, query)
		if err != nil {
			return nil
		}
		if st, ok = c.s.stmts.LoadOrStore(query, prepared); ok {
			prepared.Close()
		}
	}
	if c.tx != nil {
		return c.tx.StmtContext(ctx, st.(*sql.Stmt))
	}
	return st.(*sql.Stmt)
}

func (c q) exec(ctx context.Context, query string, args ...any) (sql.Result, error) {
	if st := c.stmt(ctx, query); st != nil {
		return st.ExecContext(ctx, args...)
	}
	if c.tx != nil {
		return c.tx.ExecContext(ctx, query, args...)
	}
	return c.s.db.ExecContext(ctx, query, args...)
}

func (c q) query(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	if st := c.stmt(ctx, query); st != nil {
		return st.QueryContext(ctx, args...)
	}
	if c.tx != nil {
		return c.tx.QueryContext(ctx, query, args...)
	}
	return c.s.db.QueryContext(ctx, query, args...)
}

func (c q) queryRow(ctx context.Context, query string, args ...any) *sql.Row {
	if st := c.stmt(ctx, query); st != nil {
		return st.QueryRowContext(ctx, args...)
	}
	if c.tx != nil {
		return c.tx.QueryRowContext(ctx, query, args...)
	}
	return c.s.db.QueryRowContext(ctx, query, args...)
}

// decoded remembers images decoded from their stored documents: a listing
// re-reads the same documents again and again, and comparing a document
// with the one decoded last is far cheaper than decoding it again. It is
// keyed by the document itself, so it can never serve a stale image.
type decoded struct {
	mu sync.Mutex
	m  map[string]decodedImage
}

type decodedImage struct {
	doc string
	img image.Image
	gen int64 // the write count it was read under; -1: read in a transaction
}

// maxDecoded bounds the cache; when full it starts over.
const maxDecoded = 20000

func (d *decoded) get(id, doc string) (image.Image, bool) {
	d.mu.Lock()
	e, ok := d.m[id]
	d.mu.Unlock()
	if !ok || e.doc != doc {
		return image.Image{}, false
	}
	return cloneImage(e.img), true
}

// fresh returns the image id as read under write count gen, if it was.
func (d *decoded) fresh(id string, gen int64) (image.Image, bool) {
	d.mu.Lock()
	e, ok := d.m[id]
	d.mu.Unlock()
	if !ok || e.gen != gen {
		return image.Image{}, false
	}
	return cloneImage(e.img), true
}

func (d *decoded) put(id, doc string, img image.Image, gen int64) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.m == nil || len(d.m) >= maxDecoded {
		d.m = map[string]decodedImage{}
	}
	d.m[id] = decodedImage{doc: doc, img: cloneImage(img), gen: gen}
}

func cloneImage(img image.Image) image.Image { return store.CloneImage(img) }

// Open opens (creating if needed) the database file at path and migrates it.
func Open(path string) (*Store, error) {
	dsn := "file:" + path + "?_pragma=busy_timeout(10000)&_pragma=journal_mode(WAL)" +
		"&_pragma=synchronous(NORMAL)&_pragma=foreign_keys(1)&_txlock=immediate"
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, fmt.Errorf("opening %s: %w", path, err)
	}
	db.SetMaxOpenConns(maxConns)
	db.SetMaxIdleConns(maxConns)
	s := &Store{db: db, writer: make(chan struct{}, 1), now: func() time.Time { return time.Now().UTC() }}
	if err := s.migrate(context.Background()); err != nil {
		db.Close()
		return nil, fmt.Errorf("migrating %s: %w", path, err)
	}
	return s, nil
}

func (s *Store) migrate(ctx context.Context) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	err = func() error {
		var v int
		if err := tx.QueryRowContext(ctx, "PRAGMA user_version").Scan(&v); err != nil {
			return err
		}
		if v > len(migrations) {
			return fmt.Errorf("database schema version %d is newer than this binary's %d", v, len(migrations))
		}
		for i := v; i < len(migrations); i++ {
			if _, err := tx.ExecContext(ctx, migrations[i]); err != nil {
				return fmt.Errorf("migration %d: %w", i+1, err)
			}
		}
		_, err := tx.ExecContext(ctx, "PRAGMA user_version = "+strconv.Itoa(len(migrations)))
		return err
	}()
	if err != nil {
		return err
	}
	return tx.Commit()
}

// Close closes the database.
func (s *Store) Close() error {
	s.stmts.Range(func(_, st any) bool { st.(*sql.Stmt).Close(); return true })
	return s.db.Close()
}

// write runs f as the only writer of this store (see Store.writer).
func (s *Store) write(ctx context.Context, f func() error) error {
	select {
	case s.writer <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { <-s.writer }()
	return f()
}

// tx runs f in a write transaction (BEGIN IMMEDIATE: _txlock in the DSN).
// Callers encode what they can before it, to keep the lock short.
func (s *Store) tx(ctx context.Context, f func(q) error) error {
	return s.write(ctx, func() error {
		tx, err := s.db.BeginTx(ctx, nil)
		if err != nil {
			return err
		}
		if err := f(q{s: s, tx: tx}); err != nil {
			tx.Rollback()
			return err
		}
		err = tx.Commit()
		s.gen.Add(1) // after the commit, so that no read under the old count sees it late
		return err
	})
}

func isUnique(err error) bool {
	var e *sqlite3.Error
	return errors.As(err, &e) && (e.Code() == sqlite3lib.SQLITE_CONSTRAINT_UNIQUE || e.Code() == sqlite3lib.SQLITE_CONSTRAINT_PRIMARYKEY)
}

// ApplyWorkspace implements store.Store.
func (s *Store) ApplyWorkspace(ctx context.Context, eventKey string, order store.Order, ws store.Workspace, deleted bool) error {
	stale := false
	err := s.tx(ctx, func(tx q) error {
		if _, err := tx.exec(ctx, "INSERT INTO processed_events (key) VALUES (?)", eventKey); err != nil {
			if isUnique(err) {
				return store.ErrDuplicate
			}
			return err
		}
		prev, err := workspaceOrder(ctx, tx, ws.ID)
		if err != nil {
			return err
		}
		if !order.After(prev) {
			stale = true // the event key stays recorded
			return nil
		}
		owner, members := ws.Owner, []byte("null")
		if deleted {
			for _, q := range []string{
				"DELETE FROM images WHERE workspace = ?",
				"DELETE FROM credentials WHERE workspace = ?",
			} {
				if _, err := tx.exec(ctx, q, ws.ID); err != nil {
					return err
				}
			}
			owner = ""
		} else {
			members, _ = json.Marshal(ws.Members)
		}
		_, err = tx.exec(ctx, `INSERT INTO workspaces (id, owner, members, deleted, seq, time) VALUES (?, ?, ?, ?, ?, ?)
			ON CONFLICT (id) DO UPDATE SET owner = excluded.owner, members = excluded.members,
				deleted = excluded.deleted, seq = excluded.seq, time = excluded.time`,
			ws.ID, owner, string(members), deleted, order.Sequence, store.EncodeOrderTime(order))
		return err
	})
	if err == nil && stale {
		return store.ErrStale
	}
	return err
}

func workspaceOrder(ctx context.Context, c q, id string) (store.Order, error) {
	var seq, t string
	err := c.queryRow(ctx, "SELECT seq, time FROM workspaces WHERE id = ?", id).Scan(&seq, &t)
	if errors.Is(err, sql.ErrNoRows) {
		return store.Order{}, nil
	}
	if err != nil {
		return store.Order{}, err
	}
	return store.DecodeOrder(seq, t)
}

// WorkspaceOrder implements store.Store.
func (s *Store) WorkspaceOrder(ctx context.Context, id string) (store.Order, error) {
	return workspaceOrder(ctx, s.pool(), id)
}

// GetWorkspace implements store.Store.
func (s *Store) GetWorkspace(ctx context.Context, id string) (store.Workspace, error) {
	gen := s.gen.Load()
	s.workspaces.mu.Lock()
	e, ok := s.workspaces.m[id]
	s.workspaces.mu.Unlock()
	if ok && e.gen == gen {
		e.ws.Members = slices.Clone(e.ws.Members)
		return e.ws, nil
	}
	ws, err := s.readWorkspace(ctx, id)
	if err == nil {
		s.workspaces.mu.Lock()
		if s.workspaces.m == nil || len(s.workspaces.m) >= maxDecoded {
			s.workspaces.m = map[string]readWorkspace{}
		}
		s.workspaces.m[id] = readWorkspace{ws: ws, gen: gen}
		s.workspaces.mu.Unlock()
		ws.Members = slices.Clone(ws.Members)
	}
	return ws, err
}

func (s *Store) readWorkspace(ctx context.Context, id string) (store.Workspace, error) {
	ws := store.Workspace{ID: id}
	var members string
	err := s.pool().queryRow(ctx, "SELECT owner, members, catalogue FROM workspaces WHERE id = ? AND NOT deleted", id).Scan(&ws.Owner, &members, &ws.Catalogue)
	if errors.Is(err, sql.ErrNoRows) {
		return ws, store.ErrNotFound
	}
	if err != nil {
		return ws, err
	}
	return ws, json.Unmarshal([]byte(members), &ws.Members)
}

func encodeImage(img image.Image) (string, error) { return store.EncodeImage(img) }

func decodeImage(id, ws, name string, version int64, doc string) (image.Image, error) {
	img, err := store.DecodeImage(doc)
	img.ID, img.Workspace, img.Name, img.Version = id, ws, name, version
	return img, err
}

func usable(img image.Image) int {
	if img.Reference != "" {
		return 1
	}
	return 0
}

func automatic(img image.Image) int {
	if img.Automatic() {
		return 1
	}
	return 0
}

// CreateImage implements store.Store.
func (s *Store) CreateImage(ctx context.Context, img image.Image) error {
	doc, err := encodeImage(img)
	if err != nil {
		return err
	}
	return s.tx(ctx, func(tx q) error {
		_, err := tx.exec(ctx, "INSERT INTO images (id, workspace, name, version, usable, automatic, doc) VALUES (?, ?, ?, ?, ?, ?, ?)",
			img.ID, img.Workspace, img.Name, img.Version, usable(img), automatic(img), doc)
		if isUnique(err) {
			return store.ErrNameTaken
		}
		if err != nil {
			return err
		}
		return appendOutbox(ctx, tx, img)
	})
}

const imageColumns = "id, workspace, name, version, doc"

// scanImage reads an image's row, read under write count gen (-1 in a
// transaction, whose reads are never served again).
func (s *Store) scanImage(row interface{ Scan(...any) error }, gen int64) (image.Image, error) {
	var id, ws, name, doc string
	var version int64
	if err := row.Scan(&id, &ws, &name, &version, &doc); err != nil {
		return image.Image{}, err
	}
	img, ok := s.images.get(id, doc)
	img.Workspace, img.Name, img.Version = ws, name, version
	if !ok {
		var err error
		if img, err = decodeImage(id, ws, name, version, doc); err != nil {
			return img, err
		}
	}
	s.images.put(id, doc, img, gen)
	return img, nil
}

func (s *Store) getImage(ctx context.Context, c q, id string) (image.Image, error) {
	gen := int64(-1)
	if c.tx == nil {
		gen = s.gen.Load()
		if img, ok := s.images.fresh(id, gen); ok {
			return img, nil
		}
	}
	img, err := s.scanImage(c.queryRow(ctx, "SELECT "+imageColumns+" FROM images WHERE id = ?", id), gen)
	if errors.Is(err, sql.ErrNoRows) {
		return img, store.ErrNotFound
	}
	return img, err
}

// GetImage implements store.Store.
func (s *Store) GetImage(ctx context.Context, id string) (image.Image, error) {
	return s.getImage(ctx, s.pool(), id)
}

// GetImageByName implements store.Store.
func (s *Store) GetImageByName(ctx context.Context, name string) (image.Image, error) {
	img, err := s.scanImage(s.pool().queryRow(ctx, "SELECT "+imageColumns+" FROM images WHERE name = ?", name), -1)
	if errors.Is(err, sql.ErrNoRows) {
		return img, store.ErrNotFound
	}
	return img, err
}

// ListImages implements store.Store.
func (s *Store) ListImages(ctx context.Context, workspace string, f store.ImageFilter, p store.Page) ([]image.Image, string, error) {
	after, err := store.DecodeCursor(p.Cursor)
	if err != nil {
		return nil, "", err
	}
	q := "SELECT " + imageColumns + " FROM images WHERE workspace = ? AND name > ?"
	if f.Usable {
		q += " AND usable = 1"
	}
	return s.imagePage(ctx, p, q+" ORDER BY name LIMIT ?", workspace, after, p.Limit+1)
}

// imagePage runs query, whose last argument asks for one image more than a
// page of p, and returns the page and the next page's cursor.
func (s *Store) imagePage(ctx context.Context, p store.Page, query string, args ...any) ([]image.Image, string, error) {
	rows, err := s.pool().query(ctx, query, args...)
	if err != nil {
		return nil, "", err
	}
	defer rows.Close()
	var imgs []image.Image
	for rows.Next() {
		img, err := s.scanImage(rows, -1)
		if err != nil {
			return nil, "", err
		}
		imgs = append(imgs, img)
	}
	if err := rows.Err(); err != nil {
		return nil, "", err
	}
	next := ""
	if len(imgs) > p.Limit {
		imgs = imgs[:p.Limit]
		next = store.EncodeCursor(imgs[len(imgs)-1].Name)
	}
	return imgs, next, nil
}

// UpdateImage implements store.Store. The fields builds own (Built,
// BuiltRev, BuiltDefinition, Reference, LatestBuild) are kept as stored: a build may have
// ended since the caller read the image, without changing its version.
func (s *Store) UpdateImage(ctx context.Context, img image.Image, wantVersion int64) error {
	return s.tx(ctx, func(tx q) error {
		cur, err := s.getImage(ctx, tx, img.ID)
		if err != nil {
			return err
		}
		if cur.Version != wantVersion {
			return store.ErrConflict
		}
		store.KeepBuildResults(&img, cur)
		doc, err := encodeImage(img)
		if err != nil {
			return err
		}
		_, err = tx.exec(ctx, "UPDATE images SET name = ?, version = ?, usable = ?, automatic = ?, doc = ? WHERE id = ?",
			img.Name, img.Version, usable(img), automatic(img), doc, img.ID)
		if isUnique(err) {
			return store.ErrNameTaken
		}
		if err != nil {
			return err
		}
		return appendOutbox(ctx, tx, img)
	})
}

// DeleteImage implements store.Store.
func (s *Store) DeleteImage(ctx context.Context, id string) error {
	return s.tx(ctx, func(tx q) error {
		img, err := s.getImage(ctx, tx, id)
		if err != nil {
			return err
		}
		if _, err := tx.exec(ctx, "DELETE FROM images WHERE id = ?", id); err != nil {
			return err
		}
		return appendOutbox(ctx, tx, img)
	})
}

func putImageDoc(ctx context.Context, tx q, img image.Image) error {
	doc, err := encodeImage(img)
	if err != nil {
		return err
	}
	_, err = tx.exec(ctx, "UPDATE images SET usable = ?, automatic = ?, doc = ? WHERE id = ?", usable(img), automatic(img), doc, img.ID)
	return err
}

// CreateBuild implements store.Store.
func (s *Store) CreateBuild(ctx context.Context, b build.Build) (build.Build, error) {
	err := s.tx(ctx, func(tx q) error {
		img, err := s.getImage(ctx, tx, b.Image)
		if err != nil {
			return err
		}
		b, err = s.createBuild(ctx, tx, img, b)
		return err
	})
	return b, err
}

// createBuild numbers b after img's latest build, stores it, records it as
// img's latest (writing img's document) and announces it, in tx.
func (s *Store) createBuild(ctx context.Context, tx q, img image.Image, b build.Build) (build.Build, error) {
	b.Number = 1
	if img.LatestBuild != nil {
		b.Number = img.LatestBuild.Number + 1
	}
	store.StampDefinition(&b, img)
	// Under the write lock (BEGIN IMMEDIATE): queue times follow the
	// order the builds commit in.
	b.Stamp(s.now())
	doc, err := store.EncodeBuild(b)
	if err != nil {
		return b, err
	}
	if _, err := tx.exec(ctx, "INSERT INTO builds (image, number, status, doc) VALUES (?, ?, ?, ?)",
		b.Image, b.Number, b.Status, string(doc)); err != nil {
		if isUnique(err) {
			return b, store.ErrBuildActive
		}
		return b, err
	}
	img.LatestBuild = &b
	if err := putImageDoc(ctx, tx, img); err != nil {
		return b, err
	}
	return b, appendOutbox(ctx, tx, b)
}

// RequestBuild implements store.Store.
func (s *Store) RequestBuild(ctx context.Context, key string, b build.Build, change func(*image.RebuildState)) (build.Build, bool, error) {
	pending := false
	err := s.tx(ctx, func(tx q) error {
		if _, err := tx.exec(ctx, "INSERT INTO processed_events (key) VALUES (?)", key); err != nil {
			if isUnique(err) {
				return store.ErrDuplicate
			}
			return err
		}
		img, err := s.getImage(ctx, tx, b.Image)
		if err != nil {
			return err
		}
		if change != nil {
			change(&img.RebuildState)
		}
		b.DefinitionRev = img.DefinitionRev // what it will build
		if img.LatestBuild != nil && img.LatestBuild.Status.Active() {
			pending = true
			store.PendBuild(&img, b)
			return putImageDoc(ctx, tx, img)
		}
		b, err = s.createBuild(ctx, tx, img, b)
		return err
	})
	return b, pending, err
}

// StartPending implements store.Store.
func (s *Store) StartPending(ctx context.Context, imageID string) (build.Build, error) {
	var b build.Build
	err := s.tx(ctx, func(tx q) error {
		img, err := s.getImage(ctx, tx, imageID)
		if err != nil {
			return err
		}
		p := img.RebuildState.Pending
		if p == nil {
			return store.ErrNotFound
		}
		if img.LatestBuild != nil && img.LatestBuild.Status.Active() {
			return store.ErrBuildActive
		}
		img.RebuildState.Pending = nil
		next := *p
		next.DefinitionRev = img.DefinitionRev // the definition of now, not of the request
		b, err = s.createBuild(ctx, tx, img, next)
		return err
	})
	return b, err
}

// UpdateRebuildState implements store.Store.
func (s *Store) UpdateRebuildState(ctx context.Context, imageID string, change func(*image.RebuildState) error) error {
	return s.tx(ctx, func(tx q) error {
		img, err := s.getImage(ctx, tx, imageID)
		if err != nil {
			return err
		}
		if err := change(&img.RebuildState); err != nil {
			return err
		}
		return putImageDoc(ctx, tx, img)
	})
}

// ListAutomatic implements store.Store.
func (s *Store) ListAutomatic(ctx context.Context, p store.Page) ([]image.Image, string, error) {
	after, err := store.DecodeCursor(p.Cursor)
	if err != nil {
		return nil, "", err
	}
	return s.imagePage(ctx, p, "SELECT "+imageColumns+" FROM images WHERE automatic = 1 AND name > ? ORDER BY name LIMIT ?", after, p.Limit+1)
}

func decodeBuild(doc string) (build.Build, error) { return store.DecodeBuild(doc) }

func getBuild(ctx context.Context, c q, imageID string, number int) (build.Build, error) {
	var doc string
	err := c.queryRow(ctx, "SELECT doc FROM builds WHERE image = ? AND number = ?", imageID, number).Scan(&doc)
	if errors.Is(err, sql.ErrNoRows) {
		return build.Build{}, store.ErrNotFound
	}
	if err != nil {
		return build.Build{}, err
	}
	return decodeBuild(doc)
}

// GetBuild implements store.Store.
func (s *Store) GetBuild(ctx context.Context, imageID string, number int) (build.Build, error) {
	return getBuild(ctx, s.pool(), imageID, number)
}

func (s *Store) queryBuilds(ctx context.Context, q string, args ...any) ([]build.Build, error) {
	rows, err := s.pool().query(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var bs []build.Build
	for rows.Next() {
		var doc string
		if err := rows.Scan(&doc); err != nil {
			return nil, err
		}
		b, err := decodeBuild(doc)
		if err != nil {
			return nil, err
		}
		bs = append(bs, b)
	}
	return bs, rows.Err()
}

// ListBuilds implements store.Store.
func (s *Store) ListBuilds(ctx context.Context, imageID string, p store.Page) ([]build.Build, string, error) {
	before := int64(1 << 62)
	if p.Cursor != "" {
		c, err := store.DecodeCursor(p.Cursor)
		if err != nil {
			return nil, "", err
		}
		if before, err = strconv.ParseInt(c, 10, 64); err != nil {
			return nil, "", store.ErrBadCursor
		}
	}
	bs, err := s.queryBuilds(ctx, "SELECT doc FROM builds WHERE image = ? AND number < ? ORDER BY number DESC LIMIT ?",
		imageID, before, p.Limit+1)
	if err != nil {
		return nil, "", err
	}
	next := ""
	if len(bs) > p.Limit {
		bs = bs[:p.Limit]
		next = store.EncodeCursor(strconv.Itoa(bs[len(bs)-1].Number))
	}
	return bs, next, nil
}

// ListActiveBuilds implements store.Store.
func (s *Store) ListActiveBuilds(ctx context.Context) ([]build.Build, error) {
	bs, err := s.queryBuilds(ctx, "SELECT doc FROM builds WHERE status IN ('queued', 'running')")
	if err != nil {
		return nil, err
	}
	store.SortOldestFirst(bs)
	return bs, nil
}

// UpdateBuild implements store.Store.
func (s *Store) UpdateBuild(ctx context.Context, imageID string, number int, change func(*build.Build) error) (build.Build, error) {
	var b build.Build
	err := s.tx(ctx, func(tx q) error {
		var err error
		if b, err = getBuild(ctx, tx, imageID, number); err != nil {
			return err
		}
		was := b.Status
		if err := change(&b); err != nil {
			return err
		}
		doc, err := store.EncodeBuild(b)
		if err != nil {
			return err
		}
		if _, err := tx.exec(ctx, "UPDATE builds SET status = ?, doc = ? WHERE image = ? AND number = ?",
			b.Status, string(doc), imageID, number); err != nil {
			return err
		}
		img, err := s.getImage(ctx, tx, imageID)
		if err != nil {
			return err
		}
		if img.LatestBuild != nil && img.LatestBuild.Number == b.Number {
			img.LatestBuild = &b
		}
		if b.Status == build.Succeeded && was != build.Succeeded {
			store.RecordSuccess(&img, b)
		}
		if err := putImageDoc(ctx, tx, img); err != nil {
			return err
		}
		return appendOutbox(ctx, tx, b)
	})
	return b, err
}

// appendOutbox writes the events ctx's Announcement makes of what a change
// stored (a build.Build or an image.Image).
func appendOutbox(ctx context.Context, tx q, changed any) error {
	evs, err := store.Announced(ctx, changed, time.Now())
	if err != nil {
		return err
	}
	for _, e := range evs {
		if _, err := tx.exec(ctx, "INSERT INTO outbox (id, type, subject, time, data) VALUES (?, ?, ?, ?, ?)",
			e.ID, e.Type, e.Subject, e.Time.Format(time.RFC3339Nano), string(e.Data)); err != nil {
			return err
		}
	}
	return nil
}

// PendingEvents implements store.Outbox.
func (s *Store) PendingEvents(ctx context.Context, limit int) ([]store.OutboxEvent, error) {
	rows, err := s.pool().query(ctx, "SELECT seq, id, type, subject, time, data FROM outbox ORDER BY seq LIMIT ?", limit)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []store.OutboxEvent
	for rows.Next() {
		var e store.OutboxEvent
		var at, data string
		if err := rows.Scan(&e.Sequence, &e.ID, &e.Type, &e.Subject, &at, &data); err != nil {
			return nil, err
		}
		if e.Time, err = time.Parse(time.RFC3339Nano, at); err != nil {
			return nil, err
		}
		e.Data = []byte(data)
		out = append(out, e)
	}
	return out, rows.Err()
}

// DeliveredEvents implements store.Outbox.
func (s *Store) DeliveredEvents(ctx context.Context, ids ...string) error {
	return s.tx(ctx, func(tx q) error {
		for _, id := range ids {
			if _, err := tx.exec(ctx, "DELETE FROM outbox WHERE id = ?", id); err != nil {
				return err
			}
		}
		return nil
	})
}

// AppendLog implements store.Store.
func (s *Store) AppendLog(ctx context.Context, imageID string, number int, p []byte) error {
	if len(p) == 0 {
		return nil
	}
	err := s.write(ctx, func() error {
		_, err := s.pool().exec(ctx, `INSERT INTO build_logs (image, number, start, data)
		SELECT ?, ?, COALESCE(MAX(start + length(data)), 0), ? FROM build_logs WHERE image = ? AND number = ?`,
			imageID, number, p, imageID, number)
		return err
	})
	if err != nil && strings.Contains(err.Error(), "FOREIGN KEY") {
		return store.ErrNotFound
	}
	return err
}

// ReadLog implements store.Store.
func (s *Store) ReadLog(ctx context.Context, imageID string, number int, offset int64) ([]byte, error) {
	if _, err := s.GetBuild(ctx, imageID, number); err != nil {
		return nil, err
	}
	rows, err := s.pool().query(ctx, `SELECT start, data FROM build_logs
		WHERE image = ? AND number = ? AND start + length(data) > ? ORDER BY start`, imageID, number, offset)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []byte
	for rows.Next() {
		var start int64
		var data []byte
		if err := rows.Scan(&start, &data); err != nil {
			return nil, err
		}
		if start < offset {
			data = data[offset-start:]
		}
		out = append(out, data...)
	}
	return out, rows.Err()
}

// ReadLogPart implements store.Store.
func (s *Store) ReadLogPart(ctx context.Context, imageID string, number int, offset, max int64) ([]byte, int64, error) {
	var out []byte
	var size int64
	// No transaction (every one takes the write lock here): the size is
	// read first, and appends only grow a log.
	err := func(tx q) error {
		if _, err := getBuild(ctx, tx, imageID, number); err != nil {
			return err
		}
		if err := tx.queryRow(ctx, `SELECT COALESCE(MAX(start + length(data)), 0) FROM build_logs
			WHERE image = ? AND number = ?`, imageID, number).Scan(&size); err != nil {
			return err
		}
		// Each row gives at most max bytes (substr of a blob counts bytes),
		// and the rows stop once max bytes are read.
		rows, err := tx.query(ctx, `SELECT substr(data, MAX(? - start, 0) + 1, ?) FROM build_logs
			WHERE image = ? AND number = ? AND start + length(data) > ? AND start < ? ORDER BY start`,
			offset, max, imageID, number, offset, offset+max)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() && int64(len(out)) < max {
			var data []byte
			if err := rows.Scan(&data); err != nil {
				return err
			}
			out = append(out, data[:min(int64(len(data)), max-int64(len(out)))]...)
		}
		return rows.Err()
	}(s.pool())
	return out, size, err
}

// PruneLogs implements store.Store.
func (s *Store) PruneLogs(ctx context.Context, imageID string, keep int) (int, error) {
	if keep < 1 {
		return 0, fmt.Errorf("keeping %d logs: keep at least 1", keep)
	}
	pruned := 0
	err := s.tx(ctx, func(tx q) error {
		pruned = 0
		var newest int
		if err := tx.queryRow(ctx, "SELECT COALESCE(MAX(number), 0) FROM builds WHERE image = ?", imageID).Scan(&newest); err != nil {
			return err
		}
		rows, err := tx.query(ctx, `SELECT DISTINCT number FROM build_logs WHERE image = ? AND number <= ?`, imageID, newest-keep)
		if err != nil {
			return err
		}
		var numbers []int
		for rows.Next() {
			var n int
			if err := rows.Scan(&n); err != nil {
				rows.Close()
				return err
			}
			numbers = append(numbers, n)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		for _, n := range numbers {
			b, err := getBuild(ctx, tx, imageID, n)
			if err != nil {
				return err
			}
			if b.Status.Active() {
				continue
			}
			b.LogPruned = true
			doc, err := store.EncodeBuild(b)
			if err != nil {
				return err
			}
			if _, err := tx.exec(ctx, "UPDATE builds SET doc = ? WHERE image = ? AND number = ?", doc, imageID, n); err != nil {
				return err
			}
			if _, err := tx.exec(ctx, "DELETE FROM build_logs WHERE image = ? AND number = ?", imageID, n); err != nil {
				return err
			}
			pruned++
		}
		return nil
	})
	return pruned, err
}

// PutCredential implements store.Store.
func (s *Store) PutCredential(ctx context.Context, c store.Credential) error {
	doc, err := json.Marshal(credentialDoc{Kind: c.Kind, Registry: c.Registry, Host: c.Host, Username: c.Username, Secret: c.Secret})
	if err != nil {
		return err
	}
	return s.write(ctx, func() error {
		_, err := s.pool().exec(ctx, `INSERT INTO credentials (workspace, name, doc) VALUES (?, ?, ?)
		ON CONFLICT (workspace, name) DO UPDATE SET doc = excluded.doc`, c.Workspace, c.Name, string(doc))
		return err
	})
}

type credentialDoc struct {
	Kind, Registry, Username, Secret string
	Host                             string `json:",omitempty"`
}

func (s *Store) queryCredentials(ctx context.Context, q string, args ...any) ([]store.Credential, error) {
	rows, err := s.pool().query(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var cs []store.Credential
	for rows.Next() {
		var c store.Credential
		var doc string
		if err := rows.Scan(&c.Workspace, &c.Name, &doc); err != nil {
			return nil, err
		}
		var d credentialDoc
		if err := json.Unmarshal([]byte(doc), &d); err != nil {
			return nil, err
		}
		c.Kind, c.Registry, c.Host, c.Username, c.Secret = d.Kind, d.Registry, d.Host, d.Username, d.Secret
		cs = append(cs, c)
	}
	return cs, rows.Err()
}

// GetCredential implements store.Store.
func (s *Store) GetCredential(ctx context.Context, workspace, name string) (store.Credential, error) {
	cs, err := s.queryCredentials(ctx, "SELECT workspace, name, doc FROM credentials WHERE workspace = ? AND name = ?", workspace, name)
	if err != nil {
		return store.Credential{}, err
	}
	if len(cs) == 0 {
		return store.Credential{}, store.ErrNotFound
	}
	return cs[0], nil
}

// ListCredentials implements store.Store.
func (s *Store) ListCredentials(ctx context.Context, workspace string) ([]store.Credential, error) {
	return s.queryCredentials(ctx, "SELECT workspace, name, doc FROM credentials WHERE workspace = ? ORDER BY name", workspace)
}

// DeleteCredential implements store.Store.
func (s *Store) DeleteCredential(ctx context.Context, workspace, name string) error {
	var res sql.Result
	err := s.write(ctx, func() (err error) {
		res, err = s.pool().exec(ctx, "DELETE FROM credentials WHERE workspace = ? AND name = ?", workspace, name)
		return err
	})
	if err != nil {
		return err
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return store.ErrNotFound
	}
	return nil
}
