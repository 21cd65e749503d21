package image

import (
	"time"

	"github.com/slipway-dev/slipway/pkg/build"
)

// Rebuild is an image's rebuild policy: when Slipway builds the image by
// itself (see package rebuild). It is not part of the build definition:
// changing it moves neither the status nor history.modified.
type Rebuild struct {
	// Schedule, when set, builds at each slot of a cron expression.
	Schedule *Schedule `json:"schedule"`
	// OnBaseImageUpdate builds when a base image the last build used moved.
	OnBaseImageUpdate bool `json:"on_base_image_update"`
	// OnGitCommit builds when the git context's ref has a new commit.
	OnGitCommit bool `json:"on_git_commit"`
}

// Schedule is a cron expression (5 fields or a descriptor such as
// @daily) read in an IANA time zone (UTC when empty).
type Schedule struct {
	Cron     string `json:"cron"`
	Timezone string `json:"timezone"`
}

// Any reports whether the policy builds by itself at all.
func (r Rebuild) Any() bool { return r.Schedule != nil || r.OnBaseImageUpdate || r.OnGitCommit }

// Equal reports whether two policies are the same.
func (r Rebuild) Equal(o Rebuild) bool {
	if (r.Schedule == nil) != (o.Schedule == nil) || (r.Schedule != nil && *r.Schedule != *o.Schedule) {
		return false
	}
	return r.OnBaseImageUpdate == o.OnBaseImageUpdate && r.OnGitCommit == o.OnGitCommit
}

// RebuildState is what Slipway keeps about an image's rebuild policy: who
// set it, and what the automatic triggers saw and did last. Stores keep
// all of it but SetBy across UpdateImage, as they keep a build's results:
// it changes through UpdateRebuildState and RequestBuild.
type RebuildState struct {
	// SetBy is who set the policy last, and when: automatic builds are
	// requested in their name, and a schedule's first slot follows At.
	SetBy *Stamp `json:"set_by,omitempty"`
	// HookSecret is the git push webhook's secret, sealed (package secret);
	// empty until the owner asks for one.
	HookSecret string `json:"hook_secret,omitempty"`

	// LastSlot is the last schedule slot handled (built or caught up).
	LastSlot *time.Time `json:"last_slot,omitempty"`
	// CheckedAt is when the base images and the git ref were last checked,
	// and UpToDate whether they were unchanged then.
	CheckedAt *time.Time `json:"checked_at,omitempty"`
	UpToDate  bool       `json:"up_to_date,omitempty"`
	// Commit is the last commit a git trigger acted on.
	Commit string `json:"commit,omitempty"`
	// Pending is a build an automatic trigger asked for while another build
	// of the image was active: it is created when that build ends.
	Pending *build.Build `json:"pending,omitempty"`
}

// KeepTriggerState copies into s all but SetBy of the stored state cur.
func (s *RebuildState) KeepTriggerState(cur RebuildState) {
	setBy := s.SetBy
	*s = cur
	s.SetBy = setBy
}

// Automatic reports whether the image needs the rebuild policy's
// attention: it has a policy or a pending build.
func (img *Image) Automatic() bool { return img.Rebuild.Any() || img.RebuildState.Pending != nil }
