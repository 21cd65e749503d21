package functions

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/slipway-dev/slipway/events"
	"github.com/slipway-dev/slipway/pkg/build"
	"github.com/slipway-dev/slipway/pkg/image"
	"github.com/slipway-dev/slipway/pkg/store"
)

// ImageView is an image as the API shows it.
type ImageView struct {
	ID           string              `json:"id"`
	Workspace    string              `json:"workspace"`
	Name         string              `json:"name"`
	Description  string              `json:"description"`
	Status       image.Status        `json:"status"`
	Context      image.Context       `json:"context"`
	History      HistoryView         `json:"history"`
	Destinations []image.Destination `json:"destinations"`
	BuildArgs    map[string]string   `json:"build_args"`
	Secrets      []string            `json:"secrets"`
	Target       *string             `json:"target"`
	Reference    *string             `json:"reference"`
	LatestBuild  *build.View         `json:"latest_build"`
	Rebuild      RebuildView         `json:"rebuild"`
}

// HistoryView is who created, modified and built an image, and when.
type HistoryView struct {
	Created  image.Stamp  `json:"created"`
	Modified image.Stamp  `json:"modified"`
	Built    *image.Stamp `json:"built"`
}

// Content is the internal registry's content of images' repositories.
type Content interface {
	// Delete removes repo's tags and manifests; an absent repo is no error.
	Delete(ctx context.Context, repo string) error
	// Move makes from's tags and manifests to's, replacing what to held.
	Move(ctx context.Context, from, to string) error
}

// viewImage is img as the API shows it. With managed content a renamed
// image's content moved with it, so its reference names its current
// repository.
func (a *api) viewImage(img image.Image, now time.Time) ImageView {
	v := ImageView{
		ID: img.ID, Workspace: img.Workspace, Name: img.Name, Description: img.Description,
		Status: img.Status(), Context: img.Context, Destinations: img.Destinations,
		History: HistoryView{Created: img.Created, Modified: img.Modified, Built: img.Built},
		Rebuild: viewRebuild(img),
	}
	if v.Destinations == nil {
		v.Destinations = []image.Destination{}
	}
	v.BuildArgs, v.Secrets = img.BuildArgs, img.Secrets
	if v.BuildArgs == nil {
		v.BuildArgs = map[string]string{}
	}
	if v.Secrets == nil {
		v.Secrets = []string{}
	}
	if img.Target != "" {
		v.Target = &img.Target
	}
	if img.Reference != "" {
		ref := img.Reference
		if _, digest, ok := strings.Cut(ref, "@"); ok && a.Content != nil && strings.HasPrefix(ref, a.Registry+"/") {
			ref = a.Registry + "/" + img.Name + "@" + digest
		}
		v.Reference = &ref
	}
	if img.LatestBuild != nil {
		b := img.LatestBuild.View(now)
		v.LatestBuild = &b
	}
	return v
}

// imageBody is the body of create and, with every field optional, of PATCH.
type imageBody struct {
	Name         *string              `json:"name"`
	Description  *string              `json:"description"`
	Context      *image.Context       `json:"context"`
	Destinations *[]image.Destination `json:"destinations"`
	BuildArgs    *map[string]string   `json:"build_args"`
	Secrets      *[]string            `json:"secrets"`
	// Target is a stage name; null or "" is the last stage.
	Target  *string      `json:"target"`
	Rebuild *rebuildBody `json:"rebuild"`
}

// definition reports whether the body changes more than the rebuild policy.
func (b imageBody) definition() bool {
	return b.Name != nil || b.Description != nil || b.Context != nil || b.Destinations != nil ||
		b.BuildArgs != nil || b.Secrets != nil || b.Target != nil || b.Rebuild == nil
}

func (b imageBody) applyTo(img *image.Image) {
	if b.Name != nil {
		img.Name = *b.Name
	}
	if b.Description != nil {
		img.Description = *b.Description
	}
	if b.Context != nil {
		img.Context = *b.Context
	}
	if b.Destinations != nil {
		img.Destinations = *b.Destinations
	}
	if b.BuildArgs != nil {
		img.BuildArgs = *b.BuildArgs
		if len(img.BuildArgs) == 0 {
			img.BuildArgs = nil
		}
	}
	if b.Secrets != nil {
		img.Secrets = *b.Secrets
		if len(img.Secrets) == 0 {
			img.Secrets = nil
		}
	}
	if b.Target != nil {
		img.Target = *b.Target
	}
}

func newID() string {
	b := make([]byte, 12)
	rand.Read(b)
	return hex.EncodeToString(b)
}

func (a *api) listImages(w http.ResponseWriter, r *http.Request) error {
	ws, _, err := a.workspaceRole(r.Context(), r.PathValue("ws"))
	if err != nil {
		return err
	}
	p, err := page(r, 50, 200)
	if err != nil {
		return err
	}
	var f store.ImageFilter
	switch r.URL.Query().Get("usable") {
	case "", "false":
	case "true":
		f.Usable = true
	default:
		return errorf(http.StatusBadRequest, "invalid_argument", "usable must be true or false")
	}
	// The workspace's catalogue number was read before its images: what
	// is cached under it is at least as new as it.
	key := "list\x00" + ws.ID + "\x00" + strconv.FormatBool(f.Usable) + "\x00" + strconv.Itoa(p.Limit) + "\x00" + p.Cursor
	if e, ok := a.answers.get(key, ws.Catalogue); ok {
		writeBody(w, http.StatusOK, e.body)
		return nil
	}
	imgs, next, err := a.Store.ListImages(r.Context(), ws.ID, f, p)
	if err != nil {
		return err
	}
	now := a.Now()
	views := make([]ImageView, len(imgs))
	for i, img := range imgs {
		views[i] = a.viewImage(img, now)
	}
	body, err := encodeJSON(map[string]any{"images": views, "next_page_token": next})
	if err != nil {
		return err
	}
	if timeless(imgs...) {
		a.answers.put(key, answer{catalogue: ws.Catalogue, body: body})
	}
	writeBody(w, http.StatusOK, body)
	return nil
}

func (a *api) createImage(w http.ResponseWriter, r *http.Request) error {
	ws := r.PathValue("ws")
	_, role, err := a.workspaceRole(r.Context(), ws)
	if err != nil {
		return err
	}
	var body imageBody
	if err := decode(r, &body); err != nil {
		return err
	}
	// What an image's secrets name is mounted into its builds: the
	// owner's to choose.
	if body.Secrets != nil && len(*body.Secrets) > 0 && role != store.RoleOwner {
		return errorf(http.StatusForbidden, "forbidden", "only the workspace's owner may name secrets for an image's builds")
	}
	now, user := a.Now(), subject(r.Context())
	img := image.Image{
		ID: newID(), Workspace: ws, Version: 1, DefinitionRev: 1,
		Created: image.Stamp{By: user, At: now}, Modified: image.Stamp{By: user, At: now},
	}
	body.applyTo(&img)
	if err := image.Validate(img, a.Rules); err != nil {
		return err
	}
	if _, err := setPolicy(&img, body.Rebuild, role, user, now); err != nil {
		return err
	}
	if err := a.checkBindings(r.Context(), img); err != nil {
		return err
	}
	if err := a.Store.CreateImage(a.announce(r.Context(), events.ImageCreated), img); err != nil {
		return err
	}
	// The name is this image's now: whatever a deletion that failed
	// halfway left in its repositories goes, so it starts empty.
	if err := a.deleteContent(r.Context(), img.Name); err != nil {
		if err := a.Store.DeleteImage(context.WithoutCancel(r.Context()), img.ID); err != nil {
			a.Log.Error("undoing an image create", "image", img.ID, "error", err)
		}
		return err
	}
	view := a.viewImage(img, now)
	a.Events.Publish(events.ImageCreated, img.ID, view)
	w.Header().Set("ETag", etag(img.Version))
	w.Header().Set("Location", "/api/v1/images/"+img.ID)
	writeJSON(w, http.StatusCreated, view)
	return nil
}

func (a *api) getImage(w http.ResponseWriter, r *http.Request) error {
	ctx, id := r.Context(), r.PathValue("id")
	img, err := a.Store.GetImage(ctx, id)
	if err != nil {
		return err
	}
	ws, _, err := a.workspaceRole(ctx, img.Workspace)
	if err != nil {
		return err
	}
	key := "image\x00" + id
	if e, ok := a.answers.get(key, ws.Catalogue); ok {
		w.Header().Set("ETag", e.etag)
		writeBody(w, http.StatusOK, e.body)
		return nil
	}
	if ws.Catalogue != 0 {
		// Read after the catalogue number, so that what is cached under it
		// is at least as new as it.
		if img, err = a.Store.GetImage(ctx, id); err != nil {
			return err
		}
	}
	body, err := encodeJSON(a.viewImage(img, a.Now()))
	if err != nil {
		return err
	}
	e := answer{catalogue: ws.Catalogue, body: body, etag: etag(img.Version)}
	if img.Workspace == ws.ID && timeless(img) {
		a.answers.put(key, e)
	}
	w.Header().Set("ETag", e.etag)
	writeBody(w, http.StatusOK, body)
	return nil
}

// ifMatch reports whether the If-Match header names version; a missing
// header is 428, a stale one 412.
func ifMatch(r *http.Request, version int64) error {
	h := r.Header.Get("If-Match")
	if h == "" {
		return errorf(http.StatusPreconditionRequired, "precondition_required", "send If-Match with the ETag of the image you edited")
	}
	want := etag(version)
	for _, t := range strings.Split(h, ",") {
		if t = strings.TrimSpace(t); t == want || t == "*" {
			return nil
		}
	}
	return store.ErrConflict
}

func (a *api) patchImage(w http.ResponseWriter, r *http.Request) error {
	img, role, err := a.imageRole(r.Context(), r.PathValue("id"))
	if err != nil {
		return err
	}
	if r.Header.Get("If-Match") == "" {
		return ifMatch(r, img.Version)
	}
	var body imageBody
	if err := decode(r, &body); err != nil {
		return err
	}
	if err := ifMatch(r, img.Version); err != nil {
		return err
	}
	next := img
	body.applyTo(&next)
	if !slices.Equal(next.Secrets, img.Secrets) && role != store.RoleOwner {
		return errorf(http.StatusForbidden, "forbidden", "only the workspace's owner may change an image's secrets")
	}
	// A build that mounts secrets runs what its definition says with them:
	// a member who could change that could copy a secret into a layer, which
	// every member pulls. The owner alone changes it.
	if len(img.Secrets) > 0 && role != store.RoleOwner && next.Definition().Digest() != img.Definition().Digest() {
		return errorf(http.StatusForbidden, "forbidden", "this image's builds mount the workspace's secrets: only the workspace's owner may change what they build (its context, build arguments or target)")
	}
	if err := image.Validate(next, a.Rules); err != nil {
		return err
	}
	// The policy is not part of the definition: setting it alone moves
	// neither the status nor history.modified.
	now, user := a.Now(), subject(r.Context())
	policyChanged, err := setPolicy(&next, body.Rebuild, role, user, now)
	if err != nil {
		return err
	}
	if err := a.checkBindings(r.Context(), next); err != nil {
		return err
	}
	renamed := next.Name != img.Name && a.Content != nil
	if renamed && img.LatestBuild != nil && img.LatestBuild.Status.Active() {
		return errorf(http.StatusConflict, "build_active", "a build of this image is queued or running: rename it once the build has ended")
	}
	old, was := img, img.Version
	if body.definition() {
		img.Edit(next, user, now)
	} else {
		img.Version++
	}
	if policyChanged {
		img.Rebuild, img.RebuildState.SetBy = next.Rebuild, next.RebuildState.SetBy
	}
	if err := a.Store.UpdateImage(a.announce(r.Context(), events.ImageUpdated), img, was); err != nil {
		return err
	}
	if renamed {
		// The new name is claimed; the content follows it.
		if err := a.moveContent(r.Context(), old.Name, img.Name); err != nil {
			undo := img
			undo.Edit(old, subject(r.Context()), a.Now())
			if err := a.Store.UpdateImage(context.WithoutCancel(r.Context()), undo, img.Version); err != nil {
				a.Log.Error("undoing a rename", "image", img.ID, "error", err)
			}
			return err
		}
	}
	view := a.viewImage(img, a.Now())
	a.Events.Publish(events.ImageUpdated, img.ID, view)
	w.Header().Set("ETag", etag(img.Version))
	writeJSON(w, http.StatusOK, view)
	return nil
}

func (a *api) deleteImage(w http.ResponseWriter, r *http.Request) error {
	img, role, err := a.imageRole(r.Context(), r.PathValue("id"))
	if err != nil {
		return err
	}
	if role != store.RoleOwner {
		return errForbidden
	}
	if b := img.LatestBuild; b != nil && b.Status.Active() {
		// Stop the build first so nothing pushes to a deleted image.
		if _, err := a.settleCancel(r, img.ID, b.Number); err != nil && !isFinished(err) {
			return err
		}
	}
	// Content first: if this fails the name stays taken, so nothing of it
	// can be served to whoever claims the name next.
	if err := a.deleteContent(r.Context(), img.Name); err != nil {
		return err
	}
	if err := a.Store.DeleteImage(a.announce(r.Context(), events.ImageDeleted), img.ID); err != nil {
		return err
	}
	a.Events.Publish(events.ImageDeleted, img.ID, a.viewImage(img, a.Now()))
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// deleteContent removes the registry content of the image named name: its
// repository and its layer-cache repository.
func (a *api) deleteContent(ctx context.Context, name string) error {
	if a.Content == nil {
		return nil
	}
	for _, repo := range []string{name, image.CacheRepository(name)} {
		if err := a.Content.Delete(ctx, repo); err != nil {
			return fmt.Errorf("deleting the registry content of %s: %w", name, err)
		}
	}
	return nil
}

// moveContent moves an image's content, and its layer cache, from one name
// to another.
func (a *api) moveContent(ctx context.Context, from, to string) error {
	err := a.Content.Move(ctx, from, to)
	if err == nil {
		err = a.Content.Move(ctx, image.CacheRepository(from), image.CacheRepository(to))
	}
	if err != nil {
		return fmt.Errorf("moving the registry content of %s to %s: %w", from, to, err)
	}
	return nil
}

// announce returns ctx whose image change the store announces in its
// outbox as an event of type typ, with the image's view as data; Publish
// gives the event to the local handlers.
func (a *api) announce(ctx context.Context, typ string) context.Context {
	return store.Announce(ctx, events.ImageChange(typ, func(img image.Image) any { return a.viewImage(img, a.Now()) }))
}
