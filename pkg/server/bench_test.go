package server_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/slipway-dev/slipway/events"
	"github.com/slipway-dev/slipway/pkg/server"
)

// benchEnv is a server with workspace ws1 and a plain (non-validating)
// client, so the figures measure the server.
func benchEnv(b *testing.B) (*env, *http.Client, string) {
	e := start(b, server.Config{})
	e.announce(events.WorkspaceCreated, "ws1", "alice")
	return e, &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}, "Bearer " + e.token("alice")
}

func send(b *testing.B, c *http.Client, method, url, auth string, body []byte) {
	req, _ := http.NewRequest(method, url, bytes.NewReader(body))
	req.Header.Set("Authorization", auth)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	res, err := c.Do(req)
	if err != nil {
		b.Fatal(err)
	}
	io.Copy(io.Discard, res.Body)
	res.Body.Close()
	if res.StatusCode >= 300 {
		b.Fatalf("%s %s: %d", method, url, res.StatusCode)
	}
}

func imageBody(i int) []byte {
	body, _ := json.Marshal(localImage(fmt.Sprintf("bench/image-%06d", i), "FROM busybox\nRUN echo hi\n"))
	return body
}

// BenchmarkGetImage: GET /api/v1/images/{id} through the real HTTP stack on
// SQLite. Run with -cpu 1 for the one-core figure.
func BenchmarkGetImage(b *testing.B) {
	e, c, auth := benchEnv(b)
	img, _ := e.create("ws1", "alice", "bench/get")
	url := e.baseURL + "/api/v1/images/" + img.ID
	b.ResetTimer()
	for range b.N {
		send(b, c, "GET", url, auth, nil)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "req/s")
}

// BenchmarkListImages: one page of a workspace of 100 images.
func BenchmarkListImages(b *testing.B) {
	e, c, auth := benchEnv(b)
	for i := range 100 {
		send(b, c, "POST", e.baseURL+"/api/v1/workspaces/ws1/images", auth, imageBody(i))
	}
	url := e.baseURL + "/api/v1/workspaces/ws1/images?limit=100"
	b.ResetTimer()
	for range b.N {
		send(b, c, "GET", url, auth, nil)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "req/s")
}

// BenchmarkCreateImage: sustained creates; reports the heap in use after
// the run per image, which stays flat when nothing accumulates.
func BenchmarkCreateImage(b *testing.B) {
	e, c, auth := benchEnv(b)
	url := e.baseURL + "/api/v1/workspaces/ws1/images"
	bodies := make([][]byte, b.N)
	for i := range bodies {
		bodies[i] = imageBody(i)
	}
	b.ResetTimer()
	for i := range b.N {
		send(b, c, "POST", url, auth, bodies[i])
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "creates/s")
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	b.ReportMetric(float64(ms.HeapInuse)/(1<<20), "heap-MiB")
}

// BenchmarkColdStart: from exec of `slipway serve` on an existing data dir
// to its first 200 from /health/readiness.
func BenchmarkColdStart(b *testing.B) {
	bin := filepath.Join(b.TempDir(), "slipway")
	if out, err := exec.Command("go", "build", "-o", bin, "../../cmd/slipway").CombinedOutput(); err != nil {
		b.Fatalf("building: %v\n%s", err, out)
	}
	data := b.TempDir()
	// A data dir with content: the first run creates keys and schema.
	cfg := serverConfig(b)
	cfg.DataDir = data
	e := start(b, cfg)
	e.announce(events.WorkspaceCreated, "ws1", "alice")
	for i := range 100 {
		e.create("ws1", "alice", fmt.Sprintf("cold/i%d", i))
	}
	e.shutdown()
	client := &http.Client{Timeout: time.Second}
	b.ResetTimer()
	for i := range b.N {
		addr := fmt.Sprintf("127.0.0.1:%d", 20000+i%20000)
		cmd := exec.Command(bin, "serve", "--data", data, "--addr", addr)
		cmd.Stderr = io.Discard
		t0 := time.Now()
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		for {
			res, err := client.Get("http://" + addr + "/health/readiness")
			if err == nil {
				res.Body.Close()
				if res.StatusCode == 200 {
					break
				}
			}
			if time.Since(t0) > 10*time.Second {
				b.Fatal("not ready within 10 s")
			}
			time.Sleep(500 * time.Microsecond)
		}
		b.ReportMetric(float64(time.Since(t0).Microseconds())/1000, "ms-to-ready")
		cmd.Process.Signal(os.Interrupt)
		cmd.Wait()
	}
}
