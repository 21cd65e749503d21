package registry

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
)

// Limits guard the registry's storage.
type Limits struct {
	// MaxUpload caps one blob upload's size in bytes (0: no cap). A
	// request whose body would take an upload past it is refused with 413
	// and the distribution-spec error SIZE_INVALID.
	MaxUpload int64
	// Gate, when set, is held shared by every request that writes, so
	// that no collection runs in the middle of one, and told of every
	// blob or manifest the registry committed (refused writes, such as
	// unauthenticated ones, do not postpone a collection).
	Gate interface {
		Shared() (release func())
		Wrote()
	}
}

// Reserve is the free space a write to the registry must leave in the
// data dir. Distribution's filesystem driver leaks the open file of an
// upload that hit a full disk (its writer's Close returns at the failed
// flush before closing), so the space of a purged upload would come back
// only on restart: writes stop short of the disk filling instead, which
// also leaves room for the database beside the registry.
const Reserve = 16 << 20

// Guard wraps the registry handler h, serving storage under
// dataDir/registry, with limits: an upload cap, and a clear 507
// ("the registry's storage is full") instead of an opaque 500 when a write
// fails for want of space. A refused or failed write leaves the stored
// content as it was: Distribution commits a blob only once whole.
func Guard(h http.Handler, dataDir string, l Limits) http.Handler {
	root := filepath.Join(dataDir, Dir)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet || r.Method == http.MethodHead || r.Method == http.MethodOptions {
			h.ServeHTTP(w, r)
			return
		}
		if l.Gate != nil {
			defer l.Gate.Shared()()
			rec := &accepted{ResponseWriter: w}
			defer func() {
				// 201: a blob or manifest was committed (202, an upload
				// started or went on, stores nothing yet).
				if rec.code == http.StatusCreated {
					l.Gate.Wrote()
				}
			}()
			w = rec
		}
		if free, ok := freeSpace(root); ok && free < Reserve && r.Method != http.MethodDelete {
			diskFull(w)
			return
		}
		repo, upload, isUpload := uploadOf(r)
		if !isUpload || r.Method == http.MethodDelete {
			h.ServeHTTP(&fullDisk{ResponseWriter: w, root: root}, r)
			return
		}
		var have int64
		if upload != "" {
			if fi, err := os.Stat(filepath.Join(root, repositoriesRoot, repo, "_uploads", upload, "data")); err == nil {
				have = fi.Size()
			}
		}
		if r.ContentLength > 0 {
			if l.MaxUpload > 0 && have+r.ContentLength > l.MaxUpload {
				tooLarge(w, l.MaxUpload)
				return
			}
			if free, ok := freeSpace(root); ok && uint64(r.ContentLength)+Reserve > free {
				diskFull(w)
				return
			}
		}
		left := int64(math.MaxInt64)
		if l.MaxUpload > 0 {
			left = l.MaxUpload - have
		}
		fw := &fullDisk{ResponseWriter: w, root: root, max: l.MaxUpload}
		fw.body = &capped{r: r.Body, left: left, root: root}
		r.Body = fw.body
		h.ServeHTTP(fw, r)
	})
}

// uploadOf reads a blob upload request's repository and upload id ("" for
// the POST that starts one).
func uploadOf(r *http.Request) (repo, upload string, ok bool) {
	p, found := strings.CutPrefix(r.URL.Path, "/v2/")
	if !found {
		return "", "", false
	}
	repo, upload, found = strings.Cut(p, "/blobs/uploads")
	if !found {
		return "", "", false
	}
	upload = strings.Trim(upload, "/")
	if strings.ContainsAny(upload, "/\\") || upload == "." || upload == ".." || strings.Contains(repo, "..") {
		return "", "", false
	}
	return repo, upload, true
}

// capped reads at most left bytes of r and then fails, and fails as soon
// as the disk under root has less than Reserve free.
type capped struct {
	r    io.ReadCloser
	left int64
	root string
	over atomic.Bool
	full atomic.Bool
}

var (
	errTooLarge = errors.New("the upload exceeds the registry's size cap")
	errFull     = errors.New("the registry's storage is full")
)

func (c *capped) Read(p []byte) (int, error) {
	if free, ok := freeSpace(c.root); ok && free < Reserve {
		c.full.Store(true)
		return 0, errFull
	}
	if c.left <= 0 {
		c.over.Store(true)
		return 0, errTooLarge
	}
	if int64(len(p)) > c.left {
		p = p[:c.left]
	}
	n, err := c.r.Read(p)
	c.left -= int64(n)
	if c.left <= 0 && err == nil {
		// Whether more follows tells a body of exactly the cap from one
		// past it.
		var one [1]byte
		if m, _ := c.r.Read(one[:]); m > 0 {
			c.over.Store(true)
			return n, errTooLarge
		}
	}
	return n, err
}

func (c *capped) Close() error { return c.r.Close() }

// fullDisk replaces a failed write's answer with a clear one: 413 when the
// body went past the upload cap, 507 when the disk is full.
type fullDisk struct {
	http.ResponseWriter
	root     string
	body     *capped
	max      int64
	replaced bool
}

func (f *fullDisk) WriteHeader(code int) {
	switch {
	case f.body != nil && f.body.over.Load():
		f.replaced = true
		tooLarge(f.ResponseWriter, f.max)
	case f.body != nil && f.body.full.Load(), code >= 500 && lowOnSpace(f.root):
		f.replaced = true
		diskFull(f.ResponseWriter)
	default:
		f.ResponseWriter.WriteHeader(code)
	}
}

func (f *fullDisk) Write(b []byte) (int, error) {
	if f.replaced {
		return len(b), nil
	}
	return f.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (f *fullDisk) Unwrap() http.ResponseWriter { return f.ResponseWriter }

// accepted remembers the status code of a response.
type accepted struct {
	http.ResponseWriter
	code int
}

func (a *accepted) WriteHeader(code int) {
	if a.code == 0 {
		a.code = code
	}
	a.ResponseWriter.WriteHeader(code)
}

func (a *accepted) Write(b []byte) (int, error) {
	if a.code == 0 {
		a.code = http.StatusOK
	}
	return a.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (a *accepted) Unwrap() http.ResponseWriter { return a.ResponseWriter }

func freeSpace(root string) (uint64, bool) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(root, &st); err != nil {
		return 0, false
	}
	return st.Bavail * uint64(st.Bsize), true
}

func lowOnSpace(root string) bool {
	free, ok := freeSpace(root)
	return ok && free < Reserve
}

// writeErr writes a distribution-spec error body.
func writeErr(w http.ResponseWriter, status int, code, message string, detail any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Del("Content-Length")
	w.Header().Del("Location")
	w.Header().Del("Docker-Upload-UUID")
	w.Header().Del("Range")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]any{"errors": []map[string]any{{"code": code, "message": message, "detail": detail}}})
}

func tooLarge(w http.ResponseWriter, max int64) {
	writeErr(w, http.StatusRequestEntityTooLarge, "SIZE_INVALID",
		fmt.Sprintf("the upload is larger than this registry's cap of %d bytes per blob", max), map[string]int64{"limit": max})
}

func diskFull(w http.ResponseWriter) {
	writeErr(w, http.StatusInsufficientStorage, "BLOB_UPLOAD_INVALID",
		"the registry's storage is full: nothing was stored; try again once space is freed", nil)
}
