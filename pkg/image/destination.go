package image

import (
	"net"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
)

// SameRegistry reports whether the registry hosts a and b (HOST[:PORT])
// reach the same registry: equal names, or, for a registry on this
// machine, any loopback or unspecified address (or localhost) with the same
// port, so that 127.0.0.1:8080, localhost:8080 and [::1]:8080 are one.
func SameRegistry(a, b string) bool {
	a, b = normalizeRegistry(a), normalizeRegistry(b)
	if a == b {
		return true
	}
	ha, pa, errA := net.SplitHostPort(a)
	hb, pb, errB := net.SplitHostPort(b)
	return errA == nil && errB == nil && pa == pb && local(ha) && local(hb)
}

func normalizeRegistry(s string) string {
	if r, err := name.NewRegistry(s); err == nil {
		s = r.RegistryStr()
	}
	return strings.ToLower(s)
}

func local(host string) bool {
	if host == "localhost" || strings.HasSuffix(host, ".localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && (ip.IsLoopback() || ip.IsUnspecified())
}
