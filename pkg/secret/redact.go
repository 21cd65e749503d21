package secret

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"slices"
	"strings"
)

// minSecretLen is the length below which a credential is not redacted: a
// shorter one would garble the log by matching ordinary text.
const minSecretLen = 6

// redactedMark replaces a credential in the log.
var redactedMark = []byte("[redacted]")

// DockerConfigSecrets returns the credentials in a docker config.json
// ({"auths":{...}}): each auth in its encoded and decoded ("user:password")
// forms, the password inside it, and the passwords and tokens; none shorter
// than the redactor would replace, each once, longest first. A nil config
// has none. The error for an invalid config does not quote it.
func DockerConfigSecrets(config []byte) ([][]byte, error) {
	if config == nil {
		return nil, nil
	}
	var c struct {
		Auths map[string]struct {
			Auth          string `json:"auth"`
			Password      string `json:"password"`
			IdentityToken string `json:"identitytoken"`
			RegistryToken string `json:"registrytoken"`
		} `json:"auths"`
	}
	if err := json.Unmarshal(config, &c); err != nil {
		// The error could quote the config: leave it out.
		return nil, errors.New("DockerConfig is not a valid docker config.json")
	}
	var secrets [][]byte
	add := func(s string) { secrets = append(secrets, []byte(s)) }
	for _, a := range c.Auths {
		add(a.Auth)
		add(a.Password)
		add(a.IdentityToken)
		add(a.RegistryToken)
		if userPass, err := base64.StdEncoding.DecodeString(a.Auth); err == nil {
			add(string(userPass))
			_, pass, _ := strings.Cut(string(userPass), ":")
			add(pass)
		}
	}
	return redactable(secrets), nil
}

// redactable returns a copy of the secrets that a Redactor replaces: none
// shorter than minSecretLen, each once, longest first, so that a secret
// containing another is replaced whole.
func redactable(secrets [][]byte) [][]byte {
	var out [][]byte
	for _, s := range secrets {
		if len(s) >= minSecretLen && !slices.ContainsFunc(out, func(t []byte) bool { return bytes.Equal(s, t) }) {
			out = append(out, bytes.Clone(s))
		}
	}
	slices.SortStableFunc(out, func(a, b []byte) int { return len(b) - len(a) })
	return out
}

// Redactor writes to an underlying writer what is written to it with every
// secret replaced by "[redacted]", also when a secret is split across
// writes: it holds back a written tail that could begin a secret until the
// next Write or Flush. It is not safe for concurrent use.
type Redactor struct {
	w       io.Writer
	secrets [][]byte // longest first
	buf     []byte
}

// NewRedactor returns a Redactor that writes to w. Secrets shorter than six
// bytes are not redacted: they would garble the log by matching ordinary
// text. With no secret left, the Redactor passes writes through unchanged.
func NewRedactor(w io.Writer, secrets ...[]byte) *Redactor {
	return &Redactor{w: w, secrets: redactable(secrets)}
}

// Write implements io.Writer.
func (r *Redactor) Write(p []byte) (int, error) {
	if len(r.secrets) == 0 {
		return r.w.Write(p)
	}
	r.buf = append(r.buf, p...)
	for _, s := range r.secrets {
		r.buf = bytes.ReplaceAll(r.buf, s, redactedMark)
	}
	n := len(r.buf) - r.partial()
	if n == 0 {
		return len(p), nil
	}
	_, err := r.w.Write(r.buf[:n])
	r.buf = append(r.buf[:0], r.buf[n:]...)
	return len(p), err
}

// partial returns the length of the longest tail of buf that is a proper
// prefix of a secret.
func (r *Redactor) partial() int {
	// secrets[0] is the longest.
	for i := max(0, len(r.buf)-len(r.secrets[0])+1); i < len(r.buf); i++ {
		for _, s := range r.secrets {
			if len(r.buf)-i < len(s) && bytes.HasPrefix(s, r.buf[i:]) {
				return len(r.buf) - i
			}
		}
	}
	return 0
}

// Flush writes out the held-back tail. Call it once nothing more will be
// written.
func (r *Redactor) Flush() error {
	if len(r.buf) == 0 {
		return nil
	}
	_, err := r.w.Write(r.buf)
	r.buf = r.buf[:0]
	return err
}
