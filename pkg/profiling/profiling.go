// Package profiling is the operators' profiling endpoint: Go's
// net/http/pprof handlers on a listener of their own, apart from the API's,
// and on a loopback address unless the operator clearly asks otherwise
// (profiles show code paths and arguments, and a CPU profile costs CPU).
package profiling

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"time"
)

// ErrNotLoopback is what Listen returns for an address another machine
// could reach, unless that is allowed.
var ErrNotLoopback = errors.New("the profiling address is not a loopback address")

// Listen binds addr (HOST:PORT) for the profiling endpoint. HOST must be
// a loopback address or localhost unless anyHost is true.
func Listen(addr string, anyHost bool) (net.Listener, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("profiling address %q: %w", addr, err)
	}
	if !anyHost && !loopback(host) {
		return nil, fmt.Errorf("%w: %q (use 127.0.0.1:PORT, or allow other addresses explicitly)", ErrNotLoopback, addr)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("profiling: listening on %s: %w", addr, err)
	}
	return ln, nil
}

func loopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// Handler serves the pprof index and profiles under /debug/pprof/. It is
// its own mux: nothing is registered on http.DefaultServeMux's behalf.
func Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	return mux
}

// NewServer is the http.Server of the profiling listener. It has no write
// timeout: a CPU profile or a trace streams for as long as it was asked.
func NewServer() *http.Server {
	return &http.Server{Handler: Handler(), ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute}
}
