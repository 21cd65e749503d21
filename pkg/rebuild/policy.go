// Package rebuild owns the rebuild policy: the builds Slipway starts by
// itself. It validates an image's policy, works out its schedule's slots,
// watches base images and git refs for changes, checks the git hosts'
// push webhooks, and requests the builds (store.Store.RequestBuild), one
// per slot, moved base, commit or event, coalesced while a build of the
// image is active. A Rebuilder does one pass at a time (Tick): the server's
// ticker drives it locally, the reconciler's PingSource in the cluster.
package rebuild

import (
	"fmt"
	"strings"
	"time"
	_ "time/tzdata" // zones do not depend on the host's zoneinfo

	"github.com/robfig/cron/v3"

	"github.com/slipway-dev/slipway/pkg/image"
)

// parser reads 5-field cron expressions and the descriptors @yearly,
// @annually, @monthly, @weekly, @daily, @midnight and @hourly.
var parser = cron.NewParser(cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow | cron.Descriptor)

// Validate checks a policy for an image whose context is of type
// contextType. Errors are *image.InvalidError naming the field.
func Validate(p image.Rebuild, contextType string) error {
	if p.Schedule != nil {
		if _, err := ParseSchedule(*p.Schedule); err != nil {
			return err
		}
	}
	if p.OnGitCommit && contextType != image.ContextGit {
		return &image.InvalidError{Field: "rebuild.on_git_commit", Message: "only a git context has commits to follow: set it on an image whose context is of type git"}
	}
	return nil
}

// Schedule is a parsed schedule: Next gives the slot after a time.
type Schedule struct {
	spec *cron.SpecSchedule
}

// ParseSchedule reads s; its errors are *image.InvalidError.
func ParseSchedule(s image.Schedule) (Schedule, error) {
	expr := strings.TrimSpace(s.Cron)
	switch {
	case expr == "":
		return Schedule{}, &image.InvalidError{Field: "rebuild.schedule.cron", Message: "is required: a 5-field cron expression such as \"0 3 * * 1\", or @daily, @weekly..."}
	case len(expr) > 200:
		return Schedule{}, &image.InvalidError{Field: "rebuild.schedule.cron", Message: "is longer than 200 characters"}
	case strings.HasPrefix(expr, "@every"):
		return Schedule{}, &image.InvalidError{Field: "rebuild.schedule.cron", Message: "@every is not supported: use a 5-field cron expression or @hourly, @daily, @weekly, @monthly, @yearly"}
	case strings.HasPrefix(expr, "TZ=") || strings.HasPrefix(expr, "CRON_TZ="):
		return Schedule{}, &image.InvalidError{Field: "rebuild.schedule.cron", Message: "name the time zone in rebuild.schedule.timezone, not in the expression"}
	}
	sched, err := parser.Parse(expr)
	if err != nil {
		return Schedule{}, &image.InvalidError{Field: "rebuild.schedule.cron", Message: fmt.Sprintf("%q is not a cron expression: %v (want 5 fields: minute hour day-of-month month day-of-week, or @daily...)", s.Cron, err)}
	}
	spec, ok := sched.(*cron.SpecSchedule)
	if !ok {
		return Schedule{}, &image.InvalidError{Field: "rebuild.schedule.cron", Message: fmt.Sprintf("%q is not supported", s.Cron)}
	}
	loc, err := location(s.Timezone)
	if err != nil {
		return Schedule{}, err
	}
	copied := *spec
	copied.Location = loc
	// A spec that never fires (February 30th) makes Next return zero.
	if copied.Next(time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)).IsZero() {
		return Schedule{}, &image.InvalidError{Field: "rebuild.schedule.cron", Message: fmt.Sprintf("%q never fires", s.Cron)}
	}
	return Schedule{&copied}, nil
}

// location loads an IANA zone; "" is UTC. "Local" depends on the server,
// so it is refused.
func location(tz string) (*time.Location, error) {
	if tz == "" {
		return time.UTC, nil
	}
	if tz == "Local" || len(tz) > 64 || strings.ContainsAny(tz, " \\") || strings.HasPrefix(tz, "/") || strings.Contains(tz, "..") {
		return nil, &image.InvalidError{Field: "rebuild.schedule.timezone", Message: fmt.Sprintf("%q is not an IANA time zone such as Europe/Berlin or UTC", tz)}
	}
	loc, err := time.LoadLocation(tz)
	if err != nil {
		return nil, &image.InvalidError{Field: "rebuild.schedule.timezone", Message: fmt.Sprintf("%q is not an IANA time zone such as Europe/Berlin or UTC", tz)}
	}
	return loc, nil
}

// Next is the first slot after t.
func (s Schedule) Next(t time.Time) time.Time { return s.spec.Next(t) }

// maxCount bounds the missed slots Due counts one by one.
const maxCount = 1000

// Due returns the latest slot in (after, now], and how many slots in
// (after, now] came before it (missed, at most maxCount); ok is false
// when no slot is due. However long the downtime, it costs a bounded
// number of steps: past maxCount slots it jumps close to now.
func (s Schedule) Due(after, now time.Time) (slot time.Time, missed int, ok bool) {
	next := s.Next(after)
	if next.IsZero() || next.After(now) {
		return time.Time{}, 0, false
	}
	count := 0
	for {
		n := s.Next(next)
		if n.IsZero() || n.After(now) {
			return next, min(count, maxCount), true
		}
		count++
		next = n
		if count == maxCount {
			// Find the last slot before now in a window that doubles back
			// from now, then step from there.
			for w := time.Minute; ; w *= 2 {
				start := now.Add(-w)
				if !start.After(next) {
					break
				}
				if n := s.Next(start); !n.IsZero() && !n.After(now) {
					next = n
					break
				}
			}
		}
	}
}
