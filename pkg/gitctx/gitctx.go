// Package gitctx fetches a build context kept in a Git repository with
// go-git: it resolves the image's ref to a commit, fetches as little as it
// can, and checks the commit out into a directory for the build.
package gitctx

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/go-git/go-billy/v5/osfs"
	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/config"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/cache"
	"github.com/go-git/go-git/v5/plumbing/filemode"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/go-git/go-git/v5/plumbing/transport"
	githttp "github.com/go-git/go-git/v5/plumbing/transport/http"
	"github.com/go-git/go-git/v5/storage/filesystem"
	"github.com/moby/patternmatcher"
	"github.com/moby/patternmatcher/ignorefile"

	"github.com/slipway-dev/slipway/pkg/image"
)

// ErrGit is wrapped by the errors that come from the repository, its server
// or the context's definition (repository not found, authentication, unknown
// ref, missing directory, time out...), which the build reports as failure
// reason "git". Other errors are the platform's.
var ErrGit = errors.New("git context")

// DefaultTimeout bounds a fetch when Fetcher.Timeout is zero.
const DefaultTimeout = 5 * time.Minute

// buildRef is the local branch an exact commit is fetched into.
const buildRef = plumbing.ReferenceName("refs/heads/slipway-build")

var (
	fullSHA  = regexp.MustCompile(`^[0-9a-f]{40}$`)
	shortSHA = regexp.MustCompile(`^[0-9a-f]{7,39}$`)
)

// Auth authenticates to a private repository: HTTPS basic auth with a token
// (username defaults to "git" when empty). git:// and file:// URLs are
// anonymous and ignore it. ssh keys are not supported yet: an ssh URL fails
// with an error that says so.
type Auth struct{ Username, Token string }

// Fetcher fetches build contexts. Its zero value is ready to use.
type Fetcher struct {
	CABundle  []byte        // extra PEM roots for https (a platform's private CA; tests)
	AllowFile bool          // allow file:// URLs and local paths (local development)
	Timeout   time.Duration // bounds a whole fetch; DefaultTimeout when zero
	// MaxFiles bounds the entries (files, directories, links) of the
	// commit's tree, and MaxBytes the sum of its files' sizes; zero for no
	// bound. Both are checked on the fetched objects before anything is
	// checked out, so a repository that expands far beyond its size (a "git
	// bomb": one blob under a million paths) fails without writing a file.
	MaxFiles, MaxBytes int64
	// TempDir is where the repository's metadata is kept during a fetch
	// (the system's temporary directory when empty). A caller that may kill
	// the fetch names a directory it removes itself.
	TempDir string
}

// Fetch resolves g.Ref (branch, tag, or commit SHA; the remote's default
// branch when empty) to a commit, fetches only what it needs, checks it out
// into dest (an empty directory, created if missing), and returns the full commit SHA and
// the absolute path of the build context directory: dest joined with g.Dir,
// symlinks resolved. g.Dir must exist, be a directory, and stay inside dest
// after resolving symlinks.
//
// A branch or tag is fetched alone, shallow (depth 1) and without other tags.
// A full commit SHA is fetched the same way when it is the tip of an
// advertised ref, or when the server allows fetching any reachable commit
// (uploadpack.allowReachableSHA1InWant); otherwise, and for a short SHA (7 to
// 39 hex digits), Fetch clones every branch and tag with their history and
// looks the commit up there. Commits reachable only from other refs (pull
// requests, notes) are not found that way.
//
// The repository's metadata lives in a temporary directory that Fetch
// removes: dest holds the commit's files and no .git. Submodules are not
// fetched: their directories stay empty. Git LFS files stay pointers.
//
// Errors about the repository, its server or g wrap ErrGit and never contain
// auth's token. When ctx ends first, the error wraps ctx's error instead;
// when f.Timeout expires, it wraps ErrGit. Both interrupt network transfers;
// the final checkout of files, local, runs to completion.
func (f *Fetcher) Fetch(ctx context.Context, g image.Git, auth *Auth, dest string) (commit, contextDir string, err error) {
	dir, err := image.CleanDir(g.Dir)
	if err != nil {
		return "", "", gitErr("%v", err)
	}
	if err := prepareDest(dest); err != nil {
		return "", "", err
	}
	gitDir, err := os.MkdirTemp(f.TempDir, "slipway-git-")
	if err != nil {
		return "", "", fmt.Errorf("gitctx: %w", err)
	}
	defer os.RemoveAll(gitDir)

	_, hash, err := f.checkout(ctx, g, auth, gitDir, dest)
	if err != nil {
		return "", "", err
	}
	commit = hash.String()
	contextDir, err = resolveDir(dest, dir, commit)
	if err != nil {
		return "", "", err
	}
	return commit, contextDir, nil
}

// checkout does Fetch's work with the repository's metadata stored in gitDir,
// and returns the repository it fetched into and the commit it checked out.
func (f *Fetcher) checkout(ctx context.Context, g image.Git, auth *Auth, gitDir, dest string) (*git.Repository, plumbing.Hash, error) {
	s, cancel := f.session(ctx, g)
	defer cancel()
	if err := s.setAuth(auth, f.AllowFile); err != nil {
		return nil, plumbing.ZeroHash, err
	}

	refs, err := s.listRefs()
	if err != nil {
		return nil, plumbing.ZeroHash, err
	}
	p, err := s.plan(g.Ref, refs)
	if err != nil {
		return nil, plumbing.ZeroHash, err
	}
	for i, a := range p.attempts {
		repo, ferr := s.fetch(filepath.Join(gitDir, strconv.Itoa(i)), a)
		if ferr != nil {
			err = s.transportErr(ferr)
			if s.ctx.Err() != nil {
				return nil, plumbing.ZeroHash, err
			}
			continue // the server refused this way: try the next
		}
		hash, ok, rerr := p.resolve(s, repo, a)
		if rerr != nil {
			return nil, plumbing.ZeroHash, rerr
		}
		if !ok {
			err = p.notFound(s)
			continue // the ref moved since it was listed, or the commit is elsewhere
		}
		if lerr := f.checkSize(s, repo, hash); lerr != nil {
			return nil, plumbing.ZeroHash, lerr
		}
		if cerr := checkoutInto(repo, hash, dest, g.Dir); cerr != nil {
			return nil, plumbing.ZeroHash, s.fail("checking out commit %s of %s: %v", hash, s.url, cerr)
		}
		return repo, hash, nil
	}
	return nil, plumbing.ZeroHash, err
}

// errTooLarge stops checkSize's walk.
var errTooLarge = errors.New("too large")

// checkSize counts the entries and file bytes of commit hash's tree, without
// reading a file's content, and fails as soon as either exceeds its bound.
func (f *Fetcher) checkSize(s *session, repo *git.Repository, hash plumbing.Hash) error {
	if f.MaxFiles <= 0 && f.MaxBytes <= 0 {
		return nil
	}
	commit, err := object.GetCommit(repo.Storer, hash)
	if err != nil {
		return s.fail("reading commit %s of %s: %v", hash, s.url, err)
	}
	// A subtree's totals are counted once, however many paths name it: a
	// bomb of a few trees is refused after reading those few.
	type size struct{ files, bytes int64 }
	seen := map[plumbing.Hash]size{}
	var files int64 // the subtree's count that went over a bound
	var walk func(tree plumbing.Hash) (size, error)
	walk = func(tree plumbing.Hash) (size, error) {
		if sz, ok := seen[tree]; ok {
			return sz, nil
		}
		t, err := object.GetTree(repo.Storer, tree)
		if err != nil {
			return size{}, err
		}
		var total size
		for _, e := range t.Entries {
			sz := size{files: 1}
			switch e.Mode {
			case filemode.Dir:
				sub, err := walk(e.Hash)
				if err != nil {
					return size{}, err
				}
				sz = size{files: 1 + sub.files, bytes: sub.bytes}
			case filemode.Submodule:
			default:
				if sz.bytes, err = repo.Storer.EncodedObjectSize(e.Hash); err != nil {
					return size{}, err
				}
			}
			// A subtree over a bound puts the whole tree over it.
			total.files += sz.files
			total.bytes += sz.bytes
			if (f.MaxFiles > 0 && total.files > f.MaxFiles) || (f.MaxBytes > 0 && total.bytes > f.MaxBytes) {
				files = total.files
				return size{}, errTooLarge
			}
		}
		seen[tree] = total
		return total, nil
	}
	_, err = walk(commit.TreeHash)
	switch {
	case errors.Is(err, errTooLarge) && f.MaxFiles > 0 && files > f.MaxFiles:
		return s.fail("commit %s of %s has more than %d files and directories, the limit of a build context", hash, s.url, f.MaxFiles)
	case errors.Is(err, errTooLarge):
		return s.fail("the files of commit %s of %s add up to more than %d bytes, the limit of a build context", hash, s.url, f.MaxBytes)
	case err != nil:
		return s.fail("reading the tree of commit %s of %s: %v", hash, s.url, err)
	}
	return nil
}

// checkoutInto writes the files of commit hash into dest, with no .git:
// only the entries under dir when dir names a folder below the root (a
// sparse checkout: an image built from one folder of a large repository
// does not pay for writing the others), and of those only what the
// folder's .dockerignore keeps (Docker's own matcher, moby/patternmatcher;
// the Dockerfile and the .dockerignore are always kept). Every write goes
// through an os.Root on dest: no entry, link or link's target leads a
// write outside it. Blobs are read only for the files written.
func checkoutInto(repo *git.Repository, hash plumbing.Hash, dest, dir string) error {
	commit, err := repo.CommitObject(hash)
	if err != nil {
		return err
	}
	tree, err := commit.Tree()
	if err != nil {
		return err
	}
	prefix := ""
	if clean, err := image.CleanDir(dir); err == nil && clean != "" && clean != "." {
		prefix = clean
	}
	ignore, err := dockerignore(repo, tree, prefix)
	if err != nil {
		return err
	}
	root, err := os.OpenRoot(dest)
	if err != nil {
		return err
	}
	defer root.Close()
	w := object.NewTreeWalker(tree, true, nil)
	defer w.Close()
	for {
		name, e, err := w.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		rel, under := name, prefix == ""
		if !under {
			var ok bool
			if rel, ok = strings.CutPrefix(name, prefix+"/"); ok {
				under = true
			} else if name == prefix {
				under, rel = true, "" // the folder itself (or what stands in its place)
			}
		}
		if !under || e.Mode == filemode.Dir || e.Mode == filemode.Submodule {
			continue
		}
		if ignore != nil && rel != "" && rel != "Dockerfile" && rel != ".dockerignore" {
			if skip, err := ignore.MatchesOrParentMatches(rel); err == nil && skip {
				continue
			}
		}
		if err := writeEntry(repo, root, name, &e); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
	}
}

// maxDockerignore bounds the .dockerignore a checkout reads.
const maxDockerignore = 1 << 20

// dockerignore returns the matcher of the .dockerignore file in dir of
// tree, or nil when there is none (or it is not a regular file).
func dockerignore(repo *git.Repository, tree *object.Tree, dir string) (*patternmatcher.PatternMatcher, error) {
	name := ".dockerignore"
	if dir != "" {
		name = dir + "/" + name
	}
	e, err := tree.FindEntry(name)
	if err != nil || (e.Mode != filemode.Regular && e.Mode != filemode.Executable) {
		return nil, nil
	}
	blob, err := repo.BlobObject(e.Hash)
	if err != nil {
		return nil, err
	}
	if blob.Size > maxDockerignore {
		return nil, gitErr("the .dockerignore in %s is larger than %d bytes", orRoot(dir), maxDockerignore)
	}
	r, err := blob.Reader()
	if err != nil {
		return nil, err
	}
	defer r.Close()
	patterns, err := ignorefile.ReadAll(r)
	if err != nil {
		return nil, gitErr("reading the .dockerignore in %s: %v", orRoot(dir), err)
	}
	pm, err := patternmatcher.New(patterns)
	if err != nil {
		return nil, gitErr("the .dockerignore in %s: %v", orRoot(dir), err)
	}
	return pm, nil
}

func orRoot(dir string) string {
	if dir == "" {
		return "the repository root"
	}
	return dir
}

// writeEntry writes the tree entry e at path name inside root: a file with
// its executable bit, or a symlink.
func writeEntry(repo *git.Repository, root *os.Root, name string, e *object.TreeEntry) error {
	path := filepath.FromSlash(name)
	if d := filepath.Dir(path); d != "." {
		if err := root.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	blob, err := repo.BlobObject(e.Hash)
	if err != nil {
		return err
	}
	r, err := blob.Reader()
	if err != nil {
		return err
	}
	defer r.Close()
	switch e.Mode {
	case filemode.Symlink:
		target, err := io.ReadAll(io.LimitReader(r, 4096))
		if err != nil {
			return err
		}
		return root.Symlink(string(target), path)
	case filemode.Regular, filemode.Deprecated, filemode.Executable:
		mode := os.FileMode(0o644)
		if e.Mode == filemode.Executable {
			mode = 0o755
		}
		f, err := root.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
		if err != nil {
			return err
		}
		if _, err := io.Copy(f, r); err != nil {
			f.Close()
			return err
		}
		return f.Close()
	}
	return fmt.Errorf("unsupported file mode %s", e.Mode)
}

// session starts a session with g's remote, bounded by f.Timeout
// (DefaultTimeout when zero); cancel releases it.
func (f *Fetcher) session(ctx context.Context, g image.Git) (s *session, cancel context.CancelFunc) {
	s = &session{url: g.URL, caPEM: f.CABundle, parent: ctx, timeout: f.Timeout}
	if s.timeout <= 0 {
		s.timeout = DefaultTimeout
	}
	s.ctx, cancel = context.WithTimeout(ctx, s.timeout)
	return s, cancel
}

// session is one Fetch's connection settings and contexts.
type session struct {
	url     string
	auth    transport.AuthMethod // nil when anonymous
	token   string               // redacted from every message
	caPEM   []byte
	parent  context.Context // the caller's
	ctx     context.Context // parent bounded by timeout
	timeout time.Duration
}

// setAuth checks the session's URL and sets how to authenticate to it.
func (s *session) setAuth(auth *Auth, allowFile bool) error {
	if auth != nil {
		s.token = auth.Token
	}
	ep, err := transport.NewEndpoint(s.url)
	if err != nil {
		// Not echoed: a URL that does not parse may hide a password.
		return s.fail("the repository URL is not a valid Git URL")
	}
	if ep.Password != "" {
		return s.fail("the repository URL must not embed a password: store a git credential and name it in the context")
	}
	switch ep.Protocol {
	case "https":
		if auth != nil {
			user := auth.Username
			if user == "" {
				user = "git"
			}
			s.auth = &githttp.BasicAuth{Username: user, Password: auth.Token}
		}
	case "git":
	case "file":
		if !allowFile {
			return s.fail("local paths and file:// URLs are not allowed: use an https or git URL")
		}
	case "ssh":
		return s.fail("ssh keys are not supported yet: use the https URL of %s, with a token credential if it is private", s.url)
	default:
		return s.fail("scheme %q of %s is not supported: use an https or git URL", ep.Protocol, s.url)
	}
	return nil
}

// listRefs lists the remote's refs as git ls-remote does, with the commits
// annotated tags point to as "<tag>^{}".
func (s *session) listRefs() (map[plumbing.ReferenceName]*plumbing.Reference, error) {
	remote := git.NewRemote(nil, &config.RemoteConfig{Name: "origin", URLs: []string{s.url}})
	list, err := remote.ListContext(s.ctx, &git.ListOptions{
		Auth: s.auth, CABundle: s.caPEM, PeelingOption: git.AppendPeeled,
	})
	if err != nil {
		return nil, s.transportErr(err)
	}
	refs := make(map[plumbing.ReferenceName]*plumbing.Reference, len(list))
	for _, r := range list {
		refs[r.Name()] = r
	}
	return refs, nil
}

// attempt is one way of fetching the wanted commit.
type attempt struct {
	spec  config.RefSpec
	local plumbing.ReferenceName // where spec stores what it fetches
	depth int                    // 0 for the whole history
}

// plan is the attempts that may fetch the wanted commit, cheapest first, and
// how to find the commit once fetched.
type plan struct {
	ref      string
	sha      string // the wanted commit or its prefix; empty for a branch or tag
	attempts []attempt
}

// refAttempt fetches the tip of the remote ref name, shallow.
func refAttempt(name plumbing.ReferenceName) attempt {
	local := name
	if name.IsBranch() {
		local = plumbing.NewRemoteReferenceName("origin", name.Short())
	}
	return attempt{spec: config.RefSpec("+" + name.String() + ":" + local.String()), local: local, depth: 1}
}

// fullClone fetches every branch and tag with its history.
var fullClone = attempt{}

// plan decides how to fetch ref (branch, tag, full ref name, commit SHA or
// prefix; the default branch when empty) from the remote's refs.
func (s *session) plan(ref string, refs map[plumbing.ReferenceName]*plumbing.Reference) (*plan, error) {
	single := func(name plumbing.ReferenceName) *plan {
		return &plan{ref: ref, attempts: []attempt{refAttempt(name)}}
	}
	switch {
	case ref == "" || ref == "HEAD":
		head, ok := refs[plumbing.HEAD]
		if !ok || head.Type() != plumbing.SymbolicReference || refs[head.Target()] == nil {
			return nil, s.fail("repository %s has no default branch: name a branch, tag or commit in the context", s.url)
		}
		return single(head.Target()), nil
	case strings.HasPrefix(ref, "refs/"):
		if r := refs[plumbing.ReferenceName(ref)]; r != nil && r.Type() == plumbing.HashReference {
			return single(r.Name()), nil
		}
	case refs[plumbing.NewBranchReferenceName(ref)] != nil:
		return single(plumbing.NewBranchReferenceName(ref)), nil
	case refs[plumbing.NewTagReferenceName(ref)] != nil:
		return single(plumbing.NewTagReferenceName(ref)), nil
	}
	sha := strings.ToLower(ref)
	switch {
	case fullSHA.MatchString(sha):
		p := &plan{ref: ref, sha: sha}
		if tip := tipRef(refs, sha); tip != "" {
			p.attempts = append(p.attempts, refAttempt(tip))
		}
		p.attempts = append(p.attempts,
			attempt{spec: config.RefSpec("+" + sha + ":" + buildRef.String()), local: buildRef, depth: 1},
			fullClone)
		return p, nil
	case shortSHA.MatchString(sha):
		return &plan{ref: ref, sha: sha, attempts: []attempt{fullClone}}, nil
	}
	return nil, s.fail("ref %q is neither a branch nor a tag of %s", ref, s.url)
}

// tipRef returns a branch or tag whose commit is sha, preferring branches, or
// "" if there is none: upload-pack serves advertised tips to any client.
func tipRef(refs map[plumbing.ReferenceName]*plumbing.Reference, sha string) plumbing.ReferenceName {
	var tag plumbing.ReferenceName
	for name, r := range refs {
		if r.Type() != plumbing.HashReference || r.Hash().String() != sha {
			continue
		}
		if name.IsBranch() {
			return name
		}
		if annotated, ok := strings.CutSuffix(name.String(), "^{}"); ok {
			tag = plumbing.ReferenceName(annotated)
		} else if name.IsTag() && refs[name+"^{}"] == nil {
			tag = name // a lightweight tag
		}
	}
	return tag
}

// fetch runs one attempt into a new bare repository at dir.
func (s *session) fetch(dir string, a attempt) (*git.Repository, error) {
	repo, err := git.Init(filesystem.NewStorage(osfs.New(dir, osfs.WithBoundOS()), cache.NewObjectLRUDefault()), nil)
	if err != nil {
		return nil, fmt.Errorf("gitctx: %w", err)
	}
	specs := []config.RefSpec{a.spec}
	if a == fullClone {
		specs = []config.RefSpec{"+refs/heads/*:refs/remotes/origin/*", "+refs/tags/*:refs/tags/*"}
	}
	remote := git.NewRemote(repo.Storer, &config.RemoteConfig{Name: "origin", URLs: []string{s.url}})
	err = remote.FetchContext(s.ctx, &git.FetchOptions{
		RefSpecs: specs, Depth: a.depth, Tags: git.NoTags, Auth: s.auth, CABundle: s.caPEM,
	})
	if err != nil && !errors.Is(err, git.NoErrAlreadyUpToDate) {
		return nil, err
	}
	return repo, nil
}

// resolve finds the wanted commit in what attempt a fetched into repo; ok is
// false when it is not there.
func (p *plan) resolve(s *session, repo *git.Repository, a attempt) (hash plumbing.Hash, ok bool, err error) {
	switch {
	case p.sha == "":
		r, err := repo.Reference(a.local, true)
		if errors.Is(err, plumbing.ErrReferenceNotFound) {
			return plumbing.ZeroHash, false, nil
		}
		if err != nil {
			return plumbing.ZeroHash, false, fmt.Errorf("gitctx: %w", err)
		}
		return peel(s, repo, r.Hash())
	case len(p.sha) == 2*len(plumbing.ZeroHash):
		return peel(s, repo, plumbing.NewHash(p.sha))
	}
	var found []plumbing.Hash
	iter, err := repo.CommitObjects()
	if err != nil {
		return plumbing.ZeroHash, false, fmt.Errorf("gitctx: %w", err)
	}
	err = iter.ForEach(func(c *object.Commit) error {
		if strings.HasPrefix(c.Hash.String(), p.sha) {
			found = append(found, c.Hash)
		}
		return nil
	})
	switch {
	case err != nil:
		return plumbing.ZeroHash, false, fmt.Errorf("gitctx: %w", err)
	case len(found) > 1:
		return plumbing.ZeroHash, false, s.fail("commit %s is ambiguous in %s: give more digits or the full SHA", p.sha, s.url)
	case len(found) == 0:
		return plumbing.ZeroHash, false, nil
	}
	return found[0], true, nil
}

// notFound is the error when no attempt fetched the wanted commit.
func (p *plan) notFound(s *session) error {
	if p.sha == "" {
		return s.fail("ref %q of %s changed while it was fetched: try again", p.ref, s.url)
	}
	return s.fail("commit %s not found in %s (among its branches and tags)", p.ref, s.url)
}

// peel returns the commit that hash names, following annotated tags; ok is
// false when an object is missing.
func peel(s *session, repo *git.Repository, hash plumbing.Hash) (commit plumbing.Hash, ok bool, err error) {
	for range 10 {
		obj, err := repo.Storer.EncodedObject(plumbing.AnyObject, hash)
		if errors.Is(err, plumbing.ErrObjectNotFound) {
			return plumbing.ZeroHash, false, nil
		}
		if err != nil {
			return plumbing.ZeroHash, false, fmt.Errorf("gitctx: %w", err)
		}
		switch obj.Type() {
		case plumbing.CommitObject:
			return hash, true, nil
		case plumbing.TagObject:
			tag, err := object.DecodeTag(repo.Storer, obj)
			if err != nil {
				return plumbing.ZeroHash, false, fmt.Errorf("gitctx: %w", err)
			}
			hash = tag.Target
		default:
			return plumbing.ZeroHash, false, s.fail("%s in %s is a %s, not a commit", hash, s.url, obj.Type())
		}
	}
	return plumbing.ZeroHash, false, s.fail("%s in %s is a chain of too many tags", hash, s.url)
}

// transportErr turns an error of go-git's transports into an actionable one.
func (s *session) transportErr(err error) error {
	switch {
	case s.parent.Err() != nil:
		return fmt.Errorf("gitctx: fetching %s: %w", s.url, s.parent.Err())
	case s.ctx.Err() != nil:
		return s.fail("fetching %s took longer than %s", s.url, s.timeout)
	case errors.Is(err, syscall.EFBIG):
		return s.fail("fetching %s: the repository is larger than this server's limit for a build context", s.url)
	case errors.Is(err, transport.ErrRepositoryNotFound) && s.auth != nil:
		return s.fail("repository %s not found, or the credential cannot read it", s.url)
	case errors.Is(err, transport.ErrRepositoryNotFound):
		return s.fail("repository %s not found", s.url)
	case errors.Is(err, transport.ErrEmptyRemoteRepository):
		return s.fail("repository %s is empty", s.url)
	case errors.Is(err, transport.ErrAuthenticationRequired) && s.auth != nil:
		return s.fail("authentication failed for %s: check the credential's username and token", s.url)
	case errors.Is(err, transport.ErrAuthorizationFailed) && s.auth != nil:
		return s.fail("authentication failed for %s: the credential is not allowed to read it", s.url)
	case errors.Is(err, transport.ErrAuthenticationRequired), errors.Is(err, transport.ErrAuthorizationFailed):
		return s.fail("authentication required for %s: store a git credential and name it in the context", s.url)
	}
	return s.fail("fetching %s: %v", s.url, err)
}

// fail returns an ErrGit error with the message format makes, the token
// removed from it.
func (s *session) fail(format string, args ...any) error {
	return gitErr("%s", redact(fmt.Sprintf(format, args...), s.token))
}

// redact replaces token in msg.
func redact(msg, token string) string {
	if token == "" {
		return msg
	}
	return strings.ReplaceAll(msg, token, "[redacted]")
}

// gitError is an error wrapping ErrGit whose message is only its own.
type gitError struct{ msg string }

func (e *gitError) Error() string { return e.msg }
func (e *gitError) Unwrap() error { return ErrGit }

// gitErr returns an ErrGit error with the message format makes.
func gitErr(format string, args ...any) error {
	return &gitError{msg: fmt.Sprintf(format, args...)}
}

// prepareDest creates dest if it is missing, and fails unless it is an empty
// directory.
func prepareDest(dest string) error {
	entries, err := os.ReadDir(dest)
	if errors.Is(err, fs.ErrNotExist) {
		err = os.MkdirAll(dest, 0o755)
	}
	if err != nil {
		return fmt.Errorf("gitctx: destination: %w", err)
	}
	if len(entries) > 0 {
		return fmt.Errorf("gitctx: destination %s is not empty", dest)
	}
	return nil
}

// resolveDir returns the absolute, symlink-free path of dir inside dest.
func resolveDir(dest, dir, commit string) (string, error) {
	root, err := filepath.Abs(dest)
	if err == nil {
		root, err = filepath.EvalSymlinks(root)
	}
	if err != nil {
		return "", fmt.Errorf("gitctx: destination: %w", err)
	}
	if dir == "" {
		return root, nil
	}
	p, err := filepath.EvalSymlinks(filepath.Join(root, filepath.FromSlash(dir)))
	if errors.Is(err, fs.ErrNotExist) {
		return "", gitErr("directory %q not found in the repository at commit %s", dir, commit)
	}
	if err != nil {
		return "", gitErr("directory %q: %v", dir, err)
	}
	if rel, err := filepath.Rel(root, p); err != nil || rel == ".." || strings.HasPrefix(rel, ".."+string(filepath.Separator)) {
		return "", gitErr("directory %q leaves the repository (symlink)", dir)
	}
	fi, err := os.Stat(p)
	if err != nil {
		return "", fmt.Errorf("gitctx: %w", err)
	}
	if !fi.IsDir() {
		return "", gitErr("%q in the repository at commit %s is not a directory", dir, commit)
	}
	return p, nil
}

// Head returns the commit g.Ref names on the remote now, from the remote's
// ref listing alone (git ls-remote; nothing is fetched): a branch's or a
// tag's tip (an annotated tag peeled), the default branch's when g.Ref is
// empty. A full commit SHA is returned as it is (it never moves); a short
// one cannot be told from a listing and gives "". Errors are as Fetch's.
func (f *Fetcher) Head(ctx context.Context, g image.Git, auth *Auth) (string, error) {
	s, cancel := f.session(ctx, g)
	defer cancel()
	if err := s.setAuth(auth, f.AllowFile); err != nil {
		return "", err
	}
	refs, err := s.listRefs()
	if err != nil {
		return "", err
	}
	p, err := s.plan(g.Ref, refs)
	if err != nil {
		return "", err
	}
	if p.sha != "" {
		if fullSHA.MatchString(p.sha) {
			return p.sha, nil
		}
		return "", nil
	}
	name := p.attempts[0].spec.Src()
	if peeled := refs[plumbing.ReferenceName(name+"^{}")]; peeled != nil {
		return peeled.Hash().String(), nil
	}
	r := refs[plumbing.ReferenceName(name)]
	if r == nil || r.Type() != plumbing.HashReference {
		return "", s.fail("ref %q of %s is not a commit", g.Ref, s.url)
	}
	return r.Hash().String(), nil
}
