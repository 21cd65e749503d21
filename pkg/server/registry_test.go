package server_test

import (
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// TestEmbeddedRegistry pushes an image to the registry served under /v2/
// (to library/, as an event publisher, through the token flow), restarts
// the server, and pulls it back by digest as an ordinary user.
func TestEmbeddedRegistry(t *testing.T) {
	e := start(t, serverConfig(t))
	host := e.srv.RegistryHost()
	img, err := random.Image(1024, 2)
	if err != nil {
		t.Fatal(err)
	}
	ref, _ := name.ParseReference(host+"/library/random:v1", name.Insecure)
	if err := remote.Write(ref, img, e.ts.RegistryAs("platform")); err != nil {
		t.Fatalf("push: %v", err)
	}
	want, _ := img.Digest()
	e = e.restart()
	host = e.srv.RegistryHost()
	byDigest, _ := name.ParseReference(host+"/library/random@"+want.String(), name.Insecure)
	got, err := remote.Image(byDigest, e.ts.RegistryAs("alice"))
	if err != nil {
		t.Fatalf("pull after restart: %v", err)
	}
	if d, _ := got.Digest(); d != want {
		t.Fatalf("pulled %s, pushed %s", d, want)
	}
	layers, err := got.Layers()
	if err != nil || len(layers) != 2 {
		t.Fatalf("layers: %d, %v", len(layers), err)
	}
	for _, l := range layers {
		rc, err := l.Compressed()
		if err != nil {
			t.Fatal(err)
		}
		rc.Close()
	}
	// Without a token: refused, with the challenge that sends clients to
	// the token endpoint.
	if _, err := remote.Image(byDigest); err == nil {
		t.Fatal("an anonymous pull succeeded")
	}
}
