package runc

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/opencontainers/runtime-spec/specs-go"
)

// Forward maps a TCP port of a build's own loopback to a port of the
// host's loopback: the only way a build reaches a service on the host.
type Forward struct {
	// Port is the port that a build connects to on its 127.0.0.1 and ::1.
	Port int
	// HostPort is the port of the host's loopback that it reaches.
	HostPort int
}

// Files of a build's network in its bundle directory.
const (
	netnsFile    = "netns"     // the network namespace, bind-mounted
	pastaPIDFile = "pasta.pid" // pasta's process ID
	pastaLogFile = "pasta.log" // pasta's messages
	gateFile     = "netready"  // the FIFO the container's start waits on
)

// pastaTimeout bounds how long pasta may take to configure a namespace.
const pastaTimeout = 10 * time.Second

// systemdResolvConf lists the upstream resolvers of systemd-resolved,
// whose stub at 127.0.0.53 a build's own loopback does not have.
const systemdResolvConf = "/run/systemd/resolve/resolv.conf"

// network is a build's network namespace while pasta sets it up.
type network struct {
	netns string // the namespace's file
	gate  string // the FIFO the container's start waits on (see gateHook)
	// hold keeps the gate open, read and write, until close: the hook's
	// reader opens it at once, whenever it comes, and reads the byte that
	// release writes once pasta has configured the namespace.
	hold  *os.File
	ready chan error // pasta's outcome
	once  sync.Once
	err   error
	// forwards are served by relay once pasta has configured the
	// namespace (see relay).
	forwards []Forward
	relay    *relay
}

// startNetwork gives build bundle a network namespace of its own, bound to
// bundle/netns, and starts pasta on it in the background: pasta configures
// the namespace with the host's addresses and routes, so that a build's
// connections go out through the host's sockets; the ports of
// Options.Forwards lead to the host's loopback through the runner's relay
// (see relay), started by release. The gateway address
// does not lead to the host (--no-map-gw), no port is forwarded into the
// namespace, and pasta's automatic forwarding of every port bound on the
// host is off. pasta goes to the background once the namespace is
// configured and quits when stopNetwork removes the namespace's file.
//
// pasta's set-up overlaps the container's: the container's process waits,
// in a createRuntime hook, until release.
func (r *Runner) startNetwork(bundle string) (*network, error) {
	n := &network{netns: filepath.Join(bundle, netnsFile), gate: filepath.Join(bundle, gateFile), ready: make(chan error, 1), forwards: r.opts.Forwards}
	if err := bindNewNetns(n.netns); err != nil {
		return nil, fmt.Errorf("network namespace: %w", err)
	}
	if err := syscall.Mkfifo(n.gate, 0o600); err != nil {
		return nil, fmt.Errorf("network gate: %w", err)
	}
	// Opened for reading and writing, a FIFO opens at once.
	hold, err := os.OpenFile(n.gate, os.O_RDWR, 0)
	if err != nil {
		return nil, fmt.Errorf("network gate: %w", err)
	}
	n.hold = hold
	go func() { n.ready <- r.runPasta(bundle, n.netns) }()
	return n, nil
}

// release waits until pasta has configured the namespace, or failed to,
// and then lets the container start. It returns pasta's error; it may be
// called again and returns the same. close must follow.
func (n *network) release() error {
	n.once.Do(func() {
		n.err = <-n.ready
		if n.err == nil && len(n.forwards) > 0 {
			n.relay, n.err = startRelay(n.netns, n.forwards)
		}
		if _, err := n.hold.Write([]byte{1}); err != nil && n.err == nil {
			n.err = fmt.Errorf("network gate: %w", err)
		}
	})
	return n.err
}

// close releases the container if release did not, closes the gate and
// stops the relay.
func (n *network) close() {
	n.release()
	n.hold.Close()
	if n.relay != nil {
		n.relay.stop()
	}
}

// gateHook is the createRuntime hook that holds the container's process
// until the network is ready: head reads the byte that release writes to
// the gate.
func (r *Runner) gateHook(gate string) specs.Hook {
	timeout := int(pastaTimeout / time.Second)
	return specs.Hook{Path: r.head, Args: []string{"head", "-c", "1", gate}, Timeout: &timeout}
}

// runPasta runs pasta on the namespace netns of bundle and returns once
// pasta has configured it.
func (r *Runner) runPasta(bundle, netns string) error {
	// No port of the host is forwarded by pasta: the relay serves
	// Options.Forwards (see relay).
	args := []string{
		// Root, as this runner is: pasta keeps only the capabilities it
		// needs, in namespaces and a seccomp filter of its own.
		"--runas", "0",
		"--quiet", "--log-file", filepath.Join(bundle, pastaLogFile),
		"--pid", filepath.Join(bundle, pastaPIDFile),
		"--netns", netns, "--config-net", "--no-map-gw",
		"-t", "none", "-u", "none", "-U", "none", "-T", "none",
	}
	ctx, cancel := context.WithTimeout(context.Background(), pastaTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, r.opts.Pasta, args...)
	cmd.WaitDelay = time.Second
	if out, err := cmd.CombinedOutput(); err != nil {
		log, _ := os.ReadFile(filepath.Join(bundle, pastaLogFile))
		return fmt.Errorf("pasta: %w: %s", err, strings.TrimSpace(string(out)+" "+string(log)))
	}
	return nil
}

// stopNetwork stops build bundle's pasta and removes its network
// namespace. It is a no-op for a bundle without them.
func stopNetwork(bundle string) error {
	netns := filepath.Join(bundle, netnsFile)
	if pid, ok := pastaPID(bundle, netns); ok {
		_ = syscall.Kill(pid, syscall.SIGTERM)
	}
	// pasta holds the namespace open: detach it rather than wait.
	if err := syscall.Unmount(netns, syscall.MNT_DETACH); err != nil && !errors.Is(err, syscall.EINVAL) && !errors.Is(err, syscall.ENOENT) {
		return fmt.Errorf("unmount network namespace: %w", err)
	}
	if err := os.Remove(netns); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

// pastaPID returns the process ID in bundle's pid file when that process
// is still the pasta of namespace netns, and not a process that got the
// ID after a crash or a reboot.
func pastaPID(bundle, netns string) (int, bool) {
	b, err := os.ReadFile(filepath.Join(bundle, pastaPIDFile))
	if err != nil {
		return 0, false
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 1 {
		return 0, false
	}
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	isNetns := func(arg []byte) bool { return string(arg) == netns }
	if err != nil || !slices.ContainsFunc(bytes.Split(cmdline, []byte{0}), isNetns) {
		return 0, false
	}
	return pid, true
}

// bindNewNetns creates a network namespace and bind-mounts it on path, as
// `ip netns add` does, so that pasta and runc can join it.
func bindNewNetns(path string) error {
	if err := os.WriteFile(path, nil, 0o400); err != nil {
		return err
	}
	errc := make(chan error, 1)
	go func() {
		// The thread stays locked, and so ends with this goroutine
		// instead of going back, in the new namespace, to the scheduler.
		runtime.LockOSThread()
		if err := syscall.Unshare(syscall.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("unshare: %w", err)
			return
		}
		self := fmt.Sprintf("/proc/%d/task/%d/ns/net", os.Getpid(), syscall.Gettid())
		if err := syscall.Mount(self, path, "", syscall.MS_BIND, ""); err != nil {
			errc <- fmt.Errorf("bind mount: %w", err)
			return
		}
		errc <- nil
	}()
	return <-errc
}

// resolvConf returns the resolver configuration to hand a build: the
// host's /etc/resolv.conf, unless all its name servers are on the host's
// loopback, which a build does not reach; then systemd-resolved's list of
// upstream servers when there is one. "" means none.
func resolvConf() (string, error) {
	const hostFile = "/etc/resolv.conf"
	b, err := os.ReadFile(hostFile)
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	if !onlyLoopbackServers(b) {
		return hostFile, nil
	}
	if _, err := os.Stat(systemdResolvConf); err == nil {
		return systemdResolvConf, nil
	}
	return hostFile, nil
}

// onlyLoopbackServers tells whether a resolv.conf names name servers and
// all of them are loopback addresses.
func onlyLoopbackServers(conf []byte) bool {
	n := 0
	sc := bufio.NewScanner(bytes.NewReader(conf))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 2 || f[0] != "nameserver" {
			continue
		}
		n++
		if a, err := netip.ParseAddr(f[1]); err != nil || !a.IsLoopback() {
			return false
		}
	}
	return n > 0
}
