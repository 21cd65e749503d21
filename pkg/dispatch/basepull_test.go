package dispatch

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/slipway-dev/slipway/events"
	"github.com/slipway-dev/slipway/pkg/build"
	"github.com/slipway-dev/slipway/pkg/pullauth/pullauthtest"
	"github.com/slipway-dev/slipway/pkg/registry/baseimage"
	"github.com/slipway-dev/slipway/pkg/secret"
	"github.com/slipway-dev/slipway/pkg/store"
)

// fromBase makes the harness's image build FROM base, with a credential
// for base's registry.
func (h *clusterHarness) fromBase(t *testing.T, registry, base, user, password string) {
	ctx := context.Background()
	box := h.c.o.Secrets.(*secret.Box)
	sealed, _ := box.Seal(password)
	if err := h.s.PutCredential(ctx, store.Credential{Workspace: "ws1", Name: "priv", Kind: "registry", Registry: registry, Username: user, Secret: sealed}); err != nil {
		t.Fatal(err)
	}
	img, _ := h.s.GetImage(ctx, "img1")
	version, next := img.Version, img
	next.Context.Dockerfile = "FROM " + base + "\nRUN cat /kaniko/.docker/config.json\n"
	img.Edit(next, "alice", time.Now())
	if err := h.s.UpdateImage(ctx, img, version); err != nil {
		t.Fatal(err)
	}
}

// TestClusterPrivateBaseGetsAPullToken: a build pod's docker config holds
// a pull token for a private base's registry (a real token-auth registry
// on loopback), never the workspace's password; the destination keeps its
// own entry.
func TestClusterPrivateBaseGetsAPullToken(t *testing.T) {
	const reader, password = "puller", "long-lived-base-password-0123"
	reg := pullauthtest.New(t, reader, password, "seeder", "seeder-password-4567")
	if _, err := baseimage.PushBusybox(t.Context(), reg.Host+"/private/base:1", remote.WithAuth(&authn.Basic{Username: "seeder", Password: "seeder-password-4567"})); err != nil {
		t.Fatal(err)
	}
	h := newClusterHarness(t)
	h.fromBase(t, reg.Host, reg.Host+"/private/base:1", reader, password)
	ctx := context.Background()
	if err := h.c.Handlers("dispatcher")[events.BuildQueued](ctx, buildEvent(t, events.BuildQueued, "img1", 1)); err != nil {
		t.Fatal(err)
	}
	if b := h.build(t, 1); b.Status != build.Running {
		t.Fatalf("build: %+v %+v", b, b.Failure)
	}
	sec, err := h.client.CoreV1().Secrets(ns).Get(ctx, "img1-1", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var cfg struct {
		Auths map[string]map[string]string `json:"auths"`
	}
	if err := json.Unmarshal(sec.Data[".dockerconfigjson"], &cfg); err != nil {
		t.Fatal(err)
	}
	issued := reg.Issued(reader)
	if len(issued) != 1 || len(cfg.Auths[reg.Host]) != 1 || cfg.Auths[reg.Host]["registrytoken"] != issued[0].Token ||
		strings.Join(issued[0].Scopes, " ") != "repository:private/base:pull" {
		t.Fatalf("the pod's docker config for %s: %v; tokens issued: %+v", reg.Host, cfg.Auths[reg.Host], issued)
	}
	// The reporter pushes to destinations after the pod: the pod holds
	// no destination credential.
	if _, ok := cfg.Auths["ext.example.com"]; ok {
		t.Fatalf("the pod's docker config holds the destination's credential: %v", cfg.Auths)
	}
	raw, _ := json.Marshal(sec)
	pod, _ := json.Marshal(h.pod(t, "img1-1"))
	for _, s := range []string{string(raw), string(pod)} {
		if strings.Contains(s, password) {
			t.Fatal("the build pod or its secret carries the base registry's password")
		}
	}
}

// TestClusterBasicAuthBaseFails: a base registry without the token flow
// fails the build (base_image) before a pod exists.
func TestClusterBasicAuthBaseFails(t *testing.T) {
	const user, password = "puller", "basic-base-password-4567"
	host := pullauthtest.NewBasic(t, user, password)
	h := newClusterHarness(t)
	h.fromBase(t, host, host+"/private/base:1", user, password)
	ctx := context.Background()
	h.c.Handlers("dispatcher")[events.BuildQueued](ctx, buildEvent(t, events.BuildQueued, "img1", 1))
	b := h.build(t, 1)
	if b.Status != build.Failed || b.Failure == nil || b.Failure.Reason != build.ReasonBaseImage || !strings.Contains(b.Failure.Message, "HTTP basic auth") {
		t.Fatalf("build: %+v %+v", b, b.Failure)
	}
	if _, err := h.client.CoreV1().Pods(ns).Get(ctx, "img1-1", metav1.GetOptions{}); err == nil {
		t.Fatal("a pod was created")
	}
}
