package store

import (
	"encoding/json"
	"fmt"
	"strings"

	"github.com/slipway-dev/slipway/pkg/build"
	"github.com/slipway-dev/slipway/pkg/image"
)

// imageDoc is the stored document of an image, the same in every backend.
// Backends keep the fields they index or compare (workspace, name, version)
// beside it; the document holds the rest, and its ID for backends whose keys
// are not the image's id.
type imageDoc struct {
	ID            string              `json:"id,omitempty"`
	Description   string              `json:"description"`
	Context       image.Context       `json:"context"`
	Destinations  []image.Destination `json:"destinations"`
	BuildArgs     map[string]string   `json:"build_args,omitempty"`
	Secrets       []string            `json:"secrets,omitempty"`
	Target        string              `json:"target,omitempty"`
	Created       image.Stamp         `json:"created"`
	Modified      image.Stamp         `json:"modified"`
	Built         *image.Stamp        `json:"built"`
	DefinitionRev int64               `json:"definition_rev"`
	BuiltRev      int64               `json:"built_rev"`
	// BuiltDefinition is absent from documents stored before builds kept
	// their definitions; DecodeImage derives it (see legacyBuiltDefinition).
	BuiltDefinition string    `json:"built_definition,omitempty"`
	Reference       string    `json:"reference"`
	LatestBuild     *buildDoc `json:"latest_build"`
	// Rebuild is the rebuild policy and RebuildState its bookkeeping
	// (package rebuild).
	Rebuild      *image.Rebuild      `json:"rebuild,omitempty"`
	RebuildState *image.RebuildState `json:"rebuild_state,omitempty"`
}

// buildDoc is the stored document of a build: its JSON form and the field
// that form leaves out.
type buildDoc struct {
	build.Build
	Rev int64 `json:"definition_rev"`
}

func newBuildDoc(b build.Build) buildDoc { return buildDoc{b, b.DefinitionRev} }

func (d buildDoc) build() build.Build {
	b := d.Build
	b.DefinitionRev = d.Rev
	return b
}

// marshal encodes v as JSON without HTML escaping, which would grow a
// Dockerfile's "&&" sixfold towards a backend's document size limit.
func marshal(v any) (string, error) {
	var sb strings.Builder
	enc := json.NewEncoder(&sb)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return "", err
	}
	return strings.TrimSuffix(sb.String(), "\n"), nil
}

// EncodeImage is img's stored document. Workspace, Name and Version are
// left to the backend's own fields.
func EncodeImage(img image.Image) (string, error) {
	d := imageDoc{
		ID: img.ID, Description: img.Description, Context: img.Context, Destinations: img.Destinations,
		BuildArgs: img.BuildArgs, Secrets: img.Secrets, Target: img.Target,
		Created: img.Created, Modified: img.Modified, Built: img.Built,
		DefinitionRev: img.DefinitionRev, BuiltRev: img.BuiltRev, BuiltDefinition: img.BuiltDefinition,
		Reference: img.Reference,
	}
	if img.LatestBuild != nil {
		lb := newBuildDoc(*img.LatestBuild)
		d.LatestBuild = &lb
	}
	if img.Rebuild.Any() {
		d.Rebuild = &img.Rebuild
	}
	if img.RebuildState != (image.RebuildState{}) {
		d.RebuildState = &img.RebuildState
	}
	doc, err := marshal(d)
	if err != nil {
		return "", fmt.Errorf("encoding image %s: %w", img.ID, err)
	}
	return doc, nil
}

// DecodeImage reads an image's stored document; the backend sets
// Workspace, Name and Version (and ID, when its key is the id) from its own
// fields.
func DecodeImage(doc string) (image.Image, error) {
	var d imageDoc
	if err := json.Unmarshal([]byte(doc), &d); err != nil {
		return image.Image{}, fmt.Errorf("decoding image %s: %w", d.ID, err)
	}
	img := image.Image{
		ID: d.ID, Description: d.Description, Context: d.Context, Destinations: d.Destinations,
		BuildArgs: d.BuildArgs, Secrets: d.Secrets, Target: d.Target,
		Created: d.Created, Modified: d.Modified, Built: d.Built,
		DefinitionRev: d.DefinitionRev, BuiltRev: d.BuiltRev, BuiltDefinition: d.BuiltDefinition,
		Reference: d.Reference,
	}
	if img.BuiltDefinition == "" {
		img.BuiltDefinition = legacyBuiltDefinition(img)
	}
	if d.LatestBuild != nil {
		lb := d.LatestBuild.build()
		img.LatestBuild = &lb
	}
	if d.Rebuild != nil {
		img.Rebuild = *d.Rebuild
	}
	if d.RebuildState != nil {
		img.RebuildState = *d.RebuildState
	}
	return img, nil
}

// legacyBuiltDefinition is the built definition of an image stored before
// builds kept their definitions, from the revision counters it had then: the
// current definition's digest when the last successful build was of the
// current revision (built), "" before any success (not built), and otherwise
// a value no definition has (modified until the next successful build: what
// was built is not known).
func legacyBuiltDefinition(img image.Image) string {
	switch {
	case img.BuiltRev == 0:
		return ""
	case img.BuiltRev == img.DefinitionRev:
		return img.Definition().Digest()
	default:
		return UnknownDefinition
	}
}

// UnknownDefinition stands for the definition of a build stored before
// builds kept theirs, when it is not the image's current one.
const UnknownDefinition = "unknown"

// EncodeBuild is b's stored document.
func EncodeBuild(b build.Build) (string, error) {
	doc, err := marshal(newBuildDoc(b))
	if err != nil {
		return "", fmt.Errorf("encoding build %s: %w", b.ID(), err)
	}
	return doc, nil
}

// DecodeBuild reads a build's stored document.
func DecodeBuild(doc string) (build.Build, error) {
	var d buildDoc
	if err := json.Unmarshal([]byte(doc), &d); err != nil {
		return build.Build{}, fmt.Errorf("decoding build: %w", err)
	}
	return d.build(), nil
}
