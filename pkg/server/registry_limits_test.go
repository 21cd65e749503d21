package server_test

import (
	"context"
	"crypto/rand"
	"errors"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/google/go-containerregistry/pkg/v1/stream"

	"github.com/slipway-dev/slipway/events"
	"github.com/slipway-dev/slipway/pkg/registry"
)

// pushImage pushes img to repo:tag as the event publisher "platform".
func (e *env) pushImage(repo string, img v1.Image) (string, error) {
	ref, err := name.ParseReference(e.srv.RegistryHost() + "/" + repo + ":latest")
	if err != nil {
		return "", err
	}
	if err := remote.Write(ref, img, e.ts.RegistryAs("platform")); err != nil {
		return "", err
	}
	d, _ := img.Digest()
	return e.srv.RegistryHost() + "/" + repo + "@" + d.String(), nil
}

// pushStream uploads size random bytes as one streamed layer (chunked, no
// Content-Length) to repo.
func (e *env) pushStream(repo string, size int64) error {
	r, _ := name.NewRepository(e.srv.RegistryHost() + "/" + repo)
	l := stream.NewLayer(io.NopCloser(io.LimitReader(rand.Reader, size)))
	return remote.WriteLayer(r, l, e.ts.RegistryAs("platform"))
}

// wantRegistryError checks a push failed with status and the
// distribution-spec error code, and returns the message.
func wantRegistryError(t *testing.T, err error, status int, code string) string {
	t.Helper()
	var te *transport.Error
	if !errors.As(err, &te) {
		t.Fatalf("got %v, want a registry error %d %s", err, status, code)
	}
	if te.StatusCode != status || len(te.Errors) == 0 || string(te.Errors[0].Code) != code {
		t.Fatalf("got %d %+v, want %d %s", te.StatusCode, te.Errors, status, code)
	}
	return te.Errors[0].Message
}

// randomImage is an image of one layer of size random bytes.
func randomImage(t testing.TB, size int64) v1.Image {
	t.Helper()
	img, err := random.Image(size, 1)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// uploads lists the registry's unfinished uploads.
func uploads(t *testing.T, e *env) []string {
	t.Helper()
	found, err := filepath.Glob(filepath.Join(e.cfg.DataDir, registry.Dir, "docker/registry/v2/repositories/*/*/_uploads/*"))
	if err != nil {
		t.Fatal(err)
	}
	return found
}

// TestUploadCap: an upload that would go past --registry-max-upload is
// refused with 413 SIZE_INVALID, whether its size is announced or
// streamed; smaller pushes and earlier content are unaffected, and the
// abandoned upload is purged.
func TestUploadCap(t *testing.T) {
	cfg := serverConfig(t)
	cfg.RegistryMaxUpload = 1 << 20
	cfg.RegistryUploadMaxAge = time.Nanosecond
	cfg.RegistryGCQuiet = 0
	e := start(t, cfg)
	small, err := e.pushImage("library/small", randomImage(t, 100<<10))
	if err != nil {
		t.Fatalf("a push under the cap: %v", err)
	}
	_, err = e.pushImage("library/big", randomImage(t, 2<<20))
	msg := wantRegistryError(t, err, http.StatusRequestEntityTooLarge, "SIZE_INVALID")
	if !strings.Contains(msg, "1048576 bytes") {
		t.Fatalf("the refusal does not name the cap: %q", msg)
	}
	wantRegistryError(t, e.pushStream("library/streamed", 2<<20), http.StatusRequestEntityTooLarge, "SIZE_INVALID")
	if err := e.pushStream("library/streamed", 512<<10); err != nil {
		t.Fatalf("a streamed push under the cap: %v", err)
	}
	e.mustPull("platform", small)
	e.mustNotResolve("platform", e.srv.RegistryHost()+"/library/big:latest")
	if len(uploads(t, e)) == 0 {
		t.Fatal("no abandoned upload left to purge: the test needs one")
	}
	if err := e.srv.CollectRegistry(context.Background()); err != nil {
		t.Fatal(err)
	}
	if left := uploads(t, e); len(left) != 0 {
		t.Fatalf("abandoned uploads survived the purge: %v", left)
	}
	e.mustPull("platform", small)
}

// TestFullDisk: on a data dir that fills up, a push gets a clear 507
// instead of an opaque 500 once less than registry.Reserve is free,
// earlier content still pulls whole, and once the abandoned upload is
// purged its space is back and pushes work again.
func TestFullDisk(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("mounting a small tmpfs as the data dir needs root")
	}
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=40m", "tmpfs", dir).CombinedOutput(); err != nil {
		t.Fatalf("mount tmpfs: %v: %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", "-l", dir).CombinedOutput(); err != nil {
			t.Errorf("umount: %v: %s", err, out)
		}
	})
	cfg := serverConfig(t)
	cfg.DataDir = dir
	cfg.RegistryUploadMaxAge = time.Nanosecond
	cfg.RegistryGCQuiet = 0
	e := start(t, cfg)
	first, err := e.pushImage("library/first", randomImage(t, 1<<20))
	if err != nil {
		t.Fatal(err)
	}
	// Announced size (Content-Length) and streamed: both answer 507.
	_, err = e.pushImage("library/huge", randomImage(t, 48<<20))
	msg := wantRegistryError(t, err, http.StatusInsufficientStorage, "BLOB_UPLOAD_INVALID")
	if !strings.Contains(msg, "storage is full") {
		t.Fatalf("the refusal does not say the storage is full: %q", msg)
	}
	wantRegistryError(t, e.pushStream("library/streamed", 48<<20), http.StatusInsufficientStorage, "BLOB_UPLOAD_INVALID")
	got := e.mustPull("platform", first)
	if err := validateLayers(got); err != nil {
		t.Fatalf("earlier content after the disk filled: %v", err)
	}
	e.mustNotResolve("platform", e.srv.RegistryHost()+"/library/huge:latest")
	if err := e.srv.CollectRegistry(context.Background()); err != nil {
		t.Fatal(err)
	}
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	if free := st.Bavail * uint64(st.Bsize); free < 30<<20 {
		t.Fatalf("%d bytes free after the purge: the abandoned uploads' space did not come back", free)
	}
	if _, err := e.pushImage("library/after", randomImage(t, 1<<20)); err != nil {
		t.Fatalf("a push once the abandoned upload was purged: %v", err)
	}
	e.mustPull("platform", first)
}

// validateLayers reads every layer whole, checking its digest.
func validateLayers(img v1.Image) error {
	layers, err := img.Layers()
	if err != nil {
		return err
	}
	for _, l := range layers {
		rc, err := l.Compressed()
		if err != nil {
			return err
		}
		_, err = io.Copy(io.Discard, rc) // ggcr verifies the digest at EOF
		rc.Close()
		if err != nil {
			return err
		}
	}
	return nil
}

// TestCollectionWaitsForQuiet: a collection stays away for
// --registry-gc-quiet after a push committed a blob or manifest (its
// blobs may still wait for their manifest), while refused writes do not
// postpone it.
func TestCollectionWaitsForQuiet(t *testing.T) {
	cfg := serverConfig(t)
	cfg.RegistryMaxUpload = 1 << 20
	e := start(t, cfg)
	if err := e.srv.CollectRegistry(context.Background()); err != nil {
		t.Fatalf("a collection on an idle registry: %v", err)
	}
	wantRegistryError(t, e.pushStream("library/big", 2<<20), http.StatusRequestEntityTooLarge, "SIZE_INVALID")
	if err := e.srv.CollectRegistry(context.Background()); err != nil {
		t.Fatalf("a refused push postponed the collection: %v", err)
	}
	if _, err := e.pushImage("library/small", randomImage(t, 10<<10)); err != nil {
		t.Fatal(err)
	}
	if err := e.srv.CollectRegistry(context.Background()); !errors.Is(err, registry.ErrBusy) {
		t.Fatalf("a collection right after a push: %v, want registry.ErrBusy", err)
	}
}

// TestScheduledCollection: with --registry-gc-interval the server collects
// by itself: blobs left unreferenced go without anyone asking.
func TestScheduledCollection(t *testing.T) {
	cfg := serverConfig(t)
	cfg.RegistryGCInterval = 100 * time.Millisecond
	cfg.RegistryGCQuiet = 0
	e := start(t, cfg)
	e.announce(events.WorkspaceCreated, "ws1", "alice")
	img, _ := e.plant("team/sched")
	layer := layerDigests(t, img)[0]
	if !exists(blobFile(e, layer)) {
		t.Fatalf("no blob file for %s", layer)
	}
	e.create("ws1", "alice", "team/sched") // the claim empties the repository
	deadline := time.Now().Add(10 * time.Second)
	for exists(blobFile(e, layer)) {
		if time.Now().After(deadline) {
			t.Fatalf("the unreferenced blob %s is still there after 10 s of scheduled collections; log:\n%s", layer, e.logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}
