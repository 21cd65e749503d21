package web_test

import (
	"compress/gzip"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"

	"github.com/slipway-dev/slipway/pkg/web"
)

func get(t *testing.T, h http.Handler, method, path string, headers ...string) *http.Response {
	t.Helper()
	req := httptest.NewRequest(method, path, nil)
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec.Result()
}

func body(t *testing.T, res *http.Response) string {
	t.Helper()
	r := io.Reader(res.Body)
	if res.Header.Get("Content-Encoding") == "gzip" {
		zr, err := gzip.NewReader(res.Body)
		if err != nil {
			t.Fatal(err)
		}
		r = zr
	}
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestHandler checks what the page's handler serves: the index at /, the
// bundle it names with long-lived caching, types, compression, ETags, 404
// and 405.
func TestHandler(t *testing.T) {
	h := web.Handler()

	res := get(t, h, "GET", "/")
	if res.StatusCode != 200 {
		t.Fatalf("GET /: %d", res.StatusCode)
	}
	index := body(t, res)
	for k, want := range map[string]string{
		"Content-Type":            "text/html; charset=utf-8",
		"Cache-Control":           "no-cache",
		"X-Content-Type-Options":  "nosniff",
		"Referrer-Policy":         "no-referrer",
		"Content-Security-Policy": "default-src 'self'",
	} {
		if got := res.Header.Get(k); !strings.HasPrefix(got, want) {
			t.Errorf("GET / %s = %q, want %q", k, got, want)
		}
	}
	if !strings.Contains(index, "<title>") {
		t.Fatalf("GET / is not the page:\n%s", index)
	}

	// The index names a hashed script and stylesheet; both are served.
	for _, m := range []struct{ re, ctype string }{
		{`src="(app-[A-Z0-9]{8}\.js)"`, "text/javascript; charset=utf-8"},
		{`href="(app-[A-Z0-9]{8}\.css)"`, "text/css; charset=utf-8"},
	} {
		found := regexp.MustCompile(m.re).FindStringSubmatch(index)
		if found == nil {
			t.Fatalf("index.html does not name %s", m.re)
		}
		res := get(t, h, "GET", "/"+found[1], "Accept-Encoding", "gzip, deflate, br")
		if res.StatusCode != 200 {
			t.Fatalf("GET /%s: %d", found[1], res.StatusCode)
		}
		if got := res.Header.Get("Content-Type"); got != m.ctype {
			t.Errorf("%s: Content-Type %q, want %q", found[1], got, m.ctype)
		}
		if got := res.Header.Get("Cache-Control"); got != "public, max-age=31536000, immutable" {
			t.Errorf("%s: Cache-Control %q", found[1], got)
		}
		if res.Header.Get("Content-Encoding") != "gzip" || !strings.Contains(res.Header.Get("Vary"), "Accept-Encoding") {
			t.Errorf("%s: not gzipped for a client that accepts it: %v", found[1], res.Header)
		}
		if len(body(t, res)) < 1000 {
			t.Errorf("%s: suspiciously small", found[1])
		}
		// Revalidation by ETag.
		etag := res.Header.Get("ETag")
		if res := get(t, h, "GET", "/"+found[1], "Accept-Encoding", "gzip", "If-None-Match", etag); res.StatusCode != http.StatusNotModified {
			t.Errorf("%s with If-None-Match: %d, want 304", found[1], res.StatusCode)
		}
		// Plain for a client that does not accept gzip.
		if res := get(t, h, "GET", "/"+found[1]); res.Header.Get("Content-Encoding") != "" {
			t.Errorf("%s: gzipped without Accept-Encoding", found[1])
		}
	}

	if res := get(t, h, "GET", "/favicon.svg"); res.StatusCode != 200 || res.Header.Get("Content-Type") != "image/svg+xml" {
		t.Errorf("GET /favicon.svg: %d %q", res.StatusCode, res.Header.Get("Content-Type"))
	}
	if res := get(t, h, "HEAD", "/"); res.StatusCode != 200 {
		t.Errorf("HEAD /: %d", res.StatusCode)
	}
	if res := get(t, h, "GET", "/no-such-file.js"); res.StatusCode != 404 {
		t.Errorf("GET /no-such-file.js: %d, want 404", res.StatusCode)
	}
	if res := get(t, h, "POST", "/"); res.StatusCode != 405 || res.Header.Get("Allow") != "GET, HEAD" {
		t.Errorf("POST /: %d Allow %q, want 405 GET, HEAD", res.StatusCode, res.Header.Get("Allow"))
	}
}
