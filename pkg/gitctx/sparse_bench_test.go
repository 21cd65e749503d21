package gitctx

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/slipway-dev/slipway/pkg/gitctx/gittest"
	"github.com/slipway-dev/slipway/pkg/image"
)

// BenchmarkFetchOneFolder fetches a generated repository of 46 folders of
// about 2.4 MiB of incompressible files each (about 110 MiB, the issue's
// shape) over git daemon on loopback, the whole tree and one folder (the
// sparse checkout an image with a dir gets), and the same with the git
// command line for reference. Run:
//
//	go test -run '^$' -bench FetchOneFolder -benchtime 5x ./pkg/gitctx/
func BenchmarkFetchOneFolder(b *testing.B) {
	root := b.TempDir()
	r := gittest.NewRepo(b, filepath.Join(root, "big"))
	rng := rand.New(rand.NewPCG(1, 2))
	files := map[string]string{"Dockerfile": "FROM scratch\n"}
	for i := range 46 {
		for j := range 4 {
			buf := make([]byte, 600<<10)
			for k := range buf {
				buf[k] = byte(rng.Uint32())
			}
			files[fmt.Sprintf("f%02d/blob%d", i, j)] = string(buf)
		}
		files[fmt.Sprintf("f%02d/Dockerfile", i)] = "FROM scratch\n"
	}
	r.Commit(files, "big")
	// Packed, as a hosting service keeps its repositories: served loose,
	// every fetch would pay for git compressing each object again.
	r.Git("repack", "-a", "-d", "--quiet")
	r.Git("config", "uploadpack.allowFilter", "true")
	base := gittest.ServeGit(b, root)
	f := &Fetcher{Timeout: 5 * time.Minute}
	for _, dir := range []string{"", "f07"} {
		name := "whole"
		if dir != "" {
			name = "one-folder"
		}
		b.Run(name, func(b *testing.B) {
			for b.Loop() {
				if _, _, err := f.Fetch(context.Background(), image.Git{URL: base + "big", Dir: dir}, nil, b.TempDir()); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
	// For reference, git itself: a shallow clone of the whole tree, and a
	// partial clone (blobs of the one folder only), which go-git cannot do.
	for name, args := range map[string][]string{
		"git-cli-whole":              {"clone", "--quiet", "--depth", "1", base + "big"},
		"git-cli-partial-one-folder": {"clone", "--quiet", "--depth", "1", "--filter=blob:none", "--sparse", base + "big"},
	} {
		b.Run(name, func(b *testing.B) {
			for b.Loop() {
				dest := filepath.Join(b.TempDir(), "c")
				steps := [][]string{append(args, dest)}
				if strings.Contains(name, "partial") {
					steps = append(steps, []string{"-C", dest, "sparse-checkout", "set", "f07"})
				}
				for _, a := range steps {
					if out, err := exec.Command("git", a...).CombinedOutput(); err != nil {
						b.Fatalf("git %v: %v\n%s", a, err, out)
					}
				}
			}
		})
	}
}
