package build

import (
	"context"
	"io"
	"time"
)

// Spec is everything a runner needs to execute one build. It is built by the
// dispatcher from an image definition and handed to a Runner unchanged.
type Spec struct {
	// ID names the build uniquely across the platform ("<image id>-<number>").
	// Runners use it to name containers, bundles and pods.
	ID string
	// ContextDir is a host directory holding the build context (runc runner).
	ContextDir string
	// Dockerfile is the Dockerfile's path relative to ContextDir.
	Dockerfile string
	// Destinations are the references the result is pushed to. The first is
	// always the internal registry's.
	Destinations []string
	// DockerConfig is a docker config.json ({"auths":{...}}) with the
	// credentials of the destinations; nil when none is needed. It is a
	// secret: runners keep it only for the build's lifetime and never log it.
	DockerConfig []byte
	// InsecureRegistries are registry hosts (HOST:PORT) spoken to over plain HTTP.
	InsecureRegistries []string
	// CacheRepo, when set, enables Kaniko's layer cache in that repository.
	CacheRepo string
	// Limits bound the build's resources and duration.
	Limits Limits
}

// Limits bound one build's resources.
type Limits struct {
	MemoryBytes int64         // cgroup memory limit; 0 means none
	CPUs        float64       // CPU quota in cores; 0 means none
	Pids        int64         // maximum number of processes; 0 means none
	Timeout     time.Duration // wall-clock limit; 0 means none
}

// Outcome is what a runner observed when a build's executor ended. Settle
// maps it to the build's final status and failure reason.
type Outcome struct {
	ExitCode  int    // the executor's exit code
	OOMKilled bool   // the memory limit killed a process of the build
	TimedOut  bool   // Limits.Timeout elapsed and the runner stopped the build
	Cancelled bool   // the context was cancelled and the runner stopped the build
	Digest    string // the pushed image's digest ("sha256:..."), when it succeeded
}

// Runner executes builds. Run blocks until the build's executor has ended,
// writing the executor's output to log; cancelling ctx stops the build
// within seconds (Outcome.Cancelled). An error means the runner itself failed
// (it could not start the container, say), not the build.
type Runner interface {
	Run(ctx context.Context, spec Spec, log io.Writer) (Outcome, error)
}
