// Command loopback-cni is the test cluster's CNI plugin. It keeps each pod
// off every network but its own: in the pod's network namespace it brings
// up lo and a veth pair whose end eth0 carries a 127.x address (the pod's
// IP; the kernel here has no dummy driver, and no address outside loopback
// may be used), and nothing connects that namespace to the host's. For each
// port of the network configuration's "relay" list it starts, inside the
// namespace, a socat that listens on 127.0.0.1:PORT and forwards to the unix
// socket RELAY_DIR/PORT.sock, where the harness's host-side socat forwards
// to the host's 127.0.0.1:PORT: build pods reach the chosen loopback
// services (the registry, a git server) at the same address as the host,
// and nothing else.
//
// It speaks CNI 1.0.0 (ADD, DEL, CHECK, VERSION) and keeps the pod's
// network namespace and its relays' PIDs in STATE_DIR/<container ID>, so
// DEL stops them and the harness can clean up after a crash.
package main

import (
	"encoding/json"
	"fmt"
	"hash/fnv"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// config is the plugin's part of the network configuration.
type config struct {
	CNIVersion string `json:"cniVersion"`
	Name       string `json:"name"`
	Relay      []int  `json:"relay"`
	RelayDir   string `json:"relayDir"`
	StateDir   string `json:"stateDir"`
}

func main() {
	if err := run(); err != nil {
		json.NewEncoder(os.Stdout).Encode(map[string]any{"cniVersion": "1.0.0", "code": 100, "msg": err.Error()})
		os.Exit(1)
	}
}

func run() error {
	cmd := os.Getenv("CNI_COMMAND")
	if cmd == "VERSION" {
		return json.NewEncoder(os.Stdout).Encode(map[string]any{"cniVersion": "1.0.0", "supportedVersions": []string{"0.4.0", "1.0.0"}})
	}
	raw, err := io.ReadAll(os.Stdin)
	if err != nil {
		return err
	}
	var c config
	if err := json.Unmarshal(raw, &c); err != nil {
		return fmt.Errorf("network configuration: %w", err)
	}
	id, netns, ifname := os.Getenv("CNI_CONTAINERID"), os.Getenv("CNI_NETNS"), os.Getenv("CNI_IFNAME")
	if ifname == "" {
		ifname = "eth0"
	}
	state := filepath.Join(c.StateDir, id)
	switch cmd {
	case "ADD":
		addr := address(id)
		steps := [][]string{
			{"ip", "link", "set", "lo", "up"},
			{"ip", "link", "add", ifname, "type", "veth", "peer", "name", "peer0"},
			{"ip", "addr", "add", addr + "/32", "dev", ifname},
			{"ip", "link", "set", ifname, "up"},
			{"ip", "link", "set", "peer0", "up"},
		}
		for _, s := range steps {
			if out, err := exec.Command("nsenter", append([]string{"--net=" + netns}, s...)...).CombinedOutput(); err != nil {
				return fmt.Errorf("%s: %v: %s", strings.Join(s, " "), err, out)
			}
		}
		pids := []string{"netns=" + netns}
		for _, p := range c.Relay {
			relay := exec.Command("nsenter", "--net="+netns, "socat",
				fmt.Sprintf("TCP-LISTEN:%d,bind=127.0.0.1,fork,reuseaddr", p),
				"UNIX-CONNECT:"+filepath.Join(c.RelayDir, strconv.Itoa(p)+".sock"))
			relay.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
			if err := relay.Start(); err != nil {
				return fmt.Errorf("relay %d: %w", p, err)
			}
			pids = append(pids, strconv.Itoa(relay.Process.Pid))
			relay.Process.Release()
		}
		if err := os.MkdirAll(c.StateDir, 0o700); err != nil {
			return err
		}
		if err := os.WriteFile(state, []byte(strings.Join(pids, "\n")), 0o600); err != nil {
			return err
		}
		return json.NewEncoder(os.Stdout).Encode(map[string]any{
			"cniVersion": c.CNIVersion,
			"interfaces": []map[string]string{{"name": ifname, "sandbox": netns}},
			"ips":        []map[string]any{{"address": addr + "/32", "interface": 0}},
		})
	case "DEL":
		if b, err := os.ReadFile(state); err == nil {
			for _, f := range strings.Fields(string(b)) {
				if pid, err := strconv.Atoi(f); err == nil {
					syscall.Kill(-pid, syscall.SIGKILL)
				}
			}
			os.Remove(state)
		}
		return nil
	case "CHECK":
		return nil
	}
	return fmt.Errorf("unknown CNI_COMMAND %q", cmd)
}

// address is the pod's 127.x address, derived from its container ID.
func address(id string) string {
	h := fnv.New32a()
	h.Write([]byte(id))
	v := h.Sum32()
	return fmt.Sprintf("127.%d.%d.%d", 10+v%200, (v>>8)%256, 1+(v>>16)%250)
}
