// Package store defines what Slipway keeps durably: workspaces, image
// definitions, builds, build logs, credentials and the ids of processed
// events. Backends (SQLite locally, Firestore in the cluster) implement Store
// and pass the conformance suite in storetest.
package store

import (
	"cmp"
	"context"
	"encoding/base64"
	"errors"
	"slices"

	"github.com/slipway-dev/slipway/pkg/build"
	"github.com/slipway-dev/slipway/pkg/image"
)

// Sentinel errors, checked with errors.Is.
var (
	ErrNotFound    = errors.New("not found")
	ErrNameTaken   = errors.New("name taken")
	ErrConflict    = errors.New("version conflict")
	ErrBuildActive = errors.New("a build is already queued or running")
	ErrDuplicate   = errors.New("event already processed")
	ErrStale       = errors.New("event not after the workspace's last applied event")
	ErrBadCursor   = errors.New("bad page token")
)

// Workspace is a workspace as the platform announced it.
type Workspace struct {
	ID      string   `json:"id"`
	Owner   string   `json:"owner"`
	Members []string `json:"members"`
	// Catalogue, as GetWorkspace reads it, changes whenever one of the
	// workspace's images is created, changed (builds too) or deleted, and
	// never takes a value again for other content: a listing read after it
	// may be cached under it. 0 when the backend does not keep it (nothing
	// is cached then). Ignored by ApplyWorkspace.
	Catalogue int64 `json:"-"`
}

// Role is what a user may do in a workspace.
type Role int

// Roles, from least to most.
const (
	RoleNone Role = iota
	RoleMember
	RoleOwner
)

// RoleOf returns user's role in ws.
func (ws *Workspace) RoleOf(user string) Role {
	if user == ws.Owner {
		return RoleOwner
	}
	for _, m := range ws.Members {
		if m == user {
			return RoleMember
		}
	}
	return RoleNone
}

// Credential is a workspace's secret for a registry or a Git host. Secret
// holds the password or token sealed by the caller (see package secret);
// stores keep it as given, and no response or log ever carries it.
type Credential struct {
	Workspace string `json:"-"`
	Name      string `json:"name"`
	Kind      string `json:"kind"` // "registry", "git" or "secret"
	Registry  string `json:"registry,omitempty"`
	// Host is a git credential's HOST[:PORT], the only host it is sent to
	// (see CheckGit); empty on git credentials stored before hosts
	// existed, which are therefore sent nowhere.
	Host     string `json:"host,omitempty"`
	Username string `json:"username,omitempty"`
	Secret   string `json:"-"`
}

// Page selects a page of a listing: at most Limit items after Cursor, an
// opaque token from a previous page ("" for the first).
type Page struct {
	Limit  int
	Cursor string
}

// ImageFilter narrows an image listing.
type ImageFilter struct {
	// Usable keeps only images with a successful build.
	Usable bool
}

// Store is Slipway's durable state. Every method is safe for concurrent use
// and atomic: it changes everything it says or nothing.
type Store interface {
	// ApplyWorkspace applies a platform event at order about ws: it creates
	// or replaces ws, or deletes it (and its images, builds, logs and
	// credentials) when deleted is true, leaving a tombstone. The workspace
	// keeps order, a tombstone included, and the event key is recorded, in
	// the same transaction. When eventKey was already processed it returns
	// ErrDuplicate and changes nothing. When order is not After the order
	// the workspace keeps, it records the event key, changes nothing else,
	// and returns ErrStale: an older update never undoes a newer one or a
	// deletion, and a newer create or update after a tombstone makes the
	// workspace anew (without the images and credentials deleted with it).
	ApplyWorkspace(ctx context.Context, eventKey string, order Order, ws Workspace, deleted bool) error
	// WorkspaceOrder returns the order of the last event applied to the
	// workspace id, a deletion's included; the zero Order when none was.
	WorkspaceOrder(ctx context.Context, id string) (Order, error)
	// GetWorkspace returns ErrNotFound for an unknown id and a deleted
	// workspace's tombstone.
	GetWorkspace(ctx context.Context, id string) (Workspace, error)

	// CreateImage stores a new image; ErrNameTaken when another image on the
	// platform has its name.
	CreateImage(ctx context.Context, img image.Image) error
	// GetImage returns ErrNotFound for an unknown id.
	GetImage(ctx context.Context, id string) (image.Image, error)
	// GetImageByName returns the image that holds name on the platform;
	// ErrNotFound when none does. The internal registry's repositories are
	// owned by the workspace of the image of that name.
	GetImageByName(ctx context.Context, name string) (image.Image, error)
	// ListImages returns a workspace's images ordered by name, and the cursor
	// of the next page ("" on the last).
	ListImages(ctx context.Context, workspace string, f ImageFilter, p Page) ([]image.Image, string, error)
	// UpdateImage replaces the image's definition if its stored version is
	// still wantVersion (ErrConflict otherwise; ErrNameTaken for a taken
	// name). The fields builds own keep their stored values.
	UpdateImage(ctx context.Context, img image.Image, wantVersion int64) error
	// DeleteImage deletes an image, its builds and their logs, and frees its
	// name; ErrNotFound if absent.
	DeleteImage(ctx context.Context, id string) error

	// CreateBuild numbers b (one more than the image's newest build), stamps
	// its queued_at in the same transaction (the queue's order: a build
	// queued after another, of any image, has a later queued_at), stores
	// it queued with the image's current definition (StampDefinition), and
	// records it as the image's latest build; ErrBuildActive
	// while another build of the image is queued or running. The events of
	// ctx's Announcement go to the outbox in the same transaction, as for
	// UpdateBuild.
	CreateBuild(ctx context.Context, b build.Build) (build.Build, error)
	// GetBuild returns ErrNotFound for an unknown image or number.
	GetBuild(ctx context.Context, imageID string, number int) (build.Build, error)
	// ListBuilds returns an image's builds newest first.
	ListBuilds(ctx context.Context, imageID string, p Page) ([]build.Build, string, error)
	// ListActiveBuilds returns every queued or running build, oldest first.
	ListActiveBuilds(ctx context.Context) ([]build.Build, error)
	// UpdateBuild reads a build, applies change and writes it back in one
	// transaction. When change leaves the build succeeded and it was not
	// before, the image records the result (RecordSuccess): BuiltRev,
	// BuiltDefinition, Built and Reference.
	// An error from change aborts and is returned.
	UpdateBuild(ctx context.Context, imageID string, number int, change func(*build.Build) error) (build.Build, error)

	// RequestBuild is CreateBuild for the builds Slipway starts by itself
	// (package rebuild). In one transaction it records key, an idempotency
	// key such as "schedule/<image>/<slot>" or an event's source and id
	// (ErrDuplicate, and nothing changes, when key was recorded before),
	// applies change (when not nil) to the image's rebuild state, and
	// creates b. While another build of the image is queued or running, b
	// is kept as the image's pending build instead (RebuildState.Pending;
	// one at most: a later request while one is pending only counts in its
	// cause's Coalesced), and pending is true. A created build is announced
	// as for CreateBuild.
	RequestBuild(ctx context.Context, key string, b build.Build, change func(*image.RebuildState)) (created build.Build, pending bool, err error)
	// StartPending creates the image's pending build and clears it, in one
	// transaction: ErrNotFound when none is pending (or no such image),
	// ErrBuildActive while a build of the image is queued or running.
	StartPending(ctx context.Context, imageID string) (build.Build, error)
	// UpdateRebuildState applies change to an image's rebuild state without
	// changing its version; an error from change aborts and is returned.
	UpdateRebuildState(ctx context.Context, imageID string, change func(*image.RebuildState) error) error
	// ListAutomatic returns, across all workspaces, the images with a
	// rebuild policy or a pending build (image.Image.Automatic), ordered by
	// name, and the cursor of the next page ("" on the last).
	ListAutomatic(ctx context.Context, p Page) ([]image.Image, string, error)

	// AppendLog appends to a build's log; ReadLog returns it from offset.
	AppendLog(ctx context.Context, imageID string, number int, p []byte) error
	ReadLog(ctx context.Context, imageID string, number int, offset int64) ([]byte, error)
	// ReadLogPart returns at most max bytes of a build's log from offset,
	// and the log's size when it was read, so that a reader can stream a
	// log of any size in bounded pieces; ErrNotFound for an unknown build.
	ReadLogPart(ctx context.Context, imageID string, number int, offset, max int64) ([]byte, int64, error)
	// PruneLogs deletes the logs of the image's ended builds except its
	// newest keep builds (keep ≥ 1), and marks those builds' LogPruned;
	// the build records stay. It returns how many logs it deleted.
	PruneLogs(ctx context.Context, imageID string, keep int) (int, error)

	// PutCredential creates or replaces a credential.
	PutCredential(ctx context.Context, c Credential) error
	// GetCredential returns ErrNotFound for an unknown name.
	GetCredential(ctx context.Context, workspace, name string) (Credential, error)
	// ListCredentials returns a workspace's credentials ordered by name.
	ListCredentials(ctx context.Context, workspace string) ([]Credential, error)
	// DeleteCredential returns ErrNotFound for an unknown name.
	DeleteCredential(ctx context.Context, workspace, name string) error

	// Outbox holds the events that build changes announce (see Announce).
	Outbox

	// Close releases the store's resources.
	Close() error
}

// RecordSuccess writes the result of the succeeded build b into img. Every
// backend calls it in the transaction that settles b, so that builds only
// record their result and status follows. A build of an older definition
// that finishes after a newer one does not roll the image back.
func RecordSuccess(img *image.Image, b build.Build) {
	if b.DefinitionRev < img.BuiltRev || b.FinishedAt == nil || b.Reference == nil {
		return
	}
	switch {
	case b.Definition != nil:
		img.BuiltDefinition = b.Definition.Digest()
	case b.DefinitionRev == img.DefinitionRev:
		// Created before builds kept their definitions, of the current one.
		img.BuiltDefinition = img.Definition().Digest()
	default:
		img.BuiltDefinition = UnknownDefinition
	}
	img.BuiltRev = b.DefinitionRev
	img.Built = &image.Stamp{By: b.RequestedBy, At: *b.FinishedAt, Build: b.Number}
	img.Reference = *b.Reference
}

// StampDefinition records on the new build b what it builds: the stored
// image img's current definition and its revision. Every backend calls it
// in CreateBuild's transaction, so that a build keeps the definition the
// image had when it was created, whoever created it.
func StampDefinition(b *build.Build, img image.Image) {
	d := img.Definition()
	b.Definition, b.DefinitionRev = &d, img.DefinitionRev
}

// KeepBuildResults copies into img the fields that builds own from the
// stored image cur, so that saving a definition never undoes a build's
// result recorded since the caller read it.
func KeepBuildResults(img *image.Image, cur image.Image) {
	img.Built, img.BuiltRev, img.Reference, img.LatestBuild = cur.Built, cur.BuiltRev, cur.Reference, cur.LatestBuild
	img.BuiltDefinition = cur.BuiltDefinition
	img.RebuildState.KeepTriggerState(cur.RebuildState)
}

// PendBuild keeps b as img's pending build, or counts it in the pending
// build's cause when one is pending already. Backends call it in
// RequestBuild's transaction when a build of img is active.
func PendBuild(img *image.Image, b build.Build) {
	if p := img.RebuildState.Pending; p != nil {
		next := *p
		c := build.Cause{}
		if next.Cause != nil {
			c = *next.Cause
		}
		c.Coalesced++
		next.Cause = &c
		img.RebuildState.Pending = &next
		return
	}
	img.RebuildState.Pending = &b
}

// SortOldestFirst orders builds by queue time, as the build queue serves them.
func SortOldestFirst(bs []build.Build) {
	slices.SortStableFunc(bs, func(a, b build.Build) int {
		if c := a.QueuedAt.Compare(b.QueuedAt); c != 0 {
			return c
		}
		return cmp.Compare(a.ID(), b.ID())
	})
}

// EncodeCursor makes an opaque page token of a listing's last key.
func EncodeCursor(key string) string { return base64.RawURLEncoding.EncodeToString([]byte(key)) }

// DecodeCursor reads a page token; ErrBadCursor when it is not one.
func DecodeCursor(token string) (string, error) {
	b, err := base64.RawURLEncoding.DecodeString(token)
	if err != nil {
		return "", ErrBadCursor
	}
	return string(b), nil
}
