package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/slipway-dev/slipway/events"
	"github.com/slipway-dev/slipway/functions"
	"github.com/slipway-dev/slipway/pkg/auth"
	"github.com/slipway-dev/slipway/pkg/auth/oidc"
	"github.com/slipway-dev/slipway/pkg/build"
	"github.com/slipway-dev/slipway/pkg/dispatch"
	"github.com/slipway-dev/slipway/pkg/gitctx"
	"github.com/slipway-dev/slipway/pkg/image"
	"github.com/slipway-dev/slipway/pkg/registry"
	"github.com/slipway-dev/slipway/pkg/registry/baseimage"
	"github.com/slipway-dev/slipway/pkg/runner/kube"
	"github.com/slipway-dev/slipway/pkg/runner/runc"
	"github.com/slipway-dev/slipway/pkg/secret"
	"github.com/slipway-dev/slipway/pkg/store"
	"github.com/slipway-dev/slipway/pkg/store/firestore"
	"github.com/slipway-dev/slipway/pkg/store/sqlite"
	"github.com/slipway-dev/slipway/pkg/web"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// DatabaseFile is the SQLite file's name in the data dir.
const DatabaseFile = "slipway.db"

// Server is a composed Slipway: its parts and its HTTP handler.
type Server struct {
	cfg    Config
	log    *slog.Logger
	Store  store.Store
	Issuer *auth.Issuer
	Events *events.Publisher
	builds *dispatch.Dispatcher
	ready  atomic.Bool
	mux    *http.ServeMux
	http   *http.Server
	ln     net.Listener
	lock   *dataDirLock
}

// NewLogger returns the structured JSON logger of the given level.
func NewLogger(level string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("log level %q: want debug, info, warn or error", level)
	}
	return slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: l})), nil
}

// Listen opens everything cfg names and binds its address; Serve then serves.
func Listen(cfg Config, log *slog.Logger) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("data dir: %w", err)
	}
	// Before anything opens the data dir: a second server's start-up
	// reconcile would settle the first one's running builds.
	lock, err := lockDataDir(cfg.DataDir)
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		lock.Close()
		return nil, fmt.Errorf("listening on %s: %w", cfg.Addr, err)
	}
	s := &Server{cfg: cfg, log: log, ln: ln, mux: http.NewServeMux(), lock: lock}
	if err := s.open(); err != nil {
		ln.Close()
		s.closeParts()
		return nil, err
	}
	return s, nil
}

func (s *Server) open() error {
	ctx := context.Background()
	var err error
	switch s.cfg.Store {
	case "firestore":
		s.Store, err = firestore.Open(ctx, s.cfg.FirestoreProject)
	default:
		s.Store, err = sqlite.Open(filepath.Join(s.cfg.DataDir, DatabaseFile))
	}
	if err != nil {
		return err
	}
	var verifier auth.Verifier
	if s.cfg.OIDCIssuer != "" {
		if verifier, err = oidc.New(ctx, oidc.Options{Issuer: s.cfg.OIDCIssuer, Audience: s.cfg.OIDCAudience}); err != nil {
			return err
		}
	} else {
		if s.Issuer, err = auth.LoadIssuer(s.cfg.DataDir); err != nil {
			return err
		}
		verifier = s.Issuer
	}
	if s.cfg.EventsOIDCIssuer != "" {
		eventing, err := oidc.New(ctx, oidc.Options{Issuer: s.cfg.EventsOIDCIssuer, Audience: s.cfg.EventsOIDCAudience})
		if err != nil {
			return fmt.Errorf("events OIDC issuer: %w", err)
		}
		verifier = auth.Any(verifier, eventing)
	}
	box, err := secret.LoadBox(s.cfg.credentialsKeyDir())
	if err != nil {
		return err
	}
	if s.Events, err = events.NewPublisher(s.cfg.Sink, s.log); err != nil {
		return err
	}
	deps := functions.Deps{
		Store: s.Store, Verifier: auth.Cache(verifier, 10000, 5*time.Minute), Events: s.Events, Sealer: box, Log: s.log,
		Rules: image.Rules{AllowFileURLs: s.cfg.AllowFileGit}, Registry: s.RegistryHost(),
		Version: s.cfg.Version, Publishers: s.cfg.EventPublishers, MaxBody: s.cfg.MaxBodyBytes, BodyTimeout: s.cfg.BodyTimeout,
		IgnoreWorkspaces: s.cfg.Role != "all" && s.cfg.Role != "receiver",
	}
	role := s.cfg.Role
	switch {
	case role == "all":
		if s.builds, err = s.newDispatcher(box); err != nil {
			return err
		}
	case role == "dispatcher" || role == "reporter" || role == "reconciler":
		cluster, err := s.newCluster(box)
		if err != nil {
			return err
		}
		deps.Handlers = cluster.Handlers(role)
	}
	api := functions.New(deps)
	if role == "all" || role == "api" {
		if s.cfg.Registry == "" {
			reg, err := registry.New(ctx, s.cfg.DataDir, slogWriter{s.log})
			if err != nil {
				return err
			}
			s.mux.Handle("/v2/", minRate(reg, s.cfg.BodyTimeout, RegistryMinRate))
		}
		s.mux.Handle("/api/", api)
		s.mux.Handle("/", web.Handler())
	}
	if role != "api" {
		s.mux.Handle("/events", api)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	s.mux.HandleFunc("GET /health/liveness", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok\n")) })
	s.mux.HandleFunc("GET /health/readiness", func(w http.ResponseWriter, r *http.Request) {
		if !s.ready.Load() {
			http.Error(w, "starting\n", http.StatusServiceUnavailable)
			return
		}
		w.Write([]byte("ok\n"))
	})
	s.mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	s.http = &http.Server{
		Handler:           instrument(s.mux, reg),
		ReadHeaderTimeout: 10 * time.Second,
		// No ReadTimeout or WriteTimeout: blobs of gigabytes go through
		// the registry. Bodies have per-route deadlines instead (the API's
		// in functions, the registry's minRate).
		IdleTimeout: 2 * time.Minute,
		ErrorLog:    slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
	return nil
}

// newCluster sets up the cluster roles' handlers: build pods through the
// in-cluster Kubernetes API.
func (s *Server) newCluster(box *secret.Box) (*dispatch.Cluster, error) {
	rc, err := rest.InClusterConfig()
	if err != nil {
		return nil, fmt.Errorf("kubernetes: %w", err)
	}
	client, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return nil, fmt.Errorf("kubernetes: %w", err)
	}
	pods, err := kube.New(client, kube.Options{Namespace: s.cfg.BuildNamespace, KanikoImage: s.cfg.KanikoImage, InitImage: s.cfg.InitImage, LogCap: int(s.cfg.BuildLogCap)})
	if err != nil {
		return nil, err
	}
	get := func(ctx context.Context, id string) (*corev1.Pod, error) {
		pod, err := client.CoreV1().Pods(s.cfg.BuildNamespace).Get(ctx, id, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return nil, nil
		}
		return pod, err
	}
	return dispatch.NewCluster(s.dispatchOptions(box), pods, get), nil
}

// dispatchOptions are the build settings both runners share.
func (s *Server) dispatchOptions(box *secret.Box) dispatch.Options {
	return dispatch.Options{
		Store: s.Store, Events: s.Events, Secrets: box,
		Registry: s.RegistryHost(), InsecureRegistry: s.cfg.Registry == "", Slots: s.cfg.BuildSlots,
		Limits: build.Limits{MemoryBytes: s.cfg.BuildMemory, CPUs: s.cfg.BuildCPUs, Pids: s.cfg.BuildPids, Timeout: s.cfg.BuildTimeout},
		LogCap: s.cfg.BuildLogCap, Cache: s.cfg.BuildCache, WorkDir: filepath.Join(s.cfg.DataDir, "builds"), Log: s.log,
	}
}

// Demo names the demo workspace and its owner.
const Demo = "demo"

// demo ensures the demo workspace (owner "demo"), and in it an image that
// builds without an image hub: its base, the host's static busybox, is put
// into the embedded registry. It prints a link that opens the web page
// signed in as the workspace's owner.
func (s *Server) demo() error {
	ctx := context.Background()
	ws := store.Workspace{ID: Demo, Owner: Demo, Members: []string{}}
	if err := s.Store.ApplyWorkspace(ctx, "slipway-demo/"+Demo, ws, false); err != nil && !errors.Is(err, store.ErrDuplicate) {
		return err
	}
	if s.cfg.Registry == "" {
		s.demoImage(ctx)
	}
	tok, err := s.Issuer.Issue(Demo, 7*24*time.Hour)
	if err != nil {
		return err
	}
	fmt.Fprintf(s.cfg.Stdout, "\nSlipway is ready. Open this link to use it as the demo user:\n\n  %s/#token=%s&workspace=%s\n\n", s.URL(), tok, Demo)
	return nil
}

// DemoImage is the demo workspace's first image.
const DemoImage = "demo/hello"

// demoImage seeds the demo's base image and image; without a static
// busybox on the host it logs why and leaves the workspace empty.
func (s *Server) demoImage(ctx context.Context) {
	base := s.RegistryHost() + "/library/busybox"
	if _, err := baseimage.PushBusybox(ctx, base); err != nil {
		s.log.Warn("no demo base image", "error", err)
		return
	}
	now := time.Now().UTC()
	img := image.Image{
		ID: Demo + "-hello", Workspace: Demo, Name: DemoImage, Version: 1, DefinitionRev: 1,
		Description: "A first image: press BUILD. Its base is in this server's own registry, so it builds offline.",
		Context: image.Context{Type: image.ContextLocal,
			Dockerfile: "FROM " + base + "\nRUN echo 'hello from Slipway' > /hello\nCMD [\"cat\", \"/hello\"]\n"},
		Created: image.Stamp{By: Demo, At: now}, Modified: image.Stamp{By: Demo, At: now},
	}
	if err := s.Store.CreateImage(ctx, img); err != nil && !errors.Is(err, store.ErrNameTaken) {
		s.log.Warn("no demo image", "error", err)
	}
}

// newDispatcher sets up local builds: Kaniko in runc. When runc or the
// executor is missing the server still serves, and builds fail saying why.
func (s *Server) newDispatcher(box *secret.Box) (*dispatch.Dispatcher, error) {
	fetcher := &gitctx.Fetcher{AllowFile: s.cfg.AllowFileGit}
	if s.cfg.GitCAFile != "" {
		ca, err := os.ReadFile(s.cfg.GitCAFile)
		if err != nil {
			return nil, fmt.Errorf("git CA file: %w", err)
		}
		fetcher.CABundle = ca
	}
	runcDir := filepath.Join(s.cfg.DataDir, "runc")
	runner, err := runc.New(runc.Options{
		Executor: s.cfg.executor(),
		StateDir: filepath.Join(runcDir, "bundles"),
		Root:     filepath.Join(runcDir, "state"),
	})
	var r build.Runner = runner
	var runnerError string
	if err != nil {
		r, runnerError = nil, "builds cannot run on this server: "+err.Error()
		s.log.Warn("builds disabled", "error", err)
	}
	o := s.dispatchOptions(box)
	o.Runner, o.Git, o.RunnerError = r, fetcher, runnerError
	d := dispatch.New(o)
	d.Subscribe(s.Events)
	return d, nil
}

// RegistryHost is the internal registry's HOST:PORT: this server's address,
// with a wildcard host replaced by the loopback address.
func (s *Server) RegistryHost() string {
	if s.cfg.Registry != "" {
		return s.cfg.Registry
	}
	addr := s.ln.Addr().(*net.TCPAddr)
	host := addr.IP.String()
	if addr.IP.IsUnspecified() {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, strconv.Itoa(addr.Port))
}

// URL is the server's base URL.
func (s *Server) URL() string { return "http://" + s.RegistryHost() }

// Serve serves until ctx is done, then shuts down gracefully.
func (s *Server) Serve(ctx context.Context) error {
	errc := make(chan error, 1)
	go func() { errc <- s.http.Serve(s.ln) }()
	if s.builds != nil {
		if err := s.builds.Start(s.cfg.ReconcileInterval); err != nil {
			s.http.Close()
			s.closeParts()
			return err
		}
	}
	if s.cfg.Demo {
		if err := s.demo(); err != nil {
			s.log.Error("demo workspace", "error", err)
		}
	}
	s.ready.Store(true)
	s.log.Info("serving", "addr", s.ln.Addr().String(), "data", s.cfg.DataDir, "version", s.cfg.Version)
	var err error
	select {
	case err = <-errc:
	case <-ctx.Done():
		s.ready.Store(false)
		shutdown, cancel := context.WithTimeout(context.Background(), s.cfg.ShutdownTimeout)
		err = s.http.Shutdown(shutdown)
		cancel()
	}
	s.closeParts()
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	return err
}

func (s *Server) closeParts() {
	if s.builds != nil {
		s.builds.Close()
	}
	if s.Events != nil {
		s.Events.Close(s.cfg.ShutdownTimeout)
	}
	if s.Store != nil {
		s.Store.Close()
	}
	s.lock.Close()
}

// instrument counts requests and their latency by route pattern and code.
func instrument(h http.Handler, reg prometheus.Registerer) http.Handler {
	requests := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "slipway_http_requests_total", Help: "HTTP requests by route, method and status code.",
	}, []string{"route", "method", "code"})
	latency := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "slipway_http_request_duration_seconds", Help: "HTTP request latency by route and method.",
		Buckets: prometheus.ExponentialBuckets(0.0005, 4, 10),
	}, []string{"route", "method"})
	reg.MustRegister(requests, latency)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec := &codeRecorder{ResponseWriter: w, code: http.StatusOK}
		h.ServeHTTP(rec, r)
		// The muxes set r.Pattern in place; the innermost match wins.
		route := r.Pattern
		if route == "" {
			route = "unmatched"
		} else if _, p, ok := strings.Cut(route, " "); ok {
			route = p
		}
		requests.WithLabelValues(route, r.Method, strconv.Itoa(rec.code)).Inc()
		latency.WithLabelValues(route, r.Method).Observe(time.Since(start).Seconds())
	})
}

// codeRecorder remembers the status code written through it.
type codeRecorder struct {
	http.ResponseWriter
	code int
}

func (c *codeRecorder) WriteHeader(code int) {
	c.code = code
	c.ResponseWriter.WriteHeader(code)
}

// Unwrap lets http.ResponseController reach the underlying writer's Flush.
func (c *codeRecorder) Unwrap() http.ResponseWriter { return c.ResponseWriter }

// slogWriter forwards a dependency's log lines to the structured log.
type slogWriter struct{ log *slog.Logger }

func (w slogWriter) Write(p []byte) (int, error) {
	w.log.Warn("registry", "line", strings.TrimSpace(string(p)))
	return len(p), nil
}
