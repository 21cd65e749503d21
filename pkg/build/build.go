// Package build owns a build's lifecycle: its record, its states and the
// transitions between them, and the one mapping from what a runner observed
// to the contract's failure reasons. Handlers, runners and reconcilers call
// the functions here; they never set a build's status fields themselves.
package build

import (
	"errors"
	"fmt"
	"time"
)

// Status is where a build is in its lifecycle.
type Status string

// Build statuses.
const (
	Queued    Status = "queued"
	Running   Status = "running"
	Succeeded Status = "succeeded"
	Failed    Status = "failed"
	Cancelled Status = "cancelled"
)

// Active reports whether a build in status s has not ended yet.
func (s Status) Active() bool { return s == Queued || s == Running }

// Trigger says what started a build.
type Trigger string

// Triggers.
const (
	TriggerManual    Trigger = "manual"
	TriggerSchedule  Trigger = "schedule"
	TriggerBaseImage Trigger = "base_image"
	TriggerGit       Trigger = "git"
	TriggerEvent     Trigger = "event"
)

// Base is what one FROM of a build resolved to: the reference as written
// (after the ARG defaults) and the manifest digest the registry had for it
// when the build started.
type Base struct {
	Ref    string `json:"ref"`
	Digest string `json:"digest"`
}

// BaseChange is a base image that moved: its digest at the last build and now.
type BaseChange struct {
	Ref string `json:"ref"`
	Old string `json:"old"`
	New string `json:"new"`
}

// CauseEvent names the CloudEvent that asked for a build.
type CauseEvent struct {
	Source string `json:"source"`
	ID     string `json:"id"`
	Type   string `json:"type"`
}

// Cause says what made Slipway start a build by itself (see package
// rebuild); nil for a manual build. Only the fields of its trigger are set.
type Cause struct {
	// Slot is the scheduled time a schedule build is for; MissedSlots counts
	// the earlier slots missed while the service was down, caught up by it.
	Slot        *time.Time `json:"slot,omitempty"`
	MissedSlots int        `json:"missed_slots,omitempty"`
	// Bases are the base images that moved (trigger base_image).
	Bases []BaseChange `json:"bases,omitempty"`
	// Commit is the new commit of the git ref, Previous the one built
	// before, Via how it was seen: "poll" or "webhook" (trigger git).
	Commit   string `json:"commit,omitempty"`
	Previous string `json:"previous_commit,omitempty"`
	Via      string `json:"via,omitempty"`
	// Event and Reason: the CloudEvent that asked and why (trigger event).
	Event  *CauseEvent `json:"event,omitempty"`
	Reason string      `json:"reason,omitempty"`
	// Coalesced counts the further triggers that arrived while this build
	// waited for the image's active build to end; they are served by it.
	Coalesced int `json:"coalesced,omitempty"`
}

// Reason classifies a failed or cancelled build.
type Reason string

// Failure reasons of the contract.
const (
	ReasonDockerfile  Reason = "dockerfile"
	ReasonGit         Reason = "git"
	ReasonBaseImage   Reason = "base_image"
	ReasonPush        Reason = "push"
	ReasonOOM         Reason = "oom"
	ReasonTimeout     Reason = "timeout"
	ReasonCancelled   Reason = "cancelled"
	ReasonInterrupted Reason = "interrupted"
	ReasonInternal    Reason = "internal"
)

// Failure explains why a build did not succeed.
type Failure struct {
	Reason  Reason `json:"reason"`
	Message string `json:"message"`
}

// Push is the result of pushing a build to one destination: the internal
// registry's tag (first) and each external destination, each with its own
// status, error and the time of its last attempt.
type Push struct {
	Reference string     `json:"reference"`
	Status    string     `json:"status"` // PushPushed, PushFailed or PushPushing
	Error     *string    `json:"error"`
	At        *time.Time `json:"at,omitempty"`
}

// Push statuses. Pushing marks destinations whose push is under way: the
// cluster's reporter claims them with it before it pushes, so that a
// redelivered event does not push them twice.
const (
	PushPushed  = "pushed"
	PushFailed  = "failed"
	PushPushing = "pushing"
)

// ErrClaimed is returned by ClaimPushes while another claim on the same
// build's pushes is under way.
var ErrClaimed = errors.New("build: its pushes are under way elsewhere")

// Build is one build of an image.
type Build struct {
	Image       string     `json:"image"`
	Number      int        `json:"number"`
	Status      Status     `json:"status"`
	RequestedBy string     `json:"requested_by"`
	Trigger     Trigger    `json:"trigger"`
	QueuedAt    time.Time  `json:"queued_at"`
	StartedAt   *time.Time `json:"started_at"`
	FinishedAt  *time.Time `json:"finished_at"`
	Digest      *string    `json:"digest"`
	Reference   *string    `json:"reference"`
	Commit      *string    `json:"commit"`
	Pushes      []Push     `json:"pushes"`
	Failure     *Failure   `json:"failure"`
	// Definition is the image's build definition when the build was
	// created: what it builds. Nil on builds stored before definitions were
	// kept.
	Definition *Definition `json:"definition"`
	// InputsDigest is the digest of the build's Inputs, recorded when it
	// succeeds.
	InputsDigest *string `json:"inputs_digest"`
	// Unchanged says that the succeeded build produced the digest the
	// image already had: nothing changed, the image's reference stays.
	Unchanged bool `json:"unchanged"`
	// Cause is what started an automatic build; nil for a manual one.
	Cause *Cause `json:"cause"`
	// Bases are the digests the build's FROMs resolved to when it started
	// (empty until then, and where they could not be resolved).
	Bases []Base `json:"bases"`
	// LogPruned says that the build's log was deleted by the log
	// retention (the record stays).
	LogPruned bool `json:"log_pruned,omitempty"`
	// DefinitionRev is the image definition revision this build builds.
	DefinitionRev int64 `json:"-"`
}

// ID names the build across the platform.
func (b *Build) ID() string { return fmt.Sprintf("%s-%d", b.Image, b.Number) }

// Duration is the time from start to finish, or to now while running.
func (b *Build) Duration(now time.Time) *float64 {
	if b.StartedAt == nil {
		return nil
	}
	end := now
	if b.FinishedAt != nil {
		end = *b.FinishedAt
	}
	d := end.Sub(*b.StartedAt).Seconds()
	return &d
}

// ErrTransition is returned for a transition the lifecycle does not allow,
// such as cancelling a finished build.
var ErrTransition = errors.New("build: transition not allowed")

// New returns a queued build.
func New(image string, rev int64, by string, trigger Trigger, now time.Time) Build {
	return Build{Image: image, Status: Queued, RequestedBy: by, Trigger: trigger, QueuedAt: now, DefinitionRev: rev, Pushes: []Push{}}
}

// Stamp sets the build's queue time. A store calls it in the transaction
// that queues the build, so that queue times follow the order in which
// builds were queued: the queue serves them by it.
func (b *Build) Stamp(now time.Time) { b.QueuedAt = now }

// Start moves a queued build to running.
func (b *Build) Start(now time.Time) error {
	if b.Status != Queued {
		return fmt.Errorf("%w: start a %s build", ErrTransition, b.Status)
	}
	b.Status = Running
	b.StartedAt = &now
	return nil
}

// SetBases records the digests the build's bases resolved to.
func (b *Build) SetBases(bases []Base) { b.Bases = bases }

// SetCommit records the Git commit a build builds.
func (b *Build) SetCommit(sha string) { b.Commit = &sha }

// Cancel ends a queued or running build as cancelled.
func (b *Build) Cancel(by string, now time.Time) error {
	if !b.Status.Active() {
		return fmt.Errorf("%w: cancel a %s build", ErrTransition, b.Status)
	}
	b.finish(Cancelled, now)
	b.Failure = &Failure{Reason: ReasonCancelled, Message: "cancelled by " + by}
	return nil
}

// Fail ends an active build as failed with reason and message.
func (b *Build) Fail(reason Reason, message string, now time.Time) error {
	if !b.Status.Active() {
		return fmt.Errorf("%w: fail a %s build", ErrTransition, b.Status)
	}
	b.finish(Failed, now)
	b.Failure = &Failure{Reason: reason, Message: message}
	return nil
}

// Succeed ends a running build as succeeded with its digest and pullable
// internal reference and the results of its pushes. The internal push
// decides success: an external destination that refused is a push whose
// status is failed, and the build has succeeded all the same (it can be
// pushed there again: RecordPush).
func (b *Build) Succeed(digest, reference string, pushes []Push, now time.Time) error {
	if b.Status != Running {
		return fmt.Errorf("%w: succeed a %s build", ErrTransition, b.Status)
	}
	b.finish(Succeeded, now)
	b.Digest, b.Reference = &digest, &reference
	b.Pushes = pushes
	return nil
}

// ClaimPushes marks a running build's pushes as under way at now (each
// PushPushing), unless an earlier claim younger than bound holds them:
// then ErrClaimed. A claim older than bound is taken over (its claimant
// died or ran out of time).
func (b *Build) ClaimPushes(pushes []Push, bound time.Duration, now time.Time) error {
	if b.Status != Running {
		return fmt.Errorf("%w: push a %s build", ErrTransition, b.Status)
	}
	for _, p := range b.Pushes {
		if p.Status == PushPushing && p.At != nil && now.Sub(*p.At) < bound {
			return ErrClaimed
		}
	}
	b.Pushes = make([]Push, len(pushes))
	for i, p := range pushes {
		p.Status, p.Error, p.At = PushPushing, nil, &now
		b.Pushes[i] = p
	}
	return nil
}

// ErrNoDestination is returned by RecordPush for a reference the build
// did not push to.
var ErrNoDestination = errors.New("build: no such destination")

// RecordPush records the result of pushing a succeeded build again to one
// of its external destinations (p.Reference; not the first push, the
// internal one). A result older than the one recorded (two pushes again
// at once) leaves it.
func (b *Build) RecordPush(p Push) error {
	if b.Status != Succeeded {
		return fmt.Errorf("%w: push a %s build again", ErrTransition, b.Status)
	}
	for i := 1; i < len(b.Pushes); i++ {
		if b.Pushes[i].Reference != p.Reference {
			continue
		}
		if at := b.Pushes[i].At; at != nil && p.At != nil && at.After(*p.At) {
			return nil
		}
		b.Pushes[i] = p
		return nil
	}
	return ErrNoDestination
}

// NoteUnchanged marks a succeeded build as unchanged when its digest is
// previous, the digest of the image's last successful build.
func (b *Build) NoteUnchanged(previous string) {
	b.Unchanged = b.Status == Succeeded && b.Digest != nil && previous != "" && *b.Digest == previous
}

func (b *Build) finish(s Status, now time.Time) {
	b.Status = s
	b.FinishedAt = &now
}

// View is a build as the API and events show it.
type View struct {
	Build
	DurationSeconds *float64 `json:"duration_seconds"`
}

// View returns the build's API form at time now.
func (b Build) View(now time.Time) View {
	if b.Pushes == nil {
		b.Pushes = []Push{}
	}
	if b.Bases == nil {
		b.Bases = []Base{}
	}
	return View{Build: b, DurationSeconds: b.Duration(now)}
}
