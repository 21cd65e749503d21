// Package web serves Slipway's web page: the Docker Images section of a
// workspace (tiles, editor, builds and their logs), working against the API
// on the same address.
//
// The page's source is in web/ at the repository's root; `make web-bundle`
// (npm ci && node build.mjs) builds it into assets/, which is committed and
// embedded here, so building and running Slipway needs no Node.
// bundle_test.go fails when the committed bundle is not what the source
// builds to.
package web

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"io/fs"
	"net/http"
	"path"
	"regexp"
	"strings"
	"sync"
	"time"
)

//go:embed assets
var assets embed.FS

// Assets is the embedded bundle, rooted at its directory.
func Assets() fs.FS {
	sub, err := fs.Sub(assets, "assets")
	if err != nil {
		panic(err)
	}
	return sub
}

// hashed matches the names esbuild gives with a content hash (app-XXXXXXXX.js):
// they never change content, so browsers may keep them for a year.
var hashed = regexp.MustCompile(`-[A-Z0-9]{8}\.(js|css)$`)

var contentTypes = map[string]string{
	".html": "text/html; charset=utf-8",
	".js":   "text/javascript; charset=utf-8",
	".css":  "text/css; charset=utf-8",
	".svg":  "image/svg+xml",
	".png":  "image/png",
	".json": "application/json",
	".txt":  "text/plain; charset=utf-8",
}

// contentSecurityPolicy allows only this origin's scripts and API; styles
// may be inline because the code editor sets element styles.
const contentSecurityPolicy = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; " +
	"img-src 'self' data:; connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; " +
	"form-action 'self'; frame-ancestors 'none'"

// file is one embedded asset, ready to serve.
type file struct {
	name, contentType, cacheControl string
	body, gz                        []byte // gz is nil when compressing does not pay
	etag, gzEtag                    string
}

var (
	loadOnce sync.Once
	files    map[string]*file // by URL path
)

func load() {
	files = map[string]*file{}
	root := Assets()
	entries, err := fs.ReadDir(root, ".")
	if err != nil {
		panic(err)
	}
	for _, e := range entries {
		if e.IsDir() {
			continue
		}
		body, err := fs.ReadFile(root, e.Name())
		if err != nil {
			panic(err)
		}
		sum := sha256.Sum256(body)
		f := &file{
			name:        e.Name(),
			body:        body,
			contentType: contentTypes[path.Ext(e.Name())],
			etag:        `"` + hex.EncodeToString(sum[:12]) + `"`,
		}
		if f.contentType == "" {
			f.contentType = "application/octet-stream"
		}
		switch {
		case e.Name() == "index.html":
			f.cacheControl = "no-cache" // revalidate: it names the current bundle
		case hashed.MatchString(e.Name()):
			f.cacheControl = "public, max-age=31536000, immutable"
		default:
			f.cacheControl = "public, max-age=3600"
		}
		if compressible(f.contentType) && len(body) > 512 {
			var buf bytes.Buffer
			zw, _ := gzip.NewWriterLevel(&buf, gzip.BestCompression)
			zw.Write(body)
			zw.Close()
			if buf.Len() < len(body) {
				f.gz = buf.Bytes()
				f.gzEtag = `"` + hex.EncodeToString(sum[:12]) + `-gz"`
			}
		}
		files["/"+e.Name()] = f
	}
	if files["/index.html"] == nil {
		panic("web: the embedded bundle has no index.html: run `make web-bundle`")
	}
	files["/"] = files["/index.html"]
}

func compressible(ct string) bool {
	return strings.HasPrefix(ct, "text/") || ct == "image/svg+xml" || ct == "application/json"
}

// Handler serves the page at / and its assets beside it. Other paths are
// 404; methods other than GET and HEAD are 405.
func Handler() http.Handler {
	loadOnce.Do(load)
	return http.HandlerFunc(serve)
}

func serve(w http.ResponseWriter, r *http.Request) {
	f := files[r.URL.Path]
	if f == nil {
		http.NotFound(w, r)
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "405 method not allowed", http.StatusMethodNotAllowed)
		return
	}
	h := w.Header()
	h.Set("Content-Type", f.contentType)
	h.Set("Cache-Control", f.cacheControl)
	h.Set("X-Content-Type-Options", "nosniff")
	if f.contentType == contentTypes[".html"] {
		h.Set("Content-Security-Policy", contentSecurityPolicy)
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("X-Frame-Options", "DENY")
	}
	body, etag := f.body, f.etag
	if f.gz != nil {
		h.Add("Vary", "Accept-Encoding")
		if acceptsGzip(r.Header.Get("Accept-Encoding")) {
			body, etag = f.gz, f.gzEtag
			h.Set("Content-Encoding", "gzip")
		}
	}
	h.Set("ETag", etag)
	http.ServeContent(w, r, f.name, time.Time{}, bytes.NewReader(body))
}

// acceptsGzip reports whether an Accept-Encoding header admits gzip.
func acceptsGzip(header string) bool {
	for _, part := range strings.Split(header, ",") {
		coding, params, _ := strings.Cut(strings.TrimSpace(part), ";")
		if strings.EqualFold(strings.TrimSpace(coding), "gzip") {
			q := strings.ReplaceAll(strings.TrimSpace(params), " ", "")
			return q != "q=0" && q != "q=0.0" && q != "q=0.00" && q != "q=0.000"
		}
	}
	return false
}
