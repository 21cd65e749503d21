package server_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"

	"github.com/slipway-dev/slipway/pkg/profiling"
	"github.com/slipway-dev/slipway/pkg/server"
)

func getText(t *testing.T, url string) (int, string) {
	t.Helper()
	res, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(body)
}

// The profiling endpoint is off unless asked for, and never on the main
// listener.
func TestPprofOffByDefault(t *testing.T) {
	e := start(t, server.Config{})
	if addr := e.srv.PprofAddr(); addr != "" {
		t.Fatalf("profiling serves on %s without --pprof-addr", addr)
	}
	for _, p := range []string{"/debug/pprof/", "/debug/pprof/heap", "/debug/pprof/cmdline"} {
		if code, body := getText(t, e.baseURL+p); code != http.StatusNotFound {
			t.Errorf("GET %s on the main listener: %d %.100q, want 404", p, code, body)
		}
	}
}

// With --pprof-addr the profiles are served there, and still not on the
// main listener.
func TestPprofOnItsOwnLoopbackAddress(t *testing.T) {
	cfg := serverConfig(t)
	cfg.PprofAddr = "127.0.0.1:0"
	e := start(t, cfg)
	addr := e.srv.PprofAddr()
	if !strings.HasPrefix(addr, "127.0.0.1:") || addr == strings.TrimPrefix(e.baseURL, "http://") {
		t.Fatalf("profiling address %q (main %s)", addr, e.baseURL)
	}
	if code, body := getText(t, "http://"+addr+"/debug/pprof/"); code != 200 || !strings.Contains(body, "goroutine") {
		t.Fatalf("pprof index: %d %.200q", code, body)
	}
	if code, body := getText(t, "http://"+addr+"/debug/pprof/goroutine?debug=1"); code != 200 || !strings.Contains(body, "goroutine profile:") {
		t.Fatalf("goroutine profile: %d %.200q", code, body)
	}
	if code, _ := getText(t, e.baseURL+"/debug/pprof/"); code != http.StatusNotFound {
		t.Errorf("the main listener serves /debug/pprof/ too: %d", code)
	}
}

// An address other machines could reach is refused unless allowed, and
// the server does not start.
func TestPprofRefusesNonLoopback(t *testing.T) {
	for _, addr := range []string{"0.0.0.0:0", ":0", "[::]:0", "192.0.2.1:6060"} {
		cfg := serverConfig(t)
		cfg.PprofAddr = addr
		s, err := server.Listen(cfg, slog.New(slog.DiscardHandler))
		if err == nil {
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			s.Serve(ctx)
			t.Fatalf("--pprof-addr %s was accepted", addr)
		}
		if !errors.Is(err, profiling.ErrNotLoopback) {
			t.Errorf("--pprof-addr %s: %v, want ErrNotLoopback", addr, err)
		}
	}
}
