package kubecluster

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path"
	"runtime"
	"sort"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// PushBinary pushes to ref a one-layer image holding the host file bin at
// dest (mode 0755), extra files (image path: contents), and entrypoint
// [dest] with the environment env. A plain-HTTP registry is spoken to when
// ref's registry is on loopback and opts say nothing else.
func PushBinary(ctx context.Context, ref, bin, dest string, extra map[string][]byte, env []string, opts ...remote.Option) error {
	b, err := os.ReadFile(bin)
	if err != nil {
		return err
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	dirs := map[string]bool{}
	add := func(p string, mode int64, body []byte) error {
		p = path.Clean("/" + p)[1:]
		for d := path.Dir(p); d != "." && !dirs[d]; d = path.Dir(d) {
			dirs[d] = true
		}
		return tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: p, Mode: mode, Size: int64(len(body)), ModTime: time.Unix(0, 0)})
	}
	files := map[string][]byte{dest: b}
	for k, v := range extra {
		files[k] = v
	}
	// Directories first, then files, in a fixed order.
	var names []string
	for k := range files {
		names = append(names, path.Clean("/" + k)[1:])
		for d := path.Dir(path.Clean("/" + k)[1:]); d != "."; d = path.Dir(d) {
			dirs[d] = true
		}
	}
	var dl []string
	for d := range dirs {
		dl = append(dl, d)
	}
	sort.Strings(dl)
	dl = append(dl, "tmp")
	for _, d := range dl {
		mode := int64(0o755)
		if d == "tmp" {
			mode = 0o1777
		}
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: d + "/", Mode: mode, ModTime: time.Unix(0, 0)}); err != nil {
			return err
		}
	}
	sort.Strings(names)
	for _, n := range names {
		body := files["/"+n]
		if body == nil {
			body = files[n]
		}
		mode := int64(0o644)
		if "/"+n == path.Clean("/"+dest) {
			mode = 0o755
		}
		if err := add(n, mode, body); err != nil {
			return err
		}
		if _, err := tw.Write(body); err != nil {
			return err
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(buf.Bytes())), nil })
	if err != nil {
		return err
	}
	img, err := mutate.AppendLayers(empty.Image, layer)
	if err != nil {
		return err
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		return err
	}
	cfg = cfg.DeepCopy()
	cfg.OS, cfg.Architecture = "linux", runtime.GOARCH
	cfg.Config.Entrypoint = []string{dest}
	cfg.Config.Env = append([]string{"PATH=/usr/local/bin:/usr/bin:/bin"}, env...)
	if img, err = mutate.ConfigFile(img, cfg); err != nil {
		return err
	}
	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		return err
	}
	if err := remote.Write(r, img, append([]remote.Option{remote.WithContext(ctx)}, opts...)...); err != nil {
		return fmt.Errorf("push %s: %w", ref, err)
	}
	return nil
}
