package token

import (
	"context"
	"errors"
	"slices"
	"strings"

	"github.com/slipway-dev/slipway/pkg/image"
	"github.com/slipway-dev/slipway/pkg/store"
)

// Actions on a repository, as scopes name them.
const (
	Pull   = "pull"
	Push   = "push"
	Delete = "delete"
)

// Owners finds who owns a repository: the workspace of the image that has
// its name.
type Owners interface {
	GetImageByName(ctx context.Context, name string) (image.Image, error)
	GetWorkspace(ctx context.Context, id string) (store.Workspace, error)
}

// Rights decides what a caller may do in the internal registry:
//
//   - the owner and members of a workspace pull its images' repositories;
//   - every authenticated user pulls library/ (the shared base images);
//   - Pullers (the platform's service subjects, such as compute nodes) pull
//     every repository;
//   - only Publishers (the event publishers) push, and only to library/,
//     which they keep: they also delete there (the shared bases are theirs);
//   - nobody else deletes, and nobody else pushes: builds push with their own
//     credential (see BuildClaims), each to its own image's repositories.
type Rights struct {
	Owners     Owners
	Pullers    []string
	Publishers []string
}

// IsLibrary reports whether repo is in the shared base images' namespace.
func IsLibrary(repo string) bool { return strings.HasPrefix(repo, image.LibraryPrefix+"/") }

// isCache reports whether repo is in the build cache's namespace.
func isCache(repo string) bool { return strings.HasPrefix(repo, image.ReservedPrefix+"/") }

// MayPull reports whether user may pull repo. Errors other than an unknown
// repository are returned, so that a store outage denies rather than grants.
func (r Rights) MayPull(ctx context.Context, user, repo string) (bool, error) {
	switch {
	case slices.Contains(r.Pullers, user):
		return true, nil
	case IsLibrary(repo):
		return true, nil
	case isCache(repo):
		return false, nil
	}
	ws, err := r.workspaceOf(ctx, repo)
	if errors.Is(err, store.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return ws.RoleOf(user) != store.RoleNone, nil
}

// workspaceOf is the workspace that owns repo; ErrNotFound when none does.
func (r Rights) workspaceOf(ctx context.Context, repo string) (store.Workspace, error) {
	img, err := r.Owners.GetImageByName(ctx, repo)
	if err != nil {
		return store.Workspace{}, err
	}
	return r.Owners.GetWorkspace(ctx, img.Workspace)
}

// userActions are the actions of want that user may take on repo.
func (r Rights) userActions(ctx context.Context, user, repo string, want []string) ([]string, error) {
	var got []string
	for _, a := range want {
		switch a {
		case Pull:
			ok, err := r.MayPull(ctx, user, repo)
			if err != nil {
				return nil, err
			}
			if ok {
				got = append(got, Pull)
			}
		case Push, Delete:
			if IsLibrary(repo) && slices.Contains(r.Publishers, user) {
				got = append(got, a)
			}
		}
	}
	return got, nil
}

// buildActions are the actions of want that a build credential allows on repo.
func buildActions(b BuildClaims, repo string, want []string) []string {
	var got []string
	for _, a := range want {
		switch {
		case a == Pull && (slices.Contains(b.Pull, repo) || slices.Contains(b.Push, repo)):
			got = append(got, Pull)
		case a == Push && slices.Contains(b.Push, repo):
			got = append(got, Push)
		}
	}
	return got
}

// BuildPulls narrows bases, the repositories in the internal registry that
// a build of an image of workspace ws names in its FROMs, to those the
// workspace may read: library/ and its own images' repositories.
func (r Rights) BuildPulls(ctx context.Context, ws string, bases []string) ([]string, error) {
	var pulls []string
	for _, repo := range bases {
		if slices.Contains(pulls, repo) || isCache(repo) {
			continue
		}
		if !IsLibrary(repo) {
			owner, err := r.workspaceOf(ctx, repo)
			if errors.Is(err, store.ErrNotFound) || (err == nil && owner.ID != ws) {
				continue
			}
			if err != nil {
				return nil, err
			}
		}
		pulls = append(pulls, repo)
	}
	return pulls, nil
}
