// Package kubecluster brings up a real single-node Kubernetes on this
// machine, offline, for the cluster tests (test/cluster, `make
// test-cluster`): etcd, kube-apiserver (RBAC, Node authorization,
// admission, audit log), kube-controller-manager, kube-scheduler,
// containerd with runc, a kubelet whose node is named localhost, and the
// loopback-cni plugin (cmd/loopback-cni), which gives each pod its own
// network namespace with nothing in it but relays to chosen host-loopback
// ports. Two registries run in the calling process: a plain-HTTP one that
// containerd pulls the pods' images from (the sandbox image among them, a
// static pause binary in a one-layer image), and a TLS one, trusted through
// the cluster's CA, that stands for the platform's registry.
//
// Everything lives under one state directory; Stop, and Start before it
// begins, remove every process, mount, network namespace and containerd
// state a run left there, so runs repeat cleanly.
package kubecluster

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/google/go-containerregistry/pkg/registry"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// Options configure Start.
type Options struct {
	// Bin holds kube-apiserver, kube-controller-manager, kube-scheduler,
	// kubelet and kubectl (test/cluster/build-k8s.sh builds them).
	Bin string
	// Pause and CNI are the static binaries of cmd/pause and
	// cmd/loopback-cni.
	Pause, CNI string
	// Dir is the state directory; whatever a previous run left in it is
	// removed first.
	Dir string
	// Relay lists host-loopback ports that pods reach at 127.0.0.1:PORT;
	// the TLS registry's port is added.
	Relay []int
	// Log receives the harness's progress lines; components log to files
	// in Dir/logs.
	Log io.Writer
}

// Cluster is a running single-node cluster.
type Cluster struct {
	o Options
	// Server is the API server's URL.
	Server string
	// CAFile is the cluster CA's certificate: it signs the API server's and
	// the TLS registry's certificates.
	CAFile string
	// Kubeconfig is an admin (system:masters) kubeconfig file.
	Kubeconfig string
	// Admin is the admin's client configuration.
	Admin *rest.Config
	// Client is the admin's clientset.
	Client kubernetes.Interface
	// ImageRegistry is HOST:PORT of the plain-HTTP registry containerd pulls
	// pod images from.
	ImageRegistry string
	// Registry is HOST:PORT of the TLS registry, the platform's registry
	// for builds; pods reach it through the relay.
	Registry string
	// AuditLog is the API server's audit log (JSON lines, level Metadata).
	AuditLog string
	// Times records how long each stage of Start took.
	Times []Stage

	procs   []*exec.Cmd
	servers []*http.Server
	relay   []int
}

// AddRelay lets pods created from now on reach the host's 127.0.0.1:port
// at the same address (a git server a test starts, say).
func (c *Cluster) AddRelay(port int) error {
	if err := c.startRelays([]int{port}); err != nil {
		return err
	}
	c.relay = append(c.relay, port)
	return c.installCNI(c.relay)
}

// Stage is one timed stage of Start.
type Stage struct {
	Name     string
	Duration time.Duration
}

// adminToken and friends are the static tokens of the token file.
const (
	adminToken     = "slipway-admin-token"
	controllerTok  = "slipway-controller-manager-token"
	schedulerToken = "slipway-scheduler-token"
	kubeletToken   = "slipway-kubelet-token"
	// NodeName is the node's name; /etc/hosts resolves it to 127.0.0.1.
	NodeName = "localhost"
	// ServiceCIDR is the Services' virtual address range: outside every
	// private range, never routed, as no kube-proxy runs.
	ServiceCIDR = "198.18.0.0/24"
)

// Start brings the cluster up and returns once the node is Ready and the
// default ServiceAccount exists.
func Start(ctx context.Context, o Options) (c *Cluster, err error) {
	if o.Log == nil {
		o.Log = io.Discard
	}
	Clean(o.Dir, o.Log)
	c = &Cluster{o: o}
	defer func() {
		if err != nil {
			c.Stop()
		}
	}()
	for _, d := range []string{"logs", "etcd", "pki", "containerd", "kubelet", "cni/bin", "cni/conf", "cni/state", "relay", "runc", "pod-logs"} {
		if err := os.MkdirAll(filepath.Join(o.Dir, d), 0o700); err != nil {
			return nil, err
		}
	}
	t0 := time.Now()
	stage := func(name string) {
		c.Times = append(c.Times, Stage{name, time.Since(t0)})
		fmt.Fprintf(o.Log, "kubecluster: %s after %.1fs\n", name, time.Since(t0).Seconds())
	}

	p, err := newPKI(filepath.Join(o.Dir, "pki"))
	if err != nil {
		return nil, err
	}
	c.CAFile = p.path("ca.crt")
	if err := errors.Join(
		p.issue("apiserver", "kube-apiserver", nil, "127.0.0.1", "localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc", "198.18.0.1"),
		p.issue("apiserver-kubelet-client", "kube-apiserver-kubelet-client", []string{"system:masters"}),
		p.issue("registry", "registry", nil, "127.0.0.1", "localhost"),
		p.serviceAccountKey(),
	); err != nil {
		return nil, err
	}

	ports, err := freePorts(7)
	if err != nil {
		return nil, err
	}
	etcdPort, etcdPeer, apiPort, kubeletPort, kubeletHealth, cmPort, schedPort := ports[0], ports[1], ports[2], ports[3], ports[4], ports[5], ports[6]

	// The registries, first: containerd needs the sandbox image.
	if err := c.startRegistries(p); err != nil {
		return nil, err
	}
	pauseRef := c.ImageRegistry + "/pause:test"
	if err := PushBinary(ctx, pauseRef, o.Pause, "/pause", nil, nil); err != nil {
		return nil, fmt.Errorf("pushing the sandbox image: %w", err)
	}

	// etcd.
	err = c.run("etcd", "etcd", "--name", "default", "--data-dir", filepath.Join(o.Dir, "etcd"),
		"--listen-client-urls", url(etcdPort), "--advertise-client-urls", url(etcdPort),
		"--listen-peer-urls", url(etcdPeer), "--initial-advertise-peer-urls", url(etcdPeer),
		"--initial-cluster", "default="+url(etcdPeer), "--log-level", "warn")
	if err != nil {
		return nil, err
	}
	if err := waitHTTP(ctx, nil, url(etcdPort)+"/health", 30*time.Second); err != nil {
		return nil, fmt.Errorf("etcd: %w", err)
	}
	stage("etcd ready")

	// kube-apiserver.
	tokens := strings.Join([]string{
		adminToken + ",admin,admin,system:masters",
		controllerTok + ",system:kube-controller-manager,kcm,system:masters",
		schedulerToken + ",system:kube-scheduler,kube-scheduler",
		kubeletToken + ",system:node:" + NodeName + ",kubelet,system:nodes",
	}, "\n") + "\n"
	if err := writeFile(o.Dir, "tokens.csv", tokens); err != nil {
		return nil, err
	}
	if err := writeFile(o.Dir, "audit-policy.yaml", auditPolicy); err != nil {
		return nil, err
	}
	c.AuditLog = filepath.Join(o.Dir, "logs", "audit.log")
	c.Server = fmt.Sprintf("https://127.0.0.1:%d", apiPort)
	err = c.run("kube-apiserver", filepath.Join(o.Bin, "kube-apiserver"),
		"--etcd-servers", url(etcdPort),
		"--bind-address", "127.0.0.1", "--secure-port", strconv.Itoa(apiPort),
		"--advertise-address", "127.0.0.1", "--endpoint-reconciler-type", "none",
		"--authorization-mode", "Node,RBAC", "--token-auth-file", filepath.Join(o.Dir, "tokens.csv"),
		"--client-ca-file", p.path("ca.crt"),
		"--tls-cert-file", p.path("apiserver.crt"), "--tls-private-key-file", p.path("apiserver.key"),
		"--service-account-issuer", "https://kubernetes.default.svc",
		"--service-account-key-file", p.path("sa.pub"), "--service-account-signing-key-file", p.path("sa.key"),
		"--service-cluster-ip-range", ServiceCIDR,
		"--kubelet-preferred-address-types", "Hostname",
		"--kubelet-client-certificate", p.path("apiserver-kubelet-client.crt"),
		"--kubelet-client-key", p.path("apiserver-kubelet-client.key"),
		"--enable-admission-plugins", "NodeRestriction",
		"--audit-policy-file", filepath.Join(o.Dir, "audit-policy.yaml"), "--audit-log-path", c.AuditLog,
		"--audit-log-mode", "blocking",
		"--profiling=false", "--cert-dir", filepath.Join(o.Dir, "pki"))
	if err != nil {
		return nil, err
	}
	c.Admin = &rest.Config{Host: c.Server, BearerToken: adminToken, TLSClientConfig: rest.TLSClientConfig{CAFile: c.CAFile}, QPS: 50, Burst: 100}
	hc, err := rest.HTTPClientFor(c.Admin)
	if err != nil {
		return nil, err
	}
	if err := waitHTTP(ctx, hc, c.Server+"/readyz", 2*time.Minute); err != nil {
		return nil, fmt.Errorf("kube-apiserver: %w (see %s)", err, c.logPath("kube-apiserver"))
	}
	stage("kube-apiserver ready")
	if c.Client, err = kubernetes.NewForConfig(c.Admin); err != nil {
		return nil, err
	}
	c.Kubeconfig = filepath.Join(o.Dir, "admin.kubeconfig")
	if err := c.writeKubeconfig(c.Kubeconfig, adminToken); err != nil {
		return nil, err
	}

	// The control plane's controllers.
	if err := c.writeKubeconfig(filepath.Join(o.Dir, "kcm.kubeconfig"), controllerTok); err != nil {
		return nil, err
	}
	if err := c.writeKubeconfig(filepath.Join(o.Dir, "scheduler.kubeconfig"), schedulerToken); err != nil {
		return nil, err
	}
	if err := c.writeKubeconfig(filepath.Join(o.Dir, "kubelet.kubeconfig"), kubeletToken); err != nil {
		return nil, err
	}
	err = c.run("kube-controller-manager", filepath.Join(o.Bin, "kube-controller-manager"),
		"--kubeconfig", filepath.Join(o.Dir, "kcm.kubeconfig"),
		"--authentication-kubeconfig", filepath.Join(o.Dir, "kcm.kubeconfig"),
		"--authorization-kubeconfig", filepath.Join(o.Dir, "kcm.kubeconfig"),
		"--bind-address", "127.0.0.1", "--secure-port", strconv.Itoa(cmPort), "--leader-elect=false",
		"--service-account-private-key-file", p.path("sa.key"), "--root-ca-file", p.path("ca.crt"),
		"--use-service-account-credentials=false", "--controllers", "*,-nodeipam,-service-lb-controller,-cloud-node-lifecycle",
		"--cert-dir", filepath.Join(o.Dir, "pki", "kcm"))
	if err != nil {
		return nil, err
	}
	err = c.run("kube-scheduler", filepath.Join(o.Bin, "kube-scheduler"),
		"--kubeconfig", filepath.Join(o.Dir, "scheduler.kubeconfig"),
		"--authentication-kubeconfig", filepath.Join(o.Dir, "scheduler.kubeconfig"),
		"--authorization-kubeconfig", filepath.Join(o.Dir, "scheduler.kubeconfig"),
		"--bind-address", "127.0.0.1", "--secure-port", strconv.Itoa(schedPort), "--leader-elect=false",
		"--cert-dir", filepath.Join(o.Dir, "pki", "scheduler"))
	if err != nil {
		return nil, err
	}

	// containerd, with the CNI plugin.
	relay := append([]int{}, o.Relay...)
	_, regPort, _ := net.SplitHostPort(c.Registry)
	rp, _ := strconv.Atoi(regPort)
	relay = append(relay, rp)
	if err := c.startRelays(relay); err != nil {
		return nil, err
	}
	c.relay = relay
	if err := c.installCNI(relay); err != nil {
		return nil, err
	}
	sock := filepath.Join(o.Dir, "containerd", "containerd.sock")
	if err := writeFile(o.Dir, "containerd.toml", c.containerdConfig(sock, pauseRef)); err != nil {
		return nil, err
	}
	if err := c.run("containerd", "containerd", "--config", filepath.Join(o.Dir, "containerd.toml")); err != nil {
		return nil, err
	}
	if err := waitFile(ctx, sock, 30*time.Second); err != nil {
		return nil, fmt.Errorf("containerd: %w (see %s)", err, c.logPath("containerd"))
	}
	stage("containerd ready")

	// The kubelet.
	if err := writeFile(o.Dir, "resolv.conf", "# no name server: pods resolve nothing\n"); err != nil {
		return nil, err
	}
	if err := writeFile(o.Dir, "kubelet.yaml", c.kubeletConfig(sock, kubeletPort, kubeletHealth)); err != nil {
		return nil, err
	}
	err = c.run("kubelet", filepath.Join(o.Bin, "kubelet"),
		"--config", filepath.Join(o.Dir, "kubelet.yaml"),
		"--kubeconfig", filepath.Join(o.Dir, "kubelet.kubeconfig"),
		"--hostname-override", NodeName, "--root-dir", filepath.Join(o.Dir, "kubelet"),
		"--cert-dir", filepath.Join(o.Dir, "pki", "kubelet"), "--v", "1")
	if err != nil {
		return nil, err
	}
	if err := c.waitNodeReady(ctx, 3*time.Minute); err != nil {
		return nil, fmt.Errorf("kubelet: %w (see %s)", err, c.logPath("kubelet"))
	}
	stage("node Ready")
	if err := c.waitDefaultServiceAccount(ctx, 2*time.Minute); err != nil {
		return nil, fmt.Errorf("kube-controller-manager: %w (see %s)", err, c.logPath("kube-controller-manager"))
	}
	stage("default ServiceAccount")
	return c, nil
}

// auditPolicy records every request's metadata: who, verb, resource,
// subresource, namespace, name and the answer's code.
const auditPolicy = `apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
rules:
- level: Metadata
`

func url(port int) string { return fmt.Sprintf("http://127.0.0.1:%d", port) }

func (c *Cluster) logPath(name string) string { return filepath.Join(c.o.Dir, "logs", name+".log") }

// run starts a component in its own process group, its output in its log
// file, and records its PID so that Clean can stop it after a crash.
func (c *Cluster) run(name, bin string, args ...string) error {
	f, err := os.OpenFile(c.logPath(name), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer f.Close()
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	c.procs = append(c.procs, cmd)
	go cmd.Wait()
	return appendLine(filepath.Join(c.o.Dir, "pids"), strconv.Itoa(cmd.Process.Pid))
}

// startRegistries serves the two registries on loopback.
func (c *Cluster) startRegistries(p *pki) error {
	quiet := log.New(io.Discard, "", 0)
	plain, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	s1 := &http.Server{Handler: registry.New(registry.Logger(quiet)), ReadHeaderTimeout: 10 * time.Second}
	go s1.Serve(plain)
	c.ImageRegistry = plain.Addr().String()

	cert, err := tls.LoadX509KeyPair(p.path("registry.crt"), p.path("registry.key"))
	if err != nil {
		return err
	}
	secure, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	s2 := &http.Server{Handler: registry.New(registry.Logger(quiet)), ReadHeaderTimeout: 10 * time.Second,
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}}
	go s2.ServeTLS(secure, "", "")
	c.Registry = secure.Addr().String()
	c.servers = append(c.servers, s1, s2)
	return nil
}

// RegistryTransport trusts the cluster CA, for speaking to Registry.
func (c *Cluster) RegistryTransport() (http.RoundTripper, error) {
	pem, err := os.ReadFile(c.CAFile)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	return t, nil
}

// startRelays runs, for each port, the host side of the pods' relay: a
// socat from RELAY_DIR/PORT.sock to 127.0.0.1:PORT.
func (c *Cluster) startRelays(ports []int) error {
	for _, p := range ports {
		sock := filepath.Join(c.o.Dir, "relay", strconv.Itoa(p)+".sock")
		if err := c.run("relay-"+strconv.Itoa(p), "socat",
			"UNIX-LISTEN:"+sock+",fork,mode=600", fmt.Sprintf("TCP:127.0.0.1:%d", p)); err != nil {
			return err
		}
	}
	return nil
}

// installCNI puts loopback-cni and the loopback plugin (which containerd
// runs for every pod's lo) into the CNI bin directory and writes the
// network configuration.
func (c *Cluster) installCNI(relay []int) error {
	bin := filepath.Join(c.o.Dir, "cni", "bin")
	if _, err := os.Stat(filepath.Join(bin, "loopback-cni")); err != nil {
		b, err := os.ReadFile(c.o.CNI)
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(bin, "loopback-cni"), b, 0o755); err != nil {
			return err
		}
	}
	for _, dir := range []string{"/usr/lib/cni", "/opt/cni/bin"} {
		if _, err := os.Lstat(filepath.Join(bin, "loopback")); err == nil {
			break
		}
		if _, err := os.Stat(filepath.Join(dir, "loopback")); err == nil {
			if err := os.Symlink(filepath.Join(dir, "loopback"), filepath.Join(bin, "loopback")); err != nil {
				return err
			}
			break
		}
	}
	conf, err := json.MarshalIndent(map[string]any{
		"cniVersion": "1.0.0", "name": "slipway-loopback",
		"plugins": []map[string]any{{
			"type": "loopback-cni", "relay": relay,
			"relayDir": filepath.Join(c.o.Dir, "relay"), "stateDir": filepath.Join(c.o.Dir, "cni", "state"),
		}},
	}, "", "  ")
	if err != nil {
		return err
	}
	// Written whole, then renamed: containerd reloads the directory.
	path := filepath.Join(c.o.Dir, "cni", "conf", "10-slipway.conflist")
	if err := os.WriteFile(path+".tmp", conf, 0o644); err != nil {
		return err
	}
	return os.Rename(path+".tmp", path)
}

func (c *Cluster) containerdConfig(sock, pause string) string {
	d := c.o.Dir
	return fmt.Sprintf(`version = 2
root = %q
state = %q
[grpc]
  address = %q
[ttrpc]
  address = %q
[debug]
  address = ""
[metrics]
  address = ""
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = %q
  restrict_oom_score_adj = true
  enable_selinux = false
  disable_apparmor = true
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = %q
    conf_dir = %q
    max_conf_num = 1
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        Root = %q
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".registry.mirrors.%q]
    endpoint = ["http://%s"]
`, filepath.Join(d, "containerd", "root"), filepath.Join(d, "containerd", "state"), sock, sock+".ttrpc",
		pause, filepath.Join(d, "cni", "bin"), filepath.Join(d, "cni", "conf"), filepath.Join(d, "runc"),
		c.ImageRegistry, c.ImageRegistry)
}

func (c *Cluster) kubeletConfig(sock string, port, health int) string {
	return fmt.Sprintf(`apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
failCgroupV1: false
cgroupsPerQOS: false
enforceNodeAllocatable: []
cgroupDriver: cgroupfs
failSwapOn: false
containerRuntimeEndpoint: unix://%s
address: 127.0.0.1
port: %d
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: %d
resolvConf: %s
podLogsDir: %s
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: %s}
authorization:
  mode: Webhook
serializeImagePulls: false
maxPods: 30
podPidsLimit: 4096
evictionHard:
  memory.available: "100Mi"
  nodefs.available: "1%%"
  imagefs.available: "1%%"
  nodefs.inodesFree: "1%%"
imageGCHighThresholdPercent: 99
imageGCLowThresholdPercent: 98
syncFrequency: 10s
nodeStatusUpdateFrequency: 5s
`, sock, port, health, filepath.Join(c.o.Dir, "resolv.conf"), filepath.Join(c.o.Dir, "pod-logs"), c.CAFile)
}

func (c *Cluster) writeKubeconfig(path, token string) error {
	return os.WriteFile(path, []byte(Kubeconfig(c.Server, c.CAFile, token)), 0o600)
}

// Kubeconfig is a kubeconfig file's text for a bearer token.
func Kubeconfig(server, caFile, token string) string {
	return fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: test
  cluster: {server: %q, certificate-authority: %q}
users:
- name: user
  user: {token: %q}
contexts:
- name: test
  context: {cluster: test, user: user}
current-context: test
`, server, caFile, token)
}

// Kubectl runs kubectl as the admin and returns its standard output; the
// error carries its standard error.
func (c *Cluster) Kubectl(ctx context.Context, stdin []byte, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, filepath.Join(c.o.Bin, "kubectl"), append([]string{"--kubeconfig", c.Kubeconfig}, args...)...)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return out.Bytes(), fmt.Errorf("kubectl %s: %w: %s", strings.Join(args, " "), err, errb.String())
	}
	return out.Bytes(), nil
}

func (c *Cluster) waitNodeReady(ctx context.Context, d time.Duration) error {
	return poll(ctx, d, func() (bool, error) {
		n, err := c.Client.CoreV1().Nodes().Get(ctx, NodeName, metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		for _, cond := range n.Status.Conditions {
			if cond.Type == corev1.NodeReady && cond.Status == corev1.ConditionTrue {
				return true, nil
			}
		}
		return false, nil
	})
}

func (c *Cluster) waitDefaultServiceAccount(ctx context.Context, d time.Duration) error {
	return poll(ctx, d, func() (bool, error) {
		_, err := c.Client.CoreV1().ServiceAccounts("default").Get(ctx, "default", metav1.GetOptions{})
		return err == nil, nil
	})
}

// Stop deletes every pod (so the kubelet tears their sandboxes down through
// the CNI plugin), stops the components and the registries, and removes
// what is left in the state directory's processes, mounts and network
// namespaces (Clean).
func (c *Cluster) Stop() {
	if c.Client != nil && len(c.procs) > 0 {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		nss, _ := c.Client.CoreV1().Namespaces().List(ctx, metav1.ListOptions{})
		if nss != nil {
			for _, ns := range nss.Items {
				c.Client.CoreV1().Pods(ns.Name).DeleteCollection(ctx, metav1.DeleteOptions{GracePeriodSeconds: new(int64)}, metav1.ListOptions{})
			}
		}
		poll(ctx, 45*time.Second, func() (bool, error) {
			entries, _ := os.ReadDir(filepath.Join(c.o.Dir, "cni", "state"))
			return len(entries) == 0, nil
		})
		cancel()
	}
	for i := len(c.procs) - 1; i >= 0; i-- {
		p := c.procs[i].Process
		syscall.Kill(-p.Pid, syscall.SIGTERM)
	}
	time.Sleep(time.Second)
	for _, s := range c.servers {
		s.Close()
	}
	// The components' logs and the audit log outlive the run, for a look
	// at what failed.
	os.RemoveAll(c.LogDir())
	os.Rename(filepath.Join(c.o.Dir, "logs"), c.LogDir())
	Clean(c.o.Dir, c.o.Log)
}

// LogDir is where Stop keeps the components' logs: beside the state
// directory, replaced by the next run's.
func (c *Cluster) LogDir() string { return c.o.Dir + ".logs" }

// Clean removes what a run left in dir: it kills the recorded processes
// and the containers under dir/runc, kills the relays the CNI plugin
// started, unmounts every mount under dir and the pods' network
// namespaces, and deletes dir. It is safe to call on a dir that does not
// exist.
func Clean(dir string, logw io.Writer) {
	if _, err := os.Stat(dir); err != nil {
		return
	}
	if b, err := os.ReadFile(filepath.Join(dir, "pids")); err == nil {
		for _, f := range strings.Fields(string(b)) {
			if pid, err := strconv.Atoi(f); err == nil {
				syscall.Kill(-pid, syscall.SIGKILL)
			}
		}
	}
	// Containers, then their shims.
	root := filepath.Join(dir, "runc", "k8s.io")
	if out, err := exec.Command("runc", "--root", root, "list", "-q").Output(); err == nil {
		for _, id := range strings.Fields(string(out)) {
			exec.Command("runc", "--root", root, "kill", "--all", id, "KILL").Run()
			exec.Command("runc", "--root", root, "delete", "--force", id).Run()
		}
	}
	killMatching(filepath.Join(dir, "containerd"))
	// The pods' relays and network namespaces (the CNI plugin's DEL never
	// ran for those whose state is left).
	var netns []string
	states, _ := filepath.Glob(filepath.Join(dir, "cni", "state", "*"))
	for _, s := range states {
		if b, err := os.ReadFile(s); err == nil {
			for _, f := range strings.Fields(string(b)) {
				if ns, ok := strings.CutPrefix(f, "netns="); ok {
					netns = append(netns, ns)
				} else if pid, err := strconv.Atoi(f); err == nil {
					syscall.Kill(-pid, syscall.SIGKILL)
				}
			}
		}
	}
	killMatching(filepath.Join(dir, "relay"))
	unmountUnder(dir)
	for _, ns := range netns {
		syscall.Unmount(ns, syscall.MNT_DETACH)
		os.Remove(ns)
	}
	if err := os.RemoveAll(dir); err != nil {
		fmt.Fprintf(logw, "kubecluster: cleaning %s: %v\n", dir, err)
	}
}

// killMatching kills the processes whose command line mentions path: the
// containerd shims and the socat relays, which leave their process groups.
func killMatching(path string) {
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err != nil || !bytes.Contains(b, []byte(path)) {
			continue
		}
		pid, err := strconv.Atoi(filepath.Base(filepath.Dir(p)))
		if err == nil && pid != os.Getpid() {
			syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}

// unmountUnder unmounts, deepest first, every mount point under dir.
func unmountUnder(dir string) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return
	}
	defer f.Close()
	var points []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) > 4 && (strings.HasPrefix(fields[4], dir+"/") || fields[4] == dir) {
			points = append(points, fields[4])
		}
	}
	sort.Slice(points, func(i, j int) bool { return len(points[i]) > len(points[j]) })
	for _, p := range points {
		syscall.Unmount(p, syscall.MNT_DETACH)
	}
}

func writeFile(dir, name, text string) error {
	return os.WriteFile(filepath.Join(dir, name), []byte(text), 0o600)
}

func appendLine(path, line string) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(f, line)
	return errors.Join(err, f.Close())
}

func freePorts(n int) ([]int, error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	var ports []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

func poll(ctx context.Context, d time.Duration, f func() (bool, error)) error {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	for {
		ok, err := f()
		if err != nil {
			return err
		}
		if ok {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("not ready within %s", d)
		case <-time.After(250 * time.Millisecond):
		}
	}
}

func waitHTTP(ctx context.Context, hc *http.Client, u string, d time.Duration) error {
	if hc == nil {
		hc = http.DefaultClient
	}
	var last string
	err := poll(ctx, d, func() (bool, error) {
		resp, err := hc.Get(u)
		if err != nil {
			last = err.Error()
			return false, nil
		}
		resp.Body.Close()
		last = resp.Status
		return resp.StatusCode == http.StatusOK, nil
	})
	if err != nil {
		return fmt.Errorf("%s: %w (last: %s)", u, err, last)
	}
	return nil
}

func waitFile(ctx context.Context, path string, d time.Duration) error {
	return poll(ctx, d, func() (bool, error) {
		_, err := os.Stat(path)
		return err == nil, nil
	})
}
