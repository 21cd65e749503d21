package build

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/slipway-dev/slipway/pkg/build/steps"
)

func TestClassify(t *testing.T) {
	limits := Limits{MemoryBytes: 512 << 20, Timeout: 10 * time.Minute}
	runLog := "INFO[0000] FROM 127.0.0.1:5000/busybox\nINFO[0001] RUN echo one\nINFO[0001] RUN exit 3\n" +
		"error building image: error building stage: failed to execute command: waiting for process to exit: exit status 3\n"
	fetchLog := "fetching https://git.example.com/acme/app.git\ngit context: repository not found\n\n[slipway] the executor ended after 0.3 s with exit code 2\n"
	cases := []struct {
		name    string
		o       Outcome
		log     string
		reason  Reason
		message string
	}{
		{"success", Outcome{Digest: "sha256:abc"}, "", "", ""},
		{"cancelled", Outcome{Cancelled: true, ExitCode: 137}, runLog, ReasonCancelled, "cancelled"},
		{"timeout", Outcome{TimedOut: true, ExitCode: 137}, runLog, ReasonTimeout, "10m0s"},
		{"oom", Outcome{OOMKilled: true, ExitCode: 137}, runLog, ReasonOOM, "512 MiB"},
		{"oom names the setting", Outcome{OOMKilled: true, ExitCode: 137}, runLog, ReasonOOM, "; the server's --build-memory setting (SLIPWAY_BUILD_MEMORY) raises the limit"},
		{"failing RUN", Outcome{ExitCode: 1}, runLog, ReasonDockerfile, `instruction "RUN exit 3" failed with exit code 3`},
		{"base image", Outcome{ExitCode: 1}, "INFO[0000] Retrieving image manifest 127.0.0.1:5000/nope\nerror building image: unable to complete operation after 0 attempts, last error: GET http://127.0.0.1:5000/v2/nope/manifests/latest: MANIFEST_UNKNOWN: manifest unknown\n", ReasonBaseImage, "MANIFEST_UNKNOWN"},
		{"push", Outcome{ExitCode: 1}, "error pushing image: failed to push to destination r.example/x:latest: UNAUTHORIZED\n", ReasonPush, "r.example/x"},
		{"push permission", Outcome{ExitCode: 1}, "error checking push permissions -- make sure you entered the correct tag name: checking push permission for \"r/x\": UNAUTHORIZED\n", ReasonPush, "push permission"},
		// The executor checks a COPY's files before it announces it: the RUN
		// it announced last is not to blame.
		{"missing COPY source, no Dockerfile", Outcome{ExitCode: 1}, "INFO[0000] RUN echo ok\nerror building image: error building stage: failed to get files used from context: lstat /workspace/nope: no such file or directory\n", ReasonDockerfile, "a COPY or ADD names a file that is not there"},
		{"failing RUN, text format", Outcome{ExitCode: 3}, "time=\"t\" level=info msg=\"RUN echo \\\"a\\\" && exit 3\"\ntime=\"t\" level=info msg=\"Running: [/bin/sh -c exit 3]\"\nerror building image: error building stage: failed to execute command: waiting for process to exit: exit status 3\n", ReasonDockerfile, `instruction "RUN echo \"a\" && exit 3" failed with exit code 3`},
		{"no digest", Outcome{}, "", ReasonInternal, "digest"},
		{"success with commit", Outcome{Digest: "sha256:abc", Commit: "0123456789abcdef0123456789abcdef01234567"}, "", "", ""},
		{"context failed", Outcome{ContextFailed: true, ExitCode: 2}, fetchLog, ReasonGit, "fetching the build context failed: git context: repository not found"},
		{"context failed, no log", Outcome{ContextFailed: true, ExitCode: 2}, "\n[slipway] the executor ended\n", ReasonGit, "fetching the build context failed (exit code 2)"},
		{"context fetch OOMKilled", Outcome{ContextFailed: true, OOMKilled: true, ExitCode: 137}, fetchLog, ReasonOOM, "512 MiB"},
		{"context fetch timed out", Outcome{ContextFailed: true, TimedOut: true, ExitCode: 137}, fetchLog, ReasonTimeout, "10m0s"},
		{"context failed, and a problem", Outcome{ContextFailed: true, ExitCode: 1, Problem: "the build pod failed: x"}, fetchLog, ReasonGit, "repository not found"},
		{"problem", Outcome{ExitCode: -1, Problem: "the build pod failed: it was evicted: disk"}, runLog, ReasonInternal, "the build pod failed: it was evicted: disk"},
		{"problem after the executor exited 0", Outcome{Digest: "sha256:abc", Problem: "the build pod failed: deleted"}, "", ReasonInternal, "the build pod failed: deleted"},
		{"cancelled with a problem", Outcome{Cancelled: true, Problem: "the build pod failed: deleted"}, "", ReasonCancelled, "cancelled"},
		{"silent crash", Outcome{ExitCode: 2}, "", ReasonInternal, "exit code 2"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := Classify(c.o, limits, c.log, nil)
			if c.reason == "" {
				if f != nil {
					t.Fatalf("got %+v, want success", f)
				}
				return
			}
			if f == nil || f.Reason != c.reason || !strings.Contains(f.Message, c.message) {
				t.Fatalf("got %+v, want %s containing %q", f, c.reason, c.message)
			}
		})
	}
}

func TestTransitions(t *testing.T) {
	now := time.Now()
	b := New("img", 1, "alice", TriggerManual, now)
	if err := b.Succeed("d", "r", nil, now); err == nil {
		t.Fatal("a queued build succeeded")
	}
	if err := b.Start(now); err != nil {
		t.Fatal(err)
	}
	if err := b.Start(now); err == nil {
		t.Fatal("started twice")
	}
	if err := b.Succeed("sha256:x", "r@sha256:x", []Push{{Reference: "r", Status: "pushed"}}, now.Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	if d := b.Duration(now); d == nil || *d != 1 {
		t.Fatalf("duration %v", d)
	}
	for name, f := range map[string]func() error{
		"cancel": func() error { return b.Cancel("alice", now) },
		"fail":   func() error { return b.Fail(ReasonInternal, "x", now) },
	} {
		if err := f(); err == nil {
			t.Errorf("%s of a finished build allowed", name)
		}
	}
	q := New("img", 1, "alice", TriggerManual, now)
	if err := q.Cancel("bob", now); err != nil || q.Status != Cancelled || q.Failure.Reason != ReasonCancelled || q.StartedAt != nil || q.Duration(now) != nil {
		t.Fatalf("cancel of a queued build: %+v, %v", q, err)
	}
}

// TestClassifySteps classifies real executor logs (../build/steps/testdata)
// read against their Dockerfiles: the failure names the instruction that
// failed and its line.
func TestClassifySteps(t *testing.T) {
	const base = "127.0.0.1:5000/library/busybox"
	cases := []struct {
		log, dockerfile string
		exit            int
		reason          Reason
		message         string
	}{
		{"exit127", "FROM " + base + "\nRUN echo ok\nRUN nosuchcommand --flag\n", 127, ReasonDockerfile,
			`instruction "RUN nosuchcommand --flag" (line 3) failed with exit code 127: command not found`},
		{"cont", "FROM " + base + "\nRUN echo one && \\\n    echo two\nMAINTAINER me\nRUN exit 126\n", 126, ReasonDockerfile,
			`instruction "RUN exit 126" (line 5) failed with exit code 126: not executable`},
		{"copymiss2", "FROM " + base + "\nRUN echo ok\nCOPY missing.txt /x\n", 1, ReasonDockerfile,
			`instruction "COPY missing.txt /x" (line 3) failed: a file it copies does not exist (/workspace/missing.txt)`},
		{"copyfrommiss", "FROM " + base + " AS a\nRUN echo ok\nFROM " + base + "\nCOPY --from=a /nope /x\n", 1, ReasonDockerfile,
			`instruction "COPY --from=a /nope /x" (line 4) failed: a file it copies does not exist (/kaniko/0/nope)`},
		{"nostage", "FROM " + base + "\nRUN echo ok\nCOPY --from=nostage /a /b\n", 1, ReasonDockerfile,
			`instruction "COPY --from=nostage /a /b" (line 3) failed: no stage above it is named "nostage"`},
	}
	for _, c := range cases {
		t.Run(c.log, func(t *testing.T) {
			log, err := os.ReadFile(filepath.Join("steps", "testdata", c.log+".log"))
			if err != nil {
				t.Fatal(err)
			}
			plan, err := steps.ParsePlan(c.dockerfile)
			if err != nil {
				t.Fatal(err)
			}
			f := Classify(Outcome{ExitCode: c.exit}, Limits{}, string(log), steps.Parse(log, plan).Failure())
			if f == nil || f.Reason != c.reason || !strings.Contains(f.Message, c.message) {
				t.Fatalf("got %+v, want %s containing %q", f, c.reason, c.message)
			}
			// Without the Dockerfile, the tail alone still blames no RUN for a COPY.
			if f := Classify(Outcome{ExitCode: c.exit}, Limits{}, string(log), nil); strings.Contains(c.log, "copy") && strings.Contains(f.Message, "RUN echo ok") {
				t.Errorf("without the Dockerfile: %+v", f)
			}
		})
	}
}
