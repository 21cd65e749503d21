package build

import (
	"fmt"
	"regexp"
	"strings"

	"github.com/slipway-dev/slipway/pkg/build/steps"
)

// MemoryFlag is the name of the server's flag that sets every build's
// memory limit (Limits.MemoryBytes): an out-of-memory failure names it.
const MemoryFlag = "build-memory"

// Classify maps what a runner observed to the failure a user sees: the one
// place where an executor's exit, a kill by the memory limit, a timeout, a
// cancellation, a failed fetch of the context or a failure of the runner
// itself becomes a contract reason with an actionable message. logTail is
// the end of the build log, where the executor (or the context's fetcher)
// states its error; at, when not nil, is where the executor failed as its
// whole log read against the Dockerfile tells (steps.Parser.Failure): the
// message then names that instruction and its line. It returns nil when
// the build succeeded.
func Classify(o Outcome, limits Limits, logTail string, at *steps.Failure) *Failure {
	switch {
	case o.Cancelled:
		return &Failure{Reason: ReasonCancelled, Message: "the build was cancelled"}
	case o.TimedOut:
		return &Failure{Reason: ReasonTimeout, Message: fmt.Sprintf("the build ran longer than its time limit of %s and was stopped", limits.Timeout)}
	case o.OOMKilled:
		return &Failure{Reason: ReasonOOM, Message: fmt.Sprintf("the build ran out of memory: it needed more than its limit of %d MiB%s; the server's --%s setting (SLIPWAY_BUILD_MEMORY) raises the limit of every build",
			limits.MemoryBytes>>20, failingStep(logTail), MemoryFlag)}
	case o.ContextFailed:
		if line := lastLine(logTail); line != "" {
			return &Failure{Reason: ReasonGit, Message: "fetching the build context failed: " + trimErr(line)}
		}
		return &Failure{Reason: ReasonGit, Message: fmt.Sprintf("fetching the build context failed (exit code %d)", o.ExitCode)}
	case o.Problem != "":
		return &Failure{Reason: ReasonInternal, Message: o.Problem}
	case o.ExitCode == 0 && o.Digest != "":
		return nil
	case o.ExitCode == 0:
		return &Failure{Reason: ReasonInternal, Message: "the executor ended without reporting an image digest"}
	}
	if f := classifyStep(at); f != nil {
		return f
	}
	errLine := lastError(logTail)
	lower := strings.ToLower(errLine)
	switch {
	case strings.Contains(lower, "error pushing image"), strings.Contains(lower, "checking push permission"):
		return &Failure{Reason: ReasonPush, Message: "pushing the image failed: " + trimErr(errLine)}
	case strings.Contains(lower, "failed to execute command"):
		return &Failure{Reason: ReasonDockerfile, Message: fmt.Sprintf("%s failed with %s", orInstruction(lastInstruction(logTail)), exitStatus(errLine))}
	case strings.Contains(lower, "retrieving image"), strings.Contains(lower, "manifest_unknown"),
		strings.Contains(lower, "manifest unknown"), strings.Contains(lower, "failed to get filesystem from image"),
		strings.Contains(lower, "unauthorized"), strings.Contains(lower, "name_unknown"),
		strings.Contains(lower, "error building image: get "), strings.Contains(lower, "unable to complete operation"):
		return &Failure{Reason: ReasonBaseImage, Message: "a base image could not be pulled: " + trimErr(errLine)}
	case strings.Contains(lower, "failed to get files used from context"):
		// The executor checks a COPY's files before it announces the COPY:
		// the last instruction it announced is not the one that failed.
		return &Failure{Reason: ReasonDockerfile, Message: "a COPY or ADD names a file that is not there: " + trimErr(errLine)}
	case strings.Contains(lower, "error building"), strings.Contains(lower, "dockerfile"):
		return &Failure{Reason: ReasonDockerfile, Message: trimErr(errLine) + failingStep(logTail)}
	case errLine != "":
		return &Failure{Reason: ReasonInternal, Message: fmt.Sprintf("the executor failed (exit code %d): %s", o.ExitCode, trimErr(errLine))}
	}
	return &Failure{Reason: ReasonInternal, Message: fmt.Sprintf("the executor failed with exit code %d", o.ExitCode)}
}

// classifyStep is the failure of an instruction the steps parser found
// failed; nil when it found none with a Dockerfile line.
func classifyStep(at *steps.Failure) *Failure {
	if at == nil || at.Step.Line == nil || at.Step.Instruction == "" {
		return nil
	}
	where := fmt.Sprintf("instruction %q (line %d)", at.Step.Instruction, *at.Step.Line)
	errText := trimErr(at.Error)
	switch at.Kind {
	case steps.FailRun:
		if at.ExitCode >= 0 {
			return &Failure{Reason: ReasonDockerfile, Message: fmt.Sprintf("%s failed with exit code %d: %s", where, at.ExitCode, steps.Explain(at.ExitCode))}
		}
		return &Failure{Reason: ReasonDockerfile, Message: fmt.Sprintf("%s failed: %s", where, errText)}
	case steps.FailFiles:
		return &Failure{Reason: ReasonDockerfile, Message: fmt.Sprintf("%s failed: a file it copies does not exist (%s): %s", where, at.Missing, errText)}
	case steps.FailPull:
		if at.Step.Line != nil && strings.HasPrefix(strings.ToUpper(at.Step.Instruction), "FROM") {
			return &Failure{Reason: ReasonBaseImage, Message: fmt.Sprintf("the base image of %s could not be pulled: %s", where, errText)}
		}
		if at.NotAStage {
			return &Failure{Reason: ReasonDockerfile, Message: fmt.Sprintf("%s failed: no stage above it is named %q, so the executor tried to pull an image of that name, which failed: %s. Name a stage defined before it (FROM ... AS %s) or a full image reference", where, at.Pulled, errText, at.Pulled)}
		}
		return &Failure{Reason: ReasonBaseImage, Message: fmt.Sprintf("the image %s that %s copies from could not be pulled: %s", at.Pulled, where, errText)}
	case steps.FailOther:
		return &Failure{Reason: ReasonDockerfile, Message: fmt.Sprintf("%s failed: %s", where, errText)}
	}
	return nil
}

// lastError is the executor's last error line (Kaniko prints "error
// building image: ..." or "error pushing image: ..." before it exits).
func lastError(log string) string {
	lines := strings.Split(strings.TrimRight(log, "\n"), "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		l := strings.TrimSpace(lines[i])
		if strings.Contains(strings.ToLower(l), "error") {
			return l
		}
	}
	return ""
}

// lastLine is the log's last line that is neither blank nor one of the
// platform's own notes ("[slipway] ...").
func lastLine(log string) string {
	lines := strings.Split(log, "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		l := strings.TrimSpace(lines[i])
		if l != "" && !strings.HasPrefix(l, "[slipway]") {
			return l
		}
	}
	return ""
}

// kanikoStep matches Kaniko's announcement of the instruction it runs, in
// its text format (`level=info msg="RUN exit 3"`) or its colour format
// (`INFO[0001] RUN exit 3`).
var kanikoStep = regexp.MustCompile(`(?m)(?:^(?:INFO|WARN)\[\d+\] |level=\w+ msg=")((?:RUN|COPY|ADD|WORKDIR|USER|ENV|LABEL|CMD|ENTRYPOINT|EXPOSE|VOLUME|SHELL|STOPSIGNAL|HEALTHCHECK|ONBUILD) .*)$`)

// lastInstruction is the last Dockerfile instruction the executor began.
func lastInstruction(log string) string {
	m := kanikoStep.FindAllStringSubmatch(log, -1)
	if len(m) == 0 {
		return ""
	}
	s := strings.TrimSpace(m[len(m)-1][1])
	if strings.Contains(m[len(m)-1][0], `msg="`) {
		s = strings.ReplaceAll(strings.TrimSuffix(s, `"`), `\"`, `"`)
	}
	return s
}

func orInstruction(s string) string {
	if s == "" {
		return "a RUN instruction"
	}
	return fmt.Sprintf("instruction %q", s)
}

func failingStep(log string) string {
	if s := lastInstruction(log); s != "" {
		return fmt.Sprintf(" (during %q)", s)
	}
	return ""
}

var exitStatusRE = regexp.MustCompile(`exit (?:status|code) (\d+)`)

func exitStatus(line string) string {
	if m := exitStatusRE.FindStringSubmatch(line); m != nil {
		return "exit code " + m[1]
	}
	return "an error: " + trimErr(line)
}

// kanikoPrefix matches the level prefix Kaniko puts on log lines.
var kanikoPrefix = regexp.MustCompile(`^(?:ERRO|FATA|WARN|INFO)\[\d+\]\s*`)

func trimErr(line string) string {
	line = kanikoPrefix.ReplaceAllString(line, "")
	if len(line) > 500 {
		line = line[:500] + "…"
	}
	return line
}
