// Package buildcontext prepares a build's context on the host: it writes an
// editor's Dockerfile, or fetches a Git repository in a child process with
// its own memory, disk, entry and time limits; it reads the Dockerfile
// inside the context's own tree only (os.Root), up to the editor's size cap,
// and validates it; and it removes everything it made when the build is
// done with it.
package buildcontext

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/slipway-dev/slipway/pkg/build"
	"github.com/slipway-dev/slipway/pkg/gitctx"
	"github.com/slipway-dev/slipway/pkg/image"
)

// DockerfileName is the Dockerfile's path in every prepared context.
const DockerfileName = "Dockerfile"

// Limits bound one Git fetch. Zero fields take the defaults.
type Limits struct {
	// Files bounds the entries (files, directories, links) checked out.
	Files int64
	// Bytes bounds the bytes checked out, and the size of any one file the
	// fetch writes (the pack it receives among them).
	Bytes int64
	// Memory bounds the fetching process's address space (RLIMIT_AS). The
	// Go runtime reserves about 1 GiB of address space as it starts, so a
	// value under 1.5 GiB leaves the fetch little to work with.
	Memory int64
	// Timeout bounds the whole fetch.
	Timeout time.Duration
}

// The default Limits.
const (
	DefaultFiles   = 100_000
	DefaultBytes   = 1 << 30
	DefaultMemory  = 2 << 30
	DefaultTimeout = gitctx.DefaultTimeout
)

func (l Limits) withDefaults() Limits {
	if l.Files <= 0 {
		l.Files = DefaultFiles
	}
	if l.Bytes <= 0 {
		l.Bytes = DefaultBytes
	}
	if l.Memory <= 0 {
		l.Memory = DefaultMemory
	}
	if l.Timeout <= 0 {
		l.Timeout = DefaultTimeout
	}
	return l
}

// Preparer prepares build contexts, each in its own directory under WorkDir.
type Preparer struct {
	WorkDir   string // where contexts are prepared (required)
	CABundle  []byte // extra PEM roots for Git over https
	AllowFile bool   // admit file:// Git URLs (local development)
	Limits    Limits // of every Git fetch
	// Self is the binary that runs a Git fetch as a child process; empty
	// for the running one (os.Executable). Any binary that links this
	// package can be it, test binaries included (see the package's init).
	Self string
}

// Leftovers lists the builds whose contexts are under WorkDir: after a
// crash, those no build is using any more.
func (p *Preparer) Leftovers() ([]string, error) {
	entries, err := os.ReadDir(p.WorkDir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	var ids []string
	for _, e := range entries {
		ids = append(ids, e.Name())
	}
	return ids, err
}

// Cleanup removes build id's context.
func (p *Preparer) Cleanup(id string) error {
	if id == "" || id != filepath.Base(id) || id == "." || id == ".." {
		return fmt.Errorf("buildcontext: bad build ID %q", id)
	}
	return os.RemoveAll(filepath.Join(p.WorkDir, id))
}

// Notes is where Prepare says what it does: the build's log.
type Notes interface {
	Notef(format string, args ...any)
}

// Request is one build's context to prepare.
type Request struct {
	ID      string        // the build's ID: the name of its directory
	Context image.Context // what to prepare
	Auth    *gitctx.Auth  // a Git context's credential; nil when anonymous
	Log     Notes         // may be nil
}

// Context is a prepared build context. Close removes it.
type Context struct {
	Dir        string // the context directory, absolute
	Dockerfile string // the validated Dockerfile, also at Dir/DockerfileName
	Commit     string // the Git commit checked out; empty for a local context
	work       string
}

// Close removes the context's directory and all it holds.
func (c *Context) Close() error { return os.RemoveAll(c.work) }

// Failure is why a context could not be prepared: its reason is the build's
// failure reason (dockerfile, git, cancelled or internal) and its message
// is fit for every member of the workspace to read.
type Failure struct {
	Reason  build.Reason
	Message string
}

// Error says the reason and the message.
func (f *Failure) Error() string { return string(f.Reason) + ": " + f.Message }

func failure(reason build.Reason, format string, args ...any) *Failure {
	return &Failure{Reason: reason, Message: fmt.Sprintf(format, args...)}
}

// Prepare makes r's context ready to build. On error, which is a *Failure,
// nothing of it is left behind.
func (p *Preparer) Prepare(ctx context.Context, r Request) (c *Context, err error) {
	if r.ID == "" || r.ID != filepath.Base(r.ID) || r.ID == "." || r.ID == ".." {
		return nil, failure(build.ReasonInternal, "preparing the build context: bad build ID %q", r.ID)
	}
	work := filepath.Join(p.WorkDir, r.ID)
	if err := os.RemoveAll(work); err != nil {
		return nil, failure(build.ReasonInternal, "preparing the build context: %v", err)
	}
	if err := os.MkdirAll(work, 0o700); err != nil {
		return nil, failure(build.ReasonInternal, "preparing the build context: %v", err)
	}
	c = &Context{work: work}
	made := c
	// The fetch's answer is checked against this path: absolute, no links.
	if abs, err := filepath.Abs(work); err == nil {
		if real, err := filepath.EvalSymlinks(abs); err == nil {
			work = real
		}
	}
	defer func() {
		if err != nil {
			made.Close()
			c = nil
		}
	}()
	note := func(format string, args ...any) {
		if r.Log != nil {
			r.Log.Notef(format, args...)
		}
	}
	switch r.Context.Type {
	case image.ContextLocal:
		c.Dir = filepath.Join(work, "context")
		if err := os.Mkdir(c.Dir, 0o700); err != nil {
			return nil, failure(build.ReasonInternal, "preparing the build context: %v", err)
		}
		if err := os.WriteFile(filepath.Join(c.Dir, DockerfileName), []byte(r.Context.Dockerfile), 0o600); err != nil {
			return nil, failure(build.ReasonInternal, "preparing the build context: %v", err)
		}
	case image.ContextGit:
		if r.Context.Git == nil {
			return nil, failure(build.ReasonInternal, "the git context has no repository")
		}
		g := *r.Context.Git
		note("fetching %s at %s", g.URL, orDefault(g.Ref, "the default branch"))
		commit, dir, err := p.fetch(ctx, work, g, r.Auth)
		if err != nil {
			var f *Failure
			if errors.As(err, &f) && f.Reason != build.ReasonCancelled {
				note("%s", f.Message)
			}
			return nil, err
		}
		note("building commit %s", commit)
		c.Commit, c.Dir = commit, dir
	default:
		return nil, failure(build.ReasonInternal, "unknown context type %q", r.Context.Type)
	}
	where := "the build context"
	if g := r.Context.Git; g != nil {
		where = orDefault(g.Dir, "the repository root")
	}
	text, err := ReadDockerfile(c.Dir, where)
	if err != nil {
		note("%s", err.(*Failure).Message)
		return nil, err
	}
	if err := image.ValidateDockerfile(text); err != nil {
		reason := build.ReasonDockerfile
		if errors.Is(err, image.ErrParserPanic) {
			reason = build.ReasonInternal
		}
		note("%v", err)
		return nil, failure(reason, "%v", err)
	}
	c.Dockerfile = text
	return c, nil
}

// ReadDockerfile reads dir/Dockerfile inside dir's tree only: a symlink may
// lead to another file of the tree, never out of it; the file must be a
// regular one (no device, FIFO or directory) of at most the editor's size
// cap. What Kaniko reads is then exactly what was read here: a Dockerfile
// that was a link is replaced by a regular file holding the text. No error
// holds any of the file's content. where names dir for messages.
func ReadDockerfile(dir, where string) (string, error) {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return "", failure(build.ReasonInternal, "opening the build context: %v", err)
	}
	defer root.Close()
	// O_NONBLOCK: opening a FIFO must not wait for a writer.
	f, err := root.OpenFile(DockerfileName, os.O_RDONLY|syscall.O_NONBLOCK|syscall.O_NOCTTY, 0)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if _, lerr := root.Lstat(DockerfileName); lerr == nil {
			return "", failure(build.ReasonDockerfile, "the Dockerfile in %s is a broken symlink", where)
		}
		return "", failure(build.ReasonDockerfile, "there is no Dockerfile in the build context (%s)", where)
	case err != nil && strings.Contains(err.Error(), "escapes"):
		return "", failure(build.ReasonDockerfile, "the Dockerfile in %s is a symlink that leads outside the build context", where)
	case err != nil:
		return "", failure(build.ReasonDockerfile, "the Dockerfile in %s cannot be opened: %v", where, errors.Unwrap(err))
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return "", failure(build.ReasonInternal, "reading the Dockerfile: %v", err)
	}
	if !fi.Mode().IsRegular() {
		return "", failure(build.ReasonDockerfile, "the Dockerfile in %s is not a regular file (%s)", where, fileKind(fi.Mode()))
	}
	if fi.Size() > image.MaxDockerfileBytes {
		return "", failure(build.ReasonDockerfile, "the Dockerfile in %s is larger than %d bytes", where, image.MaxDockerfileBytes)
	}
	b, err := io.ReadAll(io.LimitReader(f, image.MaxDockerfileBytes+1))
	if err != nil {
		return "", failure(build.ReasonInternal, "reading the Dockerfile: %v", err)
	}
	if len(b) > image.MaxDockerfileBytes {
		return "", failure(build.ReasonDockerfile, "the Dockerfile in %s is larger than %d bytes", where, image.MaxDockerfileBytes)
	}
	if li, err := root.Lstat(DockerfileName); err != nil || !li.Mode().IsRegular() {
		if err := root.Remove(DockerfileName); err != nil {
			return "", failure(build.ReasonInternal, "replacing the Dockerfile link: %v", err)
		}
		if err := root.WriteFile(DockerfileName, b, 0o644); err != nil {
			return "", failure(build.ReasonInternal, "replacing the Dockerfile link: %v", err)
		}
	}
	return string(b), nil
}

// fileKind names the kind of a file that is not a regular one.
func fileKind(m fs.FileMode) string {
	switch {
	case m.IsDir():
		return "a directory"
	case m&fs.ModeNamedPipe != 0:
		return "a FIFO"
	case m&fs.ModeDevice != 0:
		return "a device"
	case m&fs.ModeSocket != 0:
		return "a socket"
	}
	return "mode " + m.String()
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}
