// Package server composes Slipway from its parts: it picks the store, the
// runner, the registry and the identity verifier from a Config, and serves
// the API, the event receiver, the registry and the web page on one address.
package server

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/slipway-dev/slipway/pkg/build"
	"github.com/slipway-dev/slipway/pkg/buildcontext"
	"github.com/slipway-dev/slipway/pkg/rebuild"
)

// Config is every setting of `slipway serve`. DefaultConfig holds the
// defaults; flags and SLIPWAY_* variables override them.
type Config struct {
	Addr            string   // listen address (SLIPWAY_ADDR)
	DataDir         string   // data directory (SLIPWAY_DATA)
	EventPublishers []string // subjects allowed to POST /events; they also push the registry's library/
	RegistryPullers []string // service subjects (compute nodes) that pull every repository of the embedded registry
	AllowFileGit    bool     // admit file:// Git URLs (local development)
	GitCAFile       string   // extra PEM roots for Git over https (a private CA)
	MaxBodyBytes    int64    // request body cap
	// BodyTimeout is how long an /api/ or /events client has to send its
	// body, and the grace a registry upload gets before it must keep up
	// RegistryMinRate.
	BodyTimeout     time.Duration
	Sink            string        // K_SINK: where emitted events also go
	CEOverrides     string        // K_CE_OVERRIDES: extensions set on every emitted event (Knative's SinkBinding)
	ShutdownTimeout time.Duration // grace period on SIGTERM
	// DrainDelay is how long the server keeps serving after SIGTERM with
	// its readiness probe answering 503, before it stops accepting
	// connections: load balancers and Knative's queue-proxy take it out of
	// rotation meanwhile. Default 5 s.
	DrainDelay time.Duration
	LogLevel   string    // debug, info, warn or error
	Version    string    // reported by /api/v1/info
	Demo       bool      // ensure a demo workspace and print a signed-in link to the page
	Stdout     io.Writer // where the demo link is printed

	Executor     string        // the Kaniko executor; default: beside the slipway binary, or bin/executor
	BuildSlots   int           // builds that run at once; the rest wait in FIFO order
	BuildTimeout time.Duration // wall-clock limit of one build
	BuildMemory  int64         // memory limit of one build, bytes
	BuildCPUs    float64       // CPU limit of one build, cores
	// BuildCPURequest and BuildMemoryRequest are what a build pod requests
	// of a node (cluster only), each at most its limit; zero: kube's
	// DefaultCPURequest (250m) and DefaultMemoryRequest (512Mi).
	BuildCPURequest    float64
	BuildMemoryRequest int64
	BuildPids          int64 // process limit of one build
	BuildLogCap        int64 // bytes of log kept per build: its head and its tail past that
	BuildLogKeep       int   // logs kept per image: the newest builds'; older ones are pruned
	BuildCache         bool  // Kaniko's layer cache in the internal registry (default on), for all but scheduled builds
	// BuildReproducible runs Kaniko with --reproducible (no timestamps in
	// the image: an unchanged definition rebuilds to the same digest). Off
	// by default: Kaniko then canonicalises the image in memory
	// (GoogleContainerTools/kaniko#862), and a build with a 1 GiB layer was
	// killed at the default 2 GiB limit that it passes without.
	BuildReproducible bool
	ReconcileInterval time.Duration // how often stuck builds are looked for

	// RebuildCheckInterval is how often the rebuild policy checks base
	// images and git refs (schedules are looked at every minute, or every
	// interval when that is shorter).
	RebuildCheckInterval time.Duration

	// A Git context's fetch runs in a child process bounded by these.
	GitMaxFiles int64         // entries (files, directories, links) checked out
	GitMaxBytes int64         // bytes checked out, and of any one file the fetch writes
	GitMemory   int64         // the fetch process's address space (RLIMIT_AS), bytes
	GitTimeout  time.Duration // the whole fetch

	// The embedded registry's housekeeping (not used with an external
	// --registry, which keeps its own content).
	RegistryGCInterval       time.Duration // how often unreferenced blobs are collected; 0: only at start
	RegistryGCRemoveUntagged bool          // the collection also deletes manifests no tag points to (earlier builds)
	RegistryGCQuiet          time.Duration // a collection waits until no write came for this long
	RegistryUploadMaxAge     time.Duration // unfinished uploads older than this are purged
	RegistryMaxUpload        int64         // bytes one blob upload may hold; 0: no cap

	// The cluster column (see ../shared/DESIGN.md); the defaults are the
	// embedded parts.
	Role             string // all (one process), api, receiver, dispatcher, reporter or reconciler
	Store            string // sqlite or firestore
	FirestoreProject string // the Google Cloud project of the Firestore database
	Runner           string // runc or kubernetes
	BuildNamespace   string // where build pods run
	KanikoImage      string // the Kaniko executor image of build pods
	InitImage        string // the slipway image, for build pods' context fetching
	Registry         string // HOST[:PORT] of an external internal-registry; empty: the embedded one
	OIDCIssuer       string // verify the platform's OIDC tokens from this issuer instead of local tokens
	OIDCAudience     string // the audience those tokens carry
	// EventsOIDCIssuer and EventsOIDCAudience accept, besides users'
	// tokens, those Knative Eventing's deliveries carry when its OIDC
	// feature is on (the cluster's service-account issuer).
	EventsOIDCIssuer   string
	EventsOIDCAudience string
	// CredentialsKeyDir holds the key that seals workspace credentials
	// (secret.KeyFile); every process of a deployment must share it, so in
	// the cluster it is a mounted Secret. Empty: the data dir.
	CredentialsKeyDir string

	// buildReach are more ports of the host's loopback that local builds
	// reach, as runc.Options.Forwards: only tests set it (export_test.go),
	// to serve a private base registry on loopback.
	buildReach []int
	// PprofAddr, when set, serves net/http/pprof on this HOST:PORT, a
	// listener apart from Addr's; empty (the default): no profiling
	// endpoint. The host must be a loopback address unless PprofAnyHost.
	PprofAddr    string
	PprofAnyHost bool
}

func (c *Config) credentialsKeyDir() string {
	if c.CredentialsKeyDir != "" {
		return c.CredentialsKeyDir
	}
	return c.DataDir
}

// Roles a process can take.
var Roles = []string{"all", "api", "receiver", "dispatcher", "reporter", "reconciler"}

// EnvVars maps each environment variable Slipway reads to the flag it sets;
// flags given on the command line win over the environment.
var EnvVars = map[string]string{
	"SLIPWAY_ADDR": "addr", "SLIPWAY_DATA": "data", "SLIPWAY_ROLE": "role",
	"SLIPWAY_STORE": "store", "SLIPWAY_FIRESTORE_PROJECT": "firestore-project",
	"SLIPWAY_RUNNER": "runner", "SLIPWAY_BUILD_NAMESPACE": "build-namespace",
	"SLIPWAY_KANIKO_IMAGE": "kaniko-image", "SLIPWAY_INIT_IMAGE": "init-image",
	"SLIPWAY_REGISTRY": "registry", "SLIPWAY_OIDC_ISSUER": "oidc-issuer", "SLIPWAY_OIDC_AUDIENCE": "oidc-audience",
	"SLIPWAY_BUILD_TIMEOUT": "build-timeout", "SLIPWAY_BUILD_MEMORY": "build-memory", "SLIPWAY_BUILD_CPU": "build-cpus",
	"SLIPWAY_EVENT_PUBLISHERS": "event-publishers", "SLIPWAY_BUILD_SLOTS": "build-slots",
	"SLIPWAY_REGISTRY_PULLERS":    "registry-pullers",
	"SLIPWAY_CREDENTIALS_KEY_DIR": "credentials-key-dir",
	"SLIPWAY_BUILD_CPU_REQUEST":   "build-cpu-request", "SLIPWAY_BUILD_MEMORY_REQUEST": "build-memory-request",
	"SLIPWAY_DRAIN_DELAY":        "drain-delay",
	"SLIPWAY_EVENTS_OIDC_ISSUER": "events-oidc-issuer", "SLIPWAY_EVENTS_OIDC_AUDIENCE": "events-oidc-audience",
	"SLIPWAY_GIT_MAX_FILES": "git-max-files", "SLIPWAY_GIT_MAX_BYTES": "git-max-bytes",
	"SLIPWAY_GIT_MEMORY": "git-memory", "SLIPWAY_GIT_TIMEOUT": "git-timeout",
	"SLIPWAY_REBUILD_CHECK_INTERVAL": "rebuild-check-interval",
	"SLIPWAY_REGISTRY_GC_INTERVAL":   "registry-gc-interval", "SLIPWAY_REGISTRY_GC_REMOVE_UNTAGGED": "registry-gc-remove-untagged",
	"SLIPWAY_REGISTRY_GC_QUIET": "registry-gc-quiet", "SLIPWAY_REGISTRY_UPLOAD_MAX_AGE": "registry-upload-max-age",
	"SLIPWAY_REGISTRY_MAX_UPLOAD": "registry-max-upload",
	"SLIPWAY_PPROF_ADDR":          "pprof-addr",
	"SLIPWAY_BUILD_LOG_CAP":       "build-log-cap", "SLIPWAY_BUILD_LOG_KEEP": "build-log-keep",
}

// ApplyEnv sets the flags of fs named by EnvVars from the environment.
func ApplyEnv(fs *flag.FlagSet) error {
	for env, name := range EnvVars {
		if v, ok := os.LookupEnv(env); ok && fs.Lookup(name) != nil {
			if err := fs.Set(name, v); err != nil {
				return fmt.Errorf("%s=%q: %w", env, v, err)
			}
		}
	}
	return nil
}

// Validate checks that the settings make sense together.
func (c *Config) Validate() error {
	if !slices.Contains(Roles, c.Role) {
		return fmt.Errorf("role %q: want one of %s", c.Role, strings.Join(Roles, ", "))
	}
	switch c.Store {
	case "sqlite":
	case "firestore":
		if c.FirestoreProject == "" {
			return errors.New("the firestore store needs --firestore-project")
		}
	default:
		return fmt.Errorf("store %q: want sqlite or firestore", c.Store)
	}
	switch c.Runner {
	case "runc":
	case "kubernetes":
		if c.KanikoImage == "" || c.InitImage == "" {
			return errors.New("the kubernetes runner needs --kaniko-image and --init-image")
		}
	default:
		return fmt.Errorf("runner %q: want runc or kubernetes", c.Runner)
	}
	if (c.OIDCIssuer == "") != (c.OIDCAudience == "") {
		return errors.New("--oidc-issuer and --oidc-audience go together")
	}
	if (c.EventsOIDCIssuer == "") != (c.EventsOIDCAudience == "") {
		return errors.New("--events-oidc-issuer and --events-oidc-audience go together")
	}
	if c.Role != "all" && (c.Store == "sqlite" || c.Runner == "runc") {
		return fmt.Errorf("role %s is one function of a cluster deployment: it needs --store firestore and --runner kubernetes", c.Role)
	}
	if c.BodyTimeout <= 0 {
		return errors.New("--body-timeout must be positive")
	}
	if c.BuildSlots < 1 || c.BuildTimeout <= 0 || c.BuildMemory < 0 || c.BuildCPUs < 0 || c.BuildLogCap < 1024 || c.BuildLogKeep < 1 ||
		c.BuildCPURequest < 0 || c.BuildMemoryRequest < 0 || c.DrainDelay < 0 {
		return errors.New("build limits: slots ≥ 1, a positive timeout, non-negative memory, CPUs, requests and drain delay, a log cap of at least 1 KiB, at least one log kept per image")
	}
	if c.RegistryGCInterval < 0 || c.RegistryGCQuiet < 0 || c.RegistryUploadMaxAge <= 0 || c.RegistryMaxUpload < 0 {
		return errors.New("registry housekeeping: a non-negative GC interval and quiet period, a positive upload age, a non-negative upload cap")
	}
	if c.RebuildCheckInterval < time.Second {
		return errors.New("--rebuild-check-interval must be at least 1s")
	}
	if c.GitMaxFiles < 1 || c.GitMaxBytes < 1 || c.GitMemory < 1<<30 || c.GitTimeout <= 0 {
		return errors.New("git fetch limits: at least one file and one byte, a memory of at least 1Gi (the fetch process's address space), a positive timeout")
	}
	return nil
}

// DefaultConfig returns the embedded defaults, with SLIPWAY_ADDR,
// SLIPWAY_DATA, K_SINK and K_CE_OVERRIDES applied from the environment.
func DefaultConfig() Config {
	c := Config{
		Addr:            "127.0.0.1:8080",
		DataDir:         ".slipway",
		EventPublishers: []string{"platform"},
		MaxBodyBytes:    1 << 20,
		BodyTimeout:     30 * time.Second,
		ShutdownTimeout: 10 * time.Second,
		DrainDelay:      5 * time.Second,
		LogLevel:        "info",
		Version:         Version,
		Stdout:          os.Stdout,

		BuildSlots:        2,
		BuildTimeout:      30 * time.Minute,
		BuildMemory:       2 << 30,
		BuildCPUs:         1,
		BuildPids:         4096,
		BuildLogCap:       4 << 20,
		BuildLogKeep:      20,
		BuildCache:        true,
		BuildReproducible: false,
		ReconcileInterval: 30 * time.Second,

		RebuildCheckInterval: rebuild.DefaultInterval,

		GitMaxFiles: buildcontext.DefaultFiles,
		GitMaxBytes: buildcontext.DefaultBytes,
		GitMemory:   buildcontext.DefaultMemory,
		GitTimeout:  buildcontext.DefaultTimeout,

		RegistryGCInterval:   time.Hour,
		RegistryGCQuiet:      time.Minute,
		RegistryUploadMaxAge: time.Hour,
		RegistryMaxUpload:    10 << 30,

		Role:           "all",
		Store:          "sqlite",
		Runner:         "runc",
		BuildNamespace: "slipway-builds",
	}
	if v := os.Getenv("SLIPWAY_ADDR"); v != "" {
		c.Addr = v
	}
	if v := os.Getenv("SLIPWAY_DATA"); v != "" {
		c.DataDir = v
	}
	c.Sink = os.Getenv("K_SINK")
	c.CEOverrides = os.Getenv("K_CE_OVERRIDES")
	return c
}

// Version is the build's version, set with -ldflags at build time.
var Version = "dev"

// RegisterFlags binds c's fields to flags on fs.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.Addr, "addr", c.Addr, "listen `HOST:PORT` (env SLIPWAY_ADDR)")
	fs.StringVar(&c.DataDir, "data", c.DataDir, "data `DIR` (env SLIPWAY_DATA)")
	fs.Func("event-publishers", "comma-separated subjects allowed to post events (default "+strings.Join(c.EventPublishers, ",")+")", func(s string) error {
		c.EventPublishers = strings.Split(s, ",")
		return nil
	})
	fs.Func("registry-pullers", "comma-separated service subjects (compute nodes) that may pull every repository of the embedded registry (default none)", func(s string) error {
		c.RegistryPullers = nil
		for _, p := range strings.Split(s, ",") {
			if p = strings.TrimSpace(p); p != "" {
				c.RegistryPullers = append(c.RegistryPullers, p)
			}
		}
		return nil
	})
	fs.BoolVar(&c.Demo, "demo", c.Demo, "create a demo workspace owned by user \"demo\" and print a signed-in link to the web page")
	fs.BoolVar(&c.AllowFileGit, "allow-file-git", c.AllowFileGit, "allow file:// Git URLs in build contexts (local development only)")
	fs.StringVar(&c.GitCAFile, "git-ca-file", c.GitCAFile, "extra PEM root certificates for Git over https")
	fs.Int64Var(&c.MaxBodyBytes, "max-body", c.MaxBodyBytes, "request body cap in `BYTES`")
	fs.DurationVar(&c.DrainDelay, "drain-delay", c.DrainDelay, "after SIGTERM, how long readiness answers 503 while requests are still served")
	fs.DurationVar(&c.BodyTimeout, "body-timeout", c.BodyTimeout, "time a client has to send an API or event request body; also a registry upload's grace before it must keep up 64 KiB/s")
	fs.StringVar(&c.LogLevel, "log-level", c.LogLevel, "debug, info, warn or error")
	fs.StringVar(&c.Executor, "executor", c.Executor, "the Kaniko executor `PATH` (default: beside this binary, then bin/executor)")
	fs.IntVar(&c.BuildSlots, "build-slots", c.BuildSlots, "builds that run at once")
	fs.DurationVar(&c.BuildTimeout, "build-timeout", c.BuildTimeout, "wall-clock limit of one build")
	fs.Func(build.MemoryFlag, "memory limit of one build, in bytes or as a quantity such as 2Gi (default 2Gi)", func(v string) error {
		q, err := resource.ParseQuantity(v)
		if err != nil {
			return err
		}
		c.BuildMemory = q.Value()
		return nil
	})
	fs.Func("build-cpus", "CPU limit of one build, in cores or as a quantity such as 1500m (default 1)", func(v string) error {
		q, err := resource.ParseQuantity(v)
		if err != nil {
			return err
		}
		c.BuildCPUs = q.AsApproximateFloat64()
		return nil
	})
	fs.Func("build-cpu-request", "CPU a build pod requests of a node, at most its limit (cluster only; default 250m)", func(v string) error {
		q, err := resource.ParseQuantity(v)
		if err != nil {
			return err
		}
		c.BuildCPURequest = q.AsApproximateFloat64()
		return nil
	})
	fs.Func("build-memory-request", "memory a build pod requests of a node, at most its limit (cluster only; default 512Mi)", func(v string) error {
		q, err := resource.ParseQuantity(v)
		if err != nil {
			return err
		}
		c.BuildMemoryRequest = q.Value()
		return nil
	})
	fs.Int64Var(&c.BuildPids, "build-pids", c.BuildPids, "process limit of one build")
	fs.Int64Var(&c.BuildLogCap, "build-log-cap", c.BuildLogCap, "bytes of log kept per build: past it, its first and last halves, with a marker where the middle was cut")
	fs.IntVar(&c.BuildLogKeep, "build-log-keep", c.BuildLogKeep, "logs kept per image: those of its newest builds; older builds keep their records, their logs answer 410 log_pruned")
	fs.BoolVar(&c.BuildCache, "build-cache", c.BuildCache, "use Kaniko's layer cache in the internal registry for manual and automatic builds; scheduled builds never use it")
	fs.BoolVar(&c.BuildReproducible, "build-reproducible", c.BuildReproducible, "reproducible builds (Kaniko's --reproducible): an unchanged definition rebuilds to the same digest, but Kaniko then holds the whole image in memory (a 1 GiB layer does not fit the default --build-memory), hence off")
	fs.Int64Var(&c.GitMaxFiles, "git-max-files", c.GitMaxFiles, "entries (files, directories, links) a Git context may check out")
	fs.Func("git-max-bytes", "bytes a Git context may check out, and of any one file its fetch writes, or a quantity such as 1Gi (default 1Gi)", func(v string) error {
		q, err := resource.ParseQuantity(v)
		if err != nil {
			return err
		}
		c.GitMaxBytes = q.Value()
		return nil
	})
	fs.Func("git-memory", "address space of a Git context's fetch process, or a quantity such as 2Gi; Go reserves about 1Gi of it (default 2Gi)", func(v string) error {
		q, err := resource.ParseQuantity(v)
		if err != nil {
			return err
		}
		c.GitMemory = q.Value()
		return nil
	})
	fs.DurationVar(&c.GitTimeout, "git-timeout", c.GitTimeout, "wall-clock limit of a Git context's fetch")
	fs.DurationVar(&c.ReconcileInterval, "reconcile-interval", c.ReconcileInterval, "how often stuck builds are looked for")
	fs.DurationVar(&c.RebuildCheckInterval, "rebuild-check-interval", c.RebuildCheckInterval, "how often the rebuild policy checks base images and git refs for changes")
	fs.DurationVar(&c.RegistryGCInterval, "registry-gc-interval", c.RegistryGCInterval, "how often the embedded registry's unreferenced blobs are collected (also at start); 0: only at start")
	fs.BoolVar(&c.RegistryGCRemoveUntagged, "registry-gc-remove-untagged", c.RegistryGCRemoveUntagged, "the collection also deletes manifests no tag points to: earlier builds' references stop resolving")
	fs.DurationVar(&c.RegistryGCQuiet, "registry-gc-quiet", c.RegistryGCQuiet, "a collection waits until the registry saw no write for this long")
	fs.DurationVar(&c.RegistryUploadMaxAge, "registry-upload-max-age", c.RegistryUploadMaxAge, "unfinished registry uploads older than this are purged (at each collection)")
	fs.Func("registry-max-upload", "bytes one blob upload to the embedded registry may hold, or a quantity such as 10Gi; 0: no cap (default 10Gi)", func(v string) error {
		q, err := resource.ParseQuantity(v)
		if err != nil {
			return err
		}
		c.RegistryMaxUpload = q.Value()
		return nil
	})
	fs.StringVar(&c.Role, "role", c.Role, "which function this process serves: "+strings.Join(Roles, ", "))
	fs.StringVar(&c.Store, "store", c.Store, "sqlite (in the data dir) or firestore")
	fs.StringVar(&c.FirestoreProject, "firestore-project", c.FirestoreProject, "Google Cloud `PROJECT` of the Firestore database")
	fs.StringVar(&c.Runner, "runner", c.Runner, "runc (local) or kubernetes (build pods)")
	fs.StringVar(&c.BuildNamespace, "build-namespace", c.BuildNamespace, "Kubernetes namespace of build pods")
	fs.StringVar(&c.KanikoImage, "kaniko-image", c.KanikoImage, "the Kaniko executor `IMAGE` of build pods")
	fs.StringVar(&c.InitImage, "init-image", c.InitImage, "the slipway `IMAGE`, whose fetch-context command prepares build pods")
	fs.StringVar(&c.Registry, "registry", c.Registry, "`HOST[:PORT]` of the internal registry; empty serves the embedded one under /v2/")
	fs.StringVar(&c.OIDCIssuer, "oidc-issuer", c.OIDCIssuer, "accept OIDC tokens from this issuer `URL` instead of local tokens")
	fs.StringVar(&c.OIDCAudience, "oidc-audience", c.OIDCAudience, "the audience OIDC tokens must carry")
	fs.StringVar(&c.EventsOIDCIssuer, "events-oidc-issuer", c.EventsOIDCIssuer, "also accept tokens from this issuer `URL` (Knative Eventing's deliveries)")
	fs.StringVar(&c.EventsOIDCAudience, "events-oidc-audience", c.EventsOIDCAudience, "the audience Knative Eventing's tokens carry for this service")
	fs.StringVar(&c.PprofAddr, "pprof-addr", c.PprofAddr, "serve Go's profiling endpoint (net/http/pprof, /debug/pprof/) on this loopback `HOST:PORT`, apart from --addr (default off)")
	fs.BoolVar(&c.PprofAnyHost, "pprof-any-host", c.PprofAnyHost, "let --pprof-addr be a non-loopback address, reachable from other machines (it has no authentication)")
	fs.StringVar(&c.CredentialsKeyDir, "credentials-key-dir", c.CredentialsKeyDir, "`DIR` holding the key that seals workspace credentials (default: the data dir)")
}

// executor finds the Kaniko executor: the configured path, else beside the
// running binary, else bin/executor under the working directory.
func (c *Config) executor() string {
	if c.Executor != "" {
		return c.Executor
	}
	if self, err := os.Executable(); err == nil {
		p := filepath.Join(filepath.Dir(self), "executor")
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	return filepath.Join("bin", "executor")
}
