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
	TriggerManual   Trigger = "manual"
	TriggerSchedule Trigger = "schedule"
	TriggerEvent    Trigger = "event"
)

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

// Push is the result of pushing a build to one destination.
type Push struct {
	Reference string  `json:"reference"`
	Status    string  `json:"status"` // "pushed" or "failed"
	Error     *string `json:"error"`
}

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
// internal reference and the results of its pushes.
func (b *Build) Succeed(digest, reference string, pushes []Push, now time.Time) error {
	if b.Status != Running {
		return fmt.Errorf("%w: succeed a %s build", ErrTransition, b.Status)
	}
	b.finish(Succeeded, now)
	b.Digest, b.Reference = &digest, &reference
	b.Pushes = pushes
	return nil
}

// FailPush ends a running build whose image was built and stored in the
// internal registry but could not be pushed to every destination: the build
// keeps its digest and per-destination results, and fails with reason push.
func (b *Build) FailPush(digest, reference string, pushes []Push, message string, now time.Time) error {
	if b.Status != Running {
		return fmt.Errorf("%w: fail a %s build", ErrTransition, b.Status)
	}
	b.finish(Failed, now)
	b.Digest, b.Reference = &digest, &reference
	b.Pushes = pushes
	b.Failure = &Failure{Reason: ReasonPush, Message: message}
	return nil
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
	return View{Build: b, DurationSeconds: b.Duration(now)}
}
