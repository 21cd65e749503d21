package build

import (
	"strings"
	"testing"
)

func TestDefinitionDigestAndText(t *testing.T) {
	local := Definition{Type: "local", Dockerfile: "FROM a\nRUN echo <&>\n"}
	same := Definition{Type: "local", Dockerfile: "FROM a\nRUN echo <&>\n"}
	if local.Digest() != same.Digest() || !strings.HasPrefix(local.Digest(), "sha256:") || len(local.Digest()) != 71 {
		t.Fatalf("digests of equal definitions: %s, %s", local.Digest(), same.Digest())
	}
	git := Definition{Type: "git", Git: &GitDefinition{URL: "https://git.example/r.git", Ref: "main"}}
	seen := map[string]string{local.Digest(): "local", git.Digest(): "git"}
	for name, g := range map[string]GitDefinition{
		"ref": {URL: git.Git.URL, Ref: "dev"}, "dir": {URL: git.Git.URL, Ref: "main", Dir: "d"},
		"url": {URL: "https://git.example/s.git", Ref: "main"}, "credential": {URL: git.Git.URL, Ref: "main", Credential: "c"},
	} {
		d := Definition{Type: "git", Git: &g}.Digest()
		if other, ok := seen[d]; ok {
			t.Fatalf("a change of %s has the digest of %s", name, other)
		}
		seen[d] = name
	}
	if got := git.Text(); got != "git https://git.example/r.git\nref main\n" {
		t.Fatalf("git text %q", got)
	}
	if local.Text() != local.Dockerfile {
		t.Fatalf("local text %q", local.Text())
	}
}

func TestDiff(t *testing.T) {
	a := Definition{Type: "local", Dockerfile: "FROM a\nRUN one\nRUN two\n"}
	b := Definition{Type: "local", Dockerfile: "FROM a\nRUN one\nRUN three"}
	got, err := Diff(a, b, "build 1", "current")
	want := "--- build 1\n+++ current\n@@ -1,3 +1,3 @@\n FROM a\n RUN one\n-RUN two\n+RUN three\n"
	if err != nil || got != want {
		t.Fatalf("diff:\n%s\nwant:\n%s (%v)", got, want, err)
	}
	if got, err := Diff(a, a, "x", "y"); got != "" || err != nil {
		t.Fatalf("diff of equal definitions: %q %v", got, err)
	}
	args := Definition{Type: "local", Dockerfile: "FROM a", BuildArgs: map[string]string{"V": "1"}, Target: "t"}
	argsDiff, _ := Diff(args, Definition{Type: "local", Dockerfile: "FROM a", BuildArgs: map[string]string{"V": "2"}, Target: "t"}, "build 1", "build 2")
	if strings.Contains(argsDiff, "-FROM a") || !strings.Contains(argsDiff, "---build-arg V=1\n+--build-arg V=2\n") {
		t.Fatalf("build argument diff:\n%s", argsDiff)
	}
	git := Definition{Type: "git", Git: &GitDefinition{URL: "u", Ref: "main"}}
	got, _ = Diff(git, Definition{Type: "git", Git: &GitDefinition{URL: "u", Ref: "dev"}}, "build 1", "build 2")
	if !strings.Contains(got, "-ref main\n+ref dev\n") {
		t.Fatalf("git diff:\n%s", got)
	}
}

func TestInputsDigest(t *testing.T) {
	base := Inputs{
		Definition: Definition{Type: "local", Dockerfile: "FROM a\n", BuildArgs: map[string]string{"X": "1", "Y": "2"}}, Executor: "Kaniko version :  v1.25.6",
		Bases: []Base{{Ref: "a", Digest: "sha256:1"}, {Ref: "b", Digest: "sha256:2"}},
	}
	reordered := base
	reordered.Bases = []Base{base.Bases[1], base.Bases[0]}
	if base.Digest() != reordered.Digest() {
		t.Fatal("the order of the bases changed the digest")
	}
	if reordered.Bases[0].Ref != "b" {
		t.Fatal("Digest sorted the caller's bases")
	}
	for name, change := range map[string]func(*Inputs){
		"definition": func(in *Inputs) { in.Definition.Dockerfile = "FROM b\n" },
		"commit":     func(in *Inputs) { in.Commit = "abc" },
		"base":       func(in *Inputs) { in.Bases = []Base{{Ref: "a", Digest: "sha256:3"}, base.Bases[1]} },
		"build args": func(in *Inputs) { in.Definition.BuildArgs = map[string]string{"X": "1", "Y": "3"} },
		"target":     func(in *Inputs) { in.Definition.Target = "t" },
		"executor":   func(in *Inputs) { in.Executor = "Kaniko version :  v1.25.7" },
	} {
		in := base
		change(&in)
		if in.Digest() == base.Digest() {
			t.Errorf("a change of the %s kept the inputs digest", name)
		}
	}
	// A build's inputs come from its record.
	commit := "abc"
	b := Build{Definition: &base.Definition, Commit: &commit}
	in := b.Inputs("v1")
	if in.Definition.Digest() != base.Definition.Digest() || in.Commit != "abc" || in.Executor != "v1" {
		t.Fatalf("inputs of a build: %+v", in)
	}
	b.RecordInputs(in)
	if b.InputsDigest == nil || *b.InputsDigest != in.Digest() {
		t.Fatalf("recorded %v", b.InputsDigest)
	}
}
