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
	// BuildArgs are the Dockerfile's build arguments, NAME=VALUE, in a
	// stable order: plain values, passed as --build-arg.
	BuildArgs []string
	// Target, when set, is the stage built and pushed (--target).
	Target string
	// Secrets are the build's secrets by id: runners mount each read-only
	// at /run/secrets/ID (image.SecretsDir) for the build's RUN steps,
	// outside every snapshot, keep them only for the build's lifetime and
	// redact them from the log.
	Secrets map[string][]byte
	// Tuning, when not nil, replaces DefaultTuning(): the executor's
	// settings for memory and snapshots (the measurements set it).
	Tuning []string
	// Limits bound the build's resources and duration.
	Limits Limits
	// Reproducible strips timestamps from the image (Kaniko's
	// --reproducible), so that equal inputs give an equal digest.
	Reproducible bool
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
	// ContextFailed says that fetching the build context failed, so the
	// executor never ran; the log's end says why. Only a runner that
	// fetches contexts itself sets it (the kube runner, when its init
	// container failed); ExitCode is then the fetcher's.
	ContextFailed bool
	// Commit is the git commit the build context was fetched at, when the
	// runner fetched it; "" otherwise.
	Commit string
	// Memory is what the runner measured of the build's memory use, where
	// it can (the runc runner); zero otherwise.
	Memory Memory
	// Problem, when not "", is the runner's own failure rather than the
	// build's, said for the user: the executor's image could not be
	// pulled, the build was evicted for anything but memory, someone else
	// deleted it, and the like.
	Problem string
}

// Memory is a build's measured memory use, in bytes.
type Memory struct {
	// MaxRSS is the peak resident set of the build's largest process
	// (the executor, or a RUN step's), its own memory.
	MaxRSS int64
	// CgroupPeak is the peak of the build's memory cgroup: its processes'
	// memory and the page cache of what they wrote (reclaimable, so it
	// may reach the limit without harm).
	CgroupPeak int64
}

// Runner executes builds. Run blocks until the build's executor has ended,
// writing the executor's output to log; cancelling ctx stops the build
// within seconds (Outcome.Cancelled). An error means the runner itself failed
// (it could not start the container, say), not the build.
type Runner interface {
	Run(ctx context.Context, spec Spec, log io.Writer) (Outcome, error)
}

// ExecutorArgs returns the Kaniko executor's arguments that every runner
// passes, whatever its paths: the Dockerfile's and the context directory's
// paths as the executor sees them, and the file the executor writes the
// pushed image's digest to. In this order:
//
//   - --dockerfile dockerfile and --context dir://contextDir;
//   - --digest-file digestFile;
//   - --push-retry 2, --verbosity info and --log-format text (plain lines,
//     which Classify reads);
//   - --force, since Kaniko refuses to run unless it recognises a container
//     runtime: it does not know runc (it passes only by accident, finding
//     "docker" in its own "--dockerfile" in /proc/1/cmdline), and its check
//     fails on cgroup v2 nodes (kaniko issue #1592), where a pod is a
//     container all the same;
//   - --destination for each of spec.Destinations;
//   - --insecure-registry and --skip-tls-verify-registry for each of
//     spec.InsecureRegistries: Kaniko applies both to pulls (the base image)
//     and pushes;
//   - --cache=true and --cache-repo spec.CacheRepo when that is set;
//   - --reproducible when spec.Reproducible is set.
//   - --build-arg for each of spec.BuildArgs, and --target spec.Target
//     when that is set.
//   - spec.Tuning, or DefaultTuning() when that is nil.
//
// The executor's own path, when the runner needs it first, is not included.
func ExecutorArgs(spec Spec, dockerfile, contextDir, digestFile string) []string {
	args := []string{
		"--dockerfile", dockerfile,
		"--context", "dir://" + contextDir,
		"--digest-file", digestFile,
		"--push-retry", "2",
		"--verbosity", "info",
		"--log-format", "text",
		// Skip Kaniko's check that it runs in a container it recognises:
		// it knows neither runc nor pods on cgroup v2 nodes (see above).
		"--force",
	}
	for _, d := range spec.Destinations {
		args = append(args, "--destination", d)
	}
	for _, h := range spec.InsecureRegistries {
		args = append(args, "--insecure-registry", h, "--skip-tls-verify-registry", h)
	}
	if spec.CacheRepo != "" {
		args = append(args, "--cache=true", "--cache-repo", spec.CacheRepo)
	}
	if spec.Reproducible {
		args = append(args, "--reproducible")
	}
	for _, a := range spec.BuildArgs {
		args = append(args, "--build-arg", a)
	}
	if spec.Target != "" {
		args = append(args, "--target", spec.Target)
	}
	if spec.Tuning != nil {
		return append(args, spec.Tuning...)
	}
	return append(args, DefaultTuning()...)
}

// DefaultTuning returns the executor's settings for memory and snapshots
// that every build gets, chosen by measurement (see the README's "Large
// images"):
//
//   - --compressed-caching=false: Kaniko's default keeps a compressed copy
//     of each layer in memory while it builds, so a 1 GiB layer of random
//     data needed more than the default 2 GiB build limit; without it the
//     layer is compressed as it is pushed and the executor stays small.
//   - --snapshot-mode=full (Kaniko's default, said here so it is chosen):
//     it hashes file contents, so a step that changes a file without
//     changing its size or time still shows up in the layer.
func DefaultTuning() []string {
	return []string{"--compressed-caching=false", "--snapshot-mode=full"}
}
