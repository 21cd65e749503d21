// Package firestore is the cluster's Store: Slipway's state in Cloud
// Firestore, through cloud.google.com/go/firestore. It keeps the semantics of
// the embedded SQLite store (package sqlite) and passes the same conformance
// suite (package storetest) against Google's Firestore emulator.
//
// # Documents
//
//	workspaces/{ws}                         owner, members, deleted, sequence, time: the order of its last event
//	workspaces/{ws}/credentials/{name}      name, kind, registry, username, secret (sealed by the caller)
//	events/{hex SHA-256 of the event key}   key: a processed event
//	images/{id}                             workspace, name, version, usable, doc
//	names/{escaped name}                    image, workspace: the platform-wide claim on an image name
//	images/{id}/builds/{number, 10 digits}  image, number, status, doc
//	images/{id}/active/build                number: the image's one queued or running build
//	images/{id}/builds/{n}/log/{start, 19 digits}  start, end, data: at most 512 KiB of the build's log
//
// Ids and names become document ids by path escaping ("team/a" is
// "team%2Fa"), which is one to one and never yields a reserved id. An image's
// or a build's record is kept whole as JSON in doc, as the SQLite store keeps
// it, so that both backends round-trip the same Go values exactly (Firestore
// timestamps keep only microseconds); the other fields are the ones queries
// filter and order on.
//
// # Transactions
//
// Every change is a read-write transaction (Client.RunTransaction) that reads
// what it depends on before it writes; Firestore aborts it when a concurrent
// transaction changes what it read, the client retries it, and after ten
// attempts the method fails with store.ErrConflict. The rules that span
// documents are held by documents created with Create, which fails with
// AlreadyExists when the document exists, in the same transaction as the
// change they guard:
//
//   - event idempotency: the events document (store.ErrDuplicate);
//   - platform-wide names: the names document, created with the image,
//     swapped on a rename, deleted with the image (store.ErrNameTaken);
//   - one active build per image: the active marker, created with a queued
//     build and deleted in the transaction that ends it (store.ErrBuildActive).
//
// Where that precondition is all a change depends on (CreateImage, recording
// an event) the transaction reads nothing, so that concurrent claims of one
// name or event do not contend: the first commit wins and the others fail
// with AlreadyExists at once.
//
// Builds are numbered from the image's LatestBuild, which the transactions
// that create and change a build keep current; a build that succeeds records
// its result on the image (store.RecordSuccess) in the same transaction.
// UpdateImage replaces the definition but keeps the fields builds own (Built,
// BuiltRev, Reference, LatestBuild) as stored, so that an edit based on a
// read taken before a build finished does not undo the build's result.
//
// # Deletes
//
// Firestore does not delete a document's subcollections with it. Deleting an
// image is one transaction over its head documents (the image, its name and
// its active marker), after which its builds and their log chunks are purged
// in commits of at most 500 deletes, builds before their logs, so that a
// concurrent AppendLog either lands before the purge lists the logs or finds
// the build gone. If a purge is interrupted, deleting the image again (which
// then returns store.ErrNotFound) finishes it, and ListActiveBuilds leaves out
// builds whose image is gone.
//
// Deleting a workspace deletes its images that way one by one, then its
// credentials, and only then, in one transaction, records the event and
// turns the workspace document into a tombstone that keeps the event's
// order. So a workspace of any size fits, and a delete interrupted half way
// is finished by the event's redelivery, since the event is not recorded
// yet. It is the one change that is not atomic: a deletion found to be
// after the workspace's order when the purge starts empties it even if a
// newer update is applied before the deletion's transaction, which then
// records the deletion as stale.
//
// # Logs
//
// Each AppendLog adds chunk documents of at most 512 KiB (Firestore's limit
// is 1 MiB a document) after the last chunk rather than rewriting it: the
// log writer appends several times a second, and Firestore sustains about
// one write a second to a document. An append of more than 8 MiB is written
// in several transactions, each inside Firestore's 10 MiB request limit.
// ReadLog reads the chunks that end after the offset.
//
// # Listings and indexes
//
// Page cursors are the base64 of the last name (images) or build number
// (builds); anything else is store.ErrBadCursor. ListImages needs composite
// indexes on images (workspace, name) and (workspace, usable, name), and
// ListActiveBuilds, a collection-group query on builds by status, needs a
// collection-group index on builds.status; infra/firestore.indexes.json
// defines them (deploy with `firebase deploy --only firestore:indexes`), and
// exempts the large fields (doc, log data) and secrets from indexing. The
// other queries use Firestore's automatic single-field indexes.
//
// # Emulators
//
// With FIRESTORE_EMULATOR_HOST set, Open connects to that emulator. The
// package's tests run the conformance suite against Google's emulator
// (SLIPWAY_FIRESTORE_OFFICIAL=1), and smoke tests against it and against the
// npm @firestore-emulator/server, which stores documents and answers simple
// queries but does not honour transactions or atomic commits, nor run
// collection-group queries (`make -f mk/firestore.mk test-firestore`).
package firestore

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"time"

	fs "cloud.google.com/go/firestore"
	"google.golang.org/api/option"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/slipway-dev/slipway/pkg/build"
	"github.com/slipway-dev/slipway/pkg/image"
	"github.com/slipway-dev/slipway/pkg/store"
)

var _ store.Store = (*Store)(nil)

const (
	// logChunkSize is the most log data one chunk document holds.
	logChunkSize = 512 << 10
	// maxAppend is the most log data one AppendLog transaction writes.
	maxAppend = 8 << 20
	// batchSize is the most deletes one purge commit holds, Firestore's
	// limit on the writes of a commit.
	batchSize = 500
	// txAttempts is how many times a transaction is tried.
	txAttempts = 10
)

// Store is a Firestore-backed store.Store.
type Store struct {
	c *fs.Client
	// decoded spares listings decoding documents they decoded before.
	decoded store.Decoded
	now     func() time.Time // stamps queued builds
}

// Open connects to the Firestore database of projectID (the emulator at
// FIRESTORE_EMULATOR_HOST when that is set).
func Open(ctx context.Context, projectID string, opts ...option.ClientOption) (*Store, error) {
	c, err := fs.NewClient(ctx, projectID, opts...)
	if err != nil {
		return nil, fmt.Errorf("connecting to Firestore of project %s: %w", projectID, err)
	}
	return &Store{c: c, now: func() time.Time { return time.Now().UTC() }}, nil
}

// Close closes the client.
func (s *Store) Close() error { return s.c.Close() }

// Documents as stored.
type (
	workspaceDoc struct {
		Owner   string   `firestore:"owner"`
		Members []string `firestore:"members"`
		// Deleted marks a tombstone; Sequence and Time are the store.Order
		// of the last event applied (Time as store.EncodeOrderTime).
		Deleted  bool   `firestore:"deleted,omitempty"`
		Sequence string `firestore:"sequence,omitempty"`
		Time     string `firestore:"time,omitempty"`
	}
	eventDoc struct {
		Key string `firestore:"key"`
	}
	imageDoc struct {
		Workspace string `firestore:"workspace"`
		Name      string `firestore:"name"`
		Version   int64  `firestore:"version"`
		Usable    bool   `firestore:"usable"`
		// Automatic: the rebuild policy looks at it (image.Image.Automatic).
		Automatic bool   `firestore:"automatic"`
		Doc       string `firestore:"doc"`
	}
	nameDoc struct {
		Image     string `firestore:"image"`
		Workspace string `firestore:"workspace"`
	}
	buildDoc struct {
		Image  string `firestore:"image"`
		Number int    `firestore:"number"`
		Status string `firestore:"status"`
		Doc    string `firestore:"doc"`
	}
	activeDoc struct {
		Number int `firestore:"number"`
	}
	logChunk struct {
		Start int64  `firestore:"start"`
		End   int64  `firestore:"end"`
		Data  []byte `firestore:"data"`
	}
	credentialDoc struct {
		Name     string `firestore:"name"`
		Kind     string `firestore:"kind"`
		Registry string `firestore:"registry"`
		Host     string `firestore:"host,omitempty"`
		Username string `firestore:"username"`
		Secret   string `firestore:"secret"`
	}
)

func encodeImage(img image.Image) (imageDoc, error) {
	doc, err := store.EncodeImage(img)
	if err != nil {
		return imageDoc{}, err
	}
	return imageDoc{Workspace: img.Workspace, Name: img.Name, Version: img.Version, Usable: img.Reference != "", Automatic: img.Automatic(), Doc: doc}, nil
}

func (s *Store) decodeImage(snap *fs.DocumentSnapshot) (image.Image, error) {
	var d imageDoc
	if err := snap.DataTo(&d); err != nil {
		return image.Image{}, fmt.Errorf("decoding %s: %w", snap.Ref.Path, err)
	}
	img, err := s.decoded.Decode(snap.Ref.Path, d.Doc)
	if err != nil {
		return image.Image{}, fmt.Errorf("decoding %s: %w", snap.Ref.Path, err)
	}
	img.Workspace, img.Name, img.Version = d.Workspace, d.Name, d.Version
	return img, nil
}

func encodeBuild(b build.Build) (buildDoc, error) {
	doc, err := store.EncodeBuild(b)
	if err != nil {
		return buildDoc{}, err
	}
	return buildDoc{Image: b.Image, Number: b.Number, Status: string(b.Status), Doc: doc}, nil
}

func decodeBuild(snap *fs.DocumentSnapshot) (build.Build, error) {
	var d buildDoc
	if err := snap.DataTo(&d); err != nil {
		return build.Build{}, fmt.Errorf("decoding %s: %w", snap.Ref.Path, err)
	}
	b, err := store.DecodeBuild(d.Doc)
	if err != nil {
		return build.Build{}, fmt.Errorf("decoding %s: %w", snap.Ref.Path, err)
	}
	return b, nil
}

// docID maps an id or a name to a document id, one to one. Path escaping
// takes out "/"; a leading "." or "_" is escaped too, so that no id is "."
// or ".." or of the reserved form __x__; and "" becomes "%", which escaping
// never yields.
func docID(s string) string {
	if s == "" {
		return "%"
	}
	e := url.PathEscape(s)
	if e[0] == '.' || e[0] == '_' {
		e = fmt.Sprintf("%%%02X", e[0]) + e[1:]
	}
	return e
}

func (s *Store) workspaceRef(id string) *fs.DocumentRef {
	return s.c.Collection("workspaces").Doc(docID(id))
}

func (s *Store) credentials(workspace string) *fs.CollectionRef {
	return s.workspaceRef(workspace).Collection("credentials")
}

func (s *Store) eventRef(key string) *fs.DocumentRef {
	sum := sha256.Sum256([]byte(key))
	return s.c.Collection("events").Doc(hex.EncodeToString(sum[:]))
}

func (s *Store) images() *fs.CollectionRef { return s.c.Collection("images") }

func (s *Store) imageRef(id string) *fs.DocumentRef { return s.images().Doc(docID(id)) }

func (s *Store) nameRef(name string) *fs.DocumentRef { return s.c.Collection("names").Doc(docID(name)) }

func activeRef(img *fs.DocumentRef) *fs.DocumentRef { return img.Collection("active").Doc("build") }

func builds(img *fs.DocumentRef) *fs.CollectionRef { return img.Collection("builds") }

func buildRef(img *fs.DocumentRef, number int) *fs.DocumentRef {
	return builds(img).Doc(fmt.Sprintf("%010d", number))
}

func logChunks(b *fs.DocumentRef) *fs.CollectionRef { return b.Collection("log") }

// run runs f in a transaction. A commit that fails because a document f
// creates exists returns exists (when not nil); one that keeps losing to
// concurrent transactions returns store.ErrConflict.
func (s *Store) run(ctx context.Context, exists error, f func(*fs.Transaction) error) error {
	err := s.c.RunTransaction(ctx, func(_ context.Context, tx *fs.Transaction) error { return f(tx) }, fs.MaxAttempts(txAttempts))
	switch status.Code(err) {
	case codes.AlreadyExists:
		if exists != nil {
			return exists
		}
	case codes.Aborted:
		return fmt.Errorf("%w: %v", store.ErrConflict, err)
	}
	return err
}

// get reads a document outside a transaction; store.ErrNotFound if absent.
func get(ctx context.Context, ref *fs.DocumentRef) (*fs.DocumentSnapshot, error) {
	snap, err := ref.Get(ctx)
	if status.Code(err) == codes.NotFound {
		return nil, store.ErrNotFound
	}
	return snap, err
}

// ApplyWorkspace implements store.Store.
func (s *Store) ApplyWorkspace(ctx context.Context, eventKey string, order store.Order, ws store.Workspace, deleted bool) error {
	ev, ref := s.eventRef(eventKey), s.workspaceRef(ws.ID)
	if deleted {
		if err := s.emptyWorkspace(ctx, ev, order, ws.ID); err != nil {
			return err
		}
	}
	stale := false
	err := s.run(ctx, store.ErrDuplicate, func(tx *fs.Transaction) error {
		stale = false
		snaps, err := tx.GetAll([]*fs.DocumentRef{ref})
		if err != nil {
			return err
		}
		prev, err := workspaceOrder(snaps[0])
		if err != nil {
			return err
		}
		if err := tx.Create(ev, eventDoc{Key: eventKey}); err != nil {
			return err
		}
		if !order.After(prev) {
			stale = true // the event is recorded, nothing else changes
			return nil
		}
		d := workspaceDoc{Owner: ws.Owner, Members: ws.Members, Sequence: order.Sequence, Time: store.EncodeOrderTime(order)}
		if deleted {
			d = workspaceDoc{Deleted: true, Sequence: d.Sequence, Time: d.Time}
		}
		return tx.Set(ref, d)
	})
	if err == nil && stale {
		return store.ErrStale
	}
	return err
}

// workspaceOrder is the store.Order a workspace document keeps; the zero
// Order when there is none.
func workspaceOrder(snap *fs.DocumentSnapshot) (store.Order, error) {
	if !snap.Exists() {
		return store.Order{}, nil
	}
	var d workspaceDoc
	if err := snap.DataTo(&d); err != nil {
		return store.Order{}, fmt.Errorf("decoding %s: %w", snap.Ref.Path, err)
	}
	return store.DecodeOrder(d.Sequence, d.Time)
}

// WorkspaceOrder implements store.Store.
func (s *Store) WorkspaceOrder(ctx context.Context, id string) (store.Order, error) {
	snap, err := s.workspaceRef(id).Get(ctx)
	if err != nil && status.Code(err) != codes.NotFound {
		return store.Order{}, err
	}
	return workspaceOrder(snap)
}

// emptyWorkspace deletes a workspace's images, with their builds and logs,
// and its credentials, unless the event ev was processed already or its
// order is not after the workspace's (then the event changes nothing).
func (s *Store) emptyWorkspace(ctx context.Context, ev *fs.DocumentRef, order store.Order, id string) error {
	switch _, err := get(ctx, ev); {
	case err == nil:
		return store.ErrDuplicate
	case !errors.Is(err, store.ErrNotFound):
		return err
	}
	prev, err := s.WorkspaceOrder(ctx, id)
	if err != nil {
		return err
	}
	if !order.After(prev) {
		return nil
	}
	imgs, err := s.images().Where("workspace", "==", id).Select().Documents(ctx).GetAll()
	if err != nil {
		return err
	}
	for _, img := range imgs {
		if err := s.deleteImage(ctx, img.Ref); err != nil && !errors.Is(err, store.ErrNotFound) {
			return err
		}
	}
	return s.purge(ctx, s.credentials(id).Query, nil)
}

// GetWorkspace implements store.Store.
func (s *Store) GetWorkspace(ctx context.Context, id string) (store.Workspace, error) {
	ws := store.Workspace{ID: id}
	snap, err := get(ctx, s.workspaceRef(id))
	if err != nil {
		return ws, err
	}
	var d workspaceDoc
	if err := snap.DataTo(&d); err != nil {
		return ws, fmt.Errorf("decoding %s: %w", snap.Ref.Path, err)
	}
	if d.Deleted {
		return ws, store.ErrNotFound
	}
	ws.Owner, ws.Members = d.Owner, d.Members
	return ws, nil
}

// CreateImage implements store.Store.
func (s *Store) CreateImage(ctx context.Context, img image.Image) error {
	d, err := encodeImage(img)
	if err != nil {
		return err
	}
	return s.run(ctx, store.ErrNameTaken, func(tx *fs.Transaction) error {
		if err := tx.Create(s.nameRef(img.Name), nameDoc{Image: img.ID, Workspace: img.Workspace}); err != nil {
			return err
		}
		if err := tx.Create(s.imageRef(img.ID), d); err != nil {
			return err
		}
		return s.appendOutbox(ctx, tx, img)
	})
}

// GetImage implements store.Store.
func (s *Store) GetImage(ctx context.Context, id string) (image.Image, error) {
	snap, err := get(ctx, s.imageRef(id))
	if err != nil {
		return image.Image{}, err
	}
	return s.decodeImage(snap)
}

// GetImageByName implements store.Store: the name's claim document leads
// to the image.
func (s *Store) GetImageByName(ctx context.Context, name string) (image.Image, error) {
	snap, err := get(ctx, s.nameRef(name))
	if err != nil {
		return image.Image{}, err
	}
	var d nameDoc
	if err := snap.DataTo(&d); err != nil {
		return image.Image{}, fmt.Errorf("decoding %s: %w", snap.Ref.Path, err)
	}
	img, err := s.GetImage(ctx, d.Image)
	if err == nil && img.Name != name {
		return image.Image{}, store.ErrNotFound // renamed between the two reads
	}
	return img, err
}

// ListImages implements store.Store.
func (s *Store) ListImages(ctx context.Context, workspace string, f store.ImageFilter, p store.Page) ([]image.Image, string, error) {
	after, err := store.DecodeCursor(p.Cursor)
	if err != nil {
		return nil, "", err
	}
	q := s.images().Where("workspace", "==", workspace)
	if f.Usable {
		q = q.Where("usable", "==", true)
	}
	return s.imagePage(ctx, q, after, p)
}

// imagePage reads the page p of the images of q ordered by name, after the
// name after, and the next page's cursor.
func (s *Store) imagePage(ctx context.Context, q fs.Query, after string, p store.Page) ([]image.Image, string, error) {
	limit := max(p.Limit, 1)
	if after != "" {
		q = q.Where("name", ">", after)
	}
	snaps, err := q.OrderBy("name", fs.Asc).Limit(limit + 1).Documents(ctx).GetAll()
	if err != nil {
		return nil, "", err
	}
	var imgs []image.Image
	for _, snap := range snaps {
		img, err := s.decodeImage(snap)
		if err != nil {
			return nil, "", err
		}
		imgs = append(imgs, img)
	}
	next := ""
	if len(imgs) > limit {
		imgs = imgs[:limit]
		next = store.EncodeCursor(imgs[limit-1].Name)
	}
	return imgs, next, nil
}

// UpdateImage implements store.Store. The fields that builds own (Built,
// BuiltRev, BuiltDefinition, Reference, LatestBuild) and the workspace are kept as stored.
func (s *Store) UpdateImage(ctx context.Context, img image.Image, wantVersion int64) error {
	ref := s.imageRef(img.ID)
	return s.run(ctx, store.ErrNameTaken, func(tx *fs.Transaction) error {
		snaps, err := tx.GetAll([]*fs.DocumentRef{ref})
		if err != nil {
			return err
		}
		if !snaps[0].Exists() {
			return store.ErrNotFound
		}
		cur, err := s.decodeImage(snaps[0])
		if err != nil {
			return err
		}
		if cur.Version != wantVersion {
			return store.ErrConflict
		}
		next := img
		next.Workspace = cur.Workspace
		store.KeepBuildResults(&next, cur)
		d, err := encodeImage(next)
		if err != nil {
			return err
		}
		if next.Name != cur.Name {
			name := s.nameRef(next.Name)
			taken, err := tx.GetAll([]*fs.DocumentRef{name})
			if err != nil {
				return err
			}
			if taken[0].Exists() {
				return store.ErrNameTaken
			}
			if err := tx.Create(name, nameDoc{Image: next.ID, Workspace: next.Workspace}); err != nil {
				return err
			}
			if err := tx.Delete(s.nameRef(cur.Name)); err != nil {
				return err
			}
		}
		if err := tx.Set(ref, d); err != nil {
			return err
		}
		return s.appendOutbox(ctx, tx, next)
	})
}

// DeleteImage implements store.Store.
func (s *Store) DeleteImage(ctx context.Context, id string) error {
	return s.deleteImage(ctx, s.imageRef(id))
}

// deleteImage deletes an image's head documents in one transaction, then
// purges its builds and logs. The purge runs for an absent image too, to
// finish one that was interrupted.
func (s *Store) deleteImage(ctx context.Context, ref *fs.DocumentRef) error {
	err := s.run(ctx, nil, func(tx *fs.Transaction) error {
		snaps, err := tx.GetAll([]*fs.DocumentRef{ref})
		if err != nil {
			return err
		}
		if !snaps[0].Exists() {
			return store.ErrNotFound
		}
		img, err := s.decodeImage(snaps[0])
		if err != nil {
			return err
		}
		for _, r := range []*fs.DocumentRef{ref, s.nameRef(img.Name), activeRef(ref)} {
			if err := tx.Delete(r); err != nil {
				return err
			}
		}
		return s.appendOutbox(ctx, tx, img)
	})
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return err
	}
	if perr := s.purge(ctx, builds(ref).Query, func(bs []*fs.DocumentRef) error {
		for _, b := range bs {
			if err := s.purge(ctx, logChunks(b).Query, nil); err != nil {
				return err
			}
		}
		return nil
	}); perr != nil {
		return fmt.Errorf("purging the builds of %s: %w", ref.Path, perr)
	}
	return err
}

// purge deletes the documents q matches, at most batchSize in a commit, and
// calls then (when not nil) with the documents of each commit once it is done.
func (s *Store) purge(ctx context.Context, q fs.Query, then func([]*fs.DocumentRef) error) error {
	for {
		snaps, err := q.Select().Limit(batchSize).Documents(ctx).GetAll()
		if err != nil || len(snaps) == 0 {
			return err
		}
		refs := make([]*fs.DocumentRef, len(snaps))
		for i, snap := range snaps {
			refs[i] = snap.Ref
		}
		if err := s.run(ctx, nil, func(tx *fs.Transaction) error {
			for _, r := range refs {
				if err := tx.Delete(r); err != nil {
					return err
				}
			}
			return nil
		}); err != nil {
			return err
		}
		if then != nil {
			if err := then(refs); err != nil {
				return err
			}
		}
		if len(snaps) < batchSize {
			return nil
		}
	}
}

// CreateBuild implements store.Store.
func (s *Store) CreateBuild(ctx context.Context, b build.Build) (build.Build, error) {
	ref := s.imageRef(b.Image)
	err := s.run(ctx, store.ErrBuildActive, func(tx *fs.Transaction) error {
		img, active, err := s.readForBuild(tx, ref)
		if err != nil {
			return err
		}
		if active && b.Status.Active() {
			return store.ErrBuildActive
		}
		b, err = s.createBuild(ctx, tx, ref, img, b)
		return err
	})
	return b, err
}

// readForBuild reads an image and whether it has an active build, in tx.
func (s *Store) readForBuild(tx *fs.Transaction, ref *fs.DocumentRef) (image.Image, bool, error) {
	snaps, err := tx.GetAll([]*fs.DocumentRef{ref, activeRef(ref)})
	if err != nil {
		return image.Image{}, false, err
	}
	if !snaps[0].Exists() {
		return image.Image{}, false, store.ErrNotFound
	}
	img, err := s.decodeImage(snaps[0])
	return img, snaps[1].Exists(), err
}

// createBuild numbers b after img's latest build, stores it with its
// active marker, records it as img's latest and announces it, in tx. The
// caller has read the marker absent.
func (s *Store) createBuild(ctx context.Context, tx *fs.Transaction, ref *fs.DocumentRef, img image.Image, b build.Build) (build.Build, error) {
	b.Number = 1
	if img.LatestBuild != nil {
		b.Number = img.LatestBuild.Number + 1
	}
	store.StampDefinition(&b, img)
	// In the transaction (and again on each of its retries), after its
	// reads: queue times follow the order builds are queued in.
	b.Stamp(s.now())
	if b.Status.Active() {
		if err := tx.Create(activeRef(ref), activeDoc{Number: b.Number}); err != nil {
			return b, err
		}
	}
	bd, err := encodeBuild(b)
	if err != nil {
		return b, err
	}
	if err := tx.Create(buildRef(ref, b.Number), bd); err != nil {
		return b, err
	}
	latest := b
	img.LatestBuild = &latest
	d, err := encodeImage(img)
	if err != nil {
		return b, err
	}
	if err := tx.Set(ref, d); err != nil {
		return b, err
	}
	return b, s.appendOutbox(ctx, tx, b)
}

// RequestBuild implements store.Store. The event document, created and not
// read, makes a second request of one key fail with AlreadyExists.
func (s *Store) RequestBuild(ctx context.Context, key string, b build.Build, change func(*image.RebuildState)) (build.Build, bool, error) {
	ref := s.imageRef(b.Image)
	var pending bool
	want := b
	err := s.run(ctx, store.ErrDuplicate, func(tx *fs.Transaction) error {
		pending, b = false, want
		img, active, err := s.readForBuild(tx, ref)
		if err != nil {
			return err
		}
		if err := tx.Create(s.eventRef(key), eventDoc{Key: key}); err != nil {
			return err
		}
		if change != nil {
			change(&img.RebuildState)
		}
		b.DefinitionRev = img.DefinitionRev // what it will build
		if active {
			pending = true
			store.PendBuild(&img, b)
			return s.setImage(tx, ref, img)
		}
		b, err = s.createBuild(ctx, tx, ref, img, b)
		return err
	})
	return b, pending, err
}

func (s *Store) setImage(tx *fs.Transaction, ref *fs.DocumentRef, img image.Image) error {
	d, err := encodeImage(img)
	if err != nil {
		return err
	}
	return tx.Set(ref, d)
}

// StartPending implements store.Store.
func (s *Store) StartPending(ctx context.Context, imageID string) (build.Build, error) {
	ref := s.imageRef(imageID)
	var b build.Build
	err := s.run(ctx, nil, func(tx *fs.Transaction) error {
		img, active, err := s.readForBuild(tx, ref)
		if err != nil {
			return err
		}
		p := img.RebuildState.Pending
		switch {
		case p == nil:
			return store.ErrNotFound
		case active:
			return store.ErrBuildActive
		}
		img.RebuildState.Pending = nil
		next := *p
		next.DefinitionRev = img.DefinitionRev // the definition of now, not of the request
		b, err = s.createBuild(ctx, tx, ref, img, next)
		return err
	})
	return b, err
}

// UpdateRebuildState implements store.Store.
func (s *Store) UpdateRebuildState(ctx context.Context, imageID string, change func(*image.RebuildState) error) error {
	ref := s.imageRef(imageID)
	return s.run(ctx, nil, func(tx *fs.Transaction) error {
		snaps, err := tx.GetAll([]*fs.DocumentRef{ref})
		if err != nil {
			return err
		}
		if !snaps[0].Exists() {
			return store.ErrNotFound
		}
		img, err := s.decodeImage(snaps[0])
		if err != nil {
			return err
		}
		if err := change(&img.RebuildState); err != nil {
			return err
		}
		return s.setImage(tx, ref, img)
	})
}

// ListAutomatic implements store.Store; it needs the composite index
// images (automatic, name).
func (s *Store) ListAutomatic(ctx context.Context, p store.Page) ([]image.Image, string, error) {
	after, err := store.DecodeCursor(p.Cursor)
	if err != nil {
		return nil, "", err
	}
	return s.imagePage(ctx, s.images().Where("automatic", "==", true), after, p)
}

// GetBuild implements store.Store.
func (s *Store) GetBuild(ctx context.Context, imageID string, number int) (build.Build, error) {
	snap, err := get(ctx, buildRef(s.imageRef(imageID), number))
	if err != nil {
		return build.Build{}, err
	}
	return decodeBuild(snap)
}

func decodeBuilds(snaps []*fs.DocumentSnapshot) ([]build.Build, error) {
	var bs []build.Build
	for _, snap := range snaps {
		b, err := decodeBuild(snap)
		if err != nil {
			return nil, err
		}
		bs = append(bs, b)
	}
	return bs, nil
}

// ListBuilds implements store.Store.
func (s *Store) ListBuilds(ctx context.Context, imageID string, p store.Page) ([]build.Build, string, error) {
	limit := max(p.Limit, 1)
	q := builds(s.imageRef(imageID)).Query
	if p.Cursor != "" {
		c, err := store.DecodeCursor(p.Cursor)
		if err != nil {
			return nil, "", err
		}
		before, err := strconv.Atoi(c)
		if err != nil {
			return nil, "", store.ErrBadCursor
		}
		q = q.Where("number", "<", before)
	}
	snaps, err := q.OrderBy("number", fs.Desc).Limit(limit + 1).Documents(ctx).GetAll()
	if err != nil {
		return nil, "", err
	}
	bs, err := decodeBuilds(snaps)
	if err != nil {
		return nil, "", err
	}
	next := ""
	if len(bs) > limit {
		bs = bs[:limit]
		next = store.EncodeCursor(strconv.Itoa(bs[limit-1].Number))
	}
	return bs, next, nil
}

// ListActiveBuilds implements store.Store with a collection-group query,
// leaving out builds whose image is gone (an interrupted purge's leftovers).
func (s *Store) ListActiveBuilds(ctx context.Context) ([]build.Build, error) {
	snaps, err := s.c.CollectionGroup("builds").
		Where("status", "in", []string{string(build.Queued), string(build.Running)}).
		Documents(ctx).GetAll()
	if err != nil {
		return nil, err
	}
	var imgs []*fs.DocumentRef
	seen := map[string]bool{}
	for _, snap := range snaps {
		if img := snap.Ref.Parent.Parent; !seen[img.Path] {
			seen[img.Path] = true
			imgs = append(imgs, img)
		}
	}
	found, err := s.c.GetAll(ctx, imgs)
	if err != nil {
		return nil, err
	}
	exists := map[string]bool{}
	for _, img := range found {
		exists[img.Ref.Path] = img.Exists()
	}
	var live []*fs.DocumentSnapshot
	for _, snap := range snaps {
		if exists[snap.Ref.Parent.Parent.Path] {
			live = append(live, snap)
		}
	}
	bs, err := decodeBuilds(live)
	if err != nil {
		return nil, err
	}
	store.SortOldestFirst(bs)
	return bs, nil
}

// UpdateBuild implements store.Store. A change may not make an ended build
// active again (build.ErrTransition): the active marker allows one.
func (s *Store) UpdateBuild(ctx context.Context, imageID string, number int, change func(*build.Build) error) (build.Build, error) {
	ref := s.imageRef(imageID)
	bref := buildRef(ref, number)
	var b build.Build
	err := s.run(ctx, nil, func(tx *fs.Transaction) error {
		snaps, err := tx.GetAll([]*fs.DocumentRef{bref, ref})
		if err != nil {
			return err
		}
		if !snaps[0].Exists() || !snaps[1].Exists() {
			return store.ErrNotFound
		}
		if b, err = decodeBuild(snaps[0]); err != nil {
			return err
		}
		img, err := s.decodeImage(snaps[1])
		if err != nil {
			return err
		}
		was := b.Status
		if err := change(&b); err != nil {
			return err
		}
		switch {
		case !was.Active() && b.Status.Active():
			return fmt.Errorf("%w: a %s build cannot become %s", build.ErrTransition, was, b.Status)
		case was.Active() && !b.Status.Active():
			if err := tx.Delete(activeRef(ref)); err != nil {
				return err
			}
		}
		bd, err := encodeBuild(b)
		if err != nil {
			return err
		}
		if err := tx.Set(bref, bd); err != nil {
			return err
		}
		if img.LatestBuild != nil && img.LatestBuild.Number == b.Number {
			latest := b
			img.LatestBuild = &latest
		}
		if b.Status == build.Succeeded && was != build.Succeeded {
			store.RecordSuccess(&img, b)
		}
		d, err := encodeImage(img)
		if err != nil {
			return err
		}
		if err := tx.Set(ref, d); err != nil {
			return err
		}
		return s.appendOutbox(ctx, tx, b)
	})
	return b, err
}

// outboxDoc is an event in the outbox. At, the commit's server timestamp,
// orders the events: the changes of one subject (a build) conflict in their
// transactions, so their commits, and so their At, are in order; N orders
// the events of one commit.
type outboxDoc struct {
	At      time.Time `firestore:"at,serverTimestamp"`
	N       int       `firestore:"n"`
	Type    string    `firestore:"type"`
	Subject string    `firestore:"subject"`
	Time    time.Time `firestore:"time"`
	Data    string    `firestore:"data"`
}

func (s *Store) outbox() *fs.CollectionRef { return s.c.Collection("outbox") }

// appendOutbox writes in tx the events ctx's Announcement makes of what a
// change stored (a build.Build or an image.Image).
func (s *Store) appendOutbox(ctx context.Context, tx *fs.Transaction, changed any) error {
	evs, err := store.Announced(ctx, changed, time.Now())
	if err != nil {
		return err
	}
	for i, e := range evs {
		if err := tx.Create(s.outbox().Doc(e.ID), outboxDoc{N: i, Type: e.Type, Subject: e.Subject, Time: e.Time, Data: string(e.Data)}); err != nil {
			return err
		}
	}
	return nil
}

// PendingEvents implements store.Outbox. An event's Sequence is its
// commit's time in microseconds, times 64, plus its place in the commit.
func (s *Store) PendingEvents(ctx context.Context, limit int) ([]store.OutboxEvent, error) {
	docs, err := s.outbox().OrderBy("at", fs.Asc).OrderBy("n", fs.Asc).Limit(limit).Documents(ctx).GetAll()
	if err != nil {
		return nil, err
	}
	out := make([]store.OutboxEvent, 0, len(docs))
	for _, d := range docs {
		var o outboxDoc
		if err := d.DataTo(&o); err != nil {
			return nil, fmt.Errorf("decoding outbox event %s: %w", d.Ref.ID, err)
		}
		out = append(out, store.OutboxEvent{
			ID: d.Ref.ID, Type: o.Type, Subject: o.Subject, Time: o.Time.UTC(),
			Sequence: o.At.UnixMicro()*64 + int64(o.N), Data: []byte(o.Data),
		})
	}
	return out, nil
}

// DeliveredEvents implements store.Outbox.
func (s *Store) DeliveredEvents(ctx context.Context, ids ...string) error {
	for _, id := range ids {
		if _, err := s.outbox().Doc(id).Delete(ctx); err != nil && status.Code(err) != codes.NotFound {
			return err
		}
	}
	return nil
}

// AppendLog implements store.Store.
func (s *Store) AppendLog(ctx context.Context, imageID string, number int, p []byte) error {
	bref := buildRef(s.imageRef(imageID), number)
	for len(p) > 0 {
		n := min(len(p), maxAppend)
		if err := s.appendLog(ctx, bref, p[:n]); err != nil {
			return err
		}
		p = p[n:]
	}
	return nil
}

// appendLog adds p to the log of build bref in new chunks after the last one.
func (s *Store) appendLog(ctx context.Context, bref *fs.DocumentRef, p []byte) error {
	chunks := logChunks(bref)
	return s.run(ctx, store.ErrConflict, func(tx *fs.Transaction) error {
		snaps, err := tx.GetAll([]*fs.DocumentRef{bref})
		if err != nil {
			return err
		}
		if !snaps[0].Exists() {
			return store.ErrNotFound
		}
		last, err := tx.Documents(chunks.Select("end").OrderBy("end", fs.Desc).Limit(1)).GetAll()
		if err != nil {
			return err
		}
		var start int64
		if len(last) > 0 {
			var c logChunk
			if err := last[0].DataTo(&c); err != nil {
				return fmt.Errorf("decoding %s: %w", last[0].Ref.Path, err)
			}
			start = c.End
		}
		for len(p) > 0 {
			n := min(len(p), logChunkSize)
			c := logChunk{Start: start, End: start + int64(n), Data: p[:n]}
			if err := tx.Create(chunks.Doc(fmt.Sprintf("%019d", start)), c); err != nil {
				return err
			}
			start, p = c.End, p[n:]
		}
		return nil
	})
}

// ReadLog implements store.Store.
func (s *Store) ReadLog(ctx context.Context, imageID string, number int, offset int64) ([]byte, error) {
	bref := buildRef(s.imageRef(imageID), number)
	if _, err := get(ctx, bref); err != nil {
		return nil, err
	}
	snaps, err := logChunks(bref).Where("end", ">", offset).OrderBy("end", fs.Asc).Documents(ctx).GetAll()
	if err != nil {
		return nil, err
	}
	var out []byte
	for _, snap := range snaps {
		var c logChunk
		if err := snap.DataTo(&c); err != nil {
			return nil, fmt.Errorf("decoding %s: %w", snap.Ref.Path, err)
		}
		if c.Start < offset {
			c.Data = c.Data[offset-c.Start:]
		}
		out = append(out, c.Data...)
	}
	return out, nil
}

// ReadLogPart implements store.Store.
func (s *Store) ReadLogPart(ctx context.Context, imageID string, number int, offset, max int64) ([]byte, int64, error) {
	bref := buildRef(s.imageRef(imageID), number)
	if _, err := get(ctx, bref); err != nil {
		return nil, 0, err
	}
	var size int64
	last, err := logChunks(bref).Select("end").OrderBy("end", fs.Desc).Limit(1).Documents(ctx).GetAll()
	if err != nil {
		return nil, 0, err
	}
	if len(last) > 0 {
		var c logChunk
		if err := last[0].DataTo(&c); err != nil {
			return nil, 0, fmt.Errorf("decoding %s: %w", last[0].Ref.Path, err)
		}
		size = c.End
	}
	// Chunks hold at most logChunkSize bytes: read the ones that cover
	// [offset, offset+max) and no more.
	limit := int((max+logChunkSize-1)/logChunkSize) + 1
	snaps, err := logChunks(bref).Where("end", ">", offset).OrderBy("end", fs.Asc).Limit(limit).Documents(ctx).GetAll()
	if err != nil {
		return nil, 0, err
	}
	var out []byte
	for _, snap := range snaps {
		if int64(len(out)) >= max {
			break
		}
		var c logChunk
		if err := snap.DataTo(&c); err != nil {
			return nil, 0, fmt.Errorf("decoding %s: %w", snap.Ref.Path, err)
		}
		if c.Start < offset {
			c.Data = c.Data[offset-c.Start:]
		}
		out = append(out, c.Data[:min(int64(len(c.Data)), max-int64(len(out)))]...)
	}
	return out, size, nil
}

// PruneLogs implements store.Store. Each build is marked pruned in a
// transaction, then its chunks are purged; an interrupted purge is
// finished by the next call.
func (s *Store) PruneLogs(ctx context.Context, imageID string, keep int) (int, error) {
	if keep < 1 {
		return 0, fmt.Errorf("keeping %d logs: keep at least 1", keep)
	}
	ref := s.imageRef(imageID)
	snap, err := get(ctx, ref)
	if err != nil {
		return 0, err
	}
	img, err := s.decodeImage(snap)
	if err != nil {
		return 0, err
	}
	if img.LatestBuild == nil || img.LatestBuild.Number <= keep {
		return 0, nil
	}
	old, err := builds(ref).Where("number", "<=", img.LatestBuild.Number-keep).Documents(ctx).GetAll()
	if err != nil {
		return 0, err
	}
	pruned := 0
	for _, snap := range old {
		b, err := decodeBuild(snap)
		if err != nil {
			return pruned, err
		}
		if b.Status.Active() {
			continue
		}
		if !b.LogPruned {
			err := s.run(ctx, nil, func(tx *fs.Transaction) error {
				cur, err := tx.Get(snap.Ref)
				if err != nil {
					return err
				}
				b, err := decodeBuild(cur)
				if err != nil {
					return err
				}
				b.LogPruned = true
				d, err := encodeBuild(b)
				if err != nil {
					return err
				}
				return tx.Set(snap.Ref, d)
			})
			if err != nil {
				return pruned, err
			}
			pruned++
		}
		if err := s.purge(ctx, logChunks(snap.Ref).Query, nil); err != nil {
			return pruned, err
		}
	}
	return pruned, nil
}

// PutCredential implements store.Store.
func (s *Store) PutCredential(ctx context.Context, c store.Credential) error {
	_, err := s.credentials(c.Workspace).Doc(docID(c.Name)).Set(ctx, credentialDoc{
		Name: c.Name, Kind: c.Kind, Registry: c.Registry, Host: c.Host, Username: c.Username, Secret: c.Secret,
	})
	return err
}

func decodeCredential(workspace string, snap *fs.DocumentSnapshot) (store.Credential, error) {
	var d credentialDoc
	if err := snap.DataTo(&d); err != nil {
		return store.Credential{}, fmt.Errorf("decoding %s: %w", snap.Ref.Path, err)
	}
	return store.Credential{Workspace: workspace, Name: d.Name, Kind: d.Kind, Registry: d.Registry, Host: d.Host, Username: d.Username, Secret: d.Secret}, nil
}

// GetCredential implements store.Store.
func (s *Store) GetCredential(ctx context.Context, workspace, name string) (store.Credential, error) {
	snap, err := get(ctx, s.credentials(workspace).Doc(docID(name)))
	if err != nil {
		return store.Credential{}, err
	}
	return decodeCredential(workspace, snap)
}

// ListCredentials implements store.Store.
func (s *Store) ListCredentials(ctx context.Context, workspace string) ([]store.Credential, error) {
	snaps, err := s.credentials(workspace).OrderBy("name", fs.Asc).Documents(ctx).GetAll()
	if err != nil {
		return nil, err
	}
	var cs []store.Credential
	for _, snap := range snaps {
		c, err := decodeCredential(workspace, snap)
		if err != nil {
			return nil, err
		}
		cs = append(cs, c)
	}
	return cs, nil
}

// DeleteCredential implements store.Store.
func (s *Store) DeleteCredential(ctx context.Context, workspace, name string) error {
	_, err := s.credentials(workspace).Doc(docID(name)).Delete(ctx, fs.Exists)
	if status.Code(err) == codes.NotFound {
		return store.ErrNotFound
	}
	return err
}
