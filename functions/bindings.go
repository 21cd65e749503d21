package functions

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/google/go-containerregistry/pkg/name"

	"github.com/slipway-dev/slipway/pkg/image"
	"github.com/slipway-dev/slipway/pkg/store"
)

// checkBindings refuses a definition that would send a workspace's
// credential to a host it does not belong to, or push into the internal
// registry outside the workspace's own repositories. A credential named but
// not (yet) stored passes: the build checks again with what is stored then.
func (a *api) checkBindings(ctx context.Context, img image.Image) error {
	for i, d := range img.Destinations {
		ref, err := name.ParseReference(d.Reference)
		if err != nil {
			return err // Validate has refused it already
		}
		if a.Registry != "" && image.SameRegistry(ref.Context().RegistryStr(), a.Registry) {
			repo := ref.Context().RepositoryStr()
			own := repo == img.Name
			if !own {
				if own, err = store.OwnsRepository(ctx, a.Store, img.Workspace, repo); err != nil {
					return err
				}
			}
			if !own {
				return &Error{Status: http.StatusBadRequest, Code: "destination_not_allowed", Field: fmt.Sprintf("destinations[%d].reference", i),
					Message: fmt.Sprintf("%s is in the internal registry but is not an image of this workspace: a destination there must be one of the workspace's own repositories", d.Reference)}
			}
		}
		if d.Credential == "" {
			continue
		}
		c, err := a.Store.GetCredential(ctx, img.Workspace, d.Credential)
		if errors.Is(err, store.ErrNotFound) {
			continue
		}
		if err != nil {
			return err
		}
		if err := c.CheckRegistry(d.Reference); err != nil {
			return bindingError(fmt.Sprintf("destinations[%d].credential", i), err)
		}
	}
	for i, name := range img.Secrets {
		c, err := a.Store.GetCredential(ctx, img.Workspace, name)
		if errors.Is(err, store.ErrNotFound) {
			continue
		}
		if err != nil {
			return err
		}
		if err := c.CheckSecret(); err != nil {
			return bindingError(fmt.Sprintf("secrets[%d]", i), err)
		}
	}
	if g := img.Context.Git; img.Context.Type == image.ContextGit && g != nil && g.Credential != "" {
		c, err := a.Store.GetCredential(ctx, img.Workspace, g.Credential)
		if errors.Is(err, store.ErrNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		if err := c.CheckGit(g.URL); err != nil {
			return bindingError("context.git.credential", err)
		}
	}
	return nil
}

// bindingError is the 400 of a credential named where it does not belong.
func bindingError(field string, err error) error {
	code := "credential_wrong_host"
	if errors.Is(err, store.ErrCredentialKind) {
		code = "credential_wrong_kind"
	}
	return &Error{Status: http.StatusBadRequest, Code: code, Field: field, Message: field + ": " + err.Error()}
}
