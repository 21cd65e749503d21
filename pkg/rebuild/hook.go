package rebuild

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"mime"
	"net/http"
	"net/url"
	"strings"
)

// ErrBadSignature is a webhook delivery that none of the hosts' schemes
// authenticates with the image's secret.
var ErrBadSignature = errors.New("the webhook delivery is not signed with this image's secret")

// NewHookSecret returns a new random webhook secret (32 bytes, hex).
func NewHookSecret() string {
	b := make([]byte, 32)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// VerifyHook checks a push webhook delivery against secret, as the hosts
// sign them: GitHub's X-Hub-Signature-256 ("sha256=" and the hex
// HMAC-SHA256 of the body), Gitea's (and Gogs') X-Gitea-Signature (the hex
// HMAC-SHA256 alone), GitLab's X-Gitlab-Token (the secret itself). Every
// comparison takes constant time. It returns the host kind that matched.
func VerifyHook(h http.Header, body []byte, secret string) (string, error) {
	if secret == "" {
		return "", ErrBadSignature
	}
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write(body)
	sum := mac.Sum(nil)
	if sig := h.Get("X-Hub-Signature-256"); sig != "" {
		hexSig, ok := strings.CutPrefix(sig, "sha256=")
		if got, err := hex.DecodeString(hexSig); ok && err == nil && hmac.Equal(got, sum) {
			return "github", nil
		}
		return "", ErrBadSignature
	}
	for _, name := range []string{"X-Gitea-Signature", "X-Gogs-Signature"} {
		if sig := h.Get(name); sig != "" {
			if got, err := hex.DecodeString(sig); err == nil && hmac.Equal(got, sum) {
				return "gitea", nil
			}
			return "", ErrBadSignature
		}
	}
	if tok := h.Get("X-Gitlab-Token"); tok != "" {
		// Compare digests, so that the length of the secret does not show.
		a, b := sha256.Sum256([]byte(tok)), sha256.Sum256([]byte(secret))
		if subtle.ConstantTimeCompare(a[:], b[:]) == 1 {
			return "gitlab", nil
		}
	}
	return "", ErrBadSignature
}

// ErrHookType is a webhook delivery of a content type no host sends.
var ErrHookType = errors.New("send the push event as application/json or application/x-www-form-urlencoded")

// HookPayload returns the JSON payload of a delivery whose body was sent as
// contentType: application/json as it is, or the form GitHub and Gitea send
// by default (application/x-www-form-urlencoded), whose "payload" field
// holds it; the signature covers the body as sent. A payload that is not
// JSON is an error; another content type is ErrHookType.
func HookPayload(contentType string, body []byte) ([]byte, error) {
	mt, _, err := mime.ParseMediaType(contentType)
	if err != nil {
		return nil, ErrHookType
	}
	switch mt {
	case "application/json":
	case "application/x-www-form-urlencoded":
		form, err := url.ParseQuery(string(body))
		if err != nil || !form.Has("payload") {
			return nil, errors.New("the form has no payload field")
		}
		body = []byte(form.Get("payload"))
	default:
		return nil, ErrHookType
	}
	if !json.Valid(body) {
		return nil, errors.New("the push event is not JSON")
	}
	return body, nil
}

// Push is what Slipway reads of a push webhook's payload; the three hosts
// share these fields.
type Push struct {
	// Ref is the pushed ref ("refs/heads/main"), After its new commit.
	Ref   string `json:"ref"`
	After string `json:"after"`
}

// ParsePush reads a push payload; a payload that is not one (a ping, say)
// gives an empty Push.
func ParsePush(body []byte) Push {
	var p Push
	json.Unmarshal(body, &p)
	return p
}

// Tracks reports whether a push of ref can move what an image's git ref
// names: a push to another branch does not; when the image follows the
// default branch or a tag, or the push names no ref, it may.
func Tracks(imageRef, pushed string) bool {
	if pushed == "" || imageRef == "" || imageRef == "HEAD" {
		return true
	}
	branch, isBranch := strings.CutPrefix(pushed, "refs/heads/")
	switch {
	case strings.HasPrefix(imageRef, "refs/"):
		return imageRef == pushed
	case isBranch:
		return branch == imageRef
	default:
		return strings.TrimPrefix(pushed, "refs/tags/") == imageRef
	}
}
