package functions

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2"

	"github.com/slipway-dev/slipway/events"
	"github.com/slipway-dev/slipway/pkg/build"
	"github.com/slipway-dev/slipway/pkg/image"
	"github.com/slipway-dev/slipway/pkg/rebuild"
	"github.com/slipway-dev/slipway/pkg/store"
)

// Rebuilds requests the builds the rebuild policy and the platform ask
// for (rebuild.Rebuilder).
type Rebuilds interface {
	Request(ctx context.Context, img image.Image, key string, trigger build.Trigger, by string, cause *build.Cause, change func(*image.RebuildState)) (rebuild.Outcome, error)
	CheckGit(ctx context.Context, img image.Image, via string) (rebuild.Outcome, error)
}

// HookPath is where the git hosts' push webhooks are served: HookPath +
// "{id}/git". It is outside /api/, whose every request carries a token.
const HookPath = "/hooks/v1/images/"

// RebuildView is an image's rebuild policy as the API shows it, with what
// Slipway keeps about it (read only).
type RebuildView struct {
	Schedule          *image.Schedule `json:"schedule"`
	OnBaseImageUpdate bool            `json:"on_base_image_update"`
	OnGitCommit       bool            `json:"on_git_commit"`
	SetBy             *image.Stamp    `json:"set_by"`
	CheckedAt         *time.Time      `json:"checked_at"`
	UpToDate          bool            `json:"up_to_date"`
	Pending           bool            `json:"pending"`
	Webhook           bool            `json:"webhook"`
}

func viewRebuild(img image.Image) RebuildView {
	st := img.RebuildState
	return RebuildView{
		Schedule: img.Rebuild.Schedule, OnBaseImageUpdate: img.Rebuild.OnBaseImageUpdate, OnGitCommit: img.Rebuild.OnGitCommit,
		SetBy: st.SetBy, CheckedAt: st.CheckedAt, UpToDate: st.UpToDate, Pending: st.Pending != nil, Webhook: st.HookSecret != "",
	}
}

// rebuildBody is the policy in a create or PATCH body. The read-only
// fields of RebuildView are accepted, so that a client may send back what
// it read, and ignored.
type rebuildBody struct {
	Schedule          *image.Schedule `json:"schedule"`
	OnBaseImageUpdate bool            `json:"on_base_image_update"`
	OnGitCommit       bool            `json:"on_git_commit"`
	SetBy             json.RawMessage `json:"set_by"`
	CheckedAt         json.RawMessage `json:"checked_at"`
	UpToDate          json.RawMessage `json:"up_to_date"`
	Pending           json.RawMessage `json:"pending"`
	Webhook           json.RawMessage `json:"webhook"`
}

func (b rebuildBody) policy() image.Rebuild {
	return image.Rebuild{Schedule: b.Schedule, OnBaseImageUpdate: b.OnBaseImageUpdate, OnGitCommit: b.OnGitCommit}
}

// setPolicy applies a create's or PATCH's rebuild field to img: only the
// owner may change the policy (anyone else: 403 and nothing changes), and
// it must fit img's context. It reports whether the policy changed.
func setPolicy(img *image.Image, body *rebuildBody, role store.Role, user string, now time.Time) (bool, error) {
	next := img.Rebuild
	if body != nil {
		next = body.policy()
	}
	if err := rebuild.Validate(next, img.Context.Type); err != nil {
		return false, err
	}
	if next.Equal(img.Rebuild) {
		return false, nil
	}
	if role != store.RoleOwner {
		return false, errorf(http.StatusForbidden, "forbidden", "only the workspace's owner may change an image's rebuild policy")
	}
	img.Rebuild = next
	img.RebuildState.SetBy = &image.Stamp{By: user, At: now}
	return true, nil
}

// webhookView is the push webhook of an image, with its secret.
type webhookView struct {
	URL    string `json:"url"`
	Secret string `json:"secret"`
}

func (a *api) hookURL(r *http.Request, id string) string {
	scheme := "http"
	if r.TLS != nil || r.Header.Get("X-Forwarded-Proto") == "https" {
		scheme = "https"
	}
	return scheme + "://" + r.Host + HookPath + id + "/git"
}

// ownedImage loads image {id} for its workspace's owner: 403 for a member.
func (a *api) ownedImage(r *http.Request) (image.Image, error) {
	img, role, err := a.imageRole(r.Context(), r.PathValue("id"))
	if err != nil {
		return img, err
	}
	if role != store.RoleOwner {
		return img, errForbidden
	}
	return img, nil
}

// getWebhook shows the owner the webhook's URL and secret.
func (a *api) getWebhook(w http.ResponseWriter, r *http.Request) error {
	img, err := a.ownedImage(r)
	if err != nil {
		return err
	}
	if img.RebuildState.HookSecret == "" || a.Opener == nil {
		return errorf(http.StatusNotFound, "not_found", "this image has no webhook secret yet: POST to create one")
	}
	secret, err := a.Opener.Open(img.RebuildState.HookSecret)
	if err != nil {
		return err
	}
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusOK, webhookView{URL: a.hookURL(r, img.ID), Secret: secret})
	return nil
}

// newWebhook makes a new webhook secret for the owner; the old one stops
// working.
func (a *api) newWebhook(w http.ResponseWriter, r *http.Request) error {
	img, err := a.ownedImage(r)
	if err != nil {
		return err
	}
	secret := rebuild.NewHookSecret()
	sealed, err := a.Sealer.Seal(secret)
	if err != nil {
		return err
	}
	if err := a.Store.UpdateRebuildState(r.Context(), img.ID, func(s *image.RebuildState) error {
		s.HookSecret = sealed
		return nil
	}); err != nil {
		return err
	}
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusCreated, webhookView{URL: a.hookURL(r, img.ID), Secret: secret})
	return nil
}

// hookResult is the answer to a webhook delivery or a rebuild request.
type hookResult struct {
	Triggered bool        `json:"triggered"`
	Pending   bool        `json:"pending"`
	Reason    string      `json:"reason"`
	Build     *build.View `json:"build"`
}

func (a *api) outcome(out rebuild.Outcome) hookResult {
	res := hookResult{Triggered: out.Build != nil, Pending: out.Pending, Reason: out.Reason}
	if out.Build != nil {
		v := out.Build.View(a.Now())
		res.Build, res.Reason = &v, "triggered"
	}
	return res
}

var errBadSignature = errorf(http.StatusUnauthorized, "bad_signature", "the delivery is not signed with this image's webhook secret (X-Hub-Signature-256, X-Gitlab-Token or X-Gitea-Signature)")

// gitHook is a git host's push webhook: a delivery signed with the image's
// secret checks its git ref now and builds a new commit, once per commit.
func (a *api) gitHook(w http.ResponseWriter, r *http.Request) error {
	img, err := a.Store.GetImage(r.Context(), r.PathValue("id"))
	if errors.Is(err, store.ErrNotFound) || (err == nil && img.RebuildState.HookSecret == "") {
		return errBadSignature // no secret to sign with: nothing tells the image exists
	}
	if err != nil {
		return err
	}
	if a.Opener == nil || a.Rebuilds == nil {
		return errorf(http.StatusServiceUnavailable, "unavailable", "this server does not take webhooks")
	}
	secret, err := a.Opener.Open(img.RebuildState.HookSecret)
	if err != nil {
		return err
	}
	body, _ := io.ReadAll(r.Body)
	if _, err := rebuild.VerifyHook(r.Header, body, secret); err != nil {
		return errBadSignature
	}
	payload, err := rebuild.HookPayload(r.Header.Get("Content-Type"), body)
	switch {
	case errors.Is(err, rebuild.ErrHookType):
		return errorf(http.StatusUnsupportedMediaType, "unsupported_media_type", "%v", err)
	case err != nil:
		return errorf(http.StatusBadRequest, "invalid_json", "%v", err)
	}
	switch {
	case r.Header.Get("X-GitHub-Event") == "ping" || r.Header.Get("X-Gitea-Event") == "ping":
		writeJSON(w, http.StatusOK, hookResult{Reason: "ping"})
		return nil
	case !img.Rebuild.OnGitCommit || img.Context.Git == nil:
		writeJSON(w, http.StatusOK, hookResult{Reason: "policy_off"})
		return nil
	case !rebuild.Tracks(img.Context.Git.Ref, rebuild.ParsePush(payload).Ref):
		writeJSON(w, http.StatusOK, hookResult{Reason: "not_tracked"})
		return nil
	}
	out, err := a.Rebuilds.CheckGit(r.Context(), img, "webhook")
	if err != nil {
		return errorf(http.StatusBadGateway, "git_unreachable", "listing the repository's refs failed: %v", err)
	}
	res := a.outcome(out)
	status := http.StatusOK
	if res.Triggered || res.Pending {
		status = http.StatusAccepted
	}
	writeJSON(w, status, res)
	return nil
}

// rebuildEvent handles platform.image.rebuild.requested: a build of the
// named image, once per event (source and id).
func (a *api) rebuildEvent(w http.ResponseWriter, r *http.Request, e cloudevents.Event) error {
	if a.Rebuilds == nil {
		w.WriteHeader(http.StatusAccepted)
		return nil
	}
	req, err := events.DecodeRebuild(e)
	if err != nil {
		return errorf(http.StatusBadRequest, "invalid_event", "%v", err)
	}
	img, err := a.Store.GetImage(r.Context(), req.Image)
	if errors.Is(err, store.ErrNotFound) {
		img, err = a.Store.GetImageByName(r.Context(), req.Image)
	}
	if errors.Is(err, store.ErrNotFound) {
		return errorf(http.StatusNotFound, "not_found", "no image has the id or name %q", req.Image)
	}
	if err != nil {
		return err
	}
	cause := &build.Cause{Event: &build.CauseEvent{Source: e.Source(), ID: e.ID(), Type: e.Type()}, Reason: req.Reason}
	out, err := a.Rebuilds.Request(r.Context(), img, events.Key(e), build.TriggerEvent, subject(r.Context()), cause, nil)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, a.outcome(out))
	return nil
}
