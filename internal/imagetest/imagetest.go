// Package imagetest reads all that a puller of an image can read, for the
// tests that check a secret is in none of it.
package imagetest

import (
	"fmt"
	"io"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// Blobs returns every part of img: each layer, compressed and not, its
// config and its manifest, keyed by a name for messages ("layer 2
// (uncompressed)", "config", "manifest").
func Blobs(t testing.TB, img v1.Image) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	for i, l := range layers {
		for kind, open := range map[string]func() (io.ReadCloser, error){"uncompressed": l.Uncompressed, "compressed": l.Compressed} {
			rc, err := open()
			if err != nil {
				t.Fatal(err)
			}
			b, err := io.ReadAll(rc)
			rc.Close()
			if err != nil {
				t.Fatal(err)
			}
			out[fmt.Sprintf("layer %d (%s)", i, kind)] = b
		}
	}
	for what, get := range map[string]func() ([]byte, error){"config": img.RawConfigFile, "manifest": img.RawManifest} {
		b, err := get()
		if err != nil {
			t.Fatal(err)
		}
		out[what] = b
	}
	return out
}
