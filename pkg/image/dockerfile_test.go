package image

import (
	"errors"
	"strings"
	"testing"
)

// TestCheckDockerfile: what SAVE refuses beyond syntax, each with its line,
// and the legal variants next to each refusal. The refused executor forms
// were each built for real with the pinned executor first
// (pkg/runner/runc's TestExecutorForms records what it does with them).
func TestCheckDockerfile(t *testing.T) {
	secrets := Inputs{Secrets: []string{"token"}}
	cases := []struct {
		name     string
		src      string
		in       Inputs
		wantLine int    // 0: accepted
		wantMsg  string // part of the message
	}{
		// Stage resolution.
		{"copy from a stage", "FROM a AS build\nRUN true\nFROM b\nCOPY --from=build /x /y\n", Inputs{}, 0, ""},
		{"copy from a stage, any case", "FROM a AS Build\nFROM b\nCOPY --from=BUILD /x /y\n", Inputs{}, 0, ""},
		{"copy from a stage index", "FROM a\nFROM b\nCOPY --from=0 /x /y\n", Inputs{}, 0, ""},
		{"copy from an image with a tag", "FROM b\nCOPY --from=alpine:3 /x /y\n", Inputs{}, 0, ""},
		{"copy from an image with a path", "FROM b\nCOPY --from=docker/buildx-bin /buildx /y\n", Inputs{}, 0, ""},
		{"copy from an image with a registry", "FROM b\nCOPY --from=ghcr.io/a/b@sha256:" + strings.Repeat("a", 64) + " /x /y\n", Inputs{}, 0, ""},
		{"copy from an ARG stage", "ARG S=build\nFROM a AS build\nFROM b\nARG S\nCOPY --from=$S /x /y\n", Inputs{}, 0, ""},
		{"unknown stage", "FROM a AS build\nFROM b\n\nCOPY --from=buidler /x /y\n", Inputs{}, 4, `no stage named "buidler"`},
		{"unknown stage, none before", "FROM b\nCOPY --from=nostage /x /y\n", Inputs{}, 2, "there is no earlier stage"},
		{"later stage", "FROM a\nCOPY --from=later /x /y\nFROM b AS later\n", Inputs{}, 2, `no stage named "later"`},
		{"own stage index", "FROM a\nFROM b\nCOPY --from=1 /x /y\n", Inputs{}, 3, "stage 1 does not come before"},
		{"bad image reference", "FROM b\nCOPY --from=UPPER/x:1 /x /y\n", Inputs{}, 2, "valid image reference"},
		// Flags and ports.
		{"octal chmod", "FROM a\nCOPY --chmod=0755 x /x\nADD --chmod=644 y /y\n", Inputs{}, 0, ""},
		{"chmod from an ARG", "FROM a\nARG MODE=0700\nCOPY --chmod=$MODE x /x\n", Inputs{}, 0, ""},
		{"chmod=abc", "FROM a\nRUN true\nCOPY --chmod=abc x /x\n", Inputs{}, 3, `"abc" is not an octal file mode`},
		{"ADD chmod=u+x", "FROM a\nADD --chmod=u+x x /x\n", Inputs{}, 2, "octal"},
		{"chmod too big", "FROM a\nCOPY --chmod=77777 x /x\n", Inputs{}, 2, "octal"},
		{"ports", "FROM a\nEXPOSE 80 443/tcp 53/udp 8000-8010 9/sctp\n", Inputs{}, 0, ""},
		{"port from an ENV", "FROM a\nENV PORT=8080\nEXPOSE $PORT\n", Inputs{}, 0, ""},
		{"EXPOSE abc", "FROM a\n\nEXPOSE abc\n", Inputs{}, 3, `"abc" is not a port`},
		{"EXPOSE 0", "FROM a\nEXPOSE 0\n", Inputs{}, 2, "not a port"},
		{"EXPOSE 70000", "FROM a\nEXPOSE 80 70000\n", Inputs{}, 2, `"70000"`},
		{"EXPOSE bad protocol", "FROM a\nEXPOSE 80/http\n", Inputs{}, 2, "not a port"},
		{"EXPOSE backwards range", "FROM a\nEXPOSE 90-80\n", Inputs{}, 2, "not a port"},
		// FROM with ARGs.
		{"FROM an ARG's default", "ARG image=busybox\nFROM ${image}\n", Inputs{}, 0, ""},
		{"FROM an ARG set by a build argument", "ARG image\nFROM ${image}\n", Inputs{BuildArgs: map[string]string{"image": "busybox:1"}}, 0, ""},
		{"FROM an unset ARG", "ARG image\n\nFROM ${image}\nRUN true\n", Inputs{}, 3, "ARG image is unset"},
		{"FROM an undeclared variable", "FROM $nothing\n", Inputs{}, 1, "ARG nothing is unset"},
		{"FROM a bad reference", "ARG V=Bad\nFROM busybox:$V:x\n", Inputs{}, 2, "not a valid image reference"},
		{"FROM a stage", "FROM busybox AS base\nFROM base\n", Inputs{}, 0, ""},
		// Target.
		{"target", "FROM a AS build\nFROM b AS final\n", Inputs{Target: "build"}, 0, ""},
		{"unknown target", "FROM a AS build\nFROM b AS final\n", Inputs{Target: "test"}, 0, "its stages are build, final"},
		// What the executor drops or mis-builds.
		{"RUN heredoc", "FROM a\nRUN <<EOF\necho hi > /f\nEOF\n", Inputs{}, 2, "RUN with a heredoc"},
		{"RUN heredoc as stdin", "FROM a\nRUN true\nRUN cat <<EOF > /f\nhello\nEOF\n", Inputs{}, 3, "RUN with a heredoc"},
		{"COPY heredoc", "FROM a\nCOPY <<EOF /f\nhello\nEOF\n", Inputs{}, 2, "COPY with a heredoc"},
		{"ADD heredoc", "FROM a\nADD <<EOF /f\nhello\nEOF\n", Inputs{}, 2, "ADD with a heredoc"},
		{"a shell here-string is no heredoc", "FROM a\nRUN cat /etc/passwd | grep root\n", Inputs{}, 0, ""},
		{"mount cache", "FROM a\nRUN --mount=type=cache,target=/root/.cache pip install x\n", Inputs{}, 2, "type=cache"},
		{"mount bind", "FROM a\nRUN --mount=type=bind,source=x,target=/x cat /x\n", Inputs{}, 2, "type=bind"},
		{"mount default type (bind)", "FROM a\nRUN --mount=target=/x true\n", Inputs{}, 2, "type=bind"},
		{"mount tmpfs", "FROM a\nRUN --mount=type=tmpfs,target=/t true\n", Inputs{}, 2, "type=tmpfs"},
		{"mount ssh", "FROM a\nRUN --mount=type=ssh git clone x\n", Inputs{}, 2, "type=ssh"},
		{"mount secret", "FROM a\nRUN --mount=type=secret,id=token cat /run/secrets/token\n", secrets, 0, ""},
		{"mount secret at its default target", "FROM a\nRUN --mount=type=secret,id=token,target=/run/secrets/token,required=true true\n", secrets, 0, ""},
		{"mount secret named by its target", "FROM a\nRUN --mount=type=secret,target=/run/secrets/token true\n", secrets, 0, ""},
		{"mount secret not in the image", "FROM a\nRUN --mount=type=secret,id=other true\n", secrets, 2, `"other" is not one of the image's secrets`},
		{"mount secret elsewhere", "FROM a\nRUN --mount=type=secret,id=token,target=/root/.netrc true\n", secrets, 2, "target=/root/.netrc"},
		{"mount secret as env", "FROM a\nRUN --mount=type=secret,id=token,env=TOKEN true\n", secrets, 2, "env=TOKEN"},
		{"mount secret with a mode", "FROM a\nRUN --mount=type=secret,id=token,mode=0444 true\n", secrets, 2, "mode"},
		{"network default", "FROM a\nRUN --network=default true\n", Inputs{}, 0, ""},
		{"network none", "FROM a\nRUN --network=none true\n", Inputs{}, 2, "--network=none"},
		{"network host", "FROM a\nRUN --network=host true\n", Inputs{}, 2, "--network=host"},
		{"security insecure", "FROM a\nRUN --security=insecure true\n", Inputs{}, 2, "--security=insecure"},
		{"COPY --parents", "FROM a\nCOPY --parents a/b/c /p/\n", Inputs{}, 2, "COPY --parents"},
		{"COPY --exclude", "FROM a\nCOPY --exclude=*.md . /x\n", Inputs{}, 2, "COPY --exclude"},
		{"COPY --link", "FROM a\nCOPY --link x /x\n", Inputs{}, 0, ""},
		{"ADD --checksum", "FROM a\nADD --checksum=sha256:" + strings.Repeat("0", 64) + " https://example.com/x /x\n", Inputs{}, 2, "ADD --checksum"},
		{"ADD --keep-git-dir", "FROM a\nADD --keep-git-dir=true https://example.com/r.git /r\n", Inputs{}, 2, "keep-git-dir"},
		{"ADD --unpack", "FROM a\nADD --unpack=true https://example.com/x.tar /x\n", Inputs{}, 2, "--unpack"},
		{"ADD a URL", "FROM a\nADD https://example.com/x /x\n", Inputs{}, 0, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if err := ValidateDockerfile(c.src); err != nil {
				t.Fatalf("the case does not parse: %v", err)
			}
			err := CheckDockerfile(c.src, c.in)
			if c.wantMsg == "" {
				if err != nil {
					t.Fatalf("CheckDockerfile = %v, want ok", err)
				}
				return
			}
			var inv *InvalidError
			if !errors.As(err, &inv) {
				t.Fatalf("CheckDockerfile = %v, want an InvalidError", err)
			}
			if inv.Line != c.wantLine || !strings.Contains(inv.Message, c.wantMsg) {
				t.Fatalf("CheckDockerfile = line %d %q, want line %d containing %q", inv.Line, inv.Message, c.wantLine, c.wantMsg)
			}
		})
	}
}

// Validate runs the checks on a local context's Dockerfile with the
// image's inputs, and checks the inputs of any context.
func TestValidateInputs(t *testing.T) {
	local := func(df string) Image {
		return Image{Name: "team/a", Context: Context{Type: ContextLocal, Dockerfile: df}}
	}
	ok := local("ARG V\nFROM a AS build\nRUN --mount=type=secret,id=token true\n")
	ok.BuildArgs, ok.Secrets, ok.Target = map[string]string{"V": "1", "_x2": "line\nbreak", "HTTP_PROXY": ""}, []string{"token", "pip-conf"}, "build"
	if err := Validate(ok, Rules{}); err != nil {
		t.Fatalf("Validate = %v", err)
	}
	bad := []struct {
		edit  func(*Image)
		field string
	}{
		{func(i *Image) { i.BuildArgs = map[string]string{"1X": "a"} }, "build_args"},
		{func(i *Image) { i.BuildArgs = map[string]string{"A-B": "a"} }, "build_args"},
		{func(i *Image) { i.BuildArgs = map[string]string{"": "a"} }, "build_args"},
		{func(i *Image) { i.BuildArgs = map[string]string{"A": strings.Repeat("x", MaxBuildArgValueBytes+1)} }, "build_args.A"},
		{func(i *Image) { i.BuildArgs = map[string]string{"A": "nul\x00"} }, "build_args.A"},
		{func(i *Image) {
			i.BuildArgs = map[string]string{}
			for j := range MaxBuildArgs + 1 {
				i.BuildArgs["A"+strings.Repeat("x", j)] = ""
			}
		}, "build_args"},
		{func(i *Image) {
			i.BuildArgs = map[string]string{}
			for j := range 10 {
				i.BuildArgs["A"+strings.Repeat("x", j)] = strings.Repeat("v", MaxBuildArgValueBytes)
			}
		}, "build_args"},
		{func(i *Image) { i.Secrets = []string{"Token"} }, "secrets[0]"},
		{func(i *Image) { i.Secrets = []string{"token", "token"} }, "secrets[1]"},
		{func(i *Image) { i.Secrets = nil }, "context.dockerfile"}, // the mount's secret is gone
		{func(i *Image) { i.Target = "Build" }, "target"},
		{func(i *Image) { i.Target = "final" }, "target"},
	}
	for i, b := range bad {
		img := ok
		img.BuildArgs, img.Secrets = map[string]string{"V": "1"}, []string{"token"}
		b.edit(&img)
		var inv *InvalidError
		if err := Validate(img, Rules{}); !errors.As(err, &inv) || inv.Field != b.field {
			t.Errorf("case %d: Validate = %v, want an error on %s", i, err, b.field)
		}
	}
	// A git context's Dockerfile is checked at build time; its inputs now.
	git := Image{Name: "team/g", Context: Context{Type: ContextGit, Git: &Git{URL: "https://example.com/r"}}, Target: "anything"}
	if err := Validate(git, Rules{}); err != nil {
		t.Fatalf("git context with a target: %v", err)
	}
	git.Target = "No"
	if err := Validate(git, Rules{}); err == nil {
		t.Fatal("git context with an invalid target accepted")
	}
}

// Build inputs are part of the definition: changing them makes a built
// image modified.
func TestInputsAreDefinition(t *testing.T) {
	base := Image{Name: "a", Context: Context{Type: ContextLocal, Dockerfile: "FROM a"}, Version: 1, DefinitionRev: 1, BuiltRev: 1,
		BuildArgs: map[string]string{"A": "1"}, Secrets: []string{"s"}, Target: "t"}
	base.BuiltDefinition = base.Definition().Digest() // built as it is
	for name, edit := range map[string]func(*Image){
		"build arg value": func(i *Image) { i.BuildArgs = map[string]string{"A": "2"} },
		"build arg added": func(i *Image) { i.BuildArgs = map[string]string{"A": "1", "B": ""} },
		"secrets":         func(i *Image) { i.Secrets = []string{"s", "t"} },
		"target":          func(i *Image) { i.Target = "" },
	} {
		img := base
		next := base
		edit(&next)
		img.Edit(next, "bob", base.Created.At)
		if img.Status() != StatusModified {
			t.Errorf("%s: status %s after the edit, want modified", name, img.Status())
		}
	}
	img, next := base, base
	next.BuildArgs = map[string]string{"A": "1"} // equal, another map
	img.Edit(next, "bob", base.Created.At)
	if img.Status() != StatusBuilt {
		t.Errorf("an equal edit: %s", img.Status())
	}
}

func FuzzCheckDockerfile(f *testing.F) {
	for _, s := range []string{"FROM a\nCOPY --from=x /a /b\n", "ARG i\nFROM $i\n", "FROM a\nEXPOSE $P\n", "FROM a\nRUN --mount=type=secret,id=s true\n",
		"FROM a\nCOPY --chmod=${M:-0755} a b\n", "FROM a\nRUN <<EOF\nx\nEOF\n", "FROM a AS b\nFROM b\nCOPY --from=0 a b\n"} {
		f.Add(s, "s", "b")
	}
	f.Fuzz(func(t *testing.T, src, secret, target string) {
		if ValidateDockerfile(src) != nil {
			return
		}
		err := CheckDockerfile(src, Inputs{Secrets: []string{secret}, Target: target, BuildArgs: map[string]string{"i": secret}})
		var inv *InvalidError
		if err != nil && !errors.As(err, &inv) {
			t.Fatalf("error of the wrong type: %v", err)
		}
		if inv != nil && inv.Line > strings.Count(src, "\n")+1 {
			t.Fatalf("line %d beyond the end of %q", inv.Line, src)
		}
	})
}
