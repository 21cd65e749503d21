package server_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/slipway-dev/slipway/pkg/build"
)

// BenchmarkLogReaders: four clients GET a 50 MiB build log at once, through
// the real HTTP stack, from the server in this process. Reports the peak
// of the process's heap above what it held before the reads (sampled every
// millisecond) and the time of the four reads.
// go test -run '^$' -bench LogReaders -benchtime 3x ./pkg/server/
func BenchmarkLogReaders(b *testing.B) {
	const size, readers = 50 << 20, 4
	e, c, auth := benchEnv(b)
	img := e.newImage(localImage("bench/log", "FROM busybox\n"))
	ctx := context.Background()
	rec, err := e.srv.Store.CreateBuild(ctx, build.New(img.ID, 1, "alice", build.TriggerManual, time.Now()))
	if err != nil {
		b.Fatal(err)
	}
	line := append(bytes.Repeat([]byte("x"), 1023), '\n')
	piece := bytes.Repeat(line, 256) // 256 KiB, about what a flush appends
	for range size / len(piece) {
		if err := e.srv.Store.AppendLog(ctx, rec.Image, rec.Number, piece); err != nil {
			b.Fatal(err)
		}
	}
	url := fmt.Sprintf("%s/api/v1/images/%s/builds/%d/log", e.baseURL, img.ID, rec.Number)
	var peak uint64
	b.ResetTimer()
	for range b.N {
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		base := ms.HeapAlloc
		stop := make(chan struct{})
		sampled := make(chan uint64)
		go func() {
			var top uint64
			t := time.NewTicker(time.Millisecond)
			defer t.Stop()
			for {
				var ms runtime.MemStats
				runtime.ReadMemStats(&ms)
				top = max(top, ms.HeapAlloc)
				select {
				case <-stop:
					sampled <- top
					return
				case <-t.C:
				}
			}
		}()
		var wg sync.WaitGroup
		for range readers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				req, _ := http.NewRequest("GET", url, nil)
				req.Header.Set("Authorization", auth)
				res, err := c.Do(req)
				if err != nil {
					b.Error(err)
					return
				}
				defer res.Body.Close()
				if n, _ := io.Copy(io.Discard, res.Body); n != size || res.StatusCode != 200 {
					b.Errorf("read %d bytes, status %d", n, res.StatusCode)
				}
			}()
		}
		wg.Wait()
		close(stop)
		if top := <-sampled; top > base {
			peak = max(peak, top-base)
		}
	}
	b.ReportMetric(float64(peak>>20), "MiB-peak-heap")
}
