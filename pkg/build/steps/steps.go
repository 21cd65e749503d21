package steps

import (
	"fmt"
	"path"
	"regexp"
	"strings"
	"time"
)

// Status is how a step stands.
type Status string

// Step statuses.
const (
	Pending   Status = "pending"   // not reached yet; the build goes on
	Running   Status = "running"   // the executor is on it
	Done      Status = "done"      // it ran and ended well
	Cached    Status = "cached"    // the executor took its layer from the layer cache
	Skipped   Status = "skipped"   // the executor skipped it (MAINTAINER is deprecated)
	Failed    Status = "failed"    // the build failed here
	Cancelled Status = "cancelled" // it was running when the build was stopped
	NotRun    Status = "not_run"   // the build ended before reaching it
)

// Step is one Dockerfile instruction of a build, or the final push.
type Step struct {
	// Kind is "instruction", or "push" for the push of the built image.
	Kind string `json:"kind"`
	// Instruction is the instruction's text ("RUN make", "FROM x AS b"), or
	// "push REFERENCE".
	Instruction string `json:"instruction"`
	// Stage is the 0-based index of the instruction's stage; StageName its
	// "AS" name, nil when it has none.
	Stage     int     `json:"stage"`
	StageName *string `json:"stage_name"`
	// Line is the Dockerfile line it starts on, nil when the Dockerfile is
	// not known.
	Line            *int       `json:"line"`
	Status          Status     `json:"status"`
	StartedAt       *time.Time `json:"started_at"`
	DurationSeconds *float64   `json:"duration_seconds"`
	// ExitCode is the failed command's exit code, Explanation what it
	// means, and Error the executor's error, on the failed step only.
	ExitCode    *int    `json:"exit_code"`
	Explanation *string `json:"explanation"`
	Error       *string `json:"error"`
}

// Build is how the build that printed the log stands.
type Build struct {
	// State is the build's status: queued, running, succeeded, failed or
	// cancelled.
	State string
	// Reason is a failed build's failure reason (oom, timeout, ...).
	Reason string
	// FinishedAt is when it ended; Now is the time of the reading.
	FinishedAt *time.Time
	Now        time.Time
}

func (b Build) active() bool { return b.State == "queued" || b.State == "running" || b.State == "" }

// Kind of a failure.
const (
	FailRun   = "run"   // a command exited non-zero
	FailFiles = "files" // a file to copy is missing
	FailPull  = "pull"  // an image could not be pulled
	FailPush  = "push"  // the built image could not be pushed
	FailOther = "other" // anything else during an instruction
)

// Failure is where the executor failed, as its log tells.
type Failure struct {
	// Step is the failed step: its instruction, stage and line when known.
	Step Step
	// Kind says what failed (FailRun, ...).
	Kind string
	// ExitCode is the command's exit code for FailRun, -1 otherwise.
	ExitCode int
	// Pulled is the image that could not be pulled (FailPull).
	Pulled string
	// NotAStage says that the failed pull is of a COPY --from that names
	// no stage by a bare name: most likely a misspelled stage.
	NotAStage bool
	// Missing is the path that was not found (FailFiles), as the executor
	// saw it.
	Missing string
	// Error is the executor's error line.
	Error string
}

// Explain says what a command's exit code means.
func Explain(code int) string {
	switch {
	case code == 127:
		return "command not found: the shell could not find the program (is it installed in the image, and on the PATH?)"
	case code == 126:
		return "not executable: the program was found but could not be run (check its permissions and its #! line)"
	case code == 137:
		return "killed: the command was stopped with SIGKILL, because the build ran out of memory or was cancelled or timed out"
	case code == 1 || code == 2:
		return "the command failed: its output above says why"
	case code > 128 && code < 160:
		return fmt.Sprintf("the command was killed by signal %d", code-128)
	}
	return fmt.Sprintf("the command failed with exit code %d", code)
}

// slot is a step being assembled.
type slot struct {
	Step
	stage   int // index into Parser.stages, -1 when not started
	planPos int // position in the plan's stage, -1 without a plan
	at      time.Time
	cached  bool
	skip    bool // MAINTAINER: never run
	push    bool
}

// slots lays out the steps: the plan's instructions, each with what the
// log says of it, or without a plan what the log announced.
func (p *Parser) slots() []slot {
	var out []slot
	startOf := map[int]int{} // plan stage index -> index into p.stages (the first)
	for k, s := range p.stages {
		if _, ok := startOf[s.index]; !ok {
			startOf[s.index] = k
		}
	}
	if p.plan != nil {
		byPos := map[[2]int]announced{}
		for _, a := range p.started {
			if a.stage >= 0 {
				byPos[[2]int{p.stages[a.stage].index, a.pos}] = a
			}
		}
		for si, st := range p.plan.Stages {
			for pos, in := range st.Instructions {
				line := in.Line
				s := slot{Step: Step{Kind: "instruction", Instruction: in.Text, Stage: si, StageName: name(st.Name), Line: &line}, stage: -1, planPos: pos}
				if k, ok := startOf[si]; ok {
					s.stage = k
					if pos == 0 {
						s.at = p.stages[k].at
						if si == 0 && !p.first.IsZero() && p.first.Before(s.at) {
							s.at = p.first // the base image's pull comes first
						}
					}
				}
				if a, ok := byPos[[2]int{si, pos}]; ok {
					s.at, s.cached = a.at, a.cached
				}
				s.skip = in.Keyword == "MAINTAINER"
				out = append(out, s)
			}
		}
	} else {
		for k, st := range p.stages {
			s := slot{Step: Step{Kind: "instruction", Instruction: "FROM " + st.base, Stage: st.index}, stage: k, planPos: -1, at: st.at}
			if k == 0 && !p.first.IsZero() && p.first.Before(s.at) {
				s.at = p.first
			}
			out = append(out, s)
			for _, a := range p.started {
				if a.stage == k {
					out = append(out, slot{Step: Step{Kind: "instruction", Instruction: a.text, Stage: st.index}, stage: k, planPos: -1, at: a.at, cached: a.cached})
				}
			}
		}
	}
	if p.push != nil {
		out = append(out, slot{Step: Step{Kind: "push", Instruction: "push " + p.push.to, Stage: -1}, stage: -1, planPos: -1, at: p.push.at, push: true})
		if len(p.plan.stagesOrNil()) > 0 {
			out[len(out)-1].Stage = len(p.plan.Stages) - 1
		} else if n := len(p.stages); n > 0 {
			out[len(out)-1].Stage = p.stages[n-1].index
		}
	}
	return out
}

func (p *Plan) stagesOrNil() []Stage {
	if p == nil {
		return nil
	}
	return p.Stages
}

func name(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

// Steps returns the build's steps as the log read so far tells, for a
// build that stands as b says.
func (p *Parser) Steps(b Build) []Step {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := p.slots()
	fi, f := -1, (*Failure)(nil)
	if !b.active() && b.State != "succeeded" {
		// Only an ended build's error is the executor's last word (a RUN
		// may print lines that look like one).
		if fi, f = p.failure(out); fi == len(out) && f != nil {
			out = append(out, slot{Step: f.Step, stage: -1, planPos: -1})
		}
	}
	last := -1 // the last slot that started
	for i, s := range out {
		if !s.at.IsZero() {
			last = i
		}
	}
	end := b.Now
	if b.FinishedAt != nil {
		end = *b.FinishedAt
	}
	for i := range out {
		s := &out[i]
		switch {
		case s.skip:
			s.Status = Skipped
			continue
		case !s.at.IsZero():
			at := s.at
			s.StartedAt = &at
			next := time.Time{}
			for _, n := range out[i+1:] {
				if !n.at.IsZero() {
					next = n.at
					break
				}
			}
			switch {
			case !next.IsZero():
				s.Status = Done
				s.DurationSeconds = seconds(next.Sub(at))
			case s.push && p.push.pushed != nil:
				s.Status = Done
				s.DurationSeconds = seconds(p.push.pushed.Sub(at))
			case b.active():
				s.Status = Running
				s.DurationSeconds = seconds(end.Sub(at))
			case fi > i && !p.last.IsZero():
				// The failed step had not been announced: this one ended
				// at the executor's last line.
				s.Status = Done
				s.DurationSeconds = seconds(p.last.Sub(at))
			case b.State == "succeeded" || fi > i:
				s.Status = Done
				s.DurationSeconds = seconds(end.Sub(at))
			case b.State == "cancelled" || b.Reason == "cancelled":
				s.Status = Cancelled
				s.DurationSeconds = seconds(end.Sub(at))
			default:
				s.Status = Failed
				s.DurationSeconds = seconds(end.Sub(at))
				if fi < 0 {
					fi = i
				}
			}
			if s.Status == Done && s.cached {
				s.Status = Cached
			}
		case i == fi:
			s.Status = Failed
			if !p.last.IsZero() {
				at := p.last
				s.StartedAt = &at
				if b.FinishedAt != nil {
					s.DurationSeconds = seconds(b.FinishedAt.Sub(at))
				}
			}
		case i < last || b.State == "succeeded":
			// The executor runs every instruction in order: one it did not
			// announce before the last it did (or in a succeeded build) ran
			// where the log does not show it, cut by the log's cap.
			s.Status = Done
		case b.active():
			s.Status = Pending
		default:
			s.Status = NotRun
		}
	}
	if fi >= 0 && fi < len(out) {
		s := &out[fi]
		s.Status = Failed
		code := -1
		if f != nil {
			code = f.ExitCode
			e := f.Error
			s.Error = &e
		}
		if b.Reason == "oom" {
			code = 137
		}
		var x string
		switch {
		case code >= 0:
			s.ExitCode = &code
			x = Explain(code)
		case b.Reason == "timeout":
			x = "stopped: the build ran longer than its time limit"
		case f != nil:
			x = f.explain()
		}
		if x != "" {
			s.Explanation = &x
		}
	}
	steps := make([]Step, len(out))
	for i, s := range out {
		steps[i] = s.Step
	}
	return steps
}

func seconds(d time.Duration) *float64 {
	if d < 0 {
		d = 0
	}
	s := d.Seconds()
	return &s
}

// explain says what a failure that is not a command's exit means.
func (f *Failure) explain() string {
	switch f.Kind {
	case FailFiles:
		return fmt.Sprintf("a file it copies does not exist: %s", f.Missing)
	case FailPull:
		if f.NotAStage {
			return fmt.Sprintf("no stage is named %q, so the executor tried to pull an image of that name, which failed", f.Pulled)
		}
		return fmt.Sprintf("the image %s could not be pulled", f.Pulled)
	case FailPush:
		return "the built image could not be pushed"
	}
	return "the executor failed here"
}

// Failure returns where the executor failed, or nil when its log names no
// error.
func (p *Parser) Failure() *Failure {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := p.slots()
	_, f := p.failure(out)
	return f
}

var missingRE = regexp.MustCompile(`(?:fileinfo for|lstat|stat) ([^\s:]+)`)

// failure finds the slot of out where the executor failed: an index into
// out, len(out) for a step the slots lack (f.Step says which), or -1.
func (p *Parser) failure(out []slot) (int, *Failure) {
	e := p.errLine
	if e == "" {
		return -1, nil
	}
	lower := strings.ToLower(e)
	f := &Failure{Kind: FailOther, ExitCode: -1, Error: e}
	cur := len(p.stages) - 1 // the stage the executor was in
	lastIn := func() int {   // the last announced slot of the current stage, else its FROM
		idx := -1
		for i, s := range out {
			if s.stage == cur && cur >= 0 && !s.at.IsZero() && !s.push {
				idx = i
			}
		}
		return idx
	}
	set := func(i int) (int, *Failure) {
		if i >= 0 && i < len(out) {
			f.Step = out[i].Step
		}
		return i, f
	}
	switch {
	case strings.Contains(lower, "error pushing image") || strings.Contains(lower, "checking push permission"):
		f.Kind = FailPush
		for i, s := range out {
			if s.push {
				return set(i)
			}
		}
		f.Step = Step{Kind: "push", Instruction: "push", Stage: -1}
		return len(out), f
	case strings.Contains(lower, "failed to execute command"):
		f.Kind = FailRun
		f.ExitCode = p.exitCode
		return set(lastIn())
	case strings.Contains(lower, "failed to get files used from context") || strings.Contains(lower, "failed to optimize instructions"):
		f.Kind = FailFiles
		if m := missingRE.FindStringSubmatch(e); m != nil {
			f.Missing = m[1]
		}
		return p.missingFile(out, cur, f)
	case isPull(lower):
		f.Kind = FailPull
		f.Pulled = p.pulled
		return p.failedPull(out, f)
	}
	return set(lastIn())
}

// isPull reports whether an executor's error (lower case) is a failed
// image pull.
func isPull(lower string) bool {
	for _, s := range []string{"retrieving image", "manifest_unknown", "manifest unknown", "failed to get filesystem from image",
		"unauthorized", "name_unknown", "error building image: get ", "unable to complete operation"} {
		if strings.Contains(lower, s) {
			return true
		}
	}
	return false
}

// missingFile finds the COPY or ADD whose source the executor did not
// find. The executor checks an instruction's files before it announces
// the instruction (and, with the layer cache, every instruction of the
// stage before the first runs), so the failed one is the first COPY or ADD
// after the last announced one that copies that file.
func (p *Parser) missingFile(out []slot, cur int, f *Failure) (int, *Failure) {
	from := -1 // first slot of the current stage after its last announced one
	for i, s := range out {
		if s.stage == cur && cur >= 0 && !s.push {
			if !s.at.IsZero() {
				from = i + 1
			} else if from < 0 {
				from = i
			}
		}
	}
	if p.plan == nil || from < 0 {
		after := ""
		if from > 0 && from <= len(out) {
			after = fmt.Sprintf(" (after %q)", out[from-1].Instruction)
		}
		f.Step = Step{Kind: "instruction", Instruction: "COPY or ADD of " + f.Missing + after, Stage: max(0, stageIndex(p, cur))}
		return len(out), f
	}
	firstCopy := -1
	for i := from; i < len(out) && out[i].stage == cur; i++ {
		in := p.plan.Stages[out[i].Stage].Instructions[out[i].planPos]
		if in.Keyword != "COPY" && in.Keyword != "ADD" {
			continue
		}
		if firstCopy < 0 {
			firstCopy = i
		}
		if f.Missing != "" && copies(in, f.Missing) {
			f.Step = out[i].Step
			return i, f
		}
	}
	if firstCopy >= 0 {
		f.Step = out[firstCopy].Step
		return firstCopy, f
	}
	if from < len(out) {
		f.Step = out[from].Step
	}
	return from, f
}

func stageIndex(p *Parser, k int) int {
	if k < 0 || k >= len(p.stages) {
		return -1
	}
	return p.stages[k].index
}

// copies reports whether a COPY or ADD's sources may name missing (a path
// as the executor saw it: under its context or a stage's directory).
func copies(in Instruction, missing string) bool {
	srcs := in.Args
	if len(srcs) > 1 {
		srcs = srcs[:len(srcs)-1]
	}
	mb := path.Base(missing)
	for _, s := range srcs {
		s = strings.TrimSuffix(s, "/")
		if ok, _ := path.Match(path.Base(s), mb); ok || strings.HasSuffix(missing, "/"+strings.TrimPrefix(s, "./")) {
			return true
		}
	}
	return false
}

// failedPull finds the instruction whose image the executor could not
// pull: a COPY --from that names no stage, or a FROM.
func (p *Parser) failedPull(out []slot, f *Failure) (int, *Failure) {
	want := strings.ToLower(f.Pulled)
	if p.plan != nil && want != "" {
		for i, s := range out {
			if s.planPos < 0 {
				continue
			}
			in := p.plan.Stages[s.Stage].Instructions[s.planPos]
			if ref, ok := in.Flags["from"]; ok && (in.Keyword == "COPY" || in.Keyword == "ADD") &&
				strings.ToLower(ref) == want && p.plan.stageOf(ref, s.Stage) < 0 {
				f.NotAStage = !strings.ContainsAny(ref, "/:@.$")
				f.Step = s.Step
				return i, f
			}
		}
		for i, s := range out {
			if s.planPos == 0 && strings.ToLower(p.plan.Stages[s.Stage].Base) == want {
				f.Step = s.Step
				return i, f
			}
		}
	}
	// A FROM with ARGs, or no plan: the first stage that did not start.
	for i, s := range out {
		if s.planPos == 0 && s.stage < 0 {
			f.Step = s.Step
			return i, f
		}
	}
	f.Step = Step{Kind: "instruction", Instruction: "FROM " + f.Pulled, Stage: len(p.stages)}
	return len(out), f
}
