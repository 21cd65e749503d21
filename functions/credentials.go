package functions

import (
	"net/http"

	"github.com/slipway-dev/slipway/pkg/image"
	"github.com/slipway-dev/slipway/pkg/store"
)

// credentialBody is a credential as PUT: a registry's username and password,
// a Git host's username and token, or a build secret's value. A registry or
// git credential names the one host it is sent to: the registry, or (for
// git) host; a secret is sent nowhere, only mounted for the builds of the
// images that name it.
type credentialBody struct {
	Kind     string `json:"kind"`
	Registry string `json:"registry"`
	Host     string `json:"host"`
	Username string `json:"username"`
	Password string `json:"password"`
	Token    string `json:"token"`
	Value    string `json:"value"`
}

// Limits of a build secret's value: at least as long as the log redactor
// replaces (pkg/secret), at most what a build mounts.
const (
	minSecretValue = 6
	maxSecretValue = 64 << 10
)

func (c credentialBody) validate() error {
	bad := func(format string, args ...any) error {
		return errorf(http.StatusBadRequest, "invalid_argument", format, args...)
	}
	if c.Kind != "secret" && c.Value != "" {
		return bad("value is a secret credential's; a %s credential has none", c.Kind)
	}
	switch c.Kind {
	case "secret":
		if c.Registry != "" || c.Host != "" || c.Username != "" || c.Password != "" || c.Token != "" {
			return bad("a secret credential has a value only")
		}
		if len(c.Value) < minSecretValue {
			return bad("a secret credential needs a value of at least %d bytes (shorter ones could not be told apart from other text in the build log, so would not be redacted from it)", minSecretValue)
		}
		if len(c.Value) > maxSecretValue {
			return bad("a secret's value is at most %d bytes", maxSecretValue)
		}
		return nil
	case "registry":
		if c.Registry == "" || c.Password == "" {
			return bad("a registry credential needs registry and password")
		}
		if c.Token != "" || c.Host != "" {
			return bad("a registry credential has registry, username and password, not a token or a host")
		}
		if _, err := store.NormalizeRegistry(c.Registry); err != nil {
			return bad("registry: %v", err)
		}
	case "git":
		if c.Token == "" || c.Host == "" {
			return bad("a git credential needs a token and the host it is for (HOST or HOST:PORT): it is sent to that host only")
		}
		if c.Registry != "" || c.Password != "" {
			return bad("a git credential has host, username and token only")
		}
		if _, err := store.ParseGitHost(c.Host); err != nil {
			return bad("host: %v", err)
		}
	default:
		return bad("kind must be \"registry\", \"git\" or \"secret\"")
	}
	if len(c.Username) > 256 || len(c.Password) > 8192 || len(c.Token) > 8192 || len(c.Registry) > 256 || len(c.Host) > 256 {
		return bad("credential fields are too long")
	}
	return nil
}

// ownedWorkspace checks that the caller owns workspace {ws}.
func (a *api) ownedWorkspace(r *http.Request) (string, error) {
	ws := r.PathValue("ws")
	_, role, err := a.workspaceRole(r.Context(), ws)
	if err != nil {
		return ws, err
	}
	if role != store.RoleOwner {
		return ws, errForbidden
	}
	return ws, nil
}

func (a *api) putCredential(w http.ResponseWriter, r *http.Request) error {
	ws, err := a.ownedWorkspace(r)
	if err != nil {
		return err
	}
	name := r.PathValue("name")
	if err := image.ValidateCredentialName(name); err != nil {
		return err
	}
	var body credentialBody
	if err := decode(r, &body); err != nil {
		return err
	}
	if err := body.validate(); err != nil {
		return err
	}
	secret := body.Password + body.Token + body.Value
	sealed, err := a.Sealer.Seal(secret)
	if err != nil {
		return err
	}
	host, _ := store.ParseGitHost(body.Host)
	if body.Kind != "git" {
		host = ""
	}
	c := store.Credential{Workspace: ws, Name: name, Kind: body.Kind, Registry: body.Registry, Host: host, Username: body.Username, Secret: sealed}
	if err := a.Store.PutCredential(r.Context(), c); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// credentialView is what the API shows of a credential: never its secret.
type credentialView struct {
	Name     string `json:"name"`
	Kind     string `json:"kind"`
	Registry string `json:"registry,omitempty"`
	Host     string `json:"host,omitempty"`
}

func (a *api) listCredentials(w http.ResponseWriter, r *http.Request) error {
	ws := r.PathValue("ws")
	if _, _, err := a.workspaceRole(r.Context(), ws); err != nil {
		return err
	}
	cs, err := a.Store.ListCredentials(r.Context(), ws)
	if err != nil {
		return err
	}
	views := make([]credentialView, len(cs))
	for i, c := range cs {
		views[i] = credentialView{Name: c.Name, Kind: c.Kind, Registry: c.Registry, Host: c.Host}
	}
	writeJSON(w, http.StatusOK, map[string]any{"credentials": views})
	return nil
}

func (a *api) deleteCredential(w http.ResponseWriter, r *http.Request) error {
	ws, err := a.ownedWorkspace(r)
	if err != nil {
		return err
	}
	if err := a.Store.DeleteCredential(r.Context(), ws, r.PathValue("name")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}
