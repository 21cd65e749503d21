package server

import (
	"errors"
	"io"
	"net/http"
	"time"
)

// RegistryMinRate is the slowest a registry upload may send, in bytes per
// second, once its grace has passed: gigabyte layers take as long as they
// need at any sane speed, while a client that trickles its body cannot hold
// a connection.
const RegistryMinRate = 64 << 10

// minRate cuts off a request whose body arrives slower than grace plus one
// second per rate bytes received, by moving the connection's read deadline
// as the body comes in; the deadline is lifted when the body has ended.
func minRate(h http.Handler, grace time.Duration, rate int64) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Body == nil || r.Body == http.NoBody {
			h.ServeHTTP(w, r)
			return
		}
		rc := http.NewResponseController(w)
		b := &rateBody{ReadCloser: r.Body, rc: rc, start: time.Now(), grace: grace, rate: rate}
		rc.SetReadDeadline(b.start.Add(grace))
		r.Body = b
		h.ServeHTTP(w, r)
	})
}

// rateBody is a request body that extends the read deadline by what it has
// received.
type rateBody struct {
	io.ReadCloser
	rc    *http.ResponseController
	start time.Time
	grace time.Duration
	rate  int64
	n     int64
	done  bool
}

func (b *rateBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.n += int64(n)
	switch {
	case errors.Is(err, io.EOF) && !b.done:
		b.done = true
		b.rc.SetReadDeadline(time.Time{})
	case n > 0:
		b.rc.SetReadDeadline(b.start.Add(b.grace + time.Duration(float64(b.n)/float64(b.rate)*float64(time.Second))))
	}
	return n, err
}
