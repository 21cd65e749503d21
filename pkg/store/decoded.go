package store

import (
	"maps"
	"slices"
	"sync"

	"github.com/slipway-dev/slipway/pkg/image"
)

// Decoded remembers images decoded from their stored documents for a
// backend: a listing reads the same documents again and again, and
// comparing a document with the one decoded last is far cheaper than
// decoding it again. It is keyed by the document itself, so it can never
// serve a stale image. The zero value is ready to use.
type Decoded struct {
	mu sync.Mutex
	m  map[string]decoded
}

type decoded struct {
	doc string
	img image.Image
}

// maxDecoded bounds a Decoded; when full it starts over.
const maxDecoded = 20000

// Decode returns DecodeImage(doc) for image id, from memory when doc is
// the document it decoded last for id. The image is the caller's own.
func (d *Decoded) Decode(id, doc string) (image.Image, error) {
	d.mu.Lock()
	e, ok := d.m[id]
	d.mu.Unlock()
	if ok && e.doc == doc {
		return CloneImage(e.img), nil
	}
	img, err := DecodeImage(doc)
	if err != nil {
		return img, err
	}
	d.mu.Lock()
	if d.m == nil || len(d.m) >= maxDecoded {
		d.m = map[string]decoded{}
	}
	d.m[id] = decoded{doc: doc, img: CloneImage(img)}
	d.mu.Unlock()
	return img, nil
}

// CloneImage copies what an image points to, so that no two callers share
// memory through a cache.
func CloneImage(img image.Image) image.Image {
	if img.Context.Git != nil {
		g := *img.Context.Git
		img.Context.Git = &g
	}
	img.Destinations = slices.Clone(img.Destinations)
	if img.Built != nil {
		b := *img.Built
		img.Built = &b
	}
	if img.LatestBuild != nil {
		b := *img.LatestBuild
		b.Pushes = slices.Clone(b.Pushes)
		b.Bases = slices.Clone(b.Bases)
		img.LatestBuild = &b
	}
	img.BuildArgs = maps.Clone(img.BuildArgs)
	img.Secrets = slices.Clone(img.Secrets)
	if img.Rebuild.Schedule != nil {
		sc := *img.Rebuild.Schedule
		img.Rebuild.Schedule = &sc
	}
	if p := img.RebuildState.Pending; p != nil {
		b := *p
		img.RebuildState.Pending = &b
	}
	return img
}
