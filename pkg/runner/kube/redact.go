package kube

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
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

// credentials returns what must not appear in a build's log: each auth of
// a docker config.json in its encoded and decoded forms, its passwords and
// tokens, and the git token; longest first.
func credentials(dockerConfig []byte, gitToken string) ([][]byte, error) {
	var secrets [][]byte
	add := func(s string) {
		if len(s) >= minSecretLen && !slices.ContainsFunc(secrets, func(t []byte) bool { return string(t) == s }) {
			secrets = append(secrets, []byte(s))
		}
	}
	add(gitToken)
	if dockerConfig != nil {
		var c struct {
			Auths map[string]struct {
				Auth          string `json:"auth"`
				Password      string `json:"password"`
				IdentityToken string `json:"identitytoken"`
				RegistryToken string `json:"registrytoken"`
			} `json:"auths"`
		}
		if err := json.Unmarshal(dockerConfig, &c); err != nil {
			// The error could quote the config: leave it out.
			return nil, errors.New("DockerConfig is not a valid docker config.json")
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
	}
	slices.SortFunc(secrets, func(a, b []byte) int { return len(b) - len(a) })
	return secrets, nil
}

// redactor writes to w what is written to it with every secret (longest
// first) replaced by redactedMark. It holds back a tail that could begin a
// secret until the next Write or Flush. It is not safe for concurrent use.
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

// capTail is how much of a capped log's end capBuffer keeps, at most.
const capTail = 16 << 10

// capBuffer keeps at most max bytes of what is written to it: all of it
// when it fits, otherwise its beginning and its end (a quarter of max, at
// most capTail) around a marker line.
type capBuffer struct {
	max     int
	head    []byte
	tail    []byte
	dropped bool
}

// Write implements io.Writer; it never fails.
func (c *capBuffer) Write(p []byte) (int, error) {
	n := len(p)
	if room := c.max - c.tailMax() - len(c.head); room > 0 {
		k := min(room, len(p))
		c.head = append(c.head, p[:k]...)
		p = p[k:]
	}
	c.tail = append(c.tail, p...)
	if keep := c.tailMax(); len(c.tail) > 2*keep {
		c.tail = append(c.tail[:0], c.tail[len(c.tail)-keep:]...)
		c.dropped = true
	}
	return n, nil
}

func (c *capBuffer) tailMax() int { return min(capTail, c.max/4) }

// Bytes returns what the buffer kept.
func (c *capBuffer) Bytes() []byte {
	if !c.dropped && len(c.head)+len(c.tail) <= c.max {
		return append(c.head, c.tail...)
	}
	keep := c.tailMax()
	out := append(c.head, fmt.Sprintf("\n[slipway: the log is cut here: it is longer than %d bytes]\n", c.max)...)
	return append(out, c.tail[len(c.tail)-keep:]...)
}
