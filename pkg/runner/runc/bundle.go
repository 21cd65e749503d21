package runc

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"syscall"

	"github.com/moby/profiles/seccomp"
	"github.com/opencontainers/runtime-spec/specs-go"

	"github.com/slipway-dev/slipway/pkg/build"
	"github.com/slipway-dev/slipway/pkg/image"
)

// validSecretID is a secret's id: a workspace credential's name, so also a
// safe file name.
var validSecretID = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)

// Paths inside the build container.
const (
	kanikoDir        = "/kaniko"
	executorPath     = kanikoDir + "/executor"
	dockerConfigPath = kanikoDir + "/.docker/config.json"
	caBundlePath     = kanikoDir + "/ssl/certs/ca-certificates.crt"
	digestPath       = kanikoDir + "/digest"
	workspaceDir     = "/workspace"
	// secretsDir holds the build's secrets, one file per id; bundle's
	// "secrets" directory, outside the rootfs, is bind-mounted there.
	secretsDir = image.SecretsDir
)

// hostCABundle is Debian's bundle of trusted CA certificates, handed to the
// executor for TLS to registries.
const hostCABundle = "/etc/ssl/certs/ca-certificates.crt"

// cpuPeriod is the CFS period, in microseconds, that Limits.CPUs is a share of.
const cpuPeriod = 100000

// capabilities are Docker's default capabilities less NET_RAW and
// NET_BIND_SERVICE, which builds do not need. Kaniko needs the rest to
// unpack images (chown, mknod, file capabilities) and to run RUN commands as
// other users.
var capabilities = []string{
	"CAP_AUDIT_WRITE",
	"CAP_CHOWN",
	"CAP_DAC_OVERRIDE",
	"CAP_FOWNER",
	"CAP_FSETID",
	"CAP_KILL",
	"CAP_MKNOD",
	"CAP_SETFCAP",
	"CAP_SETGID",
	"CAP_SETPCAP",
	"CAP_SETUID",
	"CAP_SYS_CHROOT",
}

// writeBundle fills the directory bundle with an OCI bundle that runs the
// executor for spec in the network net (nil: the host's): config.json and
// a fresh, writable rootfs that the executor unpacks the base image into.
func (r *Runner) writeBundle(bundle string, net *network, spec build.Spec) error {
	rootfs := filepath.Join(bundle, "rootfs")
	if err := os.MkdirAll(filepath.Join(rootfs, kanikoDir), 0o755); err != nil {
		return err
	}
	if spec.DockerConfig != nil {
		p := filepath.Join(rootfs, dockerConfigPath)
		if err := os.Mkdir(filepath.Dir(p), 0o700); err != nil {
			return err
		}
		if err := os.WriteFile(p, spec.DockerConfig, 0o600); err != nil {
			return err
		}
	}
	if err := writeSecrets(bundle, spec.Secrets); err != nil {
		return err
	}
	mounts, err := r.mounts(spec, net != nil)
	if err != nil {
		return err
	}
	if len(spec.Secrets) > 0 {
		// Read-only, outside the rootfs: Kaniko leaves mount points out of
		// every snapshot, so no layer holds a secret.
		mounts = append(mounts, specs.Mount{Destination: secretsDir, Type: "bind", Source: filepath.Join(bundle, "secrets"),
			Options: []string{"bind", "ro", "nosuid", "nodev", "noexec"}})
	}
	netns := ""
	if net != nil {
		netns = net.netns
	}
	s, err := ociSpec(spec, netns, mounts)
	if err != nil {
		return err
	}
	if net != nil {
		s.Hooks = &specs.Hooks{CreateRuntime: []specs.Hook{r.gateHook(net.gate)}}
	}
	config, err := json.MarshalIndent(s, "", "\t")
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(bundle, "config.json"), config, 0o600)
}

// writeSecrets writes each secret to bundle/secrets/ID, readable by root
// alone (BuildKit's default for a secret mount: uid 0, mode 0400). The
// bundle goes with the build (Cleanup).
func writeSecrets(bundle string, secrets map[string][]byte) error {
	if len(secrets) == 0 {
		return nil
	}
	dir := filepath.Join(bundle, "secrets")
	if err := os.Mkdir(dir, 0o700); err != nil {
		return err
	}
	for id, v := range secrets {
		if !validSecretID.MatchString(id) {
			return fmt.Errorf("secret id %q is not a credential name", id)
		}
		if err := os.WriteFile(filepath.Join(dir, id), v, 0o400); err != nil {
			return err
		}
	}
	return os.Chmod(dir, 0o500)
}

// mounts returns the container's mounts: the kernel file systems, then
// read-only binds of the executor, the build context and, when the host has
// them, its CA certificates and name-resolution files (in a network of the
// build's own, resolvers it can reach: see resolvConf). Bind mounts cost no
// copy, and Kaniko leaves every mount point out of its snapshots.
func (r *Runner) mounts(spec build.Spec, ownNetwork bool) ([]specs.Mount, error) {
	mounts := []specs.Mount{
		{Destination: "/proc", Type: "proc", Source: "proc"},
		{Destination: "/dev", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "strictatime", "mode=755", "size=65536k"}},
		{Destination: "/dev/pts", Type: "devpts", Source: "devpts", Options: []string{"nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"}},
		{Destination: "/dev/shm", Type: "tmpfs", Source: "shm", Options: []string{"nosuid", "noexec", "nodev", "mode=1777", "size=65536k"}},
		{Destination: "/dev/mqueue", Type: "mqueue", Source: "mqueue", Options: []string{"nosuid", "noexec", "nodev"}},
		{Destination: "/sys", Type: "sysfs", Source: "sysfs", Options: []string{"nosuid", "noexec", "nodev", "ro"}},
	}
	bind := func(src, dst string) {
		mounts = append(mounts, specs.Mount{Destination: dst, Type: "bind", Source: src, Options: []string{"bind", "ro", "nosuid", "nodev"}})
	}
	bind(r.opts.Executor, executorPath)
	bind(spec.ContextDir, workspaceDir)
	resolv := "/etc/resolv.conf"
	if ownNetwork {
		var err error
		if resolv, err = resolvConf(); err != nil {
			return nil, err
		}
	}
	for _, f := range [][2]string{
		{hostCABundle, caBundlePath},
		{resolv, "/etc/resolv.conf"},
		{"/etc/hosts", "/etc/hosts"},
	} {
		if f[0] == "" {
			continue
		}
		switch _, err := os.Stat(f[0]); {
		case err == nil:
			bind(f[0], f[1])
		case !errors.Is(err, fs.ErrNotExist):
			return nil, err
		}
	}
	return mounts, nil
}

// ociSpec returns the container's configuration: the executor as root in
// new PID, mount, IPC and UTS namespaces and the network namespace netns
// (the host's when netns is ""), under Docker's default seccomp profile and
// with NoNewPrivileges, with spec.Limits as cgroup limits in the cgroup
// cgroupPath(spec.ID).
func ociSpec(spec build.Spec, netns string, mounts []specs.Mount) (*specs.Spec, error) {
	hostname := spec.ID
	if len(hostname) > 63 {
		hostname = hostname[:63]
	}
	namespaces := []specs.LinuxNamespace{
		{Type: specs.PIDNamespace},
		{Type: specs.MountNamespace},
		{Type: specs.IPCNamespace},
		{Type: specs.UTSNamespace},
	}
	if netns != "" {
		namespaces = append(namespaces, specs.LinuxNamespace{Type: specs.NetworkNamespace, Path: netns})
	}
	s := &specs.Spec{
		Version: specs.Version,
		Root:    &specs.Root{Path: "rootfs"},
		Process: &specs.Process{
			Args: executorArgs(spec),
			Env: []string{
				"PATH=/usr/local/bin:/kaniko",
				"HOME=/root",
				"USER=root",
				"SSL_CERT_DIR=" + path.Dir(caBundlePath),
				"DOCKER_CONFIG=" + path.Dir(dockerConfigPath),
			},
			Cwd: "/",
			Capabilities: &specs.LinuxCapabilities{
				Bounding:  capabilities,
				Effective: capabilities,
				Permitted: capabilities,
			},
			// Kaniko runs RUN steps as their USER by setuid from root,
			// which this allows; what it stops is a setuid or
			// file-capability binary (sudo, su) raising a USER's rights.
			NoNewPrivileges: true,
			Rlimits:         rlimits(),
		},
		Hostname: hostname,
		Mounts:   mounts,
		Linux: &specs.Linux{
			Namespaces:  namespaces,
			CgroupsPath: cgroupPath(spec.ID),
			Resources:   resources(spec.Limits),
			MaskedPaths: []string{
				"/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys",
				"/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats",
				"/proc/sched_debug", "/proc/scsi", "/sys/firmware",
			},
			ReadonlyPaths: []string{
				"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger",
			},
		},
	}
	// The profile allows what the capabilities above allow, for this
	// machine's architecture.
	sc, err := seccomp.GetDefaultProfile(s)
	if err != nil {
		return nil, fmt.Errorf("seccomp profile: %w", err)
	}
	s.Linux.Seccomp = sc
	return s, nil
}

// rlimits raises the executor's soft limit on open files to the hard one
// that it inherits: unpacking and snapshotting images opens many files.
func rlimits() []specs.POSIXRlimit {
	var l syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
		return nil
	}
	return []specs.POSIXRlimit{{Type: "RLIMIT_NOFILE", Hard: l.Max, Soft: l.Max}}
}

// resources turns a build's limits into cgroup settings. The memory limit
// covers swap too, where the host accounts for it, so that a build that
// outgrows it is OOM-killed rather than swapped out. Devices are denied
// except the ones runc always allows (null, zero, random, tty and the like).
func resources(l build.Limits) *specs.LinuxResources {
	res := &specs.LinuxResources{
		Devices: []specs.LinuxDeviceCgroup{{Allow: false, Access: "rwm"}},
	}
	if l.MemoryBytes > 0 {
		res.Memory = &specs.LinuxMemory{Limit: &l.MemoryBytes}
		if swapLimitable() {
			res.Memory.Swap = &l.MemoryBytes
		}
	}
	if l.CPUs > 0 {
		quota, period := int64(l.CPUs*cpuPeriod), uint64(cpuPeriod)
		res.CPU = &specs.LinuxCPU{Quota: &quota, Period: &period}
	}
	if l.Pids > 0 {
		res.Pids = &specs.LinuxPids{Limit: &l.Pids}
	}
	return res
}

// executorArgs returns the Kaniko executor's command line for spec: the
// executor, then the arguments of every runner with the container's paths.
func executorArgs(spec build.Spec) []string {
	df := path.Join(workspaceDir, filepath.ToSlash(dockerfile(spec)))
	return append([]string{executorPath}, build.ExecutorArgs(spec, df, workspaceDir, digestPath)...)
}

// dockerfile returns the Dockerfile's path relative to the context,
// defaulting to "Dockerfile".
func dockerfile(spec build.Spec) string {
	if spec.Dockerfile == "" {
		return "Dockerfile"
	}
	return spec.Dockerfile
}

// checkSpec rejects specs that the runner cannot run safely.
func checkSpec(spec build.Spec) error {
	if err := checkID(spec.ID); err != nil {
		return err
	}
	if !filepath.IsAbs(spec.ContextDir) {
		return fmt.Errorf("runc: build %s: context directory %q is not absolute", spec.ID, spec.ContextDir)
	}
	if fi, err := os.Stat(spec.ContextDir); err != nil || !fi.IsDir() {
		return fmt.Errorf("runc: build %s: context directory %q is not a directory", spec.ID, spec.ContextDir)
	}
	if df := dockerfile(spec); !filepath.IsLocal(df) {
		return fmt.Errorf("runc: build %s: Dockerfile path %q leaves the context", spec.ID, df)
	}
	if len(spec.Destinations) == 0 {
		return fmt.Errorf("runc: build %s: no destination", spec.ID)
	}
	return nil
}
