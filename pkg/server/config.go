// Package server composes Slipway from its parts: it picks the store, the
// runner, the registry and the identity verifier from a Config, and serves
// the API, the event receiver, the registry and the web page on one address.
package server

import (
	"flag"
	"os"
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
	MaxBodyBytes    int64         // request body cap
	Sink            string        // K_SINK: where emitted events also go
	ShutdownTimeout time.Duration // grace period on SIGTERM
	LogLevel        string        // debug, info, warn or error
	Version         string        // reported by /api/v1/info
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
	fs.BoolVar(&c.AllowFileGit, "allow-file-git", c.AllowFileGit, "allow file:// Git URLs in build contexts (local development only)")
	fs.Int64Var(&c.MaxBodyBytes, "max-body", c.MaxBodyBytes, "request body cap in `BYTES`")
	fs.StringVar(&c.LogLevel, "log-level", c.LogLevel, "debug, info, warn or error")
}
