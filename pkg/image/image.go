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
}

// Image is a stored image definition with its bookkeeping.
type Image struct {
	ID           string
	Workspace    string
	Name         string
	Description  string
	Context      Context
	Destinations []Destination

	Created  Stamp
	Modified Stamp
	Built    *Stamp // the last successful build; nil before the first

	// Version increases on every change and is the image's ETag.
	Version int64
	// DefinitionRev increases whenever what a build produces changes
	// (name, context, destinations); a build records the revision it built.
	DefinitionRev int64
	// BuiltRev is the DefinitionRev of the last successful build, 0 if none.
	BuiltRev int64
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

// Status derives the contract's status from the definition and build revisions.
func (img *Image) Status() Status {
	switch {
	case img.BuiltRev == 0:
		return StatusNotBuilt
	case img.BuiltRev == img.DefinitionRev:
		return StatusBuilt
	default:
		return StatusModified
	}
}

// Edit applies a change by user at time now, bumping the version and, when
// the change alters what a build produces, the definition revision.
func (img *Image) Edit(next Image, user string, now time.Time) {
	definitionChanged := next.Name != img.Name || !sameContext(next.Context, img.Context) ||
		!sameDestinations(next.Destinations, img.Destinations)
	img.Name, img.Description = next.Name, next.Description
	img.Context, img.Destinations = next.Context, next.Destinations
	img.Modified = Stamp{By: user, At: now}
	img.Version++
	if definitionChanged {
		img.DefinitionRev++
	}
}

func sameContext(a, b Context) bool {
	if a.Type != b.Type || a.Dockerfile != b.Dockerfile || (a.Git == nil) != (b.Git == nil) {
		return false
	}
	return a.Git == nil || *a.Git == *b.Git
}

func sameDestinations(a, b []Destination) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// DockerfileAt returns the Dockerfile of img's definition at revision rev
// (a build's DefinitionRev) when img still holds it: a local context whose
// definition has not changed since. A git context's Dockerfile is in its
// repository, not here: ok is false then, as for an older revision.
func (img Image) DockerfileAt(rev int64) (dockerfile string, ok bool) {
	if img.Context.Type != ContextLocal || rev != img.DefinitionRev {
		return "", false
	}
	return img.Context.Dockerfile, true
}
