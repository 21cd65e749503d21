package build

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/pmezard/go-difflib/difflib"
)

// Definition is what a build builds: an image's build definition, kept on
// every build and compared with the image's current one for its status.
// It is the image's context in the same JSON shape: the Dockerfile text of a
// local context, or a git context's repository URL, ref, dir and the name of
// its credential. The image's name, description and destinations are not
// part of it: they do not change what is built. Build arguments, the names
// of the secrets a build mounts and the target stage are: they do. (Empty
// ones are left out of the JSON, so a definition without them keeps the
// digest it had before images had them.)
type Definition struct {
	Type       string            `json:"type"`
	Dockerfile string            `json:"dockerfile,omitempty"`
	Git        *GitDefinition    `json:"git,omitempty"`
	BuildArgs  map[string]string `json:"build_args,omitempty"`
	Secrets    []string          `json:"secrets,omitempty"`
	Target     string            `json:"target,omitempty"`
}

// GitDefinition is a git context's part of a Definition.
type GitDefinition struct {
	URL        string `json:"url"`
	Ref        string `json:"ref,omitempty"`
	Dir        string `json:"dir,omitempty"`
	Credential string `json:"credential,omitempty"`
}

// Digest identifies the definition by content: "sha256:" and the hex
// SHA-256 of its canonical JSON (the fields in their declared order, no HTML
// escaping). Equal definitions have equal digests.
func (d Definition) Digest() string { return digestOf(d) }

func digestOf(v any) string {
	var sb strings.Builder
	enc := json.NewEncoder(&sb)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		panic(fmt.Sprintf("build: encoding %T: %v", v, err)) // plain structs of strings always encode
	}
	sum := sha256.Sum256([]byte(sb.String()))
	return "sha256:" + hex.EncodeToString(sum[:])
}

// Text is the definition as the lines a diff compares: a local context's
// Dockerfile as it is, a git context as "git URL", "ref REF", "dir DIR" and
// "credential NAME" lines (the empty ones left out); then, when there are
// any, "--build-arg K=V" lines by name, "--secret NAME" lines and a
// "--target STAGE" line.
func (d Definition) Text() string {
	var sb strings.Builder
	line := func(key, v string) {
		if v != "" {
			fmt.Fprintf(&sb, "%s %s\n", key, v)
		}
	}
	if d.Git == nil {
		sb.WriteString(d.Dockerfile)
		if len(d.BuildArgs)+len(d.Secrets) > 0 || d.Target != "" {
			if d.Dockerfile != "" && !strings.HasSuffix(d.Dockerfile, "\n") {
				sb.WriteString("\n")
			}
		}
	} else {
		line("git", d.Git.URL)
		line("ref", d.Git.Ref)
		line("dir", d.Git.Dir)
		line("credential", d.Git.Credential)
	}
	for _, k := range slices.Sorted(maps.Keys(d.BuildArgs)) {
		line("--build-arg", k+"="+d.BuildArgs[k])
	}
	for _, n := range d.Secrets {
		line("--secret", n)
	}
	line("--target", d.Target)
	return sb.String()
}

// Diff is the unified diff (three lines of context) from definition a,
// labelled from, to definition b, labelled to; "" when their texts are
// equal.
func Diff(a, b Definition, from, to string) (string, error) {
	at, bt := a.Text(), b.Text()
	if at == bt {
		return "", nil
	}
	return difflib.GetUnifiedDiffString(difflib.UnifiedDiff{
		A: lines(at), B: lines(bt),
		FromFile: from, ToFile: to, Context: 3,
	})
}

// lines splits text into lines that each end in a newline (the last one
// given one when it lacks it), as a unified diff shows them; difflib's
// SplitLines would add an empty line after a text's final newline.
func lines(text string) []string {
	ls := strings.SplitAfter(text, "\n")
	if ls[len(ls)-1] == "" {
		ls = ls[:len(ls)-1]
	} else {
		ls[len(ls)-1] += "\n"
	}
	return ls
}

// Inputs is everything that decides what a build produces: two builds with
// equal inputs build the same thing (byte for byte with reproducible
// builds). Its Digest is recorded on each succeeded build as
// inputs_digest.
type Inputs struct {
	// Definition is the build's definition.
	Definition Definition `json:"definition"`
	// Commit is the git commit a git context resolved to ("" for a local
	// context, whose tree is its Dockerfile, in the definition).
	Commit string `json:"commit,omitempty"`
	// Bases are the digests the FROM lines resolved to, when known.
	Bases []Base `json:"bases,omitempty"`
	// Executor identifies the executor that ran the build (its version).
	Executor string `json:"executor"`
}

// Digest is "sha256:" and the hex SHA-256 of the inputs' canonical JSON:
// bases sorted by reference, build arguments by name (JSON maps are).
func (in Inputs) Digest() string {
	in.Bases = slices.Clone(in.Bases)
	slices.SortFunc(in.Bases, func(a, b Base) int {
		if c := strings.Compare(a.Ref, b.Ref); c != 0 {
			return c
		}
		return strings.Compare(a.Digest, b.Digest)
	})
	return digestOf(in)
}

// Inputs collects build b's inputs from its record: its definition, its
// commit, the digests its bases resolved to, and executor, the identity of
// the executor that ran it (its build arguments are in its definition).
func (b *Build) Inputs(executor string) Inputs {
	in := Inputs{Executor: executor}
	if b.Definition != nil {
		in.Definition = *b.Definition
	}
	if b.Commit != nil {
		in.Commit = *b.Commit
	}
	in.Bases = b.Bases
	return in
}

// RecordInputs sets the build's inputs digest.
func (b *Build) RecordInputs(in Inputs) {
	d := in.Digest()
	b.InputsDigest = &d
}

// Dockerfile is the Dockerfile build b built when the build record holds
// it (a local context's); ok is false for a git context, whose Dockerfile
// is in its repository, and for builds stored before definitions.
func (b *Build) Dockerfile() (dockerfile string, ok bool) {
	if b.Definition == nil || b.Definition.Type != "local" {
		return "", false
	}
	return b.Definition.Dockerfile, true
}
