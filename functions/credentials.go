package functions

import (
	"net/http"

	"github.com/slipway-dev/slipway/pkg/image"
	"github.com/slipway-dev/slipway/pkg/store"
)

// credentialBody is a credential as PUT: a registry's username and password,
// or a Git host's username and token. Each names the one host it is sent to:
// the registry, or (for git) host.
type credentialBody struct {
	Kind     string `json:"kind"`
	Registry string `json:"registry"`
	Host     string `json:"host"`
	Username string `json:"username"`
	Password string `json:"password"`
	Token    string `json:"token"`
}

func (c credentialBody) validate() error {
	bad := func(format string, args ...any) error {
		return errorf(http.StatusBadRequest, "invalid_argument", format, args...)
	}
	switch c.Kind {
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
		return bad("kind must be \"registry\" or \"git\"")
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
	secret := body.Password + body.Token
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
