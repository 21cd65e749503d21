// Package cluster holds the tests that run Slipway's cluster column against a
// real single-node Kubernetes (internal/kubecluster): infra/ applied with
// server-side validation, the five roles as processes with in-cluster
// configuration and their own ServiceAccount tokens, Firestore's emulator as
// the store, events routed by infra/'s Triggers, build pods run by the
// kubelet, and the RBAC checked against the calls the roles made.
//
// `make test-cluster` (mk/cluster.mk) runs them: it builds the binaries and
// sets SLIPWAY_CLUSTER_BIN. Without it every test here says it was not run.
package cluster

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/slipway-dev/slipway/internal/kubecluster"
)

// env is what TestMain set up, shared by the tests.
var env struct {
	repo    string
	bin     string // the repository's bin/
	cluster *kubecluster.Cluster
	// notRun says why the cluster tests did not run; empty when they do.
	notRun string
	// onInterrupt stops what the tests started outside the cluster.
	onInterrupt []func()
}

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	k8s := os.Getenv("SLIPWAY_CLUSTER_BIN")
	if k8s == "" {
		env.notRun = "the cluster tests were NOT RUN: they need a real cluster, which `make test-cluster` (part of `make test`) brings up; SLIPWAY_CLUSTER_BIN is unset"
		fmt.Fprintln(os.Stderr, "test/cluster: "+env.notRun)
		return m.Run()
	}
	env.repo = os.Getenv("SLIPWAY_REPO")
	if env.repo == "" {
		env.repo, _ = filepath.Abs("../..")
	}
	env.bin = filepath.Join(env.repo, "bin")
	dir := os.Getenv("SLIPWAY_CLUSTER_DIR")
	if dir == "" {
		dir = "/tmp/slipway-cluster"
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	start := time.Now()
	c, err := kubecluster.Start(ctx, kubecluster.Options{
		Bin: k8s, Dir: dir, Log: os.Stderr,
		Pause: filepath.Join(env.bin, "pause"), CNI: filepath.Join(env.bin, "loopback-cni"),
	})
	if err != nil {
		fmt.Fprintf(os.Stderr, "test/cluster: the cluster did not come up: %v\n", err)
		tailLogs(filepath.Join(dir, "logs"))
		kubecluster.Clean(dir, os.Stderr)
		return 1
	}
	env.cluster = c
	// Interrupted (CI's timeout, ^C): tear down all the same.
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	go func() {
		<-sig
		fmt.Fprintln(os.Stderr, "test/cluster: interrupted: tearing the cluster down")
		for _, f := range env.onInterrupt {
			f()
		}
		c.Stop()
		os.Exit(1)
	}()
	fmt.Fprintf(os.Stderr, "test/cluster: cluster up in %.1fs\n", time.Since(start).Seconds())
	t1 := time.Now()
	code := m.Run()
	fmt.Fprintf(os.Stderr, "test/cluster: tests took %.1fs\n", time.Since(t1).Seconds())
	if code != 0 {
		tailLogs(filepath.Join(dir, "logs"))
	}
	t2 := time.Now()
	c.Stop()
	fmt.Fprintf(os.Stderr, "test/cluster: teardown took %.1fs\n", time.Since(t2).Seconds())
	if left := leftovers(dir); left != "" {
		fmt.Fprintf(os.Stderr, "test/cluster: teardown left %s\n", left)
		return 1
	}
	return code
}

// needCluster skips t, saying so, when the cluster is not up.
func needCluster(t *testing.T) *kubecluster.Cluster {
	t.Helper()
	if env.cluster == nil {
		t.Skip(env.notRun)
	}
	return env.cluster
}

// leftovers describes what of a run is still there after Stop: the state
// directory, mounts under it, its processes.
func leftovers(dir string) string {
	var left []string
	if _, err := os.Stat(dir); err == nil {
		left = append(left, "the directory "+dir)
	}
	if b, err := os.ReadFile("/proc/self/mountinfo"); err == nil && strings.Contains(string(b), dir+"/") {
		left = append(left, "mounts under "+dir)
	}
	if out, _ := exec.Command("pgrep", "-f", dir+"/").Output(); len(strings.TrimSpace(string(out))) > 0 {
		left = append(left, "processes "+strings.Join(strings.Fields(string(out)), ","))
	}
	return strings.Join(left, ", ")
}

func tailLogs(dir string) {
	logs, _ := filepath.Glob(filepath.Join(dir, "*.log"))
	for _, l := range logs {
		if strings.HasSuffix(l, "audit.log") {
			continue
		}
		b, err := os.ReadFile(l)
		if err != nil {
			continue
		}
		lines := strings.Split(strings.TrimSpace(string(b)), "\n")
		if len(lines) > 15 {
			lines = lines[len(lines)-15:]
		}
		fmt.Fprintf(os.Stderr, "---- %s (tail)\n%s\n", l, strings.Join(lines, "\n"))
	}
}
