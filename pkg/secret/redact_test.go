package secret

import (
	"bytes"
	"encoding/base64"
	"strings"
	"testing"
)

func TestRedactorAcrossWrites(t *testing.T) {
	const secret = "hunter2-password"
	input := "login " + secret + " ok; again " + secret[:7] + " is not it; " + secret + "\nend hunter"
	want := "login [redacted] ok; again " + secret[:7] + " is not it; [redacted]\nend hunter"
	for _, chunk := range []int{1, 2, 3, 5, 7, len(input)} {
		var out bytes.Buffer
		r := NewRedactor(&out, []byte(secret))
		for s := input; s != ""; {
			n := min(chunk, len(s))
			if _, err := r.Write([]byte(s[:n])); err != nil {
				t.Fatal(err)
			}
			s = s[n:]
		}
		if err := r.Flush(); err != nil {
			t.Fatal(err)
		}
		if out.String() != want {
			t.Errorf("chunks of %d: got %q, want %q", chunk, out.String(), want)
		}
	}
}

func TestRedactorHoldsBackOnlyPrefixes(t *testing.T) {
	var out bytes.Buffer
	r := NewRedactor(&out, []byte("topsecret"))
	r.Write([]byte("line one\nabc top"))
	if got := out.String(); got != "line one\nabc " {
		t.Errorf("written before the rest: %q", got)
	}
	r.Write([]byte("ping\n"))
	if got := out.String(); got != "line one\nabc topping\n" {
		t.Errorf("written after the rest: %q", got)
	}
}

func TestNewRedactorSecrets(t *testing.T) {
	var out bytes.Buffer
	// A secret containing another is replaced whole, whatever the order
	// given; one too short to redact, an empty one and a repeated one are
	// harmless.
	r := NewRedactor(&out, []byte("abcdef"), nil, []byte("tok"), []byte("abcdefghij"), []byte("abcdef"))
	r.Write([]byte("x abcdefghij y abcdef z tok"))
	if err := r.Flush(); err != nil {
		t.Fatal(err)
	}
	if want := "x [redacted] y [redacted] z tok"; out.String() != want {
		t.Errorf("got %q, want %q", out.String(), want)
	}

	out.Reset()
	r = NewRedactor(&out)
	r.Write([]byte("no secrets"))
	if out.String() != "no secrets" {
		t.Errorf("without secrets: %q written at once, want all of it", out.String())
	}
}

func TestDockerConfigSecrets(t *testing.T) {
	auth := base64.StdEncoding.EncodeToString([]byte("robot:pa55word-x"))
	config := `{"auths":{"r.example":{"auth":"` + auth + `"},"q.example":{"username":"u","password":"another-pass","identitytoken":"tok"}}}`
	secrets, err := DockerConfigSecrets([]byte(config))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, s := range secrets {
		got = append(got, string(s))
	}
	// "tok" is too short to redact; longest first.
	want := []string{auth, "robot:pa55word-x", "another-pass", "pa55word-x"}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("secrets = %q, want %q", got, want)
	}

	if s, err := DockerConfigSecrets(nil); s != nil || err != nil {
		t.Errorf("nil config: %q, %v", s, err)
	}
	_, err = DockerConfigSecrets([]byte(`{"auths": "` + auth))
	if err == nil || strings.Contains(err.Error(), auth) {
		t.Errorf("invalid config: err = %v, want one that does not quote it", err)
	}
}
