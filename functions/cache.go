package functions

import (
	"bytes"
	"encoding/json"
	"net/http"
	"strconv"
	"sync"

	"github.com/slipway-dev/slipway/pkg/image"
)

// answers keeps the encoded bodies of image reads (a listing's page, one
// image), each valid for one catalogue number of its workspace
// (store.Workspace.Catalogue). Every change of a workspace's images gives
// it a new number, so an entry serves only while nothing it shows changed,
// and a read skips the decoding, the views and the JSON. Backends that keep
// no number (0) are never cached.
type answers struct {
	mu    sync.Mutex
	m     map[string]answer
	bytes int
}

// answer is one cached body, with the ETag it goes with (GET of an image).
type answer struct {
	catalogue int64
	body      []byte
	etag      string
}

// maxAnswerBytes bounds the cache; when full it starts over.
const maxAnswerBytes = 32 << 20

func (c *answers) get(key string, catalogue int64) (answer, bool) {
	if catalogue == 0 {
		return answer{}, false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.m[key]
	return e, ok && e.catalogue == catalogue
}

func (c *answers) put(key string, e answer) {
	if e.catalogue == 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil || c.bytes+len(e.body) > maxAnswerBytes {
		c.m, c.bytes = map[string]answer{}, 0
	}
	c.bytes += len(e.body) - len(c.m[key].body)
	c.m[key] = e
}

// timeless reports whether the views of imgs are the same at any time: a
// running build's duration grows with the clock.
func timeless(imgs ...image.Image) bool {
	for _, img := range imgs {
		if b := img.LatestBuild; b != nil && b.StartedAt != nil && b.FinishedAt == nil {
			return false
		}
	}
	return true
}

// encodeJSON is v as writeJSON sends it.
func encodeJSON(v any) ([]byte, error) {
	var buf bytes.Buffer
	if err := json.NewEncoder(&buf).Encode(v); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// writeBody sends an encoded JSON body.
func writeBody(w http.ResponseWriter, status int, body []byte) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	w.Write(body)
}
