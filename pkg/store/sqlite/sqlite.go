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
`}

// Store is a SQLite-backed store.Store.
type Store struct {
	db     *sql.DB
	images decoded
	now    func() time.Time // stamps queued builds
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

func (d *decoded) put(id, doc string, img image.Image) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.m == nil || len(d.m) >= maxDecoded {
		d.m = map[string]decodedImage{}
	}
	d.m[id] = decodedImage{doc: doc, img: cloneImage(img)}
}

// cloneImage copies what an image points to, so that no two callers share
// memory through the cache.
func cloneImage(img image.Image) image.Image {
	if img.Context.Git != nil {
		g := *img.Context.Git
		img.Context.Git = &g
	}
	img.Destinations = slices.Clone(img.Destinations)
	if img.Built != nil {
		b := *img.Built
		img.Built = &b
	}
	if img.LatestBuild != nil {
		b := *img.LatestBuild
		b.Pushes = slices.Clone(b.Pushes)
		img.LatestBuild = &b
	}
	return img
}

// Open opens (creating if needed) the database file at path and migrates it.
func Open(path string) (*Store, error) {
	dsn := "file:" + path + "?_pragma=busy_timeout(10000)&_pragma=journal_mode(WAL)" +
		"&_pragma=synchronous(NORMAL)&_pragma=foreign_keys(1)&_txlock=immediate"
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, fmt.Errorf("opening %s: %w", path, err)
	}
	s := &Store{db: db, now: func() time.Time { return time.Now().UTC() }}
	if err := s.migrate(context.Background()); err != nil {
		db.Close()
		return nil, fmt.Errorf("migrating %s: %w", path, err)
	}
	return s, nil
}

func (s *Store) migrate(ctx context.Context) error {
	return s.tx(ctx, func(tx *sql.Tx) error {
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
	})
}

// Close closes the database.
func (s *Store) Close() error { return s.db.Close() }

func (s *Store) tx(ctx context.Context, f func(*sql.Tx) error) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	if err := f(tx); err != nil {
		tx.Rollback()
		return err
	}
	return tx.Commit()
}

func isUnique(err error) bool {
	var e *sqlite3.Error
	return errors.As(err, &e) && (e.Code() == sqlite3lib.SQLITE_CONSTRAINT_UNIQUE || e.Code() == sqlite3lib.SQLITE_CONSTRAINT_PRIMARYKEY)
}

// ApplyWorkspace implements store.Store.
func (s *Store) ApplyWorkspace(ctx context.Context, eventKey string, ws store.Workspace, deleted bool) error {
	return s.tx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, "INSERT INTO processed_events (key) VALUES (?)", eventKey); err != nil {
			if isUnique(err) {
				return store.ErrDuplicate
			}
			return err
		}
		if deleted {
			for _, q := range []string{
				"DELETE FROM images WHERE workspace = ?",
				"DELETE FROM credentials WHERE workspace = ?",
				"DELETE FROM workspaces WHERE id = ?",
			} {
				if _, err := tx.ExecContext(ctx, q, ws.ID); err != nil {
					return err
				}
			}
			return nil
		}
		members, _ := json.Marshal(ws.Members)
		_, err := tx.ExecContext(ctx, `INSERT INTO workspaces (id, owner, members) VALUES (?, ?, ?)
			ON CONFLICT (id) DO UPDATE SET owner = excluded.owner, members = excluded.members`,
			ws.ID, ws.Owner, string(members))
		return err
	})
}

// GetWorkspace implements store.Store.
func (s *Store) GetWorkspace(ctx context.Context, id string) (store.Workspace, error) {
	ws := store.Workspace{ID: id}
	var members string
	err := s.db.QueryRowContext(ctx, "SELECT owner, members FROM workspaces WHERE id = ?", id).Scan(&ws.Owner, &members)
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

// CreateImage implements store.Store.
func (s *Store) CreateImage(ctx context.Context, img image.Image) error {
	doc, err := encodeImage(img)
	if err != nil {
		return err
	}
	return s.tx(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, "INSERT INTO images (id, workspace, name, version, usable, doc) VALUES (?, ?, ?, ?, ?, ?)",
			img.ID, img.Workspace, img.Name, img.Version, usable(img), doc)
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

func (s *Store) scanImage(row interface{ Scan(...any) error }) (image.Image, error) {
	var id, ws, name, doc string
	var version int64
	if err := row.Scan(&id, &ws, &name, &version, &doc); err != nil {
		return image.Image{}, err
	}
	if img, ok := s.images.get(id, doc); ok {
		img.Workspace, img.Name, img.Version = ws, name, version
		return img, nil
	}
	img, err := decodeImage(id, ws, name, version, doc)
	if err == nil {
		s.images.put(id, doc, img)
	}
	return img, err
}

func (s *Store) getImage(ctx context.Context, q interface {
	QueryRowContext(context.Context, string, ...any) *sql.Row
}, id string) (image.Image, error) {
	img, err := s.scanImage(q.QueryRowContext(ctx, "SELECT "+imageColumns+" FROM images WHERE id = ?", id))
	if errors.Is(err, sql.ErrNoRows) {
		return img, store.ErrNotFound
	}
	return img, err
}

// GetImage implements store.Store.
func (s *Store) GetImage(ctx context.Context, id string) (image.Image, error) {
	return s.getImage(ctx, s.db, id)
}

// GetImageByName implements store.Store.
func (s *Store) GetImageByName(ctx context.Context, name string) (image.Image, error) {
	img, err := s.scanImage(s.db.QueryRowContext(ctx, "SELECT "+imageColumns+" FROM images WHERE name = ?", name))
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
	q += " ORDER BY name LIMIT ?"
	rows, err := s.db.QueryContext(ctx, q, workspace, after, p.Limit+1)
	if err != nil {
		return nil, "", err
	}
	defer rows.Close()
	var imgs []image.Image
	for rows.Next() {
		img, err := s.scanImage(rows)
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
// BuiltRev, Reference, LatestBuild) are kept as stored: a build may have
// ended since the caller read the image, without changing its version.
func (s *Store) UpdateImage(ctx context.Context, img image.Image, wantVersion int64) error {
	return s.tx(ctx, func(tx *sql.Tx) error {
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
		_, err = tx.ExecContext(ctx, "UPDATE images SET name = ?, version = ?, usable = ?, doc = ? WHERE id = ?",
			img.Name, img.Version, usable(img), doc, img.ID)
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
	return s.tx(ctx, func(tx *sql.Tx) error {
		img, err := s.getImage(ctx, tx, id)
		if err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, "DELETE FROM images WHERE id = ?", id); err != nil {
			return err
		}
		return appendOutbox(ctx, tx, img)
	})
}

func putImageDoc(ctx context.Context, tx *sql.Tx, img image.Image) error {
	doc, err := encodeImage(img)
	if err != nil {
		return err
	}
	_, err = tx.ExecContext(ctx, "UPDATE images SET usable = ?, doc = ? WHERE id = ?", usable(img), doc, img.ID)
	return err
}

// CreateBuild implements store.Store.
func (s *Store) CreateBuild(ctx context.Context, b build.Build) (build.Build, error) {
	err := s.tx(ctx, func(tx *sql.Tx) error {
		img, err := s.getImage(ctx, tx, b.Image)
		if err != nil {
			return err
		}
		b.Number = 1
		if img.LatestBuild != nil {
			b.Number = img.LatestBuild.Number + 1
		}
		// Under the write lock (BEGIN IMMEDIATE): queue times follow
		// the order the builds commit in.
		b.Stamp(s.now())
		doc, err := store.EncodeBuild(b)
		if err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, "INSERT INTO builds (image, number, status, doc) VALUES (?, ?, ?, ?)",
			b.Image, b.Number, b.Status, string(doc)); err != nil {
			if isUnique(err) {
				return store.ErrBuildActive
			}
			return err
		}
		img.LatestBuild = &b
		if err := putImageDoc(ctx, tx, img); err != nil {
			return err
		}
		return appendOutbox(ctx, tx, b)
	})
	return b, err
}

func decodeBuild(doc string) (build.Build, error) { return store.DecodeBuild(doc) }

func getBuild(ctx context.Context, q interface {
	QueryRowContext(context.Context, string, ...any) *sql.Row
}, imageID string, number int) (build.Build, error) {
	var doc string
	err := q.QueryRowContext(ctx, "SELECT doc FROM builds WHERE image = ? AND number = ?", imageID, number).Scan(&doc)
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
	return getBuild(ctx, s.db, imageID, number)
}

func (s *Store) queryBuilds(ctx context.Context, q string, args ...any) ([]build.Build, error) {
	rows, err := s.db.QueryContext(ctx, q, args...)
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
	err := s.tx(ctx, func(tx *sql.Tx) error {
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
		if _, err := tx.ExecContext(ctx, "UPDATE builds SET status = ?, doc = ? WHERE image = ? AND number = ?",
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
func appendOutbox(ctx context.Context, tx *sql.Tx, changed any) error {
	evs, err := store.Announced(ctx, changed, time.Now())
	if err != nil {
		return err
	}
	for _, e := range evs {
		if _, err := tx.ExecContext(ctx, "INSERT INTO outbox (id, type, subject, time, data) VALUES (?, ?, ?, ?, ?)",
			e.ID, e.Type, e.Subject, e.Time.Format(time.RFC3339Nano), string(e.Data)); err != nil {
			return err
		}
	}
	return nil
}

// PendingEvents implements store.Outbox.
func (s *Store) PendingEvents(ctx context.Context, limit int) ([]store.OutboxEvent, error) {
	rows, err := s.db.QueryContext(ctx, "SELECT seq, id, type, subject, time, data FROM outbox ORDER BY seq LIMIT ?", limit)
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
	return s.tx(ctx, func(tx *sql.Tx) error {
		for _, id := range ids {
			if _, err := tx.ExecContext(ctx, "DELETE FROM outbox WHERE id = ?", id); err != nil {
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
	_, err := s.db.ExecContext(ctx, `INSERT INTO build_logs (image, number, start, data)
		SELECT ?, ?, COALESCE(MAX(start + length(data)), 0), ? FROM build_logs WHERE image = ? AND number = ?`,
		imageID, number, p, imageID, number)
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
	rows, err := s.db.QueryContext(ctx, `SELECT start, data FROM build_logs
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
	err := func(tx *sql.DB) error {
		if _, err := getBuild(ctx, tx, imageID, number); err != nil {
			return err
		}
		if err := tx.QueryRowContext(ctx, `SELECT COALESCE(MAX(start + length(data)), 0) FROM build_logs
			WHERE image = ? AND number = ?`, imageID, number).Scan(&size); err != nil {
			return err
		}
		// Each row gives at most max bytes (substr of a blob counts bytes),
		// and the rows stop once max bytes are read.
		rows, err := tx.QueryContext(ctx, `SELECT substr(data, MAX(? - start, 0) + 1, ?) FROM build_logs
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
	}(s.db)
	return out, size, err
}

// PruneLogs implements store.Store.
func (s *Store) PruneLogs(ctx context.Context, imageID string, keep int) (int, error) {
	if keep < 1 {
		return 0, fmt.Errorf("keeping %d logs: keep at least 1", keep)
	}
	pruned := 0
	err := s.tx(ctx, func(tx *sql.Tx) error {
		pruned = 0
		var newest int
		if err := tx.QueryRowContext(ctx, "SELECT COALESCE(MAX(number), 0) FROM builds WHERE image = ?", imageID).Scan(&newest); err != nil {
			return err
		}
		rows, err := tx.QueryContext(ctx, `SELECT DISTINCT number FROM build_logs WHERE image = ? AND number <= ?`, imageID, newest-keep)
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
			if _, err := tx.ExecContext(ctx, "UPDATE builds SET doc = ? WHERE image = ? AND number = ?", doc, imageID, n); err != nil {
				return err
			}
			if _, err := tx.ExecContext(ctx, "DELETE FROM build_logs WHERE image = ? AND number = ?", imageID, n); err != nil {
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
	_, err = s.db.ExecContext(ctx, `INSERT INTO credentials (workspace, name, doc) VALUES (?, ?, ?)
		ON CONFLICT (workspace, name) DO UPDATE SET doc = excluded.doc`, c.Workspace, c.Name, string(doc))
	return err
}

type credentialDoc struct {
	Kind, Registry, Username, Secret string
	Host                             string `json:",omitempty"`
}

func (s *Store) queryCredentials(ctx context.Context, q string, args ...any) ([]store.Credential, error) {
	rows, err := s.db.QueryContext(ctx, q, args...)
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
	res, err := s.db.ExecContext(ctx, "DELETE FROM credentials WHERE workspace = ? AND name = ?", workspace, name)
	if err != nil {
		return err
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return store.ErrNotFound
	}
	return nil
}
