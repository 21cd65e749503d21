package dispatch

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"

	"github.com/slipway-dev/slipway/pkg/pullauth"
)

// basePullError is a failure to get a pull token for a private base: the
// build fails with reason base_image.
type basePullError struct{ err error }

func (e *basePullError) Error() string { return e.err.Error() }
func (e *basePullError) Unwrap() error { return e.err }

// basePulls returns the docker config that lets a build pull its private
// bases: for each external registry of bases that the workspace holds a
// registry credential for, a bearer token Slipway obtained with it,
// scoped to pulling those bases (package pullauth). The credential itself
// never goes into the config. Each token is noted in log (where, for what,
// for how long), never its value. A token that cannot be had is a
// *basePullError.
func basePulls(ctx context.Context, o Options, ws string, bases []name.Reference, log interface{ Notef(string, ...any) }) ([]byte, error) {
	var external []name.Reference
	for _, b := range bases {
		if !strings.EqualFold(b.Context().RegistryStr(), o.Registry) {
			external = append(external, b)
		}
	}
	if len(external) == 0 {
		return nil, nil
	}
	cs, err := o.Store.ListCredentials(ctx, ws)
	if err != nil {
		return nil, err
	}
	var creds []pullauth.Credential
	for _, c := range cs {
		if c.Kind != "registry" || !usedBy(c.Registry, external) {
			continue
		}
		pw, err := o.Secrets.Open(c.Secret)
		if err != nil {
			return nil, err
		}
		creds = append(creds, pullauth.Credential{Registry: c.Registry, Username: c.Username, Password: pw})
	}
	x := o.PullAuth
	if x == nil {
		x = pullauth.TokenFlow{}
	}
	cfg, grants, err := pullauth.DockerConfig(ctx, x, creds, external)
	if err != nil {
		return nil, &basePullError{fmt.Errorf("pulling the base image: %w", err)}
	}
	for _, g := range grants {
		valid := "for as long as the registry allows"
		if g.ExpiresIn > 0 {
			valid = "for " + g.ExpiresIn.String()
		}
		log.Notef("a pull token for %s (%s), valid %s, in place of the workspace's credential", g.Registry, strings.Join(g.Repos, ", "), valid)
	}
	return cfg, nil
}

func usedBy(registry string, refs []name.Reference) bool {
	for _, r := range refs {
		if strings.EqualFold(r.Context().RegistryStr(), registry) {
			return true
		}
	}
	return false
}

// mergeAuths adds to the docker config cfg the auths of add for registries
// cfg does not name yet.
func mergeAuths(cfg, add []byte) ([]byte, error) {
	if add == nil {
		return cfg, nil
	}
	if cfg == nil {
		return add, nil
	}
	var doc, more map[string]map[string]json.RawMessage
	if err := json.Unmarshal(cfg, &doc); err != nil {
		return nil, err
	}
	if err := json.Unmarshal(add, &more); err != nil {
		return nil, err
	}
	if doc["auths"] == nil {
		doc["auths"] = map[string]json.RawMessage{}
	}
	for host, a := range more["auths"] {
		if _, ok := doc["auths"][host]; !ok {
			doc["auths"][host] = a
		}
	}
	return json.Marshal(doc)
}

// nopNotes drops notes: a build pod's log is the pod's own.
type nopNotes struct{}

func (nopNotes) Notef(string, ...any) {}
