package dispatch

import (
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
// every flushEvery, caps it at max bytes with a visible marker, and keeps the
// tail for classifying failures. It is safe for concurrent writes.
type logWriter struct {
	store   appender
	image   string
	number  int
	max     int64
	mu      sync.Mutex
	buf     []byte
	written int64
	cut     bool
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
				w.flush()
				return
			}
		}
	}()
	return w
}

// Write implements io.Writer.
func (w *logWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.tail = append(w.tail, p...)
	if len(w.tail) > 2*tailSize {
		w.tail = append(w.tail[:0], w.tail[len(w.tail)-tailSize:]...)
	}
	if w.cut {
		return len(p), nil
	}
	room := w.max - w.written
	if int64(len(p)) > room {
		w.buf = append(w.buf, p[:room]...)
		w.buf = append(w.buf, fmt.Sprintf("\n[slipway: the log is cut here at %d MiB; the build goes on]\n", w.max>>20)...)
		w.written = w.max
		w.cut = true
		return len(p), nil
	}
	w.buf = append(w.buf, p...)
	w.written += int64(len(p))
	return len(p), nil
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
