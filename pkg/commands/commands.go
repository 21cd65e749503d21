// Package commands is slipway's command line: serve, token and workspace.
package commands

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"
	"github.com/google/uuid"

	"github.com/slipway-dev/slipway/events"
	"github.com/slipway-dev/slipway/pkg/auth"
	"github.com/slipway-dev/slipway/pkg/buildcontext"
	"github.com/slipway-dev/slipway/pkg/gitctx"
	"github.com/slipway-dev/slipway/pkg/image"
	"github.com/slipway-dev/slipway/pkg/runner/kube"
	"github.com/slipway-dev/slipway/pkg/server"
)

const usage = `usage:
  slipway serve [--addr HOST:PORT] [--data DIR] [flags]
      serve the API, the event receiver, the internal registry and the web page
  slipway token SUBJECT [--data DIR] [--ttl DURATION]
      print a bearer token for SUBJECT that the server on the same data dir accepts
  slipway workspace ID --owner USER [--member USER]... [--server URL] [--data DIR] [--update]
      announce a workspace to a running server as the platform would

  slipway fetch-context --url URL [--ref REF] [--dir DIR] --dest DIR
      fetch a Git build context (a build pod's init container; token in SLIPWAY_GIT_TOKEN)

Run 'slipway COMMAND --help' for a command's flags.
`

// errUsage marks bad arguments: usage is printed and the exit code is 2.
var errUsage = errors.New("bad arguments")

// Main runs the command line and returns the exit code.
func Main(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	var err error
	switch args[0] {
	case "serve":
		err = serve(args[1:], stderr)
	case "token":
		err = token(args[1:], stdout, stderr)
	case "workspace":
		err = workspace(args[1:], stdout, stderr)
	case "fetch-context":
		err = fetchContext(args[1:], stdout, stderr)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "slipway: unknown command %q\n\n%s", args[0], usage)
		return 2
	}
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		return 0
	case errors.Is(err, errUsage):
		fmt.Fprintf(stderr, "slipway %s: %v\n\n%s", args[0], err, usage)
		return 2
	default:
		fmt.Fprintf(stderr, "slipway %s: %v\n", args[0], err)
		return 1
	}
}

// parse parses flags and positional arguments in any order, and checks that
// exactly want positional arguments were given.
func parse(fs *flag.FlagSet, args []string, want int) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, err
			}
			return nil, fmt.Errorf("%w: %v", errUsage, err)
		}
		args = fs.Args()
		if len(args) == 0 {
			break
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
	if len(pos) != want {
		return nil, fmt.Errorf("%w: want %d argument(s), got %d", errUsage, want, len(pos))
	}
	return pos, nil
}

func newFlagSet(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("slipway "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return fs
}

func serve(args []string, stderr io.Writer) error {
	cfg := server.DefaultConfig()
	fs := newFlagSet("serve", stderr)
	cfg.RegisterFlags(fs)
	if err := server.ApplyEnv(fs); err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	if _, err := parse(fs, args, 0); err != nil {
		return err
	}
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	log, err := server.NewLogger(cfg.LogLevel)
	if err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	s, err := server.Listen(cfg, log)
	if err != nil {
		return err
	}
	return s.Serve(ctx)
}

func dataDirFlag(fs *flag.FlagSet) *string {
	return fs.String("data", server.DefaultConfig().DataDir, "data `DIR` of the server (env SLIPWAY_DATA)")
}

func token(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("token", stderr)
	data := dataDirFlag(fs)
	ttl := fs.Duration("ttl", 30*24*time.Hour, "how long the token is valid")
	pos, err := parse(fs, args, 1)
	if err != nil {
		return err
	}
	if strings.TrimSpace(pos[0]) == "" || *ttl <= 0 {
		return fmt.Errorf("%w: SUBJECT must not be empty and --ttl must be positive", errUsage)
	}
	iss, err := auth.LoadIssuer(*data)
	if err != nil {
		return err
	}
	t, err := iss.Issue(pos[0], *ttl)
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, t)
	return nil
}

// stringList is a repeatable string flag.
type stringList []string

func (l *stringList) String() string     { return strings.Join(*l, ",") }
func (l *stringList) Set(v string) error { *l = append(*l, v); return nil }

func workspace(args []string, stdout, stderr io.Writer) error {
	cfg := server.DefaultConfig()
	fs := newFlagSet("workspace", stderr)
	data := dataDirFlag(fs)
	owner := fs.String("owner", "", "the workspace's owner (required)")
	var members stringList
	fs.Var(&members, "member", "a member of the workspace (repeatable)")
	srv := fs.String("server", "http://"+cfg.Addr, "the server's base `URL`")
	publisher := fs.String("as", cfg.EventPublishers[0], "the publisher `SUBJECT` to sign the event as")
	update := fs.Bool("update", false, "send platform.workspace.updated instead of .created")
	pos, err := parse(fs, args, 1)
	if err != nil {
		return err
	}
	if *owner == "" {
		return fmt.Errorf("%w: --owner is required", errUsage)
	}
	iss, err := auth.LoadIssuer(*data)
	if err != nil {
		return err
	}
	tok, err := iss.Issue(*publisher, 5*time.Minute)
	if err != nil {
		return err
	}
	typ := events.WorkspaceCreated
	if *update {
		typ = events.WorkspaceUpdated
	}
	e := cloudevents.NewEvent()
	e.SetID(uuid.NewString())
	e.SetSource("/slipway/cli")
	e.SetType(typ)
	e.SetTime(time.Now()) // workspace events apply in the order of their times
	if err := e.SetData(cloudevents.ApplicationJSON, events.Workspace{ID: pos[0], Owner: *owner, Members: members}); err != nil {
		return err
	}
	client, err := cloudevents.NewClientHTTP(cloudevents.WithTarget(strings.TrimRight(*srv, "/")+"/events"),
		cehttp.WithHeader("Authorization", "Bearer "+tok))
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res := client.Send(ctx, e)
	if !cloudevents.IsACK(res) {
		var he *cehttp.Result
		if cloudevents.ResultAs(res, &he) && he.StatusCode != 0 {
			return fmt.Errorf("server answered %d %s: %v", he.StatusCode, http.StatusText(he.StatusCode), res)
		}
		return fmt.Errorf("sending to %s: %v", *srv, res)
	}
	fmt.Fprintf(stdout, "workspace %s announced (owner %s, members %s)\n", pos[0], *owner, members.String())
	return nil
}

// GitTokenEnv carries a private repository's token to fetch-context; it is
// never an argument, so it appears in no process listing or pod spec.
const GitTokenEnv = "SLIPWAY_GIT_TOKEN"

// fetchContext is the build pod's init container: it fetches the Git
// context with the same code as local builds, and reports the commit (or
// its error) in the container's termination message for the reporter.
func fetchContext(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("fetch-context", stderr)
	url := fs.String("url", "", "the repository `URL` (required)")
	ref := fs.String("ref", "", "branch, tag or commit (default: the default branch)")
	dir := fs.String("dir", "", "the directory with the Dockerfile, inside the repository")
	dest := fs.String("dest", "", "an empty `DIR` to check the commit out into (required)")
	username := fs.String("username", "", "the user name for the token (default git)")
	termination := fs.String("termination-log", "/dev/termination-log", "where the result is written for Kubernetes")
	maxFiles := fs.Int64("max-files", buildcontext.DefaultFiles, "entries (files, directories, links) the commit may check out")
	maxBytes := fs.Int64("max-bytes", buildcontext.DefaultBytes, "bytes the commit's files may add up to")
	buildArgs := map[string]string{}
	fs.Func("build-arg", "a build argument `NAME=VALUE`, for the bases reported (repeatable)", func(kv string) error {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return fmt.Errorf("want NAME=VALUE")
		}
		buildArgs[k] = v
		return nil
	})
	if _, err := parse(fs, args, 0); err != nil {
		return err
	}
	if *url == "" || *dest == "" {
		return fmt.Errorf("%w: --url and --dest are required", errUsage)
	}
	var auth *gitctx.Auth
	if tok := os.Getenv(GitTokenEnv); tok != "" {
		auth = &gitctx.Auth{Username: *username, Token: tok}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	f := &gitctx.Fetcher{MaxFiles: *maxFiles, MaxBytes: *maxBytes}
	commit, contextDir, err := f.Fetch(ctx, image.Git{URL: *url, Ref: *ref, Dir: *dir}, auth, *dest)
	result := "commit " + commit
	if err != nil {
		result = "fetching the build context failed: " + err.Error()
	} else if text, rerr := buildcontext.ReadDockerfile(contextDir, orRoot(*dir)); rerr == nil {
		// The bases, for the reporter to record (kube.BasesOf). A
		// Dockerfile that cannot be read is the executor's to report.
		for i, b := range image.BaseImagesWith(text, buildArgs) {
			if i == kube.MaxBases {
				break
			}
			result += "\nbase " + b.Name()
		}
	}
	if werr := os.WriteFile(*termination, []byte(result+"\n"), 0o644); werr != nil && !errors.Is(werr, os.ErrNotExist) {
		fmt.Fprintf(stderr, "slipway fetch-context: writing %s: %v\n", *termination, werr)
	}
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, result)
	return nil
}

func orRoot(dir string) string {
	if dir == "" {
		return "the repository root"
	}
	return dir
}
