package server_test

import (
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/slipway-dev/slipway/pkg/server"
)

// hangingListener accepts connections on loopback and never answers; it
// counts what it accepted and holds the connections until the test ends.
func hangingListener(t *testing.T) (addr string, accepted func() int) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	return ln.Addr().String(), func() int { mu.Lock(); defer mu.Unlock(); return len(conns) }
}

// TestTimeoutCoversPushes: a destination that accepts the connection and
// never answers cannot keep a build running past --build-timeout.
func TestTimeoutCoversPushes(t *testing.T) {
	const timeout = 10 * time.Second
	hang, accepted := hangingListener(t)
	e := buildEnv(t, func(c *server.Config) { c.BuildTimeout = timeout })
	img := e.newImage(map[string]any{"name": "team/hung", "context": map[string]any{"type": "local",
		"dockerfile": "FROM " + e.base() + "\nRUN echo built > /built\n"},
		"destinations": []map[string]any{{"reference": hang + "/team/hung:v1"}}})
	begun := time.Now()
	b := e.waitFor(img.ID, e.startBuild(img.ID), timeout+30*time.Second, ended)
	took := time.Since(begun)
	// The image reached the internal registry: the build has succeeded,
	// and the destination the limit cut off failed, saying so.
	if b.Status != "succeeded" || b.Reference == nil || len(b.Pushes) != 2 || b.Pushes[1].Status != "failed" ||
		b.Pushes[1].Error == nil || !strings.Contains(*b.Pushes[1].Error, "time limit") {
		t.Fatalf("build pushing to a hanging destination: %+v %+v\n%s", b, b.Failure, e.buildLog(img.ID, 1))
	}
	if took > timeout+5*time.Second || b.Duration == nil || *b.Duration > (timeout+5*time.Second).Seconds() {
		t.Fatalf("the build ended %s after it was requested (duration %v); the limit is %s", took, b.Duration, timeout)
	}
	if accepted() == 0 {
		t.Fatal("the build never reached the hanging destination: the test proves nothing")
	}
	t.Logf("timed out after %s (%d connections to the hanging destination)", took.Round(100*time.Millisecond), accepted())
}
