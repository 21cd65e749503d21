package server_test

import (
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/slipway-dev/slipway/internal/imagetest"
	"github.com/slipway-dev/slipway/pkg/pullauth/pullauthtest"
	"github.com/slipway-dev/slipway/pkg/registry/baseimage"
	"github.com/slipway-dev/slipway/pkg/server"
)

// encodings are the forms in which a build could print or store secret:
// plain, base64 (standard and URL alphabets, padded or not, at each of the
// three alignments it can have inside longer encoded text, and as the
// docker config's user:password), hex (both cases) and reversed.
func encodings(user, secret string) map[string]string {
	out := map[string]string{"plain": secret, "reversed": reverse(secret),
		"hex": hex.EncodeToString([]byte(secret)), "HEX": strings.ToUpper(hex.EncodeToString([]byte(secret))),
		"base64 user:password":    base64.StdEncoding.EncodeToString([]byte(user + ":" + secret)),
		"base64url user:password": base64.URLEncoding.EncodeToString([]byte(user + ":" + secret)),
	}
	for name, enc := range map[string]*base64.Encoding{"base64": base64.StdEncoding, "base64url": base64.URLEncoding} {
		out[name] = enc.EncodeToString([]byte(secret))
		for k := range 3 {
			// After k bytes of something else, the secret's encoding starts
			// on a fresh 4-character group ceil(k/3) groups in; its last
			// group may mix with what follows.
			e := enc.EncodeToString([]byte(strings.Repeat("\x00", k) + secret))
			skip := 0
			if k > 0 {
				skip = 4
			}
			out[fmt.Sprintf("%s at offset %d", name, k)] = e[skip : len(e)-4]
		}
	}
	return out
}

func reverse(s string) string {
	r := []rune(s)
	slices.Reverse(r)
	return string(r)
}

// noSecret fails t for each encoding of secret found in what.
func noSecret(t *testing.T, where string, what []byte, user, secret string) {
	t.Helper()
	for enc, s := range encodings(user, secret) {
		if strings.Contains(string(what), s) {
			t.Errorf("%s holds the password (%s)", where, enc)
		}
	}
}

// TestPrivateBaseGetsAScopedPullToken: a base image in a private registry
// that does the token flow is pulled with a bearer token Slipway obtained
// for it; the workspace's long-lived password, in any encoding, is in
// nothing the build can read or leaves behind: its docker config (read by
// a RUN step), its log, the API's answers, the pushed image's layers.
func TestPrivateBaseGetsAScopedPullToken(t *testing.T) {
	const reader, password = "slipway-puller", "long-lived-base-registry-password-0123"
	reg := pullauthtest.New(t, reader, password, "seeder", "seeder-password-4567")
	if _, err := baseimage.PushBusybox(t.Context(), reg.Host+"/private/base:1", remote.WithAuth(&authn.Basic{Username: "seeder", Password: "seeder-password-4567"})); err != nil {
		t.Fatal(err)
	}
	e := buildEnv(t, func(c *server.Config) { server.LetBuildsReach(c, reg.Port) })
	want(t, e.call("PUT", "/api/v1/workspaces/ws1/credentials/priv", "alice",
		map[string]any{"kind": "registry", "registry": reg.Host, "username": reader, "password": password}, nil), 204, "")
	// The build prints and keeps all it can read of credentials.
	df := "FROM " + reg.Host + "/private/base:1\n" +
		"RUN cat /kaniko/.docker/config.json; echo; base64 /kaniko/.docker/config.json; cp /kaniko/.docker/config.json /seen-config.json\n" +
		"RUN env | tee /seen-env; ls -la /kaniko /kaniko/.docker\n"
	img := e.newImage(localImage("team/on-private-base", df))
	n := e.startBuild(img.ID)
	b := e.waitFor(img.ID, n, 3*time.Minute, ended)
	log := e.buildLog(img.ID, n)
	if b.Status != "succeeded" {
		t.Fatalf("build FROM a private base: %+v %+v\n%s", b, b.Failure, log)
	}
	if !strings.Contains(log, "a pull token for "+reg.Host+" (private/base), valid for 5m0s") {
		t.Errorf("the log does not say which token the build got:\n%s", log)
	}

	// The token server issued the build's token with the workspace's
	// credential, for pulling the base alone, and one more of the same
	// scope for Slipway's own HEAD that records the base's digest on the
	// build (the rebuild policy's on_base_image_update compares it).
	issued := reg.Issued(reader)
	if len(issued) != 2 {
		t.Fatalf("tokens issued with the workspace's credential: %+v; want the build's and the base digest lookup's", issued)
	}
	for _, tok := range issued {
		if !slices.Equal(tok.Scopes, []string{"repository:private/base:pull"}) || len(tok.Granted) != 1 || !slices.Equal(tok.Granted[0].Actions, []string{"pull"}) {
			t.Fatalf("tokens issued with the workspace's credential: %+v", issued)
		}
	}
	if got := e.buildsOf(img.ID)[0].Bases; len(got) != 1 || got[0].Ref != reg.Host+"/private/base:1" || got[0].Digest == "" {
		t.Fatalf("the build's bases: %+v", got)
	}

	// The docker config the build's RUN step read holds that token and no
	// credential for the private registry.
	pushed := e.pull("alice", *b.Reference)
	fs := files(t, pushed)
	seen, ok := fs["/seen-config.json"]
	if !ok {
		t.Fatalf("the RUN step's copy of the docker config is missing: %v", slices.Sorted(maps.Keys(fs)))
	}
	var cfg struct {
		Auths map[string]map[string]string `json:"auths"`
	}
	if err := json.Unmarshal([]byte(seen), &cfg); err != nil {
		t.Fatalf("the build's docker config: %v\n%s", err, seen)
	}
	// The digest lookup runs first: the build's token is the last issued.
	if got := cfg.Auths[reg.Host]; len(got) != 1 || got["registrytoken"] != issued[len(issued)-1].Token {
		t.Fatalf("the build's docker config for %s is %v; want only the issued registrytoken", reg.Host, got)
	}
	noSecret(t, "the build's docker config", []byte(seen), reader, password)
	noSecret(t, "the build's environment", []byte(fs["/seen-env"]), reader, password)

	// Every layer of the pushed image, compressed and not, its config and
	// its manifest.
	for what, data := range imagetest.Blobs(t, pushed) {
		noSecret(t, "the pushed image's "+what, data, reader, password)
	}

	// The build's log, every API answer about it, the server's log.
	noSecret(t, "the build log", []byte(log), reader, password)
	for _, p := range []string{"/api/v1/images/" + img.ID, "/api/v1/images/" + img.ID + "/builds", fmt.Sprintf("/api/v1/images/%s/builds/%d", img.ID, n),
		fmt.Sprintf("/api/v1/images/%s/builds/%d/log", img.ID, n), "/api/v1/workspaces/ws1/credentials", "/api/v1/workspaces/ws1/images"} {
		for _, who := range []string{"alice", "bob"} {
			_, body := e.c.JSON("GET", p, e.token(who), nil)
			noSecret(t, "GET "+p+" as "+who, body, reader, password)
		}
	}
	noSecret(t, "the server's log", []byte(e.logs.String()), reader, password)
}

// TestPrivateBaseOfABasicAuthRegistry: a registry that takes the password
// itself gives no token; the build fails before it runs, saying why,
// rather than hand the password to the build.
func TestPrivateBaseOfABasicAuthRegistry(t *testing.T) {
	const user, password = "puller", "basic-auth-registry-password-89ab"
	ext := pullauthtest.NewBasic(t, user, password)
	e := buildEnv(t, nil)
	want(t, e.call("PUT", "/api/v1/workspaces/ws1/credentials/basic", "alice",
		map[string]any{"kind": "registry", "registry": ext, "username": user, "password": password}, nil), 204, "")
	img := e.newImage(localImage("team/on-basic-base", "FROM "+ext+"/private/base:1\nRUN cat /kaniko/.docker/config.json\n"))
	n := e.startBuild(img.ID)
	b := e.waitFor(img.ID, n, 2*time.Minute, ended)
	log := e.buildLog(img.ID, n)
	if b.Status != "failed" || b.Failure == nil || b.Failure.Reason != "base_image" ||
		!strings.Contains(b.Failure.Message, ext+" answers with HTTP basic auth") || !strings.Contains(b.Failure.Message, "does not hand to a build") {
		t.Fatalf("build FROM a basic-auth registry: %+v %+v\n%s", b, b.Failure, log)
	}
	if strings.Contains(log, "Retrieving image") || strings.Contains(log, "executor ended") {
		t.Fatalf("the build ran:\n%s", log)
	}
	noSecret(t, "the build log", []byte(log), user, password)
	assertNoSecret(t, e, password, img.ID)
}

// TestEncodingsFindEmbeddedSecrets: the encodings the tests look for find
// a secret encoded inside longer text, at any alignment.
func TestEncodingsFindEmbeddedSecrets(t *testing.T) {
	const user, secret = "u", "long-lived-password-0123"
	found := func(text string) bool {
		for _, s := range encodings(user, secret) {
			if strings.Contains(text, s) {
				return true
			}
		}
		return false
	}
	for k := range 5 {
		pre, post := strings.Repeat("p", k), strings.Repeat("q", 4-k)
		for name, text := range map[string]string{
			"base64":    base64.StdEncoding.EncodeToString([]byte(pre + secret + post)),
			"base64url": base64.RawURLEncoding.EncodeToString([]byte(pre + secret + post)),
			"hex":       hex.EncodeToString([]byte(pre + secret + post)),
			"reversed":  reverse(pre + secret + post),
		} {
			if !found(text) {
				t.Errorf("%s after %d bytes: not found in %q", name, k, text)
			}
		}
	}
	// (Encoded, a text that differs only in the secret's last 1-3 bytes
	// would match: the last group is left out, as it mixes with what follows.)
	if other := "an unrelated line of build output"; found(other) || found(base64.StdEncoding.EncodeToString([]byte(other))) || found(hex.EncodeToString([]byte(other))) {
		t.Error("found a secret that is not there")
	}
}
