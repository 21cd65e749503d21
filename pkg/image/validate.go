package image

import (
	"errors"
	"fmt"
	"net/url"
	"path"
	"regexp"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/go-git/go-git/v5/plumbing/transport"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"github.com/moby/buildkit/frontend/dockerfile/linter"
	"github.com/moby/buildkit/frontend/dockerfile/parser"
	"github.com/moby/buildkit/frontend/dockerfile/shell"
)

// Limits on what a definition may hold.
const (
	MaxNameLength        = 200
	MaxDescriptionLength = 4096
	MaxDockerfileBytes   = 256 << 10
	MaxDestinations      = 16
)

// InvalidError says which field of a definition is wrong and why. Line is the
// Dockerfile line at fault, when the Dockerfile is. Err, when set, is the
// sentinel the error is (ErrReservedName), for errors.Is.
type InvalidError struct {
	Field   string
	Message string
	Line    int
	Err     error
}

// Unwrap returns the sentinel the error is, if any.
func (e *InvalidError) Unwrap() error { return e.Err }

// ErrReservedName is what an image name in a namespace Slipway keeps for
// itself is: under LibraryPrefix or ReservedPrefix.
var ErrReservedName = errors.New("reserved name")

func (e *InvalidError) Error() string {
	if e.Line > 0 {
		return fmt.Sprintf("%s: line %d: %s", e.Field, e.Line, e.Message)
	}
	return e.Field + ": " + e.Message
}

func invalid(field, format string, args ...any) error {
	return &InvalidError{Field: field, Message: fmt.Sprintf(format, args...)}
}

// Rules are the knobs of validation that depend on the deployment.
type Rules struct {
	// AllowFileURLs admits file:// Git URLs (local development only).
	AllowFileURLs bool
}

// ReservedPrefix is the first path segment Slipway keeps for itself in the
// internal registry (Kaniko's layer cache lives under it).
const ReservedPrefix = "slipway-cache"

// LibraryPrefix is the internal registry's namespace of shared base images:
// every authenticated user pulls from it, only the platform's event
// publishers push to it.
const LibraryPrefix = "library"

// pathComponent is the OCI distribution spec's grammar of one repository path
// component; go-containerregistry checks the character set, not the separators.
var pathComponent = regexp.MustCompile(`^[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*$`)

// ValidateName checks that n is a valid OCI repository path usable as an
// image's repository in the internal registry.
func ValidateName(n string) error {
	if n == "" {
		return invalid("name", "is required")
	}
	if len(n) > MaxNameLength {
		return invalid("name", "is longer than %d characters", MaxNameLength)
	}
	// Parse under a fixed registry so that a first segment that looks like a
	// host ("example.com/x") is taken as part of the path, as it must be.
	repo, err := name.NewRepository("registry.invalid/"+n, name.StrictValidation)
	if err != nil || repo.RepositoryStr() != n {
		return invalid("name", "%q is not a valid repository path: use lower-case letters and digits separated by '.', '_', '-' and '/'", n)
	}
	switch first, _, _ := strings.Cut(n, "/"); first {
	case ReservedPrefix:
		return &InvalidError{Field: "name", Err: ErrReservedName,
			Message: fmt.Sprintf("%q is reserved: the %s/ namespace holds Slipway's build cache; choose another first segment", n, ReservedPrefix)}
	case LibraryPrefix:
		return &InvalidError{Field: "name", Err: ErrReservedName,
			Message: fmt.Sprintf("%q is reserved: the %s/ namespace holds the platform's shared base images; choose another first segment", n, LibraryPrefix)}
	}
	for _, c := range strings.Split(n, "/") {
		if !pathComponent.MatchString(c) {
			return invalid("name", "%q is not a valid repository path: segment %q must start and end with a letter or digit, with single '.', '_' or '__' or dashes between", n, c)
		}
	}
	return nil
}

// ValidateDockerfile parses a Dockerfile with BuildKit's parser and
// instruction parser, the ones Kaniko uses, and reports the first error with
// its line number. A panic of the parsers is an error of its own, never the
// caller's: it says what happened and names no part of src.
func ValidateDockerfile(src string) error {
	if strings.TrimSpace(src) == "" {
		return invalid("context.dockerfile", "is empty")
	}
	if len(src) > MaxDockerfileBytes {
		return invalid("context.dockerfile", "is larger than %d bytes", MaxDockerfileBytes)
	}
	if !utf8.ValidString(src) {
		return invalid("context.dockerfile", "is not valid UTF-8")
	}
	stages, err := parseDockerfile(src)
	if errors.Is(err, ErrParserPanic) {
		return err
	}
	if err != nil {
		return dockerfileError(err, 0)
	}
	if len(stages) == 0 {
		return &InvalidError{Field: "context.dockerfile", Message: "has no FROM instruction", Line: 1}
	}
	return nil
}

// ErrParserPanic is wrapped by the error ValidateDockerfile returns when
// BuildKit's parser panicked on a Dockerfile: a fault of the platform
// (build failure reason "internal"), not of the Dockerfile.
var ErrParserPanic = errors.New("the Dockerfile parser failed")

// parseDockerfile runs BuildKit's parser and instruction parser on src as
// BuildKit's own frontend does: with a linter, which the instruction parser
// dereferences for every instruction that follows a comment (a nil one
// panics on "# check=" comments). The linter's warnings are discarded:
// Kaniko does not lint either. A panic is recovered into ErrParserPanic.
func parseDockerfile(src string) (stages []instructions.Stage, err error) {
	stages, _, _, err = parseDockerfileArgs(src)
	return stages, err
}

// parseDockerfileArgs is parseDockerfile with the global ARGs and the
// escape character too.
func parseDockerfileArgs(src string) (stages []instructions.Stage, metaArgs []instructions.ArgCommand, escape rune, err error) {
	defer func() {
		if p := recover(); p != nil {
			stages, metaArgs, err = nil, nil, fmt.Errorf("%w: %v", ErrParserPanic, p)
		}
	}()
	res, err := parser.Parse(strings.NewReader(src))
	if err != nil {
		return nil, nil, 0, err
	}
	stages, metaArgs, err = instructions.Parse(res.AST, linter.New(&linter.Config{}))
	return stages, metaArgs, res.EscapeToken, err
}

func dockerfileError(err error, fallbackLine int) error {
	line := fallbackLine
	var le *parser.LocationError
	if errors.As(err, &le) {
		for _, rs := range le.Locations {
			if len(rs) > 0 && rs[0].Start.Line > 0 {
				line = rs[0].Start.Line
				break
			}
		}
	}
	msg := err.Error()
	if strings.Contains(msg, "no build stage in current context") {
		msg = "this instruction comes before the first FROM: a Dockerfile starts with FROM (only ARG may come before it)"
	}
	// BuildKit prefixes some messages with "dockerfile parse error on line N: ".
	if i := strings.Index(msg, ": "); i >= 0 && strings.HasPrefix(msg, "dockerfile parse error") {
		msg = msg[i+2:]
	}
	return &InvalidError{Field: "context.dockerfile", Message: msg, Line: line}
}

// gitSchemes are the transports a Git context may use.
var gitSchemes = map[string]bool{"https": true, "ssh": true, "git": true}

// ValidateContext checks a build context.
func ValidateContext(c Context, rules Rules) error {
	switch c.Type {
	case ContextLocal:
		if c.Git != nil {
			return invalid("context.git", "must be absent for a local context")
		}
		return ValidateDockerfile(c.Dockerfile)
	case ContextGit:
		if c.Dockerfile != "" {
			return invalid("context.dockerfile", "must be absent for a git context: the Dockerfile comes from the repository")
		}
		if c.Git == nil {
			return invalid("context.git", "is required for a git context")
		}
		return validateGit(*c.Git, rules)
	case "":
		return invalid("context.type", "is required: \"local\" or \"git\"")
	default:
		return invalid("context.type", "%q is not \"local\" or \"git\"", c.Type)
	}
}

func validateGit(g Git, rules Rules) error {
	if g.URL == "" {
		return invalid("context.git.url", "is required")
	}
	if len(g.URL) > 2048 || strings.ContainsAny(g.URL, " \t\r\n") {
		return invalid("context.git.url", "is not a valid URL")
	}
	ep, err := transport.NewEndpoint(g.URL)
	if err != nil {
		return invalid("context.git.url", "is not a valid Git URL: %v", err)
	}
	switch {
	case gitSchemes[ep.Protocol]:
		if ep.Host == "" {
			return invalid("context.git.url", "has no host")
		}
	case ep.Protocol == "file" && rules.AllowFileURLs:
	case ep.Protocol == "file":
		return invalid("context.git.url", "local paths and file:// URLs are not allowed; use https, ssh or git")
	default:
		return invalid("context.git.url", "scheme %q is not allowed; use https, ssh or git", ep.Protocol)
	}
	if ep.Password != "" {
		return invalid("context.git.url", "must not embed a password; store a git credential and name it")
	}
	if u, err := url.Parse(g.URL); err == nil && u.User != nil {
		if _, set := u.User.Password(); set {
			return invalid("context.git.url", "must not embed a password; store a git credential and name it")
		}
	}
	if err := validateRef(g.Ref); err != nil {
		return err
	}
	if g.Dir != "" {
		if _, err := CleanDir(g.Dir); err != nil {
			return err
		}
	}
	return nil
}

// CleanDir returns dir as a clean relative path inside the repository, or an
// error when it is absolute or leaves the repository.
func CleanDir(dir string) (string, error) {
	if strings.ContainsRune(dir, 0) || strings.Contains(dir, `\`) {
		return "", invalid("context.git.dir", "%q is not a valid directory", dir)
	}
	if path.IsAbs(dir) {
		return "", invalid("context.git.dir", "%q must be relative to the repository root", dir)
	}
	clean := path.Clean(dir)
	if clean == ".." || strings.HasPrefix(clean, "../") {
		return "", invalid("context.git.dir", "%q leaves the repository", dir)
	}
	if clean == "." {
		return "", nil
	}
	return clean, nil
}

// validateRef follows git-check-ref-format's rules closely enough to refuse
// what would be an option or an illegal name; branch, tag and commit all pass.
func validateRef(ref string) error {
	if ref == "" {
		return nil
	}
	bad := len(ref) > 255 || strings.HasPrefix(ref, "-") || strings.HasPrefix(ref, "/") ||
		strings.HasSuffix(ref, "/") || strings.HasSuffix(ref, ".") || strings.HasSuffix(ref, ".lock") ||
		strings.Contains(ref, "..") || strings.Contains(ref, "@{") || strings.Contains(ref, "//")
	for _, r := range ref {
		if r < 0x20 || r == 0x7f || strings.ContainsRune(" ~^:?*[\\", r) {
			bad = true
		}
	}
	if bad {
		return invalid("context.git.ref", "%q is not a valid branch, tag or commit", ref)
	}
	return nil
}

// ValidateDestinations checks each destination's reference with
// go-containerregistry's name package.
func ValidateDestinations(ds []Destination) error {
	if len(ds) > MaxDestinations {
		return invalid("destinations", "at most %d are allowed", MaxDestinations)
	}
	seen := map[string]bool{}
	for i, d := range ds {
		field := fmt.Sprintf("destinations[%d].reference", i)
		if d.Reference == "" {
			return invalid(field, "is required")
		}
		if _, err := name.ParseReference(d.Reference); err != nil {
			return invalid(field, "%q is not a valid image reference (HOST/PATH[:TAG]): %v", d.Reference, err)
		}
		if seen[d.Reference] {
			return invalid(field, "%q is listed twice", d.Reference)
		}
		seen[d.Reference] = true
		if d.Credential != "" {
			if err := ValidateCredentialName(d.Credential); err != nil {
				return invalid(fmt.Sprintf("destinations[%d].credential", i), "%v", err.(*InvalidError).Message)
			}
		}
	}
	return nil
}

var credentialName = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)

// ValidateCredentialName checks a workspace credential's name.
func ValidateCredentialName(n string) error {
	if !credentialName.MatchString(n) {
		return invalid("credential", "%q is not a valid credential name: lower-case letters, digits and '-', at most 63", n)
	}
	return nil
}

// Validate checks a whole definition.
func Validate(img Image, rules Rules) error {
	if err := ValidateName(img.Name); err != nil {
		return err
	}
	if len(img.Description) > MaxDescriptionLength {
		return invalid("description", "is longer than %d characters", MaxDescriptionLength)
	}
	if !utf8.ValidString(img.Description) {
		return invalid("description", "is not valid UTF-8")
	}
	if err := ValidateContext(img.Context, rules); err != nil {
		return err
	}
	if img.Context.Git != nil && img.Context.Git.Credential != "" {
		if err := ValidateCredentialName(img.Context.Git.Credential); err != nil {
			return invalid("context.git.credential", "%v", err.(*InvalidError).Message)
		}
	}
	if err := ValidateDestinations(img.Destinations); err != nil {
		return err
	}
	if err := ValidateInputs(img.Inputs()); err != nil {
		return err
	}
	// A git context's Dockerfile is checked when a build has fetched it.
	if img.Context.Type == ContextLocal {
		return CheckDockerfile(img.Context.Dockerfile, img.Inputs())
	}
	return nil
}

// BaseImages lists the images a Dockerfile's FROM instructions pull, as
// written after expanding the global ARGs' defaults. Stage references,
// scratch, and bases that do not expand to a valid reference are left out.
func BaseImages(dockerfile string) []name.Reference { return BaseImagesWith(dockerfile, nil) }

// BaseImagesWith is BaseImages for a build with buildArgs: a build
// argument sets the global ARG of its name, as the executor's --build-arg
// does.
func BaseImagesWith(dockerfile string, buildArgs map[string]string) []name.Reference {
	stages, metaArgs, escape, err := parseDockerfileArgs(dockerfile)
	if err != nil {
		return nil
	}
	var env []string
	for _, a := range metaArgs {
		for _, kv := range a.Args {
			if v, ok := buildArgs[kv.Key]; ok {
				env = append(env, kv.Key+"="+v)
			} else if kv.Value != nil {
				env = append(env, kv.Key+"="+*kv.Value)
			}
		}
	}
	lex := shell.NewLex(escape)
	var refs []name.Reference
	named := map[string]bool{}
	for _, s := range stages {
		base, _, err := lex.ProcessWord(s.BaseName, shell.EnvsFromSlice(env))
		if err == nil && !named[strings.ToLower(base)] && base != "scratch" && base != "" {
			if ref, err := name.ParseReference(base); err == nil {
				refs = append(refs, ref)
			}
		}
		named[strings.ToLower(s.Name)] = true
	}
	return refs
}

// BaseRegistries lists the registry hosts a Dockerfile's FROM instructions
// pull from (Docker Hub as index.docker.io). Stage references and bases
// named through build arguments are not resolved and left out.
func BaseRegistries(dockerfile string) []string {
	stages, err := parseDockerfile(dockerfile)
	if err != nil {
		return nil
	}
	var hosts []string
	named := map[string]bool{}
	for _, s := range stages {
		base := s.BaseName
		named[strings.ToLower(s.Name)] = true
		if named[strings.ToLower(base)] || base == "scratch" || strings.Contains(base, "$") {
			continue
		}
		if ref, err := name.ParseReference(base); err == nil && !slices.Contains(hosts, ref.Context().RegistryStr()) {
			hosts = append(hosts, ref.Context().RegistryStr())
		}
	}
	return hosts
}
