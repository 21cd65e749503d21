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
	ErrBadCursor   = errors.New("bad page token")
)

// Workspace is a workspace as the platform announced it.
type Workspace struct {
	ID      string   `json:"id"`
	Owner   string   `json:"owner"`
	Members []string `json:"members"`
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
	Kind      string `json:"kind"` // "registry" or "git"
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
	// ApplyWorkspace creates or replaces ws, or deletes it (and its images,
	// builds, logs and credentials) when deleted is true, unless eventKey was
	// already processed, in which case it returns ErrDuplicate and changes
	// nothing. The event key is recorded in the same transaction.
	ApplyWorkspace(ctx context.Context, eventKey string, ws Workspace, deleted bool) error
	// GetWorkspace returns ErrNotFound for an unknown id.
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
	// it queued, and records it as the image's latest build; ErrBuildActive
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
	// before, the image records the result: BuiltRev, Built and Reference.
	// An error from change aborts and is returned.
	UpdateBuild(ctx context.Context, imageID string, number int, change func(*build.Build) error) (build.Build, error)

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
	img.BuiltRev = b.DefinitionRev
	img.Built = &image.Stamp{By: b.RequestedBy, At: *b.FinishedAt}
	img.Reference = *b.Reference
}

// KeepBuildResults copies into img the fields that builds own from the
// stored image cur, so that saving a definition never undoes a build's
// result recorded since the caller read it.
func KeepBuildResults(img *image.Image, cur image.Image) {
	img.Built, img.BuiltRev, img.Reference, img.LatestBuild = cur.Built, cur.BuiltRev, cur.Reference, cur.LatestBuild
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
