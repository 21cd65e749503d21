package server_test

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// Steps of real builds: Kaniko in runc, its log read back by the steps
// endpoint against the image's Dockerfile.

// stepJSON is a step as the API returns it.
type stepJSON struct {
	Kind            string     `json:"kind"`
	Instruction     string     `json:"instruction"`
	Stage           int        `json:"stage"`
	StageName       *string    `json:"stage_name"`
	Line            *int       `json:"line"`
	Status          string     `json:"status"`
	StartedAt       *time.Time `json:"started_at"`
	DurationSeconds *float64   `json:"duration_seconds"`
	ExitCode        *int       `json:"exit_code"`
	Explanation     *string    `json:"explanation"`
	Error           *string    `json:"error"`
}

func (e *env) steps(subject, id string, n int) ([]stepJSON, bool) {
	e.t.Helper()
	var out struct {
		Steps []stepJSON `json:"steps"`
		Lines bool       `json:"lines"`
	}
	if res := e.call("GET", fmt.Sprintf("/api/v1/images/%s/builds/%d/steps", id, n), subject, nil, &out); res.StatusCode != 200 {
		e.t.Fatalf("steps of %s/%d as %s: %d", id, n, subject, res.StatusCode)
	}
	return out.Steps, out.Lines
}

func TestBuildSteps(t *testing.T) {
	e := buildEnv(t, nil)
	dockerfile := fmt.Sprintf(`ARG BASE=%s
FROM $BASE AS builder
ARG GREETING=hello
RUN mkdir -p /out && \
    echo "$GREETING" > /out/greeting && sleep 2
FROM $BASE
ENV MODE=test
WORKDIR /srv/app
COPY --from=builder /out/greeting ./greeting.txt
RUN echo "$MODE" > mode
LABEL org.example.team="images"
CMD ["cat", "/srv/app/greeting.txt"]
`, e.base())
	img := e.newImage(localImage("team/steps", dockerfile))
	n := e.startBuild(img.ID)
	b := e.waitFor(img.ID, n, 2*time.Minute, ended)
	if b.Status != "succeeded" {
		t.Fatalf("build: %+v\n%s", b, e.buildLog(img.ID, n))
	}
	steps, lines := e.steps("bob", img.ID, n) // a member reads them as she reads the build
	want := []struct {
		instruction string
		stage       int
		line        int
	}{
		{"FROM $BASE AS builder", 0, 2},
		{"ARG GREETING=hello", 0, 3},
		{`RUN mkdir -p /out &&     echo "$GREETING" > /out/greeting && sleep 2`, 0, 4},
		{"FROM $BASE", 1, 6},
		{"ENV MODE=test", 1, 7},
		{"WORKDIR /srv/app", 1, 8},
		{"COPY --from=builder /out/greeting ./greeting.txt", 1, 9},
		{`RUN echo "$MODE" > mode`, 1, 10},
		{`LABEL org.example.team="images"`, 1, 11},
		{`CMD ["cat", "/srv/app/greeting.txt"]`, 1, 12},
	}
	if !lines || len(steps) != len(want)+1 {
		t.Fatalf("lines %v, %d steps, want %d and the push: %+v", lines, len(steps), len(want), steps)
	}
	var sum float64
	for i, w := range want {
		s := steps[i]
		if s.Kind != "instruction" || s.Instruction != w.instruction || s.Stage != w.stage || s.Line == nil || *s.Line != w.line ||
			s.Status != "done" || s.StartedAt == nil || s.DurationSeconds == nil || s.ExitCode != nil || s.Error != nil {
			t.Errorf("step %d: %+v; want %q at line %d of stage %d, done", i, s, w.instruction, w.line, w.stage)
			continue
		}
		if s.StartedAt.Before(b.StartedAt.Truncate(time.Second)) || s.StartedAt.After(*b.FinishedAt) {
			t.Errorf("step %d started at %s, outside the build (%s to %s)", i, s.StartedAt, b.StartedAt, b.FinishedAt)
		}
		if i > 0 && s.StartedAt.Before(*steps[i-1].StartedAt) {
			t.Errorf("step %d started before step %d", i, i-1)
		}
		sum += *s.DurationSeconds
	}
	if steps[0].StageName == nil || *steps[0].StageName != "builder" || steps[3].StageName != nil {
		t.Errorf("stage names %v and %v", steps[0].StageName, steps[3].StageName)
	}
	// The RUN that sleeps 2 s took at least that (and its snapshot after).
	if d := *steps[2].DurationSeconds; d < 2 || d > *b.Duration+1 {
		t.Errorf("the sleeping RUN took %v s", d)
	}
	push := steps[len(steps)-1]
	if push.Kind != "push" || push.Instruction != "push "+e.base()[:strings.Index(e.base(), "/")]+"/team/steps:latest" || push.Status != "done" {
		t.Errorf("the push step: %+v", push)
	}
	if sum > *b.Duration+1 {
		t.Errorf("the steps took %v s, the whole build %v s", sum, *b.Duration)
	}

	// Rights and bad input, as for the build.
	e.callErr("GET", fmt.Sprintf("/api/v1/images/%s/builds/%d/steps", img.ID, n), "carol", nil, 404, "not_found")
	e.callErr("GET", fmt.Sprintf("/api/v1/images/%s/builds/%d/steps", img.ID, n+1), "alice", nil, 404, "not_found")
	e.callErr("GET", fmt.Sprintf("/api/v1/images/%s/builds/x/steps", img.ID), "alice", nil, 404, "not_found")
	e.callErr("GET", "/api/v1/images/nope/builds/1/steps", "alice", nil, 404, "not_found")
	e.callErr("GET", fmt.Sprintf("/api/v1/images/%s/builds/%d/steps", img.ID, n), "", nil, 401, "unauthenticated")

	// An edit of the Dockerfile since does not change the build's steps:
	// the build keeps the definition it built.
	before, _ := e.steps("alice", img.ID, n)
	res := e.call("GET", "/api/v1/images/"+img.ID, "alice", nil, nil)
	e.call("PATCH", "/api/v1/images/"+img.ID, "alice", map[string]any{"context": map[string]any{"type": "local",
		"dockerfile": "FROM " + e.base() + "\nRUN true\n"}}, nil, "If-Match", res.Header.Get("ETag"))
	steps, lines = e.steps("alice", img.ID, n)
	if !lines || len(steps) != len(before) || steps[2].Instruction != want[2].instruction || steps[2].Line == nil || *steps[2].Line != *before[2].Line {
		t.Errorf("steps after an edit: lines %v, %+v", lines, steps)
	}
}

// TestFailedStep: the failure, and the steps, name the instruction that
// failed, with its line and the exit code explained.
func TestFailedStep(t *testing.T) {
	e := buildEnv(t, nil)
	cases := []struct {
		name, dockerfile string
		reason           string
		message          string // in the build's failure message
		step             int    // the failed step
		exit             int    // its exit code, -1 for none
		explanation      string
	}{
		{"exit127", "FROM " + e.base() + "\nRUN echo ok\nRUN nosuchcommand --flag\nRUN echo never\n", "dockerfile",
			`instruction "RUN nosuchcommand --flag" (line 3) failed with exit code 127: command not found`, 2, 127, "command not found"},
		// The executor checks a COPY's files before it announces the COPY:
		// the RUN before it is not to blame.
		{"copy-missing", "FROM " + e.base() + "\nRUN echo ok\nCOPY missing.txt /x\nRUN echo never\n", "dockerfile",
			`instruction "COPY missing.txt /x" (line 3) failed: a file it copies does not exist`, 2, -1, "missing.txt"},
		// COPY --from naming no stage is refused at SAVE
		// (TestSaveRefusesWhatCannotBeBuilt), and before the executor runs
		// for a git context (TestGitDockerfileCheckedAtBuild).
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			img := e.newImage(localImage("team/"+c.name, c.dockerfile))
			n := e.startBuild(img.ID)
			b := e.waitFor(img.ID, n, 2*time.Minute, ended)
			if b.Status != "failed" || b.Failure == nil || b.Failure.Reason != c.reason || !strings.Contains(b.Failure.Message, c.message) {
				t.Fatalf("failure %+v, want %s: %q\n%s", b.Failure, c.reason, c.message, e.buildLog(img.ID, n))
			}
			if strings.Contains(b.Failure.Message, "RUN echo ok") {
				t.Errorf("the failure blames the RUN before: %s", b.Failure.Message)
			}
			steps, _ := e.steps("bob", img.ID, n)
			var failed []int
			for i, s := range steps {
				if s.Status == "failed" {
					failed = append(failed, i)
				}
			}
			if len(failed) != 1 || failed[0] != c.step {
				t.Fatalf("failed steps %v, want [%d]: %+v\n%s", failed, c.step, steps, e.buildLog(img.ID, n))
			}
			s := steps[c.step]
			if (c.exit < 0) != (s.ExitCode == nil) || (s.ExitCode != nil && *s.ExitCode != c.exit) ||
				s.Explanation == nil || !strings.Contains(*s.Explanation, c.explanation) || s.Error == nil || *s.Line != c.step+1 {
				t.Errorf("the failed step: %+v", s)
			}
			for _, s := range steps[c.step+1:] {
				if s.Status != "not_run" {
					t.Errorf("after the failed step: %+v", s)
				}
			}
		})
	}
}
