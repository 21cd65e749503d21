package runc

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
)

// minSecretLen is the length below which a credential is not redacted: a
// shorter one would garble the log by matching ordinary text.
const minSecretLen = 6

// redactedMark replaces a credential in the log.
var redactedMark = []byte("[redacted]")

// dockerConfigSecrets returns the credentials in a docker config.json: each
// auth's encoded and decoded forms, passwords and tokens.
func dockerConfigSecrets(config []byte) ([][]byte, error) {
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
		return nil, fmt.Errorf("DockerConfig is not a valid docker config.json")
	}
	var secrets [][]byte
	add := func(s string) {
		if len(s) >= minSecretLen && !slices.ContainsFunc(secrets, func(t []byte) bool { return string(t) == s }) {
			secrets = append(secrets, []byte(s))
		}
	}
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
	// Longest first, so that a secret containing another is replaced whole.
	slices.SortFunc(secrets, func(a, b []byte) int { return len(b) - len(a) })
	return secrets, nil
}

// redactor writes to w what is written to it with every secret replaced by
// redactedMark; secrets are sorted longest first. It holds back a written tail that could begin a secret until
// the next Write or Flush. It is not safe for concurrent use.
type redactor struct {
	w       io.Writer
	secrets [][]byte
	buf     []byte
}

// Write implements io.Writer.
func (r *redactor) Write(p []byte) (int, error) {
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
func (r *redactor) partial() int {
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

// Flush writes out the held-back tail.
func (r *redactor) Flush() error {
	if len(r.buf) == 0 {
		return nil
	}
	_, err := r.w.Write(r.buf)
	r.buf = r.buf[:0]
	return err
}
