package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/slipway-dev/slipway/events"
	"github.com/slipway-dev/slipway/functions"
	"github.com/slipway-dev/slipway/pkg/auth"
	"github.com/slipway-dev/slipway/pkg/auth/oidc"
	"github.com/slipway-dev/slipway/pkg/build"
	"github.com/slipway-dev/slipway/pkg/buildcontext"
	"github.com/slipway-dev/slipway/pkg/dispatch"
	"github.com/slipway-dev/slipway/pkg/gate"
	"github.com/slipway-dev/slipway/pkg/image"
	"github.com/slipway-dev/slipway/pkg/outbox"
	"github.com/slipway-dev/slipway/pkg/profiling"
	"github.com/slipway-dev/slipway/pkg/rebuild"
	"github.com/slipway-dev/slipway/pkg/registry"
	"github.com/slipway-dev/slipway/pkg/registry/baseimage"
	"github.com/slipway-dev/slipway/pkg/registry/token"
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
	// RegistryTokens is the embedded registry's token authority; nil with
	// an external registry.
	RegistryTokens *token.Authority
	builds         *dispatch.Dispatcher
	metrics        *prometheus.Registry // what /metrics serves
	// Rebuilds requests the builds of the images' rebuild policies; nil
	// in the roles that request none.
	Rebuilds *rebuild.Rebuilder
	// Bases resolves base images' digests for the rebuild policy.
	Bases *rebuild.Registry
	ready atomic.Bool
	mux   *http.ServeMux
	http  *http.Server
	ln    net.Listener
	// buildHTTP serves builds the registry alone, on buildLn (see
	// listenForBuilds).
	buildHTTP *http.Server
	buildLn   net.Listener
	// pprofHTTP serves the profiling endpoint on pprofLn; both nil unless
	// Config.PprofAddr is set.
	pprofHTTP *http.Server
	pprofLn   net.Listener
	lock      *dataDirLock

	// content is the embedded registry's content and gate what keeps its
	// collection away from writes; both nil with an external registry.
	content *registry.Content
	gate    *gate.Gate
	stopGC  context.CancelFunc
	// stopRebuilds stops the rebuild policy's ticker and waits for it.
	stopRebuilds func()
	relay        *outbox.Relay
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
	// reconcile would settle the first one's running builds. Only the
	// all-in-one server owns its data dir (SQLite, the registry, runc
	// state); the cluster roles keep their state in Firestore and pods.
	var lock *dataDirLock
	if cfg.Role == "all" {
		var err error
		if lock, err = lockDataDir(cfg.DataDir); err != nil {
			return nil, err
		}
	}
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		lock.Close()
		return nil, fmt.Errorf("listening on %s: %w", cfg.Addr, err)
	}
	s := &Server{cfg: cfg, log: log, ln: ln, mux: http.NewServeMux(), lock: lock}
	if cfg.PprofAddr != "" {
		if s.pprofLn, err = profiling.Listen(cfg.PprofAddr, cfg.PprofAnyHost); err != nil {
			ln.Close()
			lock.Close()
			return nil, err
		}
		s.pprofHTTP = profiling.NewServer()
	}
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
	if s.Store, err = s.openStore(ctx); err != nil {
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
	users := auth.Cache(verifier, 10000, 5*time.Minute)
	if s.cfg.Registry == "" {
		signer, err := token.LoadSigner(s.cfg.DataDir)
		if err != nil {
			return err
		}
		s.RegistryTokens = &token.Authority{
			Signer: signer, Users: users, Builds: s.Store, Log: s.log, Realm: s.URL() + token.Path,
			Rights: token.Rights{Owners: s.Store, Pullers: s.cfg.RegistryPullers, Publishers: s.cfg.EventPublishers},
		}
	}
	// Build and image events reach the sink from the store's outbox,
	// written with the change they announce; local handlers get them from
	// Publish.
	reg := prometheus.NewRegistry()
	s.metrics = reg
	if s.relay, err = outbox.New(outbox.Options{
		Outbox: s.Store, Sink: s.cfg.Sink, Overrides: s.cfg.CEOverrides, Log: s.log, Registerer: reg,
	}); err != nil {
		return err
	}
	s.Events.ViaOutbox(events.BuildLifecycle...)
	s.Events.ViaOutbox(events.BuildPushed)
	s.Events.ViaOutbox(events.ImageTypes...)
	s.Events.OnPublish(s.relay.Notify)
	deps := functions.Deps{
		Store: s.Store, Verifier: users, Events: s.Events, Sealer: box, Log: s.log,
		Rules: image.Rules{AllowFileURLs: s.cfg.AllowFileGit}, Registry: s.RegistryHost(),
		Version: s.cfg.Version, Publishers: s.cfg.EventPublishers, MaxBody: s.cfg.MaxBodyBytes, BodyTimeout: s.cfg.BodyTimeout,
		IgnoreWorkspaces: s.cfg.Role != "all" && s.cfg.Role != "receiver",
	}
	role := s.cfg.Role
	if err := s.newRebuilder(box); err != nil {
		return err
	}
	if role == "all" || role == "api" || role == "receiver" {
		deps.Rebuilds, deps.Opener = s.Rebuilds, box
	}
	if s.cfg.Registry == "" && (role == "all" || role == "api") {
		s.gate = gate.New()
		if s.content, err = registry.NewContent(ctx, s.cfg.DataDir, s.gate); err != nil {
			return err
		}
		deps.Content = s.content
	}
	if role == "all" || role == "api" {
		deps.Pushes = s.publisher(box)
	}
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
		if role == "reconciler" {
			// The PingSource drives the rebuild policy too, and a build's
			// end starts the build coalesced behind it.
			const ping = "dev.knative.sources.ping"
			reconcile := deps.Handlers[ping]
			deps.Handlers[ping] = func(ctx context.Context, e cloudevents.Event) error {
				return errors.Join(reconcile(ctx, e), s.Rebuilds.OnPing(ctx, e))
			}
			for _, typ := range rebuild.BuildEnded {
				deps.Handlers[typ] = s.Rebuilds.OnBuildEnded
			}
		}
	case role == "api":
		// ?follow=true streams a running build's log from its pod.
		pods, _, err := s.kubeRunner()
		if err != nil {
			return err
		}
		deps.Live = pods
	}
	api := functions.New(deps)
	if role == "all" || role == "api" {
		if s.cfg.Registry == "" {
			reg, err := registry.New(ctx, s.cfg.DataDir, registry.LogWriter(s.log), registry.TokenAuth{
				Realm: s.RegistryTokens.Realm, Service: token.Service, Issuer: token.Issuer, JWKS: s.RegistryTokens.Signer.JWKS(),
			})
			if err != nil {
				return err
			}
			catalog, err := registry.Catalog(s.cfg.DataDir, s.RegistryTokens)
			if err != nil {
				return err
			}
			s.mux.Handle("/v2/", registry.Guard(minRate(reg, s.cfg.BodyTimeout, RegistryMinRate), s.cfg.DataDir, registry.Limits{MaxUpload: s.cfg.RegistryMaxUpload, Gate: s.gate}))
			s.mux.Handle("GET /v2/_catalog", catalog)
			s.mux.Handle(token.Path, s.RegistryTokens)
		}
		s.mux.Handle("/api/", api)
		s.mux.Handle(functions.HookPath, api)
		s.mux.Handle("/", web.Handler())
	}
	if role != "api" {
		s.mux.Handle("/events", api)
	}
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	s.mux.HandleFunc("GET /health/liveness", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok\n")) })
	s.mux.HandleFunc("GET /health/readiness", func(w http.ResponseWriter, r *http.Request) {
		if !s.ready.Load() {
			http.Error(w, "not ready\n", http.StatusServiceUnavailable)
			return
		}
		w.Write([]byte("ok\n"))
	})
	s.mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	s.http = s.newHTTPServer(instrument(s.mux, reg))
	return nil
}

// newHTTPServer is the http.Server of each of the server's listeners (the
// main one and the builds' one) serving h. No ReadTimeout or WriteTimeout:
// blobs of gigabytes go through the registry. Bodies have per-route
// deadlines instead (the API's in functions, the registry's minRate).
func (s *Server) newHTTPServer(h http.Handler) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
}

// openStore opens the configured store. On failure it returns a nil
// interface, never a typed nil pointer in a non-nil interface, so that
// closeParts does not Close a store that was never opened.
func (s *Server) openStore(ctx context.Context) (store.Store, error) {
	switch s.cfg.Store {
	case "firestore":
		fs, err := firestore.Open(ctx, s.cfg.FirestoreProject)
		if err != nil {
			return nil, err
		}
		return fs, nil
	default:
		db, err := sqlite.Open(filepath.Join(s.cfg.DataDir, DatabaseFile))
		if err != nil {
			return nil, err
		}
		return db, nil
	}
}

// newCluster sets up the cluster roles' handlers: build pods through the
// in-cluster Kubernetes API.
func (s *Server) newCluster(box *secret.Box) (*dispatch.Cluster, error) {
	pods, client, err := s.kubeRunner()
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

// kubeRunner is the build pods' runner, through the in-cluster Kubernetes
// API, and its client.
func (s *Server) kubeRunner() (*kube.Runner, kubernetes.Interface, error) {
	rc, err := rest.InClusterConfig()
	if err != nil {
		return nil, nil, fmt.Errorf("kubernetes: %w", err)
	}
	client, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return nil, nil, fmt.Errorf("kubernetes: %w", err)
	}
	pods, err := kube.New(client, kube.Options{Namespace: s.cfg.BuildNamespace, KanikoImage: s.cfg.KanikoImage, InitImage: s.cfg.InitImage, LogCap: int(s.cfg.BuildLogCap),
		CPURequest: s.cfg.BuildCPURequest, MemoryRequest: s.cfg.BuildMemoryRequest,
	})
	if err != nil {
		return nil, nil, err
	}
	return pods, client, nil
}

// dispatchOptions are the build settings both runners share.
func (s *Server) dispatchOptions(box *secret.Box) dispatch.Options {
	return dispatch.Options{
		Store: s.Store, Events: s.Events, Secrets: box,
		Registry: s.RegistryHost(), InsecureRegistry: s.cfg.Registry == "", Slots: s.cfg.BuildSlots,
		Limits: build.Limits{MemoryBytes: s.cfg.BuildMemory, CPUs: s.cfg.BuildCPUs, Pids: s.cfg.BuildPids, Timeout: s.cfg.BuildTimeout},
		LogCap: s.cfg.BuildLogCap, LogKeep: s.cfg.BuildLogKeep, Cache: s.cfg.BuildCache, Reproducible: s.cfg.BuildReproducible, Log: s.log,
		ExecutorVersion: s.cfg.KanikoImage, // the cluster's; newDispatcher asks the local executor
		RegistryTokens:  s.registryTokens(),
		Gate:            s.pushGate(),
		Registerer:      s.metrics,
		Pushes:          s.publisher(box),
		Bases:           s.Bases,
	}
}

// newRebuilder sets up the rebuild policy: base images resolved in the
// internal registry with tokens of its own authority (with an external
// registry, with the workspaces' credentials), git refs listed with the
// workspaces' git credentials.
func (s *Server) newRebuilder(box *secret.Box) error {
	s.Bases = &rebuild.Registry{Store: s.Store, Secrets: box, Internal: s.RegistryHost(), InsecureInternal: s.cfg.Registry == ""}
	if s.RegistryTokens != nil {
		s.Bases.Tokens = s.RegistryTokens
	}
	// Refs are listed in a child process with the fetch's limits.
	refs := &buildcontext.Preparer{AllowFile: s.cfg.AllowFileGit,
		Limits: buildcontext.Limits{Memory: s.cfg.GitMemory, Timeout: s.cfg.GitTimeout}}
	if s.cfg.GitCAFile != "" {
		ca, err := os.ReadFile(s.cfg.GitCAFile)
		if err != nil {
			return fmt.Errorf("git CA file: %w", err)
		}
		refs.CABundle = ca
	}
	s.Rebuilds = rebuild.New(rebuild.Options{
		Store: s.Store, Events: s.Events, Bases: s.Bases,
		Commits:  &rebuild.GitRemote{Refs: refs, Store: s.Store, Secrets: box},
		Interval: s.cfg.RebuildCheckInterval, Log: s.log,
	})
	return nil
}

// registryTokens is the dispatcher's view of the token authority: none
// with an external registry.
func (s *Server) registryTokens() dispatch.RegistryTokens {
	if s.RegistryTokens == nil {
		return nil
	}
	return s.RegistryTokens
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
	err := s.Store.ApplyWorkspace(ctx, "slipway-demo/"+Demo, store.Order{Time: time.Now()}, ws, false)
	if err != nil && !errors.Is(err, store.ErrDuplicate) && !errors.Is(err, store.ErrStale) {
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
// busybox on the host it logs why and leaves the workspace empty. The base
// goes to library/ as any publisher's would: through the token flow, as the
// first event publisher.
func (s *Server) demoImage(ctx context.Context) {
	base := s.RegistryHost() + "/" + image.LibraryPrefix + "/busybox"
	if len(s.cfg.EventPublishers) == 0 || s.Issuer == nil {
		s.log.Warn("no demo base image: there is no local event publisher to push it as")
		return
	}
	publisher := s.cfg.EventPublishers[0]
	tok, err := s.Issuer.Issue(publisher, 5*time.Minute)
	if err != nil {
		s.log.Warn("no demo base image", "error", err)
		return
	}
	if _, err := baseimage.PushBusybox(ctx, base, remote.WithAuth(&authn.Basic{Username: publisher, Password: tok})); err != nil {
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
	contexts := &buildcontext.Preparer{
		WorkDir: filepath.Join(s.cfg.DataDir, "builds"), AllowFile: s.cfg.AllowFileGit,
		Limits: buildcontext.Limits{Files: s.cfg.GitMaxFiles, Bytes: s.cfg.GitMaxBytes, Memory: s.cfg.GitMemory, Timeout: s.cfg.GitTimeout},
	}
	if s.cfg.GitCAFile != "" {
		ca, err := os.ReadFile(s.cfg.GitCAFile)
		if err != nil {
			return nil, fmt.Errorf("git CA file: %w", err)
		}
		contexts.CABundle = ca
	}
	var forwards []runc.Forward
	if s.cfg.Registry == "" {
		var err error
		if forwards, err = s.listenForBuilds(); err != nil {
			return nil, err
		}
	}
	for _, p := range s.cfg.buildReach {
		forwards = append(forwards, runc.Forward{Port: p, HostPort: p})
	}
	runcDir := filepath.Join(s.cfg.DataDir, "runc")
	runner, err := runc.New(runc.Options{
		Executor: s.cfg.executor(),
		StateDir: filepath.Join(runcDir, "bundles"),
		Root:     filepath.Join(runcDir, "state"),
		Forwards: forwards,
	})
	var r build.Runner = runner
	var runnerError string
	if err != nil {
		r, runnerError = nil, "builds cannot run on this server: "+err.Error()
		s.log.Warn("builds disabled", "error", err)
	}
	o := s.dispatchOptions(box)
	o.Runner, o.Contexts, o.RunnerError = r, contexts, runnerError
	o.ExecutorVersion = executorVersion(s.cfg.executor())
	d := dispatch.New(o)
	d.Subscribe(s.Events)
	for _, typ := range rebuild.BuildEnded {
		s.Events.Subscribe(typ, s.Rebuilds.OnBuildEnded)
	}
	return d, nil
}

// executorVersion is what the Kaniko executor at path says of its version
// (`executor version`, stamped by the Makefile), the identity of local
// builds' executor in their inputs digests; "unknown" when it cannot say.
func executorVersion(path string) string {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, path, "version").Output()
	if v := strings.TrimSpace(string(out)); err == nil && v != "" {
		return v
	}
	return "unknown"
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

// PprofAddr is the profiling endpoint's HOST:PORT; empty when it is off.
func (s *Server) PprofAddr() string {
	if s.pprofLn == nil {
		return ""
	}
	return s.pprofLn.Addr().String()
}

// URL is the server's base URL.
func (s *Server) URL() string { return "http://" + s.RegistryHost() }

// Serve serves until ctx is done, then shuts down gracefully: readiness
// answers 503 at once, requests are still served for Config.DrainDelay, and
// then the server stops accepting connections and waits up to
// Config.ShutdownTimeout for those under way.
func (s *Server) Serve(ctx context.Context) error {
	if s.content != nil {
		// Before serving, nothing writes: the collection at start always
		// runs, and later ones follow the schedule.
		s.content.RunOnce(ctx, s.maintenance(), s.log)
		gcCtx, stop := context.WithCancel(ctx)
		s.stopGC = stop
		go s.content.Maintain(gcCtx, s.maintenance(), s.log)
	}
	errc := make(chan error, 1)
	go func() { errc <- s.http.Serve(s.ln) }()
	if s.buildLn != nil {
		go s.buildHTTP.Serve(s.buildLn)
	}
	if s.pprofLn != nil {
		go s.pprofHTTP.Serve(s.pprofLn)
		s.log.Info("profiling endpoint", "addr", s.pprofLn.Addr().String())
	}
	relayCtx, stopRelay := context.WithCancel(context.Background())
	relayDone := make(chan struct{})
	go func() { s.relay.Run(relayCtx); close(relayDone) }()
	// What the relay has not delivered stays in the outbox for the next start.
	closeParts := func() { stopRelay(); <-relayDone; s.closeParts() }
	if s.builds != nil {
		if err := s.builds.Start(s.cfg.ReconcileInterval); err != nil {
			s.http.Close()
			closeParts()
			return err
		}
	}
	if s.builds != nil {
		// Schedules are looked at every minute, base images and git refs
		// every RebuildCheckInterval (see rebuild.Rebuilder.Tick).
		rebuildCtx, stop := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() { s.Rebuilds.Run(rebuildCtx, min(time.Minute, s.cfg.RebuildCheckInterval)); close(done) }()
		s.stopRebuilds = func() { stop(); <-done }
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
		// Not ready first, while still serving: the readiness probe answers
		// 503 for DrainDelay, so that whatever balances load here stops
		// sending requests before the listener closes.
		s.ready.Store(false)
		if s.cfg.DrainDelay > 0 {
			s.log.Info("draining", "delay", s.cfg.DrainDelay.String())
			select {
			case <-time.After(s.cfg.DrainDelay):
			case err = <-errc:
			}
		}
		shutdown, cancel := context.WithTimeout(context.Background(), s.cfg.ShutdownTimeout)
		if serr := s.http.Shutdown(shutdown); err == nil {
			err = serr
		}
		if s.buildHTTP != nil {
			s.buildHTTP.Shutdown(shutdown)
		}
		cancel()
	}
	closeParts()
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	return err
}

func (s *Server) closeParts() {
	if s.stopRebuilds != nil {
		s.stopRebuilds()
	}
	if s.stopGC != nil {
		s.stopGC()
	}
	if s.buildLn != nil {
		s.buildLn.Close()
	}
	if s.pprofHTTP != nil {
		s.pprofHTTP.Close()
	}
	if s.pprofLn != nil {
		s.pprofLn.Close()
	}
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
