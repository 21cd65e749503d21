// Package servertest runs a real Slipway in-process for tests: a server on a
// fresh data dir with real SQLite, the embedded registry and, when the
// machine can, real builds (Kaniko in runc).
package servertest

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/uuid"

	"github.com/slipway-dev/slipway/events"
	"github.com/slipway-dev/slipway/pkg/registry/baseimage"
	"github.com/slipway-dev/slipway/pkg/server"
)

// RepoRoot is the repository's root directory.
func RepoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

// Config is the default configuration on a fresh data dir, listening on a
// free loopback port.
func Config(t testing.TB) server.Config {
	cfg := server.DefaultConfig()
	cfg.DataDir = t.TempDir()
	cfg.Addr = "127.0.0.1:0"
	cfg.DrainDelay = 0 // nothing balances load onto a test's server
	return cfg
}

// Executor returns the Kaniko executor for real builds. It skips the test
// without root (runc needs it) and fails, naming the fix, when runc, pasta
// or the executor is missing.
func Executor(t testing.TB) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("real builds run Kaniko in runc, which needs root")
	}
	if _, err := exec.LookPath("runc"); err != nil {
		t.Fatal("runc is not installed: run `make deps` (apt-get install runc)")
	}
	if _, err := exec.LookPath("pasta"); err != nil {
		t.Fatal("pasta, which gives builds their network, is not installed: run `make deps` (apt-get install passt)")
	}
	executor := filepath.Join(RepoRoot(), "bin", "executor")
	if _, err := os.Stat(executor); err != nil {
		t.Fatalf("no Kaniko executor at %s: run `make build`", executor)
	}
	return executor
}

// LockedBuffer is a bytes.Buffer safe for concurrent writes: a server's log.
type LockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *LockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *LockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// Server is a running Slipway.
type Server struct {
	*server.Server
	Config server.Config
	URL    string
	Logs   *LockedBuffer // the server's structured log
	t      testing.TB
	stop   context.CancelFunc
	done   chan error
	mu     sync.Mutex
	tokens map[string]string
}

// Start serves cfg until the test ends (or Stop) and waits until it is ready.
func Start(t testing.TB, cfg server.Config) *Server {
	t.Helper()
	logs := &LockedBuffer{}
	srv, err := server.Listen(cfg, slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	s := &Server{Server: srv, Config: cfg, URL: srv.URL(), Logs: logs, t: t, stop: stop, done: make(chan error, 1), tokens: map[string]string{}}
	go func() { s.done <- srv.Serve(ctx) }()
	WaitReady(t, s.URL)
	t.Cleanup(s.Stop)
	return s
}

// WaitReady waits until the server at base answers its readiness probe, up
// to a minute (a loaded CI machine starts a server slowly; no test times it).
func WaitReady(t testing.TB, base string) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		if res, err := http.Get(base + "/health/readiness"); err == nil {
			res.Body.Close()
			if res.StatusCode == http.StatusOK {
				return
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("server at %s not ready", base)
}

// Stop shuts the server down and waits for it; safe to call twice.
func (s *Server) Stop() {
	s.mu.Lock()
	stop := s.stop
	s.stop = nil
	s.mu.Unlock()
	if stop == nil {
		return
	}
	stop()
	if err := <-s.done; err != nil {
		s.t.Errorf("serve: %v", err)
	}
}

// Token returns a bearer token for subject (one per subject).
func (s *Server) Token(subject string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if tok, ok := s.tokens[subject]; ok {
		return tok
	}
	tok, err := s.Issuer.Issue(subject, time.Hour)
	if err != nil {
		s.t.Fatal(err)
	}
	s.tokens[subject] = tok
	return tok
}

// Announce posts a workspace event as the platform would, in structured
// mode, and expects it handled.
func (s *Server) Announce(typ, id, owner string, members ...string) {
	s.t.Helper()
	body, _ := json.Marshal(map[string]any{
		"specversion": "1.0", "id": uuid.NewString(), "source": "/platform", "type": typ,
		"time": time.Now().UTC().Format(time.RFC3339Nano), "datacontenttype": "application/json", "data": events.Workspace{ID: id, Owner: owner, Members: members},
	})
	req, _ := http.NewRequest("POST", s.URL+"/events", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/cloudevents+json")
	req.Header.Set("Authorization", "Bearer "+s.Token("platform"))
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		s.t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusNoContent {
		s.t.Fatalf("announcing %s: %d", id, res.StatusCode)
	}
}

// Base is the test base image's reference in the server's registry.
func (s *Server) Base() string { return s.RegistryHost() + "/library/busybox" }

// Publisher is the event publisher the tests push library/ images as.
func (s *Server) Publisher() string { return s.Config.EventPublishers[0] }

// PushBase puts the test base image (Debian's static busybox) into the
// server's registry as Base(), pushed as an event publisher through the
// token flow, as the platform would.
func (s *Server) PushBase() {
	s.t.Helper()
	if _, err := baseimage.PushBusybox(context.Background(), s.Base(), s.RegistryAs(s.Publisher())); err != nil {
		s.t.Fatal(err)
	}
}

// RegistryAs is the go-containerregistry option that speaks to the server's
// embedded registry as subject: HTTP basic auth with subject's Slipway token
// as the password, which the registry's token flow exchanges for a bearer
// token. Tests pull and push through it, never anonymously.
func (s *Server) RegistryAs(subject string) remote.Option {
	return remote.WithAuth(&authn.Basic{Username: subject, Password: s.Token(subject)})
}
