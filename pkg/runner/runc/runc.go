// Package runc is the embedded build runner: it runs each build's Kaniko
// executor in its own runc container on this host.
//
// A build's container has a fresh, private rootfs (Kaniko unpacks the base
// image into its /) under Options.StateDir/<build ID>, the build context
// bind-mounted read-only at /workspace, the build's secrets (Spec.Secrets)
// bind-mounted read-only at /run/secrets, its own PID, mount, IPC, UTS and
// network namespaces and its own cgroup. The executor runs as root, as
// Kaniko requires, without a user namespace, with Docker's default
// capabilities less NET_RAW and NET_BIND_SERVICE, under Docker's default
// seccomp profile (github.com/moby/profiles/seccomp) and with
// NoNewPrivileges.
//
// What a build can reach: the network through pasta (Debian package
// passt), which gives the namespace the host's addresses and routes and
// carries its connections out through sockets of the host, so a build
// reaches what the host reaches (package mirrors, image hubs, DNS), with
// the host's resolv.conf (systemd-resolved's upstream servers when that
// names only its loopback stub). Of the host's loopback it reaches only
// Options.Forwards, the registries it pulls from and pushes to, by the
// same HOST:PORT as on the host; every other port there is refused, and the
// gateway address does not lead to the host. Services that listen on the
// host's other addresses are reachable as from any other machine.
//
// What NoNewPrivileges and the profile break: a setuid or file-capability
// binary does not raise a USER's rights, so `USER app` followed by
// `RUN sudo ...` or `su` fails (run such steps before USER, or as USER
// root); RUN steps cannot create namespaces (unshare, user namespaces) or
// mount, as in a default Docker container. chown, setuid bits and device
// nodes work, and so do Kaniko's switch to a step's USER and apt's drop to
// its _apt user: setuid calls by root, which NoNewPrivileges allows.
package runc

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/slipway-dev/slipway/pkg/build"
	"github.com/slipway-dev/slipway/pkg/secret"
)

// DefaultRoot is runc's state directory when Options.Root is empty.
const DefaultRoot = "/run/slipway/runc"

const (
	// runcTimeout bounds the runc commands that only change state (kill,
	// delete, list).
	runcTimeout = 10 * time.Second
	// stopTimeout bounds how long a cancelled or timed-out build may take to
	// stop before `runc run` itself is killed.
	stopTimeout = 5 * time.Second
	// killRetry is how often a stopping build's container is sent SIGKILL
	// again: the first may come before runc has created it.
	killRetry = 200 * time.Millisecond
	// pipeDelay bounds how long output is read after `runc run` has exited.
	pipeDelay = 2 * time.Second
)

// validID matches the build IDs the runner accepts: runc's container ID
// syntax, not starting with a dot, so an ID is also a safe file name.
var validID = regexp.MustCompile(`^[A-Za-z0-9_+-][A-Za-z0-9_.+-]*$`)

// Options configure a Runner.
type Options struct {
	// Executor is the path of the static Kaniko executor (make bin/executor).
	Executor string
	// Runc is the path of the runc binary; empty means "runc" in PATH.
	Runc string
	// StateDir holds one OCI bundle per build, StateDir/<build ID>, while
	// the build runs. It is created if missing.
	StateDir string
	// Root is runc's state directory (runc --root), used by this runner
	// alone: every container in it is taken for a build's. Empty means
	// DefaultRoot.
	Root string
	// Pasta is the path of pasta (Debian package passt), which connects
	// each build's network namespace to the outside; empty means "pasta"
	// in PATH.
	Pasta string
	// Forwards are the host services that builds reach, each a port of
	// the host's loopback that a build reaches on its own loopback: the
	// registries that builds pull from and push to, named by the same
	// HOST:PORT as on the host. No other port of the host's loopback is
	// reachable from a build.
	Forwards []Forward
}

// Runner runs builds in runc containers. Its methods are safe for
// concurrent use, on builds with different IDs.
type Runner struct {
	opts Options
	head string // head(1), which holds a container until its network is ready
	// hostNetwork runs builds in the host's network namespace, as this
	// runner did before builds had their own: only the benchmark that
	// measures the cost of their own sets it.
	hostNetwork bool
}

var _ build.Runner = (*Runner)(nil)

// New checks opts and returns a Runner. It fails when runc, pasta or the
// executor is missing, naming the fix.
func New(opts Options) (*Runner, error) {
	if opts.Runc == "" {
		p, err := exec.LookPath("runc")
		if err != nil {
			return nil, errors.New("runc: runc is not installed (not in PATH): install it with `apt-get install runc` (or `make deps`)")
		}
		opts.Runc = p
	} else if _, err := os.Stat(opts.Runc); err != nil {
		return nil, fmt.Errorf("runc: %w: install runc with `apt-get install runc` (or `make deps`)", err)
	}
	if opts.Pasta == "" {
		p, err := exec.LookPath("pasta")
		if err != nil {
			return nil, errors.New("runc: pasta is not installed (not in PATH): builds get their network from it; install it with `apt-get install passt` (or `make deps`)")
		}
		opts.Pasta = p
	} else if _, err := os.Stat(opts.Pasta); err != nil {
		return nil, fmt.Errorf("runc: %w: install pasta with `apt-get install passt` (or `make deps`)", err)
	}
	head, err := exec.LookPath("head")
	if err != nil {
		return nil, errors.New("runc: head is not in PATH: install coreutils")
	}
	for _, f := range opts.Forwards {
		if f.Port <= 0 || f.Port > 65535 || f.HostPort <= 0 || f.HostPort > 65535 {
			return nil, fmt.Errorf("runc: forward %d to %d: ports are 1 to 65535", f.Port, f.HostPort)
		}
	}
	if opts.Executor == "" {
		return nil, errors.New("runc: no Kaniko executor given: build it with `make bin/executor`")
	}
	if fi, err := os.Stat(opts.Executor); err != nil || !fi.Mode().IsRegular() || fi.Mode()&0o111 == 0 {
		return nil, fmt.Errorf("runc: Kaniko executor %s is missing or not executable: build it with `make bin/executor`", opts.Executor)
	}
	if opts.StateDir == "" {
		return nil, errors.New("runc: no state directory given")
	}
	if opts.Root == "" {
		opts.Root = DefaultRoot
	}
	for _, p := range []*string{&opts.Executor, &opts.StateDir, &opts.Root} {
		abs, err := filepath.Abs(*p)
		if err != nil {
			return nil, fmt.Errorf("runc: %w", err)
		}
		*p = abs
	}
	for _, dir := range []string{opts.StateDir, opts.Root} {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("runc: %w", err)
		}
	}
	return &Runner{opts: opts, head: head}, nil
}

// Run runs spec's build and returns when its executor has ended, writing
// the executor's output to log with the credentials of spec.DockerConfig
// and the values of spec.Secrets replaced by "[redacted]". The build is stopped within seconds when ctx is
// done (Outcome.Cancelled) or spec.Limits.Timeout has elapsed
// (Outcome.TimedOut). Its container and bundle are always deleted before
// Run returns. Run fails when a bundle for spec.ID exists already: the
// build is running, or was left over by a crash (see Leftovers).
func (r *Runner) Run(ctx context.Context, spec build.Spec, log io.Writer) (build.Outcome, error) {
	if err := checkSpec(spec); err != nil {
		return build.Outcome{}, err
	}
	if log == nil {
		log = io.Discard
	}
	secrets, err := secret.DockerConfigSecrets(spec.DockerConfig)
	if err != nil {
		return build.Outcome{}, fmt.Errorf("runc: build %s: %w", spec.ID, err)
	}
	for _, v := range spec.Secrets {
		secrets = append(secrets, v)
	}
	if ctx.Err() != nil {
		return build.Outcome{Cancelled: true}, nil
	}
	// The bundle directory is the build's lock: create it, do not reuse it.
	bundle := r.bundleDir(spec.ID)
	if err := os.Mkdir(bundle, 0o700); err != nil {
		return build.Outcome{}, fmt.Errorf("runc: build %s: %w", spec.ID, err)
	}
	out, err := r.run(ctx, spec, bundle, secret.NewRedactor(log, secrets...))
	return out, errors.Join(err, r.Cleanup(spec.ID))
}

// run runs the build in its bundle directory and reports how it ended.
func (r *Runner) run(ctx context.Context, spec build.Spec, bundle string, log *secret.Redactor) (build.Outcome, error) {
	var out build.Outcome
	var net *network
	if !r.hostNetwork {
		var err error
		if net, err = r.startNetwork(bundle); err != nil {
			return out, fmt.Errorf("runc: build %s: %w", spec.ID, err)
		}
		defer net.close()
	}
	if err := r.writeBundle(bundle, net, spec); err != nil {
		return out, fmt.Errorf("runc: build %s: write bundle: %w", spec.ID, err)
	}
	pidFile := filepath.Join(bundle, "pid")
	runcLog := filepath.Join(bundle, "runc.log")
	// --keep leaves the stopped container, and so its cgroup's OOM count,
	// for oomKills; Cleanup deletes it.
	cmd := r.runc(context.Background(), "--log", runcLog, "--log-format", "json",
		"run", "--keep", "--pid-file", pidFile, "--bundle", bundle, spec.ID)
	cmd.Stdout, cmd.Stderr = log, log
	cmd.WaitDelay = pipeDelay
	// Its own process group: a terminal's ^C goes to the service, which
	// cancels the build, and not straight to the container.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return out, fmt.Errorf("runc: build %s: %w", spec.ID, err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	if net != nil {
		if err := net.release(); err != nil {
			// The namespace is isolated but unconfigured: stop the build.
			return out, errors.Join(fmt.Errorf("runc: build %s: %w", spec.ID, err), r.stop(spec.ID, cmd.Process, exited))
		}
	}

	var timeout <-chan time.Time
	if spec.Limits.Timeout > 0 {
		t := time.NewTimer(spec.Limits.Timeout)
		defer t.Stop()
		timeout = t.C
	}
	var waitErr error
	select {
	case waitErr = <-exited:
	case <-ctx.Done():
		out.Cancelled = true
		waitErr = r.stop(spec.ID, cmd.Process, exited)
	case <-timeout:
		out.TimedOut = true
		waitErr = r.stop(spec.ID, cmd.Process, exited)
	}
	flushErr := log.Flush()

	// runc exits with the executor's status, 128+N when signal N killed it.
	var exitErr *exec.ExitError
	switch {
	case errors.As(waitErr, &exitErr):
		out.ExitCode = exitErr.ExitCode()
	case waitErr != nil:
		return out, fmt.Errorf("runc: build %s: %w", spec.ID, waitErr)
	}
	// runc writes the pid file once the container has started, and logs
	// an error when it could not start it. Both are gone when a Cleanup
	// came first; the exit status is then the container's.
	if _, err := os.Stat(pidFile); err != nil {
		if out.Cancelled || out.TimedOut {
			return out, nil // stopped before the container started
		}
		if msgs := runcErrors(runcLog); len(msgs) > 0 {
			return out, fmt.Errorf("runc: build %s: the container did not start: %s", spec.ID, strings.Join(msgs, "; "))
		}
	}
	out.OOMKilled = oomKilled(spec, out)
	out.Memory = memoryUse(spec.ID, cmd.ProcessState)
	if out.ExitCode == 0 && !out.Cancelled && !out.TimedOut {
		d, err := readDigest(filepath.Join(bundle, "rootfs", digestPath))
		if err != nil {
			return out, fmt.Errorf("runc: build %s: executor exited 0: %w", spec.ID, err)
		}
		out.Digest = d
	}
	if flushErr != nil {
		return out, fmt.Errorf("runc: build %s: write log: %w", spec.ID, flushErr)
	}
	return out, nil
}

// oomKilled tells whether the OOM killer killed a process of the build, from
// its cgroup's count of OOM kills. Where the count cannot be read, an
// executor killed by SIGKILL that the runner did not send is taken for one.
func oomKilled(spec build.Spec, out build.Outcome) bool {
	n, err := oomKills(spec.ID)
	if err != nil {
		return spec.Limits.MemoryBytes > 0 && out.ExitCode == 128+int(syscall.SIGKILL) && !out.Cancelled && !out.TimedOut
	}
	return n > 0
}

// memoryUse reads what the build's cgroup and runc (which reaps the
// container's processes: their peak resident set is in its usage of its
// children) saw of its memory; zeroes where it cannot be read.
func memoryUse(id string, st *os.ProcessState) build.Memory {
	var m build.Memory
	m.CgroupPeak, _ = memoryPeak(id)
	if st != nil {
		if ru, ok := st.SysUsage().(*syscall.Rusage); ok {
			m.MaxRSS = ru.Maxrss << 10 // KiB on Linux
		}
	}
	return m
}

// stop kills build id's container and returns what `runc run` returned. A
// runc that has not returned after stopTimeout is killed itself; the
// container is then left to Cleanup.
func (r *Runner) stop(id string, runcProc *os.Process, exited <-chan error) error {
	giveUp := time.NewTimer(stopTimeout)
	defer giveUp.Stop()
	retry := time.NewTicker(killRetry)
	defer retry.Stop()
	for {
		// This fails before runc has created the container and after the
		// container has stopped; retrying covers the first case.
		ctx, cancel := context.WithTimeout(context.Background(), killRetry)
		_ = r.runc(ctx, "kill", id, "KILL").Run()
		cancel()
		select {
		case err := <-exited:
			return err
		case <-retry.C:
		case <-giveUp.C:
			_ = runcProc.Kill()
			return <-exited
		}
	}
}

// Leftovers returns the IDs of the builds that have a bundle in StateDir or
// a container in runc's state directory: after a crash, the builds to
// Cleanup. It includes builds that this process is running.
func (r *Runner) Leftovers() ([]string, error) {
	entries, err := os.ReadDir(r.opts.StateDir)
	if err != nil {
		return nil, fmt.Errorf("runc: %w", err)
	}
	var ids []string
	for _, e := range entries {
		if e.IsDir() && validID.MatchString(e.Name()) {
			ids = append(ids, e.Name())
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), runcTimeout)
	defer cancel()
	var stderr bytes.Buffer
	cmd := r.runc(ctx, "list", "--quiet")
	cmd.Stderr = &stderr
	list, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("runc: list containers: %w: %s", err, bytes.TrimSpace(stderr.Bytes()))
	}
	ids = append(ids, strings.Fields(string(list))...)
	slices.Sort(ids)
	return slices.Compact(ids), nil
}

// Cleanup kills and deletes build id's container, stops its network and
// removes its bundle. It is a no-op for a build that has none of them. The
// bundle is kept when the container or the network could not be removed,
// so that Leftovers still lists the build.
func (r *Runner) Cleanup(id string) error {
	if err := checkID(id); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), runcTimeout)
	defer cancel()
	// --force kills a running container first; deleting a container that
	// does not exist succeeds.
	if out, err := r.runc(ctx, "delete", "--force", id).CombinedOutput(); err != nil {
		return fmt.Errorf("runc: delete container %s: %w: %s", id, err, bytes.TrimSpace(out))
	}
	if err := stopNetwork(r.bundleDir(id)); err != nil {
		return fmt.Errorf("runc: network of build %s: %w", id, err)
	}
	if err := os.RemoveAll(r.bundleDir(id)); err != nil {
		return fmt.Errorf("runc: remove bundle of build %s: %w", id, err)
	}
	return nil
}

// runc returns a runc command on the runner's state directory.
func (r *Runner) runc(ctx context.Context, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, r.opts.Runc, append([]string{"--root", r.opts.Root}, args...)...)
}

// bundleDir returns the bundle directory of build id.
func (r *Runner) bundleDir(id string) string {
	return filepath.Join(r.opts.StateDir, id)
}

// checkID rejects build IDs that are not valid container IDs and file names.
func checkID(id string) error {
	if !validID.MatchString(id) {
		return fmt.Errorf("runc: invalid build ID %q", id)
	}
	return nil
}

// readDigest reads the executor's digest file.
func readDigest(path string) (string, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return "", errors.New("no digest file")
	}
	if err != nil {
		return "", err
	}
	h, err := v1.NewHash(strings.TrimSpace(string(b)))
	if err != nil {
		return "", fmt.Errorf("digest file: %w", err)
	}
	return h.String(), nil
}

// runcErrors returns the error messages in runc's JSON log file, none when
// there is no such file.
func runcErrors(path string) []string {
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	var msgs []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var entry struct{ Level, Msg string }
		if json.Unmarshal(sc.Bytes(), &entry) == nil && (entry.Level == "error" || entry.Level == "fatal") {
			msgs = append(msgs, entry.Msg)
		}
	}
	return slices.Compact(msgs) // runc logs its init's error twice
}
