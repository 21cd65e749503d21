// Package server composes Slipway from its parts: it picks the store, the
// runner, the registry and the identity verifier from a Config, and serves
// the API, the event receiver, the registry and the web page on one address.
package server

import (
	"flag"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Config is every setting of `slipway serve`. DefaultConfig holds the
// defaults; flags and SLIPWAY_* variables override them.
type Config struct {
	Addr            string        // listen address (SLIPWAY_ADDR)
	DataDir         string        // data directory (SLIPWAY_DATA)
	EventPublishers []string      // subjects allowed to POST /events
	AllowFileGit    bool          // admit file:// Git URLs (local development)
	GitCAFile       string        // extra PEM roots for Git over https (a private CA)
	MaxBodyBytes    int64         // request body cap
	Sink            string        // K_SINK: where emitted events also go
	ShutdownTimeout time.Duration // grace period on SIGTERM
	LogLevel        string        // debug, info, warn or error
	Version         string        // reported by /api/v1/info
	Demo            bool          // ensure a demo workspace and print a signed-in link to the page
	Stdout          io.Writer     // where the demo link is printed

	Executor          string        // the Kaniko executor; default: beside the slipway binary, or bin/executor
	BuildSlots        int           // builds that run at once; the rest wait in FIFO order
	BuildTimeout      time.Duration // wall-clock limit of one build
	BuildMemory       int64         // memory limit of one build, bytes
	BuildCPUs         float64       // CPU limit of one build, cores
	BuildPids         int64         // process limit of one build
	BuildLogCap       int64         // bytes of log kept per build
	BuildCache        bool          // Kaniko's layer cache in the internal registry
	ReconcileInterval time.Duration // how often stuck builds are looked for
}

// DefaultConfig returns the embedded defaults, with SLIPWAY_ADDR,
// SLIPWAY_DATA and K_SINK applied from the environment.
func DefaultConfig() Config {
	c := Config{
		Addr:            "127.0.0.1:8080",
		DataDir:         ".slipway",
		EventPublishers: []string{"platform"},
		MaxBodyBytes:    1 << 20,
		ShutdownTimeout: 10 * time.Second,
		LogLevel:        "info",
		Version:         Version,
		Stdout:          os.Stdout,

		BuildSlots:        2,
		BuildTimeout:      30 * time.Minute,
		BuildMemory:       2 << 30,
		BuildCPUs:         1,
		BuildPids:         4096,
		BuildLogCap:       4 << 20,
		BuildCache:        false,
		ReconcileInterval: 30 * time.Second,
	}
	if v := os.Getenv("SLIPWAY_ADDR"); v != "" {
		c.Addr = v
	}
	if v := os.Getenv("SLIPWAY_DATA"); v != "" {
		c.DataDir = v
	}
	c.Sink = os.Getenv("K_SINK")
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
	fs.BoolVar(&c.Demo, "demo", c.Demo, "create a demo workspace owned by user \"demo\" and print a signed-in link to the web page")
	fs.BoolVar(&c.AllowFileGit, "allow-file-git", c.AllowFileGit, "allow file:// Git URLs in build contexts (local development only)")
	fs.StringVar(&c.GitCAFile, "git-ca-file", c.GitCAFile, "extra PEM root certificates for Git over https")
	fs.Int64Var(&c.MaxBodyBytes, "max-body", c.MaxBodyBytes, "request body cap in `BYTES`")
	fs.StringVar(&c.LogLevel, "log-level", c.LogLevel, "debug, info, warn or error")
	fs.StringVar(&c.Executor, "executor", c.Executor, "the Kaniko executor `PATH` (default: beside this binary, then bin/executor)")
	fs.IntVar(&c.BuildSlots, "build-slots", c.BuildSlots, "builds that run at once")
	fs.DurationVar(&c.BuildTimeout, "build-timeout", c.BuildTimeout, "wall-clock limit of one build")
	fs.Int64Var(&c.BuildMemory, "build-memory", c.BuildMemory, "memory limit of one build in `BYTES`")
	fs.Float64Var(&c.BuildCPUs, "build-cpus", c.BuildCPUs, "CPU limit of one build in cores")
	fs.Int64Var(&c.BuildPids, "build-pids", c.BuildPids, "process limit of one build")
	fs.Int64Var(&c.BuildLogCap, "build-log-cap", c.BuildLogCap, "bytes of log kept per build")
	fs.BoolVar(&c.BuildCache, "build-cache", c.BuildCache, "use Kaniko's layer cache in the internal registry")
	fs.DurationVar(&c.ReconcileInterval, "reconcile-interval", c.ReconcileInterval, "how often stuck builds are looked for")
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
