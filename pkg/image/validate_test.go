package image

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestValidateName(t *testing.T) {
	good := []string{"a", "team/pytorch", "team/py-torch_2.1", "a/b/c/d", "a__b", "a---b", "example.com/x", "x0"}
	bad := []string{"", "slipway-cache/x", "Team/x", "team//x", "/team", "team/", "-a", "a-", "a..b", "a_._b", "a b", "a:b", "a@b",
		"team/ünicode", strings.Repeat("a", MaxNameLength+1), "a___b", ".a"}
	for _, n := range good {
		if err := ValidateName(n); err != nil {
			t.Errorf("ValidateName(%q) = %v, want ok", n, err)
		}
	}
	for _, n := range bad {
		var inv *InvalidError
		if err := ValidateName(n); !errors.As(err, &inv) || inv.Field != "name" {
			t.Errorf("ValidateName(%q) = %v, want a name error", n, err)
		}
	}
}

func TestValidateDockerfile(t *testing.T) {
	cases := []struct {
		src      string
		wantLine int // 0: valid
		wantMsg  string
	}{
		{"FROM busybox\nRUN echo hi\n", 0, ""},
		{"ARG BASE=busybox\nFROM $BASE AS build\nRUN true\nFROM scratch\nCOPY --from=build /bin/sh /sh\n", 0, ""},
		{"# comment\nFROM busybox\nRUN <<EOF\necho hi\nEOF\n", 0, ""},
		{"FROM busybox\nRUNN echo hi\n", 2, "unknown instruction"},
		{"RUN echo hi\n", 1, "FROM"},
		{"# only a comment\n", 1, "no instructions"},
		{"FROM busybox\n\nCOPY --bogus=1 a b\n", 3, "unknown flag"},
		{"FROM busybox\nEXPOSE\n", 2, "EXPOSE"},
		{"FROM busybox\nENV\n", 2, "ENV"},
		{"", 0, "empty"},
		{"  \n\t\n", 0, "empty"},
		// Parser directives and linter comments, which BuildKit accepts
		// anywhere a comment may be (a check= comment below the first line
		// once panicked BuildKit's instruction parser when called without a
		// linter).
		{"# syntax=docker/dockerfile:1\n# check=skip=all\nFROM busybox\n", 0, ""},
		{"FROM busybox\n# check=skip=all\nRUN true\n", 0, ""},
		{"FROM busybox\n# check=skip=JSONArgsRecommended;error=true\nCMD echo hi\n", 0, ""},
		{"FROM busybox\n# check=experimental=all\nRUN true\n", 0, ""},
		{"FROM busybox\n# check=bogus\nRUN true\n", 0, ""},
		{"# escape=`\nFROM busybox\n# check=skip=all\nRUN echo a`\n b\n", 0, ""},
	}
	for _, c := range cases {
		err := ValidateDockerfile(c.src)
		if c.wantMsg == "" {
			if err != nil {
				t.Errorf("ValidateDockerfile(%q) = %v, want ok", c.src, err)
			}
			continue
		}
		var inv *InvalidError
		if !errors.As(err, &inv) {
			t.Errorf("ValidateDockerfile(%q) = %v, want an InvalidError", c.src, err)
			continue
		}
		if inv.Line != c.wantLine || !strings.Contains(inv.Message, c.wantMsg) {
			t.Errorf("ValidateDockerfile(%q) = line %d %q, want line %d containing %q", c.src, inv.Line, inv.Message, c.wantLine, c.wantMsg)
		}
	}
}

func TestValidateContext(t *testing.T) {
	git := func(url, ref, dir string) Context {
		return Context{Type: ContextGit, Git: &Git{URL: url, Ref: ref, Dir: dir}}
	}
	cases := []struct {
		name  string
		c     Context
		rules Rules
		field string // "" when valid
	}{
		{"local", Context{Type: ContextLocal, Dockerfile: "FROM a\n"}, Rules{}, ""},
		{"https", git("https://github.com/a/b.git", "main", "docker"), Rules{}, ""},
		{"ssh", git("ssh://git@github.com/a/b.git", "v1.0", ""), Rules{}, ""},
		{"scp-like", git("git@github.com:a/b.git", "", ""), Rules{}, ""},
		{"git", git("git://example.com/r", "0123456789abcdef0123456789abcdef01234567", "a/b/../c"), Rules{}, ""},
		{"file allowed", git("file:///tmp/repo", "", ""), Rules{AllowFileURLs: true}, ""},
		{"file refused", git("file:///tmp/repo", "", ""), Rules{}, "context.git.url"},
		{"local path refused", git("/tmp/repo", "", ""), Rules{}, "context.git.url"},
		{"http refused", git("http://example.com/r", "", ""), Rules{}, "context.git.url"},
		{"ftp refused", git("ftp://example.com/r", "", ""), Rules{}, "context.git.url"},
		{"password in URL", git("https://u:secret@example.com/r", "", ""), Rules{}, "context.git.url"},
		{"no URL", git("", "", ""), Rules{}, "context.git.url"},
		{"dir escapes", git("https://example.com/r", "", "../x"), Rules{}, "context.git.dir"},
		{"dir escapes deep", git("https://example.com/r", "", "a/../../x"), Rules{}, "context.git.dir"},
		{"dir absolute", git("https://example.com/r", "", "/etc"), Rules{}, "context.git.dir"},
		{"ref option", git("https://example.com/r", "--upload-pack=x", ""), Rules{}, "context.git.ref"},
		{"ref dots", git("https://example.com/r", "a..b", ""), Rules{}, "context.git.ref"},
		{"no type", Context{}, Rules{}, "context.type"},
		{"bad type", Context{Type: "svn"}, Rules{}, "context.type"},
		{"git without git", Context{Type: ContextGit}, Rules{}, "context.git"},
		{"git with dockerfile", Context{Type: ContextGit, Dockerfile: "FROM a", Git: &Git{URL: "https://e.com/r"}}, Rules{}, "context.dockerfile"},
		{"local with git", Context{Type: ContextLocal, Dockerfile: "FROM a", Git: &Git{URL: "https://e.com/r"}}, Rules{}, "context.git"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := ValidateContext(c.c, c.rules)
			if c.field == "" {
				if err != nil {
					t.Fatalf("got %v, want ok", err)
				}
				return
			}
			var inv *InvalidError
			if !errors.As(err, &inv) || inv.Field != c.field {
				t.Fatalf("got %v, want an error on %s", err, c.field)
			}
		})
	}
}

func TestCleanDir(t *testing.T) {
	for in, want := range map[string]string{"": "", ".": "", "docker": "docker", "a/./b/": "a/b", "a/../b": "b"} {
		if got, err := CleanDir(in); err != nil || got != want {
			t.Errorf("CleanDir(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
}

func TestValidateDestinations(t *testing.T) {
	ok := []Destination{{Reference: "registry.example.com/team/x:latest", Credential: "hub"}, {Reference: "127.0.0.1:5000/x"}}
	if err := ValidateDestinations(ok); err != nil {
		t.Fatal(err)
	}
	for _, ds := range [][]Destination{
		{{Reference: ""}},
		{{Reference: "UPPER/x"}},
		{{Reference: "r.example/x", Credential: "Bad Name"}},
		{{Reference: "r.example/x"}, {Reference: "r.example/x"}},
	} {
		if err := ValidateDestinations(ds); err == nil {
			t.Errorf("ValidateDestinations(%+v) accepted", ds)
		}
	}
}

func TestStatusFollowsContent(t *testing.T) {
	created, later := time.Now(), time.Now().Add(time.Hour)
	img := Image{Name: "a", Context: Context{Type: ContextLocal, Dockerfile: "FROM a"}, Version: 1, DefinitionRev: 1,
		Modified: Stamp{By: "alice", At: created}}
	if img.Status() != StatusNotBuilt {
		t.Fatalf("new image: %s", img.Status())
	}
	img.BuiltRev, img.BuiltDefinition = 1, img.Definition().Digest()
	if img.Status() != StatusBuilt {
		t.Fatalf("built: %s", img.Status())
	}
	for _, c := range []struct {
		what string
		edit func(*Image)
	}{
		{"description", func(n *Image) { n.Description = "only the description" }},
		{"name", func(n *Image) { n.Name = "b" }},
		{"destinations", func(n *Image) { n.Destinations = []Destination{{Reference: "r.example/x"}} }},
	} {
		next := img
		c.edit(&next)
		was := img.Version
		img.Edit(next, "bob", later)
		if img.Status() != StatusBuilt || img.Version != was+1 || img.Modified.By != "alice" || img.DefinitionRev != 1 {
			t.Fatalf("a %s edit: status %s, version %d, modified %+v, rev %d; want built, %d, alice's, 1",
				c.what, img.Status(), img.Version, img.Modified, img.DefinitionRev, was+1)
		}
	}
	next := img
	next.Context.Dockerfile = "FROM b"
	img.Edit(next, "bob", later)
	if img.Status() != StatusModified || img.DefinitionRev != 2 || img.Modified != (Stamp{By: "bob", At: later}) {
		t.Fatalf("a Dockerfile edit: %s, rev %d, modified %+v", img.Status(), img.DefinitionRev, img.Modified)
	}
	next.Context.Dockerfile = "FROM a"
	img.Edit(next, "carol", later)
	if img.Status() != StatusBuilt || img.DefinitionRev != 3 || img.Modified.By != "carol" {
		t.Fatalf("an edit back to the built Dockerfile: %s, rev %d, modified %+v", img.Status(), img.DefinitionRev, img.Modified)
	}
	git := img
	git.Context = Context{Type: ContextGit, Git: &Git{URL: "https://git.example/r.git", Ref: "main"}}
	img.Edit(git, "bob", later)
	for _, change := range []func(*Git){
		func(g *Git) { g.Ref = "dev" }, func(g *Git) { g.Dir = "docker" },
		func(g *Git) { g.URL = "https://git.example/s.git" }, func(g *Git) { g.Credential = "token" },
	} {
		built := img
		built.BuiltDefinition = img.Definition().Digest()
		next := built
		g := *built.Context.Git
		change(&g)
		next.Context.Git = &g
		built.Edit(next, "bob", later)
		if built.Status() != StatusModified {
			t.Fatalf("a git change to %+v: %s", g, built.Status())
		}
	}
}

// Fuzz targets: the seeds run in every `go test`; `go test -fuzz` explores.

func FuzzValidateName(f *testing.F) {
	for _, s := range []string{"team/pytorch", "a__b", "A", "a//b", "-", "x/" + strings.Repeat("y", 300)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, n string) {
		if ValidateName(n) == nil && (n != strings.ToLower(n) || strings.Contains(n, "//") || len(n) > MaxNameLength) {
			t.Fatalf("accepted %q", n)
		}
	})
}

func FuzzValidateDockerfile(f *testing.F) {
	for _, s := range []string{"FROM a\nRUN b\n", "RUN x", "FROM a\nCOPY --from= a b", "FROM a\nRUN <<EOF\nx\n", "# escape=`\nFROM a\nRUN a`\n b", "\x00"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, src string) {
		err := ValidateDockerfile(src)
		var inv *InvalidError
		if err != nil && !errors.As(err, &inv) {
			t.Fatalf("error of the wrong type: %v", err)
		}
		if inv != nil && inv.Line > strings.Count(src, "\n")+1 {
			t.Fatalf("line %d beyond the end of %q", inv.Line, src)
		}
	})
}

// FuzzValidate runs what SAVE runs on a definition (image.Validate), with a
// fuzzed name, description and local Dockerfile; the only outcome besides
// success is an InvalidError.
func FuzzValidate(f *testing.F) {
	f.Add("team/a", "about", "FROM a\n# check=skip=all\nRUN b\n")
	f.Add("Team", "\xff", "RUN x")
	f.Fuzz(func(t *testing.T, name, description, dockerfile string) {
		err := Validate(Image{Name: name, Description: description,
			Context: Context{Type: ContextLocal, Dockerfile: dockerfile}}, Rules{})
		var inv *InvalidError
		if err != nil && !errors.As(err, &inv) {
			t.Fatalf("error of the wrong type: %v", err)
		}
	})
}

func FuzzValidateContext(f *testing.F) {
	f.Add("git", "https://github.com/a/b", "main", "docker")
	f.Add("git", "git@github.com:a/b.git", "", "../x")
	f.Add("git", "file:///x", "-x", "/abs")
	f.Add("local", "", "", "")
	f.Fuzz(func(t *testing.T, typ, url, ref, dir string) {
		c := Context{Type: typ, Dockerfile: "FROM a\n"}
		if typ == ContextGit {
			c = Context{Type: typ, Git: &Git{URL: url, Ref: ref, Dir: dir}}
		}
		if ValidateContext(c, Rules{}) == nil && typ == ContextGit {
			if d, err := CleanDir(dir); err != nil || strings.HasPrefix(d, "..") || strings.HasPrefix(d, "/") {
				t.Fatalf("accepted dir %q", dir)
			}
			if strings.HasPrefix(ref, "-") {
				t.Fatalf("accepted ref %q", ref)
			}
		}
	})
}

// A check= comment below the first line reached BuildKit's instruction
// parser with a nil linter and panicked it: BaseRegistries, which the
// dispatcher runs on every build's Dockerfile, went the same way.
func TestBaseRegistriesWithLinterComments(t *testing.T) {
	got := BaseRegistries("FROM ghcr.io/a/b\n# check=skip=all\nRUN true\n")
	if strings.Join(got, " ") != "ghcr.io" {
		t.Fatalf("BaseRegistries = %v", got)
	}
}

func TestBaseRegistries(t *testing.T) {
	got := BaseRegistries("ARG V=1\nFROM registry.example.com:5000/base:$V AS a\nFROM busybox AS build\nFROM build\nFROM ghcr.io/x/y@sha256:" + strings.Repeat("a", 64) + "\nFROM scratch\nFROM 127.0.0.1:8080/team/b\n")
	if strings.Join(got, " ") != "index.docker.io ghcr.io 127.0.0.1:8080" {
		t.Fatalf("BaseRegistries = %v", got)
	}
}

func TestSameRegistry(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		want bool
	}{
		{"127.0.0.1:8080", "127.0.0.1:8080", true},
		{"127.0.0.1:8080", "localhost:8080", true},
		{"127.0.0.1:8080", "[::1]:8080", true},
		{"127.0.0.1:8080", "0.0.0.0:8080", true},
		{"127.0.0.1:8080", "127.0.0.2:8080", true},
		{"127.0.0.1:8080", "127.0.0.1:8081", false},
		{"registry.platform:5000", "REGISTRY.platform:5000", true},
		{"registry.platform:5000", "registry.platform:5001", false},
		{"docker.io", "index.docker.io", true},
		{"ghcr.io", "index.docker.io", false},
	} {
		if got := SameRegistry(tc.a, tc.b); got != tc.want {
			t.Errorf("SameRegistry(%q, %q) = %v, want %v", tc.a, tc.b, got, tc.want)
		}
	}
}

func TestBaseImages(t *testing.T) {
	df := "ARG HOST=127.0.0.1:8080\nARG V\nFROM $HOST/library/busybox AS a\nFROM ${HOST}/team/b:$V AS build\nFROM build\nFROM a\nFROM scratch\nFROM ghcr.io/x/y:1\nFROM busybox AS busybox\n"
	var got []string
	for _, r := range BaseImages(df) {
		got = append(got, r.Context().RegistryStr()+" "+r.Context().RepositoryStr())
	}
	want := "127.0.0.1:8080 library/busybox|ghcr.io x/y|index.docker.io library/busybox"
	if strings.Join(got, "|") != want {
		t.Fatalf("BaseImages = %q, want %q", strings.Join(got, "|"), want)
	}
	args := BaseImagesWith("ARG HOST=127.0.0.1:8080\nARG BASE\nFROM $BASE\nFROM $HOST/x\n", map[string]string{"BASE": "127.0.0.1:8080/library/busybox", "HOST": "ghcr.io"})
	if len(args) != 2 || args[0].Context().RepositoryStr() != "library/busybox" || args[1].Context().RegistryStr() != "ghcr.io" {
		t.Fatalf("BaseImagesWith = %v", args)
	}
	if BaseImages("FROM\n") != nil {
		t.Fatal("an invalid Dockerfile has bases")
	}
	// A linter comment (which a parse without a linter panics on).
	if got := BaseImages("# check=skip=all\nFROM 127.0.0.1:8080/library/busybox\n# a comment\nRUN true\n"); len(got) != 1 || got[0].Context().RepositoryStr() != "library/busybox" {
		t.Fatalf("BaseImages with a linter comment = %v", got)
	}
}

func TestReservedNamespaces(t *testing.T) {
	for _, n := range []string{"library/busybox", "library/team/x", "library", "slipway-cache/team/x", "slipway-cache"} {
		err := ValidateName(n)
		var inv *InvalidError
		if !errors.Is(err, ErrReservedName) || !errors.As(err, &inv) || inv.Field != "name" || !strings.Contains(inv.Message, "reserved") {
			t.Errorf("ValidateName(%q) = %v, want a reserved-name error", n, err)
		}
	}
	for _, n := range []string{"libraryx/a", "team/library", "my-library/a", "team/slipway-cache"} {
		if err := ValidateName(n); err != nil {
			t.Errorf("ValidateName(%q) = %v, want ok", n, err)
		}
	}
}
