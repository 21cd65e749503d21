package server

import (
	"github.com/slipway-dev/slipway/pkg/publish"
	"github.com/slipway-dev/slipway/pkg/secret"
)

// publisher pushes built images to their external destinations: after a
// local build (the dispatcher), after a build pod (the reporter), and again
// on request (the API). It reads the image back from the internal registry
// with a pull credential of the embedded registry's token flow (none with an
// external registry), and one push takes at most the build timeout.
func (s *Server) publisher(box *secret.Box) *publish.Publisher {
	o := publish.Options{Store: s.Store, Secrets: box, Registry: s.RegistryHost(), PushTimeout: s.cfg.BuildTimeout}
	if s.RegistryTokens != nil {
		o.Tokens = s.RegistryTokens
	}
	if s.gate != nil {
		o.Gate = s.gate
	}
	return publish.New(o)
}
