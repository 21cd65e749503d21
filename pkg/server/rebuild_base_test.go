package server_test

import (
	"context"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/slipway-dev/slipway/pkg/registry/baseimage"
	"github.com/slipway-dev/slipway/pkg/server"
)

// repush pushes the image at ref again under the same tag with a label
// added, as a publisher updating a base would, and returns its new digest.
func (e *env) repush(ref, label string) string {
	e.t.Helper()
	r, err := name.ParseReference(ref)
	if err != nil {
		e.t.Fatal(err)
	}
	img, err := remote.Image(r, e.ts.RegistryAs("platform"))
	if err != nil {
		e.t.Fatal(err)
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		e.t.Fatal(err)
	}
	c := cfg.Config
	c.Labels = map[string]string{"update": label}
	next, err := mutate.Config(img, c)
	if err != nil {
		e.t.Fatal(err)
	}
	if err := remote.Write(r, next, e.ts.RegistryAs("platform")); err != nil {
		e.t.Fatal(err)
	}
	d, _ := next.Digest()
	return d.String()
}

// A base image re-pushed under the same tag in the real embedded registry
// rebuilds the images that follow it, recording the old and new digest;
// an image on another base, or without the policy, does not rebuild, and
// an unchanged base builds nothing.
func TestBaseImageUpdateRebuilds(t *testing.T) {
	e := buildEnv(t, func(c *server.Config) { c.RebuildCheckInterval = 24 * time.Hour })
	other := e.srv.RegistryHost() + "/library/other"
	if _, err := baseimage.PushBusybox(context.Background(), other, e.ts.RegistryAs("platform")); err != nil {
		t.Fatal(err)
	}
	follow := map[string]any{"on_base_image_update": true}
	newImage := func(name, base string, policy map[string]any) image {
		def := localImage(name, "ARG BASE="+base+"\nFROM ${BASE}\nRUN echo "+name+" > /name\n")
		if policy != nil {
			def["rebuild"] = policy
		}
		return e.newImage(def)
	}
	a := newImage("team/on-busybox", e.base(), follow)
	b := newImage("team/on-other", other, follow)
	c := newImage("team/no-policy", e.base(), nil)
	old := map[string]string{}
	for _, img := range []image{a, b, c} {
		built := e.waitFor(img.ID, e.startBuild(img.ID), 2*time.Minute, ended)
		if built.Status != "succeeded" {
			t.Fatalf("%s: %+v\n%s", img.Name, built, e.buildLog(img.ID, built.Number))
		}
		bs := e.buildsOf(img.ID)
		if len(bs[0].Bases) != 1 || bs[0].Bases[0].Digest == "" {
			t.Fatalf("%s: the build recorded bases %+v, want its one FROM (after the ARG default)", img.Name, bs[0].Bases)
		}
		old[img.ID] = bs[0].Bases[0].Digest
	}
	if want := e.base() + ":latest"; e.buildsOf(a.ID)[0].Bases[0].Ref != want {
		t.Fatalf("base ref %q, want %q", e.buildsOf(a.ID)[0].Bases[0].Ref, want)
	}
	// A build argument that names the base: the base recorded (and then
	// watched) is the one built from, not the ARG's default.
	argDef := localImage("team/arg-base", "ARG BASE="+e.base()+"\nFROM ${BASE}\nRUN echo arg > /name\n")
	argDef["build_args"] = map[string]string{"BASE": other}
	argImg := e.newImage(argDef)
	if built := e.waitFor(argImg.ID, e.startBuild(argImg.ID), 2*time.Minute, ended); built.Status != "succeeded" {
		t.Fatalf("team/arg-base: %+v\n%s", built, e.buildLog(argImg.ID, built.Number))
	}
	if got := e.buildsOf(argImg.ID)[0].Bases; len(got) != 1 || got[0].Ref != other+":latest" || got[0].Digest == "" {
		t.Fatalf("with build argument BASE=%s, the build recorded bases %+v", other, got)
	}

	// Unchanged bases: no build; the images say when they were checked.
	e.checkNow()
	for _, img := range []image{a, b, c} {
		if n := len(e.buildsOf(img.ID)); n != 1 {
			t.Fatalf("%s: %d builds with its base unchanged", img.Name, n)
		}
	}
	if p, _ := e.getPolicy(a.ID, "bob"); !p.Rebuild.UpToDate || p.Rebuild.CheckedAt == nil {
		t.Fatalf("after an unchanged check: %+v", p.Rebuild)
	}

	// library/busybox moves.
	moved := e.repush(e.base()+":latest", "1")
	if moved == old[a.ID] {
		t.Fatal("the re-push did not move the digest")
	}
	e.checkNow()
	e.checkNow()
	bs := e.buildsOf(a.ID)
	if len(bs) != 2 || bs[0].Trigger != "base_image" || bs[0].RequestedBy != "alice" || bs[0].Cause == nil || len(bs[0].Cause.Bases) != 1 {
		t.Fatalf("the image on the moved base: %+v", bs)
	}
	if ch := bs[0].Cause.Bases[0]; ch.Ref != e.base()+":latest" || ch.Old != old[a.ID] || ch.New != moved {
		t.Fatalf("cause %+v, want %s from %s to %s", ch, e.base(), old[a.ID], moved)
	}
	for _, img := range []image{b, c} {
		if n := len(e.buildsOf(img.ID)); n != 1 {
			t.Fatalf("%s rebuilt: %d builds", img.Name, n)
		}
	}
	if p, _ := e.getPolicy(a.ID, "alice"); p.Rebuild.UpToDate {
		t.Fatal("the image with a moved base says it is up to date")
	}
	rebuilt := e.waitFor(a.ID, bs[0].Number, 2*time.Minute, ended)
	if rebuilt.Status != "succeeded" {
		t.Fatalf("the rebuild: %+v\n%s", rebuilt, e.buildLog(a.ID, rebuilt.Number))
	}
	if got := e.buildsOf(a.ID)[0].Bases; len(got) != 1 || got[0].Digest != moved {
		t.Fatalf("the rebuild recorded %+v, want the new digest", got)
	}
	e.checkNow()
	if n := len(e.buildsOf(a.ID)); n != 2 {
		t.Fatalf("after the rebuild: %d builds, want 2", n)
	}
}
