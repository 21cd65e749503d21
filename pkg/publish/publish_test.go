package publish

import (
	"context"
	"io"
	stdlog "log"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	ggcrregistry "github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/slipway-dev/slipway/pkg/build"
	"github.com/slipway-dev/slipway/pkg/image"
	"github.com/slipway-dev/slipway/pkg/secret"
	"github.com/slipway-dev/slipway/pkg/store"
	"github.com/slipway-dev/slipway/pkg/store/sqlite"
	"github.com/slipway-dev/slipway/pkg/store/storetest"
)

// registry serves a real registry (go-containerregistry's) on loopback;
// with a password it answers 401 without user "u" and that password.
func registry(t *testing.T, password string) string {
	t.Helper()
	reg := ggcrregistry.New(ggcrregistry.Logger(stdlog.New(io.Discard, "", 0)))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if u, p, ok := r.BasicAuth(); password != "" && (!ok || u != "u" || p != password) {
			w.Header().Set("WWW-Authenticate", `Basic realm="test"`)
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		reg.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://")
}

func ref(t *testing.T, s string) name.Reference {
	t.Helper()
	r, err := name.ParseReference(s)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// TestPublishEachDestinationOnItsOwn: one publication to destinations that
// take the image, refuse it, name a credential of another host, another
// workspace's repository in the internal registry, or never answer; each
// gets its own result, and the ones that took it serve the built digest.
func TestPublishEachDestinationOnItsOwn(t *testing.T) {
	ctx := context.Background()
	db, err := sqlite.Open(filepath.Join(t.TempDir(), "slipway.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	box, err := secret.LoadBox(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	internal, ext, other := registry(t, ""), registry(t, "pw"), registry(t, "")
	db.ApplyWorkspace(ctx, "e1", store.Order{}, store.Workspace{ID: "ws1", Owner: "alice"}, false)
	db.ApplyWorkspace(ctx, "e2", store.Order{}, store.Workspace{ID: "ws2", Owner: "carol"}, false)
	img := storetest.NewImage("a", "ws1", "team/a")
	db.CreateImage(ctx, img)
	db.CreateImage(ctx, storetest.NewImage("b", "ws1", "team/b"))
	db.CreateImage(ctx, storetest.NewImage("c", "ws2", "other/c"))
	seal := func(s string) string { v, _ := box.Seal(s); return v }
	db.PutCredential(ctx, store.Credential{Workspace: "ws1", Name: "ext", Kind: "registry", Registry: ext, Username: "u", Secret: seal("pw")})
	db.PutCredential(ctx, store.Credential{Workspace: "ws1", Name: "bad", Kind: "registry", Registry: ext, Username: "u", Secret: seal("wrong")})
	built, _ := random.Image(512, 2)
	if err := remote.Write(ref(t, internal+"/team/a:latest"), built); err != nil {
		t.Fatal(err)
	}
	digest, _ := built.Digest()
	hang, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer hang.Close()
	go func() {
		for {
			c, err := hang.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	p := New(Options{Store: db, Secrets: box, Registry: internal})
	dests := []image.Destination{
		{Reference: ext + "/team/a:v1", Credential: "ext"},
		{Reference: ext + "/team/a:v2", Credential: "bad"},
		{Reference: other + "/team/a:v1", Credential: "ext"}, // ext's credential, another host
		{Reference: internal + "/other/c:stolen"},            // another workspace's repository
		{Reference: internal + "/team/b:copy"},               // one of its own
		{Reference: hang.Addr().String() + "/team/a:v1"},
	}
	b := build.Build{Image: "a", Number: 1}
	limited, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	got := p.Publish(limited, img, b, digest.String(), dests, nil)
	if len(got) != len(dests) {
		t.Fatalf("%d results for %d destinations", len(got), len(dests))
	}
	wantErr := []string{"", "401", "not pushing", "not an image of this workspace", "", "time limit"}
	for i, r := range got {
		if r.Reference != dests[i].Reference || r.At == nil {
			t.Errorf("result %d: %+v", i, r)
		}
		if wantErr[i] == "" {
			if r.Status != build.PushPushed || r.Error != nil {
				t.Errorf("%s: %+v %v", r.Reference, r, r.Error)
			}
			continue
		}
		if r.Status != build.PushFailed || r.Error == nil || !strings.Contains(*r.Error, wantErr[i]) {
			msg := "<nil>"
			if r.Error != nil {
				msg = *r.Error
			}
			t.Errorf("%s: %s %q, want failed with %q", r.Reference, r.Status, msg, wantErr[i])
		}
		if r.Error != nil && strings.Contains(*r.Error, "wrong") {
			t.Errorf("%s: the error shows the credential: %s", r.Reference, *r.Error)
		}
	}
	for _, target := range []string{ext + "/team/a:v1", internal + "/team/b:copy"} {
		served, err := remote.Image(ref(t, target), remote.WithAuth(&authn.Basic{Username: "u", Password: "pw"}))
		if err != nil {
			t.Fatalf("%s: %v", target, err)
		}
		if d, _ := served.Digest(); d != digest {
			t.Errorf("%s serves %s, built %s", target, d, digest)
		}
	}
	if _, err := remote.Image(ref(t, internal+"/other/c:stolen")); err == nil {
		t.Error("another workspace's repository got the image")
	}
	// An image that is not in the internal registry: every destination
	// fails, saying so.
	for _, r := range p.Publish(ctx, img, b, "sha256:"+strings.Repeat("0", 64), dests[:1], nil) {
		if r.Status != build.PushFailed || !strings.Contains(*r.Error, "reading the built image back") {
			t.Errorf("publishing an image the registry lacks: %+v", r)
		}
	}
}
