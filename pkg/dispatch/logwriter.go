package dispatch

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"time"
)

// appender is where a build's log goes durably.
type appender interface {
	AppendLog(ctx context.Context, imageID string, number int, p []byte) error
}

// logWriter buffers a build's output and appends it to the store at least
// every flushEvery, and keeps the tail for classifying failures. It is safe
// for concurrent writes.
//
// A log is capped at about max bytes, keeping its head and its tail: the
// first half of max goes to the store as it comes (a reader follows it
// live), then a marker line says the log is being cut; from there the
// writer keeps only the last half of max in memory and, when it is closed,
// appends a line saying how much was cut and that last half, from a line
// start. So the executor's last lines (the push, the error) are always there.
type logWriter struct {
	store   appender
	image   string
	number  int
	max     int64
	mu      sync.Mutex
	buf     []byte
	written int64 // bytes of the head, to the store
	cut     bool  // the head is full
	dropped int64 // bytes dropped from the middle
	end     []byte
	tail    []byte
	err     error
	stop    chan struct{}
	done    chan struct{}
}

const tailSize = 16 << 10

func newLogWriter(s appender, image string, number int, max int64, flushEvery time.Duration) *logWriter {
	w := &logWriter{store: s, image: image, number: number, max: max, stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		t := time.NewTicker(flushEvery)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				w.flush()
			case <-w.stop:
				w.finish()
				w.flush()
				return
			}
		}
	}()
	return w
}

// head and end are the bytes of the log's head and of its kept tail.
func (w *logWriter) head() int64    { return w.max - w.max/2 }
func (w *logWriter) endSize() int64 { return w.max / 2 }

// Write implements io.Writer.
func (w *logWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.tail = append(w.tail, p...)
	if len(w.tail) > 2*tailSize {
		w.tail = append(w.tail[:0], w.tail[len(w.tail)-tailSize:]...)
	}
	n := len(p)
	if !w.cut {
		room := w.head() - w.written
		if int64(len(p)) <= room {
			w.buf = append(w.buf, p...)
			w.written += int64(len(p))
			return n, nil
		}
		w.buf = append(w.buf, p[:room]...)
		w.written += room
		w.buf = append(w.buf, fmt.Sprintf("\n[slipway: the log passed half of its cap of %s here: its middle is cut, and its last %s follow when the build ends]\n",
			size(w.max), size(w.endSize()))...)
		w.cut = true
		p = p[room:]
	}
	// Keep the last endSize bytes, compacting when twice that is held.
	w.end = append(w.end, p...)
	if over := int64(len(w.end)) - w.endSize(); over > 0 && int64(len(w.end)) > 2*w.endSize() {
		w.dropped += over
		w.end = append(w.end[:0], w.end[over:]...)
	}
	return n, nil
}

// finish appends the kept tail to what goes to the store, after a line
// saying how much of the middle was cut.
func (w *logWriter) finish() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.cut {
		return
	}
	end := w.end
	if over := int64(len(end)) - w.endSize(); over > 0 {
		w.dropped += over
		end = end[over:]
	}
	// Start the tail at a line start when one is near.
	if i := bytes.IndexByte(end, '\n'); w.dropped > 0 && i >= 0 && i < 4096 && i+1 < len(end) {
		w.dropped += int64(i + 1)
		end = end[i+1:]
	}
	if w.dropped > 0 {
		w.buf = append(w.buf, fmt.Sprintf("[slipway: %s of the log's middle were cut here; its last %s follow]\n", size(w.dropped), size(int64(len(end))))...)
	}
	w.buf = append(w.buf, end...)
	w.end = nil
}

// size says n bytes for a reader: in MiB, KiB or bytes.
func size(n int64) string {
	switch {
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%d MiB", n>>20)
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%d KiB", n>>10)
	}
	return fmt.Sprintf("%d bytes", n)
}

// Notef writes a line of Slipway's own to the log.
func (w *logWriter) Notef(format string, args ...any) {
	fmt.Fprintf(w, "[slipway] "+format+"\n", args...)
}

func (w *logWriter) flush() {
	w.mu.Lock()
	p := w.buf
	w.buf = nil
	w.mu.Unlock()
	if len(p) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := w.store.AppendLog(ctx, w.image, w.number, p); err != nil {
		w.mu.Lock()
		w.err = err
		w.mu.Unlock()
	}
}

// Close flushes what is left and returns the first store error.
func (w *logWriter) Close() error {
	close(w.stop)
	<-w.done
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.err
}

// Tail returns the end of the output, uncapped, for classification.
func (w *logWriter) Tail() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.tail) > tailSize {
		return string(w.tail[len(w.tail)-tailSize:])
	}
	return string(w.tail)
}
