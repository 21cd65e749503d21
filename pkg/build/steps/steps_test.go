package steps

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The logs in testdata are real: the pinned Kaniko executor's output of the
// Dockerfiles below, built by Slipway in runc (the registry's address
// replaced by 127.0.0.1:5000). multi-cached.log and copymiss.log were built
// with the layer cache on.
const base = "127.0.0.1:5000/library/busybox"

var dockerfiles = map[string]string{
	"multi":        "ARG BASE=" + base + "\nFROM $BASE AS builder\nRUN mkdir /out && echo hi > /out/g && sleep 1\nFROM $BASE\nENV A=b\nWORKDIR /srv\nCOPY --from=builder /out/g ./g\nRUN cat g\nUSER 65534\nCMD [\"cat\",\"/srv/g\"]\n",
	"exit127":      "FROM " + base + "\nRUN echo ok\nRUN nosuchcommand --flag\n",
	"copymiss":     "FROM " + base + "\nRUN echo ok\nCOPY missing.txt /x\n",
	"copyfrommiss": "FROM " + base + " AS a\nRUN echo ok\nFROM " + base + "\nCOPY --from=a /nope /x\n",
	"cont":         "FROM " + base + "\nRUN echo one && \\\n    echo two\nMAINTAINER me\nRUN exit 126\n",
	"nostage":      "FROM " + base + "\nRUN echo ok\nCOPY --from=nostage /a /b\n",
}

func readLog(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name+".log"))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func plan(t *testing.T, name string) *Plan {
	t.Helper()
	p, err := ParsePlan(dockerfiles[strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(name, "-interleaved"), "-cached"), "2")])
	if err != nil {
		t.Fatal(err)
	}
	return p
}

var finished = time.Date(2026, 12, 2, 0, 48, 0, 0, time.UTC)

func ended(state, reason string) Build {
	return Build{State: state, Reason: reason, FinishedAt: &finished, Now: finished.Add(time.Minute)}
}

type want struct {
	instruction string
	stage       int
	line        int
	status      Status
}

func check(t *testing.T, got []Step, wants []want) {
	t.Helper()
	if len(got) != len(wants) {
		t.Fatalf("%d steps, want %d: %s", len(got), len(wants), show(got))
	}
	for i, w := range wants {
		g := got[i]
		line := 0
		if g.Line != nil {
			line = *g.Line
		}
		if g.Instruction != w.instruction || g.Stage != w.stage || line != w.line || g.Status != w.status {
			t.Errorf("step %d: %q stage %d line %d %s; want %q stage %d line %d %s", i, g.Instruction, g.Stage, line, g.Status, w.instruction, w.stage, w.line, w.status)
		}
	}
}

func show(steps []Step) string {
	var b strings.Builder
	for _, s := range steps {
		line := 0
		if s.Line != nil {
			line = *s.Line
		}
		b.WriteString("\n  " + s.Instruction + " · " + string(s.Status) + " · line " + strconv.Itoa(line))
	}
	return b.String()
}

func TestMultiStage(t *testing.T) {
	steps := Parse(readLog(t, "multi"), plan(t, "multi")).Steps(ended("succeeded", ""))
	check(t, steps, []want{
		{"FROM $BASE AS builder", 0, 2, Done},
		{"RUN mkdir /out && echo hi > /out/g && sleep 1", 0, 3, Done},
		{"FROM $BASE", 1, 4, Done},
		{"ENV A=b", 1, 5, Done},
		{"WORKDIR /srv", 1, 6, Done},
		{"COPY --from=builder /out/g ./g", 1, 7, Done},
		{"RUN cat g", 1, 8, Done},
		{"USER 65534", 1, 9, Done},
		{`CMD ["cat","/srv/g"]`, 1, 10, Done},
		{"push 127.0.0.1:5000/team/multi:latest", 1, 0, Done},
	})
	if steps[0].StageName == nil || *steps[0].StageName != "builder" || steps[2].StageName != nil {
		t.Errorf("stage names: %v, %v", steps[0].StageName, steps[2].StageName)
	}
	// The RUN slept a second: it took one or two of the executor's whole seconds.
	if d := steps[1].DurationSeconds; d == nil || *d < 1 || *d > 2 {
		t.Errorf("the sleeping RUN's duration: %v", d)
	}
	var total float64
	for _, s := range steps {
		if s.StartedAt == nil || s.DurationSeconds == nil || s.ExitCode != nil || s.Error != nil {
			t.Errorf("step %q: start %v, duration %v, exit %v, error %v", s.Instruction, s.StartedAt, s.DurationSeconds, s.ExitCode, s.Error)
			continue
		}
		total += *s.DurationSeconds
	}
	if first, last := steps[0].StartedAt, steps[len(steps)-1]; total != last.StartedAt.Add(time.Duration(*last.DurationSeconds*float64(time.Second))).Sub(*first).Seconds() {
		t.Errorf("durations add up to %v, not the time from the first step to the end of the last", total)
	}
}

// A log cut by the cap (its middle, or its end) loses announcements: the
// instructions it does not show still ran, without times.
func TestCutLog(t *testing.T) {
	log := string(readLog(t, "multi"))
	from := strings.Index(log, `msg="ENV A=b"`)
	to := strings.Index(log, `msg="RUN cat g"`)
	from, to = strings.LastIndexByte(log[:from], '\n')+1, strings.LastIndexByte(log[:to], '\n')+1
	cut := log[:from] + "\n[slipway: the log is cut here]\n" + log[to:]
	steps := Parse([]byte(cut), plan(t, "multi")).Steps(ended("succeeded", ""))
	if len(steps) != 10 {
		t.Fatalf("%d steps%s", len(steps), show(steps))
	}
	for i, s := range steps {
		if s.Status != Done {
			t.Errorf("step %d %q: %s", i, s.Instruction, s.Status)
		}
		if hidden := i >= 3 && i <= 5; hidden != (s.StartedAt == nil) {
			t.Errorf("step %d %q started at %v", i, s.Instruction, s.StartedAt)
		}
	}
	head := Parse([]byte(log[:from]), plan(t, "multi")).Steps(ended("succeeded", ""))
	for i, s := range head {
		if s.Status != Done {
			t.Errorf("a log cut at its end, step %d %q: %s", i, s.Instruction, s.Status)
		}
	}
}

func TestCached(t *testing.T) {
	steps := Parse(readLog(t, "multi-cached"), plan(t, "multi")).Steps(ended("succeeded", ""))
	for _, s := range steps {
		want := Done
		if strings.HasPrefix(s.Instruction, "RUN ") {
			want = Cached
		}
		if s.Status != want {
			t.Errorf("%q is %s, want %s", s.Instruction, s.Status, want)
		}
	}
}

func TestWithoutPlan(t *testing.T) {
	steps := Parse(readLog(t, "multi"), nil).Steps(ended("succeeded", ""))
	check(t, steps, []want{
		{"FROM " + base, 0, 0, Done},
		{"RUN mkdir /out && echo hi > /out/g && sleep 1", 0, 0, Done},
		{"FROM " + base, 1, 0, Done},
		{"ENV A=b", 1, 0, Done},
		{"WORKDIR /srv", 1, 0, Done},
		{"COPY --from=builder /out/g ./g", 1, 0, Done},
		{"RUN cat g", 1, 0, Done},
		{"USER 65534", 1, 0, Done},
		{`CMD ["cat","/srv/g"]`, 1, 0, Done},
		{"push 127.0.0.1:5000/team/multi:latest", 1, 0, Done},
	})
}

func TestFailures(t *testing.T) {
	cases := []struct {
		log         string
		steps       []want
		kind        string
		exit        int
		explanation string
	}{
		{"exit127", []want{
			{"FROM " + base, 0, 1, Done}, {"RUN echo ok", 0, 2, Done}, {"RUN nosuchcommand --flag", 0, 3, Failed},
		}, FailRun, 127, "command not found"},
		// The layer cache's push runs beside the next RUN, and its log line
		// may land inside the shell's message (seen in CI): the cache's
		// own push is still not the image's.
		{"exit127-interleaved", []want{
			{"FROM " + base, 0, 1, Done}, {"RUN echo ok", 0, 2, Done}, {"RUN nosuchcommand --flag", 0, 3, Failed},
		}, FailRun, 127, "command not found"},
		{"cont", []want{
			{"FROM " + base, 0, 1, Done}, {"RUN echo one &&     echo two", 0, 2, Done}, {"MAINTAINER me", 0, 4, Skipped}, {"RUN exit 126", 0, 5, Failed},
		}, FailRun, 126, "not executable"},
		// The COPY fails before the executor announces it: not the RUN before.
		{"copymiss2", []want{
			{"FROM " + base, 0, 1, Done}, {"RUN echo ok", 0, 2, Done}, {"COPY missing.txt /x", 0, 3, Failed},
		}, FailFiles, -1, "missing.txt"},
		// With the layer cache, the executor checks every COPY first.
		{"copymiss", []want{
			{"FROM " + base, 0, 1, Done}, {"RUN echo ok", 0, 2, NotRun}, {"COPY missing.txt /x", 0, 3, Failed},
		}, FailFiles, -1, "missing.txt"},
		{"copyfrommiss", []want{
			{"FROM " + base + " AS a", 0, 1, Done}, {"RUN echo ok", 0, 2, Done}, {"FROM " + base, 1, 3, Done}, {"COPY --from=a /nope /x", 1, 4, Failed},
		}, FailFiles, -1, "/nope"},
		// An unknown stage is pulled as an image before any stage runs.
		{"nostage", []want{
			{"FROM " + base, 0, 1, NotRun}, {"RUN echo ok", 0, 2, NotRun}, {"COPY --from=nostage /a /b", 0, 3, Failed},
		}, FailPull, -1, `no stage is named "nostage"`},
	}
	for _, c := range cases {
		t.Run(c.log, func(t *testing.T) {
			p := Parse(readLog(t, c.log), plan(t, c.log))
			steps := p.Steps(ended("failed", "dockerfile"))
			check(t, steps, c.steps)
			var failed *Step
			for i := range steps {
				if steps[i].Status == Failed {
					failed = &steps[i]
				}
			}
			if failed == nil || failed.Explanation == nil || !strings.Contains(*failed.Explanation, c.explanation) || failed.Error == nil {
				t.Fatalf("the failed step: %+v", failed)
			}
			if (c.exit < 0) != (failed.ExitCode == nil) || (failed.ExitCode != nil && *failed.ExitCode != c.exit) {
				t.Errorf("exit code %v, want %d", failed.ExitCode, c.exit)
			}
			f := p.Failure()
			if f == nil || f.Kind != c.kind || f.Step.Instruction != failed.Instruction || *f.Step.Line != *failed.Line {
				t.Errorf("Failure(): %+v; want %s at %q", f, c.kind, failed.Instruction)
			}
		})
	}
}

func TestRunningAndStopped(t *testing.T) {
	log := readLog(t, "multi")
	cut := strings.Index(string(log), `msg="RUN cat g"`)
	cut += strings.IndexByte(string(log[cut:]), '\n') + 1
	p := NewParser(plan(t, "multi"))
	// Written in small pieces, as a log arrives.
	for i := 0; i < cut; i += 7 {
		p.Write(log[i:min(i+7, cut)])
	}
	now := time.Date(2026, 12, 2, 0, 47, 59, 0, time.UTC)
	steps := p.Steps(Build{State: "running", Now: now})
	got := map[Status]int{}
	for _, s := range steps {
		got[s.Status]++
	}
	if len(steps) != 9 || got[Done] != 6 || got[Running] != 1 || got[Pending] != 2 || steps[6].Status != Running {
		t.Fatalf("a running build's steps: %v%s", got, show(steps))
	}
	if d := steps[6].DurationSeconds; d == nil || *d != 5 {
		t.Errorf("the running step has run %v s, want 5 (now - its start)", d)
	}
	for reason, want := range map[string]Status{"oom": Failed, "timeout": Failed, "cancelled": Cancelled} {
		state := "failed"
		if reason == "cancelled" {
			state = "cancelled"
		}
		steps := p.Steps(ended(state, reason))
		if steps[6].Status != want || steps[7].Status != NotRun {
			t.Errorf("%s: the running step is %s, the next %s%s", reason, steps[6].Status, steps[7].Status, show(steps))
		}
		if reason == "oom" && (steps[6].ExitCode == nil || *steps[6].ExitCode != 137 || !strings.Contains(*steps[6].Explanation, "out of memory")) {
			t.Errorf("oom: exit %v, %v", steps[6].ExitCode, steps[6].Explanation)
		}
	}
}

func TestExplain(t *testing.T) {
	for code, want := range map[int]string{127: "command not found", 126: "not executable", 137: "out of memory", 1: "the command failed", 2: "the command failed", 3: "exit code 3", 139: "signal 11"} {
		if got := Explain(code); !strings.Contains(got, want) {
			t.Errorf("Explain(%d) = %q, want %q", code, got, want)
		}
	}
}

// A RUN's output that looks like the executor's own lines changes nothing
// when the plan is known, and stays bounded when it is not.
func TestForgedLines(t *testing.T) {
	log := string(readLog(t, "exit127"))
	forged := strings.Repeat(`time="2026-12-02T00:47:56Z" level=info msg="RUN rm -rf /"`+"\n", 5000) +
		strings.Repeat("x", 100<<10) + "\n"
	at := strings.Index(log, "ok\n") + 3
	p := Parse([]byte(log[:at]+forged+log[at:]), plan(t, "exit127"))
	check(t, p.Steps(ended("failed", "dockerfile")), []want{
		{"FROM " + base, 0, 1, Done}, {"RUN echo ok", 0, 2, Done}, {"RUN nosuchcommand --flag", 0, 3, Failed},
	})
	if n := len(Parse([]byte(forged), nil).Steps(ended("failed", ""))); n > maxAnnounced+2 {
		t.Errorf("%d steps from forged lines", n)
	}
}

func FuzzParse(f *testing.F) {
	for _, name := range []string{"multi", "exit127", "copymiss", "nostage", "cont"} {
		b, _ := os.ReadFile(filepath.Join("testdata", name+".log"))
		f.Add(b, dockerfiles[name])
	}
	f.Add([]byte("time=\"x\" level=info msg=\"Building stage 'a' [idx: '7', base-idx: '-1']\"\ntime= level= msg=\"RUN\nerror building image: failed to execute command: exit status 999\n"), "FROM a\nRUN x\n")
	f.Fuzz(func(t *testing.T, log []byte, dockerfile string) {
		pl, _ := ParsePlan(dockerfile)
		p := Parse(log, pl)
		for _, b := range []Build{ended("failed", "dockerfile"), ended("succeeded", ""), {State: "running", Now: finished}, ended("cancelled", "cancelled"), ended("failed", "oom")} {
			for _, s := range p.Steps(b) {
				if s.Status == "" {
					t.Fatalf("a step without a status: %+v", s)
				}
			}
		}
		p.Failure()
	})
}

// BenchmarkParse reads a 4 MiB log (the default cap): a real log with a
// RUN's output of short lines in its middle.
func BenchmarkParse(b *testing.B) {
	log, _ := os.ReadFile(filepath.Join("testdata", "multi.log"))
	at := strings.Index(string(log), "hi\n")
	big := append(append(append([]byte{}, log[:at]...), strings.Repeat("some output of a RUN, line after line\n", (4<<20)/38)...), log[at:]...)
	pl, _ := ParsePlan(dockerfiles["multi"])
	b.SetBytes(int64(len(big)))
	for b.Loop() {
		if n := len(Parse(big, pl).Steps(ended("succeeded", ""))); n != 10 {
			b.Fatal(n)
		}
	}
}
