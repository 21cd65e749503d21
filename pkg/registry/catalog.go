package registry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/distribution/distribution/v3"
	"github.com/distribution/distribution/v3/registry/storage"
	"github.com/distribution/distribution/v3/registry/storage/driver"
	"github.com/distribution/distribution/v3/registry/storage/driver/filesystem"

	"github.com/slipway-dev/slipway/pkg/image"
)

// Catalog limits: the page size without n, and the most one page holds.
const (
	CatalogDefault = 100
	CatalogMax     = 1000
)

// CatalogAuth is what the catalog needs of the token authority.
type CatalogAuth interface {
	// CatalogCaller returns the subject of a bearer access token that
	// grants the catalog (registry:catalog:*), or an error.
	CatalogCaller(r *http.Request) (subject string, err error)
	// Challenge is the WWW-Authenticate value that sends a client without
	// such a token to the token endpoint.
	Challenge() string
	// MayPull reports whether subject may pull repo.
	MayPull(ctx context.Context, subject, repo string) (bool, error)
}

// Catalog serves GET /v2/_catalog as the distribution specification says
// (n, last, a Link header to the next page), listing only the repositories
// the caller may pull, and no layer cache (image.ReservedPrefix). Distribution's own catalog lists everything and, as
// configured here, refuses every n.
func Catalog(dataDir string, a CatalogAuth) (http.Handler, error) {
	d := filesystem.New(filesystem.DriverParameters{
		RootDirectory: filepath.Join(dataDir, Dir), MaxThreads: 25,
	})
	reg, err := storage.NewRegistry(context.Background(), d)
	if err != nil {
		return nil, fmt.Errorf("registry catalog: %w", err)
	}
	return &catalog{repos: reg, auth: a}, nil
}

type catalog struct {
	repos distribution.Namespace
	auth  CatalogAuth
}

// registryError writes Distribution's error shape.
func registryError(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]any{"errors": []map[string]string{{"code": code, "message": msg}}})
}

func (c *catalog) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	subject, err := c.auth.CatalogCaller(r)
	if err != nil {
		w.Header().Set("WWW-Authenticate", c.auth.Challenge())
		registryError(w, http.StatusUnauthorized, "UNAUTHORIZED", "authentication required: a token with the scope registry:catalog:*")
		return
	}
	q := r.URL.Query()
	n := CatalogDefault
	if s := q.Get("n"); s != "" {
		v, err := strconv.Atoi(s)
		if err != nil || v < 0 {
			registryError(w, http.StatusBadRequest, "PAGINATION_NUMBER_INVALID", fmt.Sprintf("n=%q: want a whole number from 0 to %d", s, CatalogMax))
			return
		}
		n = min(v, CatalogMax)
	}
	last := q.Get("last")
	repos, more, err := c.page(r.Context(), subject, last, n)
	if err != nil {
		registryError(w, http.StatusInternalServerError, "UNKNOWN", "listing repositories failed")
		return
	}
	if more {
		next := url.Values{"n": {strconv.Itoa(n)}, "last": {repos[len(repos)-1]}}
		w.Header().Set("Link", fmt.Sprintf(`</v2/_catalog?%s>; rel="next"`, next.Encode()))
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(map[string][]string{"repositories": repos})
}

// page walks the repositories after last in the storage's order and keeps
// the first n that subject may pull; more says whether any may follow.
func (c *catalog) page(ctx context.Context, subject, last string, n int) (repos []string, more bool, err error) {
	repos = []string{}
	if n == 0 {
		return repos, false, nil
	}
	buf := make([]string, 100)
	for {
		got, err := c.repos.Repositories(ctx, buf, last)
		var notFound driver.PathNotFoundError
		end := errors.Is(err, io.EOF) || errors.As(err, &notFound)
		if err != nil && !end {
			return nil, false, err
		}
		for _, repo := range buf[:got] {
			last = repo
			// Layer caches hold no images to offer: not listed, even to
			// the subjects that may pull them.
			if strings.HasPrefix(repo, "_") || strings.HasPrefix(repo, image.ReservedPrefix+"/") {
				continue
			}
			ok, err := c.auth.MayPull(ctx, subject, repo)
			if err != nil {
				return nil, false, err
			}
			if !ok {
				continue
			}
			if len(repos) == n {
				return repos, true, nil
			}
			repos = append(repos, repo)
		}
		if end || got == 0 {
			return repos, false, nil
		}
	}
}
