package server

import (
	"fmt"
	"net"
	"net/http"
	"path"
	"slices"
	"strings"

	"github.com/slipway-dev/slipway/pkg/runner/runc"
)

// buildPaths are the path prefixes a build reaches of this server: the
// embedded registry and its token endpoint.
var buildPaths = []string{"/v2/", "/auth/"}

// listenForBuilds opens the one host address that local builds reach: a
// second loopback listener that serves only the registry's paths (see
// buildHandler). It returns the forward that makes a build's own loopback
// lead there from the registry's HOST:PORT, so that FROM, --destination
// and the token realm name the same address inside a build as outside,
// while the API, the web page and every other port of the host's loopback
// stay out of reach.
func (s *Server) listenForBuilds() ([]runc.Forward, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("listening for builds: %w", err)
	}
	s.buildLn = ln
	s.buildHTTP = s.newHTTPServer(s.buildHandler())
	return []runc.Forward{{Port: s.ln.Addr().(*net.TCPAddr).Port, HostPort: ln.Addr().(*net.TCPAddr).Port}}, nil
}

// buildHandler serves the requests of builds: those under buildPaths go
// to the server's own handler, anything else is 404, so that a RUN step
// cannot call the API or read the web page.
func (s *Server) buildHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// The cleaned path is the one the server's mux routes by.
		p := path.Clean("/"+r.URL.Path) + "/"
		if slices.ContainsFunc(buildPaths, func(prefix string) bool { return strings.HasPrefix(p, prefix) }) {
			s.http.Handler.ServeHTTP(w, r)
			return
		}
		http.NotFound(w, r)
	})
}
