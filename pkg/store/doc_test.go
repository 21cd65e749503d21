package store_test

import (
	"testing"

	"github.com/slipway-dev/slipway/pkg/image"
	"github.com/slipway-dev/slipway/pkg/store"
)

// Documents stored before builds kept their definitions (no
// built_definition on the image, no definition on builds) read with the
// status their revision counters gave.
func TestDecodeDocumentsWithoutDefinitions(t *testing.T) {
	const ctx = `"context":{"type":"local","dockerfile":"FROM busybox\n"},"destinations":[],` +
		`"created":{"by":"alice","at":"2026-11-27T12:00:00Z"},"modified":{"by":"alice","at":"2026-11-27T12:00:00Z"},`
	for _, c := range []struct {
		name, doc string
		want      image.Status
	}{
		{"never built", `{"id":"i",` + ctx + `"built":null,"definition_rev":1,"built_rev":0,"reference":"","latest_build":null}`, image.StatusNotBuilt},
		{"built", `{"id":"i",` + ctx + `"built":{"by":"alice","at":"2026-11-27T12:01:00Z"},"definition_rev":3,"built_rev":3,"reference":"r@sha256:1","latest_build":null}`, image.StatusBuilt},
		{"modified", `{"id":"i",` + ctx + `"built":{"by":"alice","at":"2026-11-27T12:01:00Z"},"definition_rev":4,"built_rev":3,"reference":"r@sha256:1","latest_build":null}`, image.StatusModified},
	} {
		t.Run(c.name, func(t *testing.T) {
			img, err := store.DecodeImage(c.doc)
			if err != nil {
				t.Fatal(err)
			}
			if img.Status() != c.want {
				t.Fatalf("status %s, want %s", img.Status(), c.want)
			}
			// Written back and read again, it keeps that status.
			doc, err := store.EncodeImage(img)
			if err != nil {
				t.Fatal(err)
			}
			again, err := store.DecodeImage(doc)
			if err != nil || again.Status() != c.want {
				t.Fatalf("after a round trip: %s, %v", again.Status(), err)
			}
		})
	}
	// An old build has no definition: it reads as nil, and when it
	// succeeds it records what it can.
	b, err := store.DecodeBuild(`{"image":"i","number":4,"status":"running","requested_by":"alice","trigger":"manual",` +
		`"queued_at":"2026-11-27T12:00:00Z","started_at":"2026-11-27T12:00:01Z","finished_at":null,"digest":null,` +
		`"reference":null,"commit":null,"pushes":[],"failure":null,"definition_rev":4}`)
	if err != nil || b.Definition != nil || b.InputsDigest != nil || b.DefinitionRev != 4 {
		t.Fatalf("old build: %+v, %v", b, err)
	}
	img, _ := store.DecodeImage(`{"id":"i",` + ctx + `"built":{"by":"alice","at":"2026-11-27T12:01:00Z"},"definition_rev":4,"built_rev":3,"reference":"r@sha256:1","latest_build":null}`)
	if err := b.Succeed("sha256:2", "r@sha256:2", nil, b.QueuedAt); err != nil {
		t.Fatal(err)
	}
	store.RecordSuccess(&img, b)
	if img.Status() != image.StatusBuilt || img.BuiltRev != 4 {
		t.Fatalf("an old build of the current revision succeeded: %s", img.Status())
	}
	// An old build of an older revision finishing later does not roll back.
	old := b
	old.Number, old.DefinitionRev = 3, 3
	store.RecordSuccess(&img, old)
	if img.Built.Build != 4 || img.Status() != image.StatusBuilt {
		t.Fatalf("an older build rolled the image back: %+v", img.Built)
	}
}
