package dispatch

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"time"

	"github.com/slipway-dev/slipway/pkg/build"
	"github.com/slipway-dev/slipway/pkg/image"
	"github.com/slipway-dev/slipway/pkg/registry/token"
)

// RegistryTokens mints credentials for the internal registry's token flow.
type RegistryTokens interface {
	// BuildCredential is one build's credential, valid for ttl.
	BuildCredential(ctx context.Context, b token.BuildClaims, ttl time.Duration) (string, error)
	// PullCredential pulls repo alone, for ttl, while the build is active.
	PullCredential(image string, number int, repo string, ttl time.Duration) (string, error)
}

// BuildUser is the user name a build's credential goes with (the token
// endpoint takes any).
const BuildUser = "slipway-build"

// withBuildCredential adds to the docker config cfg the build's credential
// for the internal registry: push and pull on the image's repository (and
// its cache repository when the cache is on), pull on the internal
// repositories the Dockerfile's FROMs name that the workspace may read. It
// lives as long as the build may.
func withBuildCredential(ctx context.Context, o Options, cfg []byte, img image.Image, b build.Build, dockerfile string) ([]byte, error) {
	if o.RegistryTokens == nil {
		return cfg, nil
	}
	var bases []string
	for _, ref := range image.BaseImages(dockerfile) {
		if ref.Context().RegistryStr() == o.Registry {
			bases = append(bases, ref.Context().RepositoryStr())
		}
	}
	push := []string{img.Name}
	if o.Cache {
		push = append(push, image.ReservedPrefix+"/"+img.Name)
	}
	ttl := o.Limits.Timeout
	if ttl <= 0 {
		ttl = time.Hour
	}
	cred, err := o.RegistryTokens.BuildCredential(ctx, token.BuildClaims{Image: b.Image, Number: b.Number, Workspace: img.Workspace, Push: push, Pull: bases}, ttl)
	if err != nil {
		return nil, err
	}
	doc := map[string]map[string]any{"auths": {}}
	if cfg != nil {
		if err := json.Unmarshal(cfg, &doc); err != nil {
			return nil, err
		}
		if doc["auths"] == nil {
			doc["auths"] = map[string]any{}
		}
	}
	doc["auths"][o.Registry] = map[string]string{"auth": base64.StdEncoding.EncodeToString([]byte(BuildUser + ":" + cred))}
	return json.Marshal(doc)
}
