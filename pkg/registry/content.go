package registry

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path"
	"path/filepath"
	"time"

	"github.com/distribution/distribution/v3"
	"github.com/distribution/distribution/v3/registry/storage"
	storagedriver "github.com/distribution/distribution/v3/registry/storage/driver"
	"github.com/distribution/distribution/v3/registry/storage/driver/filesystem"

	"github.com/slipway-dev/slipway/pkg/gate"
)

// repositoriesRoot is where Distribution's storage layout keeps
// repositories (registry/storage/paths.go: <root>/v2/repositories).
const repositoriesRoot = "/docker/registry/v2/repositories"

// blobsRoot is where it keeps the blobs all repositories share.
const blobsRoot = "/docker/registry/v2/blobs"

// repoDirs are a repository's own directories. A repository's directory
// also holds the repositories nested under its name (team/app/x under
// team/app), so its content is these and never the whole directory.
var repoDirs = []string{"_manifests", "_layers"}

// Content is the embedded registry's content, changed directly in
// Distribution's storage (the same filesystem root the registry serves):
// repositories removed and moved as the catalogue changes, unreferenced
// blobs collected, abandoned uploads purged. Every change holds the gate
// shared, so that a collection never sees a repository half moved.
type Content struct {
	driver storagedriver.StorageDriver
	ns     distribution.Namespace
	gate   *gate.Gate
}

// NewContent opens the registry storage under dataDir/registry.
func NewContent(ctx context.Context, dataDir string, g *gate.Gate) (*Content, error) {
	d := filesystem.New(filesystem.DriverParameters{RootDirectory: filepath.Join(dataDir, Dir), MaxThreads: 100})
	ns, err := storage.NewRegistry(ctx, d, storage.EnableDelete)
	if err != nil {
		return nil, fmt.Errorf("registry storage: %w", err)
	}
	return &Content{driver: d, ns: ns, gate: g}, nil
}

// Delete removes repo's tags, manifests and layer links (not the
// repositories nested under its name); a repository that does not exist is
// no error. Its blobs go at the next collection unless another repository
// references them.
func (c *Content) Delete(ctx context.Context, repo string) error {
	defer c.gate.Shared()()
	return c.delete(ctx, repo)
}

func (c *Content) delete(ctx context.Context, repo string) error {
	// Manifests first: once they are gone nothing of repo resolves, even
	// if removing the rest fails.
	for _, dir := range append(repoDirs, "_uploads") {
		if err := c.driver.Delete(ctx, path.Join(repositoriesRoot, repo, dir)); err != nil && !notFound(err) {
			return fmt.Errorf("deleting repository %s: %w", repo, err)
		}
	}
	return nil
}

// Move makes from's tags and manifests to's, replacing whatever to held;
// from is left empty. Blobs are shared by the whole registry, so only the
// repositories' links move. A from with no content empties to.
func (c *Content) Move(ctx context.Context, from, to string) error {
	defer c.gate.Shared()()
	if err := c.delete(ctx, to); err != nil {
		return err
	}
	var moved []string
	for _, dir := range repoDirs {
		src, dst := path.Join(repositoriesRoot, from, dir), path.Join(repositoriesRoot, to, dir)
		err := c.driver.Move(ctx, src, dst)
		if notFound(err) {
			continue
		}
		if err != nil {
			// Put back what moved, so that the image keeps its content
			// under its old name.
			for _, d := range moved {
				c.driver.Move(ctx, path.Join(repositoriesRoot, to, d), path.Join(repositoriesRoot, from, d))
			}
			return fmt.Errorf("moving repository %s to %s: %w", from, to, err)
		}
		moved = append(moved, dir)
	}
	c.driver.Delete(ctx, path.Join(repositoriesRoot, from, "_uploads"))
	return nil
}

func notFound(err error) bool {
	var nf storagedriver.PathNotFoundError
	return errors.As(err, &nf)
}

// ErrBusy is returned by Collect while builds or content changes hold the
// gate.
var ErrBusy = errors.New("the registry is being written to")

// Collect runs Distribution's mark-and-sweep garbage collection: blobs that
// no manifest of any repository references are deleted, and with
// removeUntagged so are manifests no tag points to. It returns ErrBusy,
// having done nothing, when the gate is held or was left within quiet.
func (c *Content) Collect(ctx context.Context, removeUntagged bool, quiet time.Duration) error {
	release, ok := c.gate.TryExclusive(quiet)
	if !ok {
		return ErrBusy
	}
	defer release()
	// A registry with no blob yet lacks the directories the collector
	// walks, which it takes for an error; there is nothing to collect.
	for _, dir := range []string{repositoriesRoot, blobsRoot} {
		if _, err := c.driver.Stat(ctx, dir); notFound(err) {
			return nil
		}
	}
	return storage.MarkAndSweep(ctx, c.driver, c.ns, storage.GCOpts{RemoveUntagged: removeUntagged, Quiet: true})
}

// PurgeUploads deletes uploads started before olderThan and returns how
// many it deleted.
func (c *Content) PurgeUploads(ctx context.Context, olderThan time.Time) (int, error) {
	if _, err := c.driver.Stat(ctx, repositoriesRoot); notFound(err) {
		return 0, nil // nothing was ever uploaded
	}
	deleted, errs := storage.PurgeUploads(ctx, c.driver, olderThan, true)
	for _, err := range errs {
		if !notFound(err) {
			return len(deleted), err
		}
	}
	return len(deleted), nil
}

// Maintenance is when and how the registry is kept tidy.
type Maintenance struct {
	Interval       time.Duration // between collections; 0: only at start
	RemoveUntagged bool          // also delete manifests no tag points to
	UploadMaxAge   time.Duration // uploads older than this are purged
	Quiet          time.Duration // a collection waits this long after the last write
	Retry          time.Duration // how soon a collection skipped as busy is tried again
}

// Maintain collects garbage and purges abandoned uploads every m.Interval
// until ctx is done. A busy registry is tried again after m.Retry.
func (c *Content) Maintain(ctx context.Context, m Maintenance, log *slog.Logger) {
	if m.Interval <= 0 {
		return
	}
	if m.Retry <= 0 {
		m.Retry = 30 * time.Second
	}
	m.Retry = min(m.Retry, m.Interval)
	wait := m.Interval
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		wait = m.Interval
		if err := c.RunOnce(ctx, m, log); errors.Is(err, ErrBusy) {
			wait = m.Retry
		}
	}
}

// RunOnce purges abandoned uploads and collects garbage once.
func (c *Content) RunOnce(ctx context.Context, m Maintenance, log *slog.Logger) error {
	if n, err := c.PurgeUploads(ctx, time.Now().Add(-m.UploadMaxAge)); err != nil {
		log.Warn("registry: purging abandoned uploads", "error", err)
	} else if n > 0 {
		log.Info("registry: purged abandoned uploads", "uploads", n)
	}
	start := time.Now()
	err := c.Collect(ctx, m.RemoveUntagged, m.Quiet)
	switch {
	case errors.Is(err, ErrBusy):
		log.Debug("registry: garbage collection postponed: builds or pushes are writing to the registry")
	case err != nil:
		log.Error("registry: garbage collection", "error", err)
	default:
		log.Info("registry: garbage collected", "seconds", time.Since(start).Seconds())
	}
	return err
}
