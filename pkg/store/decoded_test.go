package store_test

import (
	"testing"

	"github.com/slipway-dev/slipway/pkg/image"
	"github.com/slipway-dev/slipway/pkg/store"
)

// Decoded serves the image of a document it decoded before, each caller
// its own copy, and decodes a changed document again.
func TestDecodedFollowsTheDocument(t *testing.T) {
	img := image.Image{ID: "img1", Description: "one",
		Context:      image.Context{Type: image.ContextGit, Git: &image.Git{URL: "https://git.example/r.git"}},
		Destinations: []image.Destination{{Reference: "r.example/a:1"}}}
	doc, err := store.EncodeImage(img)
	if err != nil {
		t.Fatal(err)
	}
	var d store.Decoded
	a, err := d.Decode("img1", doc)
	if err != nil {
		t.Fatal(err)
	}
	a.Context.Git.URL, a.Destinations[0].Reference = "changed", "changed"
	b, err := d.Decode("img1", doc)
	if err != nil || b.Context.Git.URL != "https://git.example/r.git" || b.Destinations[0].Reference != "r.example/a:1" {
		t.Fatalf("second decode shares memory with the first: %+v %v", b, err)
	}
	img.Description = "two"
	doc2, _ := store.EncodeImage(img)
	if c, err := d.Decode("img1", doc2); err != nil || c.Description != "two" {
		t.Fatalf("changed document: %+v %v", c, err)
	}
	if _, err := d.Decode("img2", "{not json"); err == nil {
		t.Fatal("a broken document decoded")
	}
}
