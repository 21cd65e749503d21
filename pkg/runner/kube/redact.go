package kube

import (
	"fmt"
	"strings"

	"github.com/slipway-dev/slipway/pkg/secret"
)

// credentials returns what must not appear in a build's log: the
// credentials of its docker config.json (secret.DockerConfigSecrets), its
// git token and its build secrets' values. secret.NewRedactor leaves out
// the ones too short to redact.
func credentials(dockerConfig []byte, gitToken string, buildSecrets ...[]byte) ([][]byte, error) {
	secrets, err := secret.DockerConfigSecrets(dockerConfig)
	if err != nil {
		return nil, err
	}
	if gitToken != "" {
		secrets = append(secrets, []byte(gitToken))
	}
	return append(secrets, buildSecrets...), nil
}

// secretValues returns the values of a build Secret's build secrets.
func secretValues(data map[string][]byte) [][]byte {
	var out [][]byte
	for k, v := range data {
		if strings.HasPrefix(k, BuildSecretPrefix) {
			out = append(out, v)
		}
	}
	return out
}

// capBuffer keeps at most max bytes of what is written to it: all of it
// when it fits, otherwise its first half and its last half around a marker
// line, as the local runner's log does: the executor's last lines (the
// push, the error) are always kept, however long the log.
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

func (c *capBuffer) tailMax() int { return c.max / 2 }

// Bytes returns what the buffer kept.
func (c *capBuffer) Bytes() []byte {
	if !c.dropped && len(c.head)+len(c.tail) <= c.max {
		return append(c.head, c.tail...)
	}
	keep := c.tailMax()
	out := append(c.head, fmt.Sprintf("\n[slipway: the log is cut here: it is longer than %d bytes]\n", c.max)...)
	return append(out, c.tail[len(c.tail)-keep:]...)
}
