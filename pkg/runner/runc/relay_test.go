package runc

import (
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// TestRelayBoundsConnections: a real network namespace (as a build gets),
// a relay into it, and a host listener: connections from inside reach the
// host port, and past maxRelayed at once the next is closed at once
// instead of costing the server more descriptors.
func TestRelayBoundsConnections(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("network namespaces need root: run these tests as root")
	}
	netns := filepath.Join(t.TempDir(), "netns")
	if err := bindNewNetns(netns); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Unmount(netns, syscall.MNT_DETACH) })
	// pasta brings a build's loopback up; here the test does.
	if out, err := exec.Command("nsenter", "--net="+netns, "ip", "link", "set", "lo", "up").CombinedOutput(); err != nil {
		t.Fatalf("lo up: %v %s", err, out)
	}
	host, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer host.Close()
	go func() {
		for {
			c, err := host.Accept()
			if err != nil {
				return
			}
			go func() { c.Write([]byte("hi")); io.Copy(io.Discard, c) }()
		}
	}()
	const port = 40555
	r, err := startRelay(netns, []Forward{{Port: port, HostPort: host.Addr().(*net.TCPAddr).Port}})
	if err != nil {
		t.Fatal(err)
	}
	defer r.stop()
	var held []net.Conn
	defer func() {
		for _, c := range held {
			c.Close()
		}
	}()
	for i := range maxRelayed + 1 {
		var c net.Conn
		err := inNetns(netns, func() (err error) {
			c, err = net.Dial("tcp", "127.0.0.1:"+strconv.Itoa(port))
			return err
		})
		if err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
		held = append(held, c)
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		buf := make([]byte, 2)
		_, err = io.ReadFull(c, buf)
		switch {
		case i < maxRelayed && (err != nil || string(buf) != "hi"):
			t.Fatalf("connection %d did not reach the host: %q %v", i, buf, err)
		case i == maxRelayed && err == nil:
			t.Fatalf("connection %d past the bound was relayed", i)
		}
	}
}
