// Package image owns the image definition: what a user saves in a workspace
// (name, description, build context, destinations), its validation, and the
// status derived from its definition and its last successful build.
package image

import (
	"time"

	"github.com/slipway-dev/slipway/pkg/build"
)

// CacheRepository is the internal registry repository of the layer cache
// of the image named name.
func CacheRepository(name string) string { return ReservedPrefix + "/" + name }

// Status is an image's build status as the dashboard shows it.
type Status string

// The statuses of the contract.
const (
	StatusNotBuilt Status = "not_built"
	StatusBuilt    Status = "built"
	StatusModified Status = "modified"
)

// Context types.
const (
	ContextLocal = "local"
	ContextGit   = "git"
)

// Context says where a build's Dockerfile and files come from.
type Context struct {
	Type       string `json:"type"`
	Dockerfile string `json:"dockerfile,omitempty"`
	Git        *Git   `json:"git,omitempty"`
}

// Git is a build context kept in a Git repository.
type Git struct {
	URL        string `json:"url"`
	Ref        string `json:"ref,omitempty"`
	Dir        string `json:"dir,omitempty"`
	Credential string `json:"credential,omitempty"`
}

// Destination is an external registry reference a build pushes to, with the
// name of the workspace credential that authenticates the push.
type Destination struct {
	Reference  string `json:"reference"`
	Credential string `json:"credential,omitempty"`
}

// Stamp records who did something and when.
type Stamp struct {
	By string    `json:"by"`
	At time.Time `json:"at"`
	// Build is the number of the build, on history's built stamp: the last
	// successful build (0, left out, on stamps stored before it was kept).
	Build int `json:"build,omitempty"`
}

// Image is a stored image definition with its bookkeeping.
type Image struct {
	ID           string
	Workspace    string
	Name         string
	Description  string
	Context      Context
	Destinations []Destination
	// BuildArgs are the values of the Dockerfile's ARGs that every build
	// passes the executor (--build-arg NAME=VALUE): plain values, shown by
	// the API, never for secrets.
	BuildArgs map[string]string
	// Secrets name the workspace credentials of kind secret that a build
	// mounts for RUN --mount=type=secret,id=NAME (at /run/secrets/NAME).
	Secrets []string
	// Target, when set, is the Dockerfile stage a build builds and pushes
	// (the executor's --target); "" is the last stage.
	Target string

	Created  Stamp
	Modified Stamp
	Built    *Stamp // the last successful build; nil before the first

	// Version increases on every change and is the image's ETag.
	Version int64
	// DefinitionRev increases whenever the build definition changes (see
	// Definition); a build records the revision it built, which orders
	// builds for RecordSuccess.
	DefinitionRev int64
	// BuiltRev is the DefinitionRev of the last successful build, 0 if none.
	BuiltRev int64
	// BuiltDefinition is the Digest of the last successful build's
	// definition, "" if none: the image is built while its current
	// definition has this digest.
	BuiltDefinition string
	// Reference is the internal registry reference, by digest, of the last
	// successful build; empty if none.
	Reference string
	// LatestBuild is a copy of the newest build, nil if none; stores keep it
	// current in the transactions that change that build.
	LatestBuild *build.Build

	// Rebuild is the rebuild policy and RebuildState its bookkeeping.
	Rebuild      Rebuild
	RebuildState RebuildState
}

// Definition is the image's build definition: what a build of it builds.
func (img *Image) Definition() build.Definition {
	d := build.Definition{Type: img.Context.Type, Dockerfile: img.Context.Dockerfile,
		BuildArgs: img.BuildArgs, Secrets: img.Secrets, Target: img.Target}
	if g := img.Context.Git; g != nil {
		d.Git = &build.GitDefinition{URL: g.URL, Ref: g.Ref, Dir: g.Dir, Credential: g.Credential}
	}
	return d
}

// AsBuilt is img as definition d builds it: d's context, build arguments,
// secrets and target in place of img's current ones.
func (img Image) AsBuilt(d build.Definition) Image {
	img.Context = ContextOf(d)
	img.BuildArgs, img.Secrets, img.Target = d.BuildArgs, d.Secrets, d.Target
	return img
}

// ContextOf is the context a build definition builds.
func ContextOf(d build.Definition) Context {
	c := Context{Type: d.Type, Dockerfile: d.Dockerfile}
	if g := d.Git; g != nil {
		c.Git = &Git{URL: g.URL, Ref: g.Ref, Dir: g.Dir, Credential: g.Credential}
	}
	return c
}

// Status derives the contract's status from content: built exactly when
// the current definition equals the last successful build's.
func (img *Image) Status() Status {
	switch {
	case img.BuiltDefinition == "":
		return StatusNotBuilt
	case img.BuiltDefinition == img.Definition().Digest():
		return StatusBuilt
	default:
		return StatusModified
	}
}

// Edit applies a change by user at time now. The version increases on
// every change; the definition revision and history's modified stamp only
// when the build definition changes (its context, build arguments, secrets'
// names and target; not the name, the description or the destinations).
func (img *Image) Edit(next Image, user string, now time.Time) {
	definitionChanged := next.Definition().Digest() != img.Definition().Digest()
	img.Name, img.Description = next.Name, next.Description
	img.Context, img.Destinations = next.Context, next.Destinations
	img.BuildArgs, img.Secrets, img.Target = next.BuildArgs, next.Secrets, next.Target
	img.Version++
	if definitionChanged {
		img.DefinitionRev++
		img.Modified = Stamp{By: user, At: now}
	}
}

// Inputs are what a build passes the executor beside its context: the
// build arguments, the secrets' names and the target stage.
type Inputs struct {
	BuildArgs map[string]string
	Secrets   []string
	Target    string
}

// Inputs returns img's build inputs.
func (img *Image) Inputs() Inputs {
	return Inputs{BuildArgs: img.BuildArgs, Secrets: img.Secrets, Target: img.Target}
}
