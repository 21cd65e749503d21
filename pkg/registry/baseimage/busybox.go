// Package baseimage builds small base images from files on the host and pushes
// them to a registry, so that tests and a first demo build need no image hub.
package baseimage

import (
	"archive/tar"
	"bytes"
	"context"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"runtime"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// BusyboxPath is where Debian's busybox-static package installs its binary.
const BusyboxPath = "/bin/busybox"

// busyboxApplets are the commands linked to busybox in the image's /bin.
var busyboxApplets = []string{
	"[", "ash", "base64", "basename", "cat", "chmod", "chown", "cp", "cut",
	"date", "dd", "df", "dirname", "du", "echo", "env", "expr", "false",
	"find", "grep", "gunzip", "gzip", "head", "hostname", "id", "kill", "ln",
	"ls", "mkdir", "mv", "printf", "ps", "pwd", "rm", "rmdir", "sed", "seq",
	"sh", "sha256sum", "sleep", "sort", "stat", "tail", "tar", "tee", "test",
	"touch", "tr", "true", "uname", "wc", "whoami", "xargs", "yes",
}

// PushBusybox builds a one-layer image from the host's static busybox
// (/bin/busybox and its applets as symlinks in /bin, /etc/passwd with root
// and nobody, /tmp, /root) and pushes it to ref, a reference such as
// "127.0.0.1:5000/busybox:latest". Loopback registries are spoken to over
// plain HTTP. opts add to the push's options (its authentication, say). It
// returns the pushed image's digest, which is the same for the same busybox
// binary: the layer's timestamps are fixed.
func PushBusybox(ctx context.Context, ref string, opts ...remote.Option) (v1.Hash, error) {
	r, err := name.ParseReference(ref)
	if err != nil {
		return v1.Hash{}, fmt.Errorf("baseimage: parse %q: %w", ref, err)
	}
	img, err := busyboxImage()
	if err != nil {
		return v1.Hash{}, err
	}
	if err := remote.Write(r, img, append([]remote.Option{remote.WithContext(ctx)}, opts...)...); err != nil {
		return v1.Hash{}, fmt.Errorf("baseimage: push %s: %w", r, err)
	}
	return img.Digest()
}

// busyboxImage returns the image that PushBusybox pushes.
func busyboxImage() (v1.Image, error) {
	layerTar, err := busyboxLayer()
	if err != nil {
		return nil, err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layerTar)), nil
	})
	if err != nil {
		return nil, fmt.Errorf("baseimage: layer: %w", err)
	}
	img, err := mutate.AppendLayers(empty.Image, layer)
	if err != nil {
		return nil, fmt.Errorf("baseimage: append layer: %w", err)
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		return nil, fmt.Errorf("baseimage: config: %w", err)
	}
	cfg = cfg.DeepCopy()
	cfg.OS = "linux"
	cfg.Architecture = runtime.GOARCH
	cfg.Config.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
	cfg.Config.Cmd = []string{"sh"}
	img, err = mutate.ConfigFile(img, cfg)
	if err != nil {
		return nil, fmt.Errorf("baseimage: set config: %w", err)
	}
	return img, nil
}

// busyboxLayer returns the uncompressed tar of the image's only layer.
func busyboxLayer() ([]byte, error) {
	bin, err := readStaticBusybox()
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	mtime := time.Unix(0, 0)
	add := func(h *tar.Header, body []byte) error {
		h.ModTime = mtime
		h.Format = tar.FormatPAX
		h.Size = int64(len(body))
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		_, err := tw.Write(body)
		return err
	}
	dir := func(name string, mode int64) error {
		return add(&tar.Header{Typeflag: tar.TypeDir, Name: name, Mode: mode}, nil)
	}
	file := func(name string, mode int64, body []byte) error {
		return add(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: mode}, body)
	}
	errs := []error{
		dir("bin/", 0o755),
		file("bin/busybox", 0o755, bin),
	}
	for _, applet := range busyboxApplets {
		errs = append(errs, add(&tar.Header{Typeflag: tar.TypeSymlink, Name: "bin/" + applet, Linkname: "busybox", Mode: 0o777}, nil))
	}
	errs = append(errs,
		dir("etc/", 0o755),
		file("etc/passwd", 0o644, []byte("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n")),
		file("etc/group", 0o644, []byte("root:x:0:\nnogroup:x:65534:\n")),
		dir("root/", 0o700),
		dir("tmp/", 0o1777),
		tw.Close(),
	)
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("baseimage: write layer: %w", err)
	}
	return buf.Bytes(), nil
}

// readStaticBusybox reads BusyboxPath and checks that it is statically
// linked, as it must run in an image with no C library.
func readStaticBusybox() ([]byte, error) {
	bin, err := os.ReadFile(BusyboxPath)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("baseimage: %s is missing: install it with `apt-get install busybox-static`", BusyboxPath)
	}
	if err != nil {
		return nil, fmt.Errorf("baseimage: %w", err)
	}
	f, err := elf.NewFile(bytes.NewReader(bin))
	if err != nil {
		return nil, fmt.Errorf("baseimage: %s is not an ELF binary: %w", BusyboxPath, err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return nil, fmt.Errorf("baseimage: %s is dynamically linked: install the static one with `apt-get install busybox-static`", BusyboxPath)
		}
	}
	return bin, nil
}
