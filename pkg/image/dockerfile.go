package image

import (
	"fmt"
	"maps"
	"path"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"github.com/moby/buildkit/frontend/dockerfile/parser"
	"github.com/moby/buildkit/frontend/dockerfile/shell"
)

// Limits on a definition's build inputs.
const (
	MaxBuildArgs          = 64
	MaxBuildArgNameLength = 128
	MaxBuildArgValueBytes = 4096
	MaxBuildArgsBytes     = 32 << 10
	MaxSecrets            = 16
)

// SecretsDir is where a build finds the secrets its image names, one file
// per secret named by its id: BuildKit's default target of
// RUN --mount=type=secret.
const SecretsDir = "/run/secrets"

// argName is a build argument's name: a shell variable name, the only
// kind a Dockerfile can refer to as $NAME.
var argName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// stageName is BuildKit's grammar of a stage name (FROM ... AS name).
var stageName = regexp.MustCompile(`^[a-z][a-z0-9-_.]*$`)

// ValidateInputs checks a definition's build arguments, secrets' names and
// target, without the Dockerfile.
func ValidateInputs(in Inputs) error {
	if len(in.BuildArgs) > MaxBuildArgs {
		return invalid("build_args", "at most %d are allowed", MaxBuildArgs)
	}
	total := 0
	for _, k := range slices.Sorted(maps.Keys(in.BuildArgs)) {
		v := in.BuildArgs[k]
		field := "build_args." + k
		if len(k) > MaxBuildArgNameLength || !argName.MatchString(k) {
			return invalid("build_args", "%q is not a build argument name: a letter or '_', then letters, digits and '_', at most %d", truncate(k, 40), MaxBuildArgNameLength)
		}
		if len(v) > MaxBuildArgValueBytes {
			return invalid(field, "is longer than %d bytes", MaxBuildArgValueBytes)
		}
		if !utf8.ValidString(v) || strings.ContainsRune(v, 0) {
			return invalid(field, "is not valid UTF-8 text (or holds a NUL)")
		}
		total += len(k) + len(v)
	}
	if total > MaxBuildArgsBytes {
		return invalid("build_args", "hold more than %d bytes", MaxBuildArgsBytes)
	}
	if len(in.Secrets) > MaxSecrets {
		return invalid("secrets", "at most %d are allowed", MaxSecrets)
	}
	for i, s := range in.Secrets {
		if err := ValidateCredentialName(s); err != nil {
			return invalid(fmt.Sprintf("secrets[%d]", i), "%v", err.(*InvalidError).Message)
		}
		if slices.Index(in.Secrets, s) != i {
			return invalid(fmt.Sprintf("secrets[%d]", i), "%q is listed twice", s)
		}
	}
	if in.Target != "" && !stageName.MatchString(in.Target) {
		return invalid("target", "%q is not a stage name: lower-case letters, digits, '-', '_' and '.', starting with a letter", truncate(in.Target, 40))
	}
	return nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// CheckDockerfile checks what BuildKit's instruction parsing and stage
// resolution see in a Dockerfile that parses (ValidateDockerfile), with
// the build inputs it will be built with, and refuses every form the
// pinned executor (chainguard-dev/kaniko v1.25.6) would drop or mis-build.
// It reports the first problem with its line. What it refuses and why:
//
//   - FROM whose image expands to nothing (an ARG without a default that no
//     build argument sets) or to no valid reference;
//   - COPY --from naming neither an earlier stage nor an image reference
//     with a registry, path, tag or digest: a bare word that is no stage
//     ("--from=buidler") would otherwise be pulled from Docker Hub;
//   - --chmod values that are not octal (the executor takes no other);
//   - EXPOSE ports that are not PORT[-PORT][/tcp|udp|sctp];
//   - a target that is no stage;
//   - heredocs (RUN <<EOF, COPY <<EOF): the executor runs RUN without the
//     heredoc's text (its files stay empty) and fails COPY;
//   - RUN --mount of type bind, cache, tmpfs or ssh: the executor ignores
//     the flag, so the command runs without the mount and a cache or tmpfs
//     mount's files end up in the layer; a secret mount is built (the
//     runner mounts the image's secrets at /run/secrets) when it names one
//     of the image's secrets, at the default target, without env, uid,
//     gid or mode;
//   - RUN --network other than default, --security=insecure, --device:
//     ignored by the executor;
//   - COPY --parents (the executor drops the parent directories),
//     COPY/ADD --exclude (it copies what was excluded), ADD --checksum (it
//     does not verify it), ADD --keep-git-dir and --unpack (ignored).
func CheckDockerfile(src string, in Inputs) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("%w: %v", ErrParserPanic, p)
		}
	}()
	stages, metaArgs, escape, err := parseDockerfileArgs(src)
	if err != nil {
		return dockerfileError(err, 0)
	}
	lex := shell.NewLex(escape)
	// The global scope: ARGs before the first FROM, with the build
	// arguments' values for those they name.
	global := map[string]string{}
	for _, a := range metaArgs {
		for _, kv := range a.Args {
			if v, ok := in.BuildArgs[kv.Key]; ok {
				global[kv.Key] = v
			} else if kv.Value != nil {
				v, _ := expand(lex, *kv.Value, global)
				global[kv.Key] = v
			} else {
				delete(global, kv.Key)
			}
		}
	}
	var names []string // the stages' names so far, by index
	for i, st := range stages {
		line := locLine(st.Location)
		res, err := lex.ProcessWordWithMatches(st.BaseName, envGetter(global))
		base := res.Result
		if err != nil {
			return lineError(line, "FROM %s: %v", st.BaseName, err)
		}
		if strings.TrimSpace(base) == "" {
			return lineError(line, "FROM %s: the base image is empty%s", st.BaseName, unsetArgs(res))
		}
		if !slices.Contains(names, strings.ToLower(base)) && base != "scratch" && len(res.Unmatched) == 0 {
			if _, err := name.ParseReference(base); err != nil {
				return lineError(line, "FROM %s: %q is not a valid image reference: %v", st.BaseName, base, err)
			}
		}
		env := map[string]string{}
		for _, c := range st.Commands {
			if err := checkCommand(c, lex, env, global, in, names, i); err != nil {
				return err
			}
		}
		names = append(names, strings.ToLower(st.Name))
	}
	if in.Target != "" && !slices.Contains(names, in.Target) {
		var named []string
		for _, n := range names {
			if n != "" {
				named = append(named, n)
			}
		}
		if len(named) == 0 {
			return invalid("target", "%q is not a stage of the Dockerfile: it names no stage (FROM ... AS NAME)", in.Target)
		}
		return invalid("target", "%q is not a stage of the Dockerfile; its stages are %s", in.Target, strings.Join(named, ", "))
	}
	return nil
}

// checkCommand checks one instruction of stage number stage; env is the
// stage's ARG and ENV values so far, which it updates.
func checkCommand(c instructions.Command, lex *shell.Lex, env, global map[string]string, in Inputs, names []string, stage int) error {
	line := 0
	if l, ok := c.(interface{ Location() []parser.Range }); ok {
		line = locLine(l.Location())
	}
	scope := func() map[string]string {
		m := make(map[string]string, len(env))
		for k, v := range env {
			m[k] = v
		}
		return m
	}
	switch c := c.(type) {
	case *instructions.ArgCommand:
		for _, kv := range c.Args {
			switch v, ok := in.BuildArgs[kv.Key]; {
			case ok:
				env[kv.Key] = v
			case kv.Value != nil:
				env[kv.Key], _ = expand(lex, *kv.Value, scope())
			default:
				if g, ok := global[kv.Key]; ok {
					env[kv.Key] = g
				}
			}
		}
	case *instructions.EnvCommand:
		for _, kv := range c.Env {
			env[kv.Key], _ = expand(lex, kv.Value, scope())
		}
	case *instructions.RunCommand:
		if len(c.Files) > 0 {
			return lineError(line, "RUN with a heredoc (<<%s): the build's executor (Kaniko) runs the command without the heredoc's text; write the commands on the RUN line, or COPY a script from the context and RUN it", c.Files[0].Name)
		}
		// Mount options are read once expanded, as BuildKit does.
		vars := scope()
		if err := c.Expand(func(w string) (string, error) { return expand(lex, w, vars) }); err != nil {
			return lineError(line, "RUN --mount: %v", err)
		}
		for _, m := range instructions.GetMounts(c) {
			if err := checkMount(m, in, line); err != nil {
				return err
			}
		}
		if n := instructions.GetNetwork(c); n != "" && n != instructions.NetworkDefault {
			return lineError(line, "RUN --network=%s: the build's executor (Kaniko) ignores --network, so the step would run with the build's network; remove the flag", n)
		}
		if s := instructions.GetSecurity(c); s != "" && s != instructions.SecuritySandbox {
			return lineError(line, "RUN --security=%s: the build's executor (Kaniko) does not support it; remove the flag", s)
		}
		if slices.Contains(c.FlagsUsed, "device") {
			return lineError(line, "RUN --device: the build's executor (Kaniko) does not support it; remove the flag")
		}
	case *instructions.CopyCommand:
		if len(c.SourceContents) > 0 {
			return lineError(line, "COPY with a heredoc (<<%s): the build's executor (Kaniko) cannot copy a heredoc; put the file in the build context and COPY it", c.SourceContents[0].Path)
		}
		if c.Parents {
			return lineError(line, "COPY --parents: the build's executor (Kaniko) would copy the files without their parent directories; COPY each directory to its place instead")
		}
		if len(c.ExcludePatterns) > 0 {
			return lineError(line, "COPY --exclude: the build's executor (Kaniko) would copy the excluded files too; use a .dockerignore or narrower sources")
		}
		if err := checkChmod(c.Chmod, lex, scope(), line); err != nil {
			return err
		}
		if c.From != "" {
			if err := checkFrom(c.From, lex, scope(), names, stage, line); err != nil {
				return err
			}
		}
	case *instructions.AddCommand:
		if len(c.SourceContents) > 0 {
			return lineError(line, "ADD with a heredoc (<<%s): the build's executor (Kaniko) cannot add a heredoc; put the file in the build context and COPY it", c.SourceContents[0].Path)
		}
		switch {
		case len(c.ExcludePatterns) > 0:
			return lineError(line, "ADD --exclude: the build's executor (Kaniko) would add the excluded files too; use a .dockerignore or narrower sources")
		case c.Checksum != "":
			return lineError(line, "ADD --checksum: the build's executor (Kaniko) does not verify checksums; download with RUN and check the sum there (sha256sum -c)")
		case c.KeepGitDir != nil:
			return lineError(line, "ADD --keep-git-dir: the build's executor (Kaniko) does not support it; remove the flag")
		case c.Unpack != nil:
			return lineError(line, "ADD --unpack: the build's executor (Kaniko) ignores it (it unpacks local archives and never remote ones); remove the flag")
		}
		if err := checkChmod(c.Chmod, lex, scope(), line); err != nil {
			return err
		}
	case *instructions.ExposeCommand:
		for _, p := range c.Ports {
			res, err := lex.ProcessWordWithMatches(p, envGetter(scope()))
			v := res.Result
			if err != nil || len(res.Unmatched) > 0 {
				continue // set by something the check does not see
			}
			for _, port := range strings.Fields(v) {
				if !validPort(port) {
					return lineError(line, "EXPOSE %s: %q is not a port: give PORT, PORT/tcp, PORT/udp or a range PORT-PORT (1 to 65535)", p, port)
				}
			}
		}
	}
	return nil
}

// checkMount refuses a RUN --mount that the build cannot carry out.
func checkMount(m *instructions.Mount, in Inputs, line int) error {
	if m.Type != instructions.MountTypeSecret {
		return lineError(line, "RUN --mount=type=%s: the build's executor (Kaniko) ignores mounts of this type: the command would run without it%s; only type=secret is supported", m.Type,
			map[instructions.MountType]string{
				instructions.MountTypeCache: " and the cache directory's files would end up in the image",
				instructions.MountTypeTmpfs: " and the tmpfs's files would end up in the image",
			}[m.Type])
	}
	id := m.CacheID
	if m.Source != "" {
		id = m.Source
	}
	if id == "" {
		id = path.Base(m.Target)
	}
	switch {
	case m.Env != nil:
		return lineError(line, "RUN --mount=type=secret,env=%s: secrets are mounted as files only: read %s/%s instead", *m.Env, SecretsDir, id)
	case m.Target != "" && path.Clean(m.Target) != SecretsDir+"/"+id:
		return lineError(line, "RUN --mount=type=secret,target=%s: secrets are mounted at %s/ID only: leave target out and read %s/%s", m.Target, SecretsDir, SecretsDir, id)
	case m.UID != nil || m.GID != nil || m.Mode != nil:
		return lineError(line, "RUN --mount=type=secret: uid, gid and mode are not supported: the secret is a file of root's, mode 0400")
	case !slices.Contains(in.Secrets, id):
		return lineError(line, "RUN --mount=type=secret,id=%s: %q is not one of the image's secrets: add it to \"secrets\" (a workspace credential of kind secret)", id, id)
	}
	return nil
}

// checkChmod refuses a --chmod that is not an octal mode.
func checkChmod(chmod string, lex *shell.Lex, env map[string]string, line int) error {
	if chmod == "" {
		return nil
	}
	res, err := lex.ProcessWordWithMatches(chmod, envGetter(env))
	v := res.Result
	if err != nil || len(res.Unmatched) > 0 {
		return nil // set by something the check does not see
	}
	if n, err := strconv.ParseUint(v, 8, 32); err != nil || n > 0o7777 {
		return lineError(line, "--chmod=%s: %q is not an octal file mode such as 0755 (the build's executor takes no other form)", chmod, v)
	}
	return nil
}

// checkFrom refuses a COPY --from that names neither an earlier stage nor
// an image. BuildKit and Kaniko take any word that is no earlier stage for
// an image on Docker Hub, so a mistyped stage name would be pulled from
// there: a bare word must be a stage; an image is named with a registry,
// a path, a tag or a digest (alpine:3, library/alpine).
func checkFrom(from string, lex *shell.Lex, env map[string]string, names []string, stage, line int) error {
	res, err := lex.ProcessWordWithMatches(from, envGetter(env))
	raw := res.Result
	if err != nil || len(res.Unmatched) > 0 {
		return nil
	}
	v := strings.ToLower(raw)
	if slices.Contains(names, v) && v != "" {
		return nil
	}
	if n, err := strconv.Atoi(v); err == nil {
		if n < 0 || n >= stage {
			return lineError(line, "COPY --from=%s: stage %d does not come before this one (stages count from 0)", from, n)
		}
		return nil
	}
	if v == "" || !strings.ContainsAny(v, "/:@") {
		known := "there is no earlier stage"
		if named := slices.DeleteFunc(slices.Clone(names), func(s string) bool { return s == "" }); len(named) > 0 {
			known = "earlier stages: " + strings.Join(named, ", ")
		}
		return lineError(line, "COPY --from=%s: no stage named %q comes before this line (%s); to copy from an image, give its reference with a tag (%s:latest)", from, v, known, v)
	}
	if _, err := name.ParseReference(raw); err != nil {
		return lineError(line, "COPY --from=%s: %q is neither an earlier stage nor a valid image reference: %v", from, raw, err)
	}
	return nil
}

// validPort is EXPOSE's grammar: PORT or PORT-PORT, optionally /PROTOCOL.
func validPort(s string) bool {
	p, proto, ok := strings.Cut(s, "/")
	if ok && proto != "tcp" && proto != "udp" && proto != "sctp" {
		return false
	}
	lo, hi, isRange := strings.Cut(p, "-")
	a, err := strconv.Atoi(lo)
	if err != nil || a < 1 || a > 65535 || strings.HasPrefix(lo, "+") {
		return false
	}
	if isRange {
		b, err := strconv.Atoi(hi)
		return err == nil && b >= a && b <= 65535 && !strings.HasPrefix(hi, "+")
	}
	return true
}

// unsetArgs says which variables of a FROM line were unset, for its error.
func unsetArgs(res shell.ProcessWordResult) string {
	if len(res.Unmatched) == 0 {
		return ""
	}
	unset := slices.Sorted(func(yield func(string) bool) {
		for k := range res.Unmatched {
			if !yield(k) {
				return
			}
		}
	})
	return fmt.Sprintf(": ARG %s is unset (it has no default and no build argument sets it): give it a default (ARG %s=IMAGE) or set it in build_args", strings.Join(unset, ", "), unset[0])
}

func expand(lex *shell.Lex, word string, env map[string]string) (string, error) {
	v, _, err := lex.ProcessWord(word, envGetter(env))
	return v, err
}

// envGetter is env as BuildKit's shell lexer reads it.
func envGetter(env map[string]string) shell.EnvGetter {
	kv := make([]string, 0, len(env))
	for k, v := range env {
		kv = append(kv, k+"="+v)
	}
	return shell.EnvsFromSlice(kv)
}

func locLine(rs []parser.Range) int {
	if len(rs) > 0 {
		return rs[0].Start.Line
	}
	return 0
}

func lineError(line int, format string, args ...any) error {
	return &InvalidError{Field: "context.dockerfile", Message: fmt.Sprintf(format, args...), Line: line}
}
