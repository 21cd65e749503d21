package runc

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
	for _, chunk := range []int{1, 2, 5, 7, len(input)} {
		var out bytes.Buffer
		r := &redactor{w: &out, secrets: [][]byte{[]byte(secret)}}
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
	r := &redactor{w: &out, secrets: [][]byte{[]byte("topsecret")}}
	r.Write([]byte("line one\nabc top"))
	if got := out.String(); got != "line one\nabc " {
		t.Errorf("written before the rest: %q", got)
	}
	r.Write([]byte("ping\n"))
	if got := out.String(); got != "line one\nabc topping\n" {
		t.Errorf("written after the rest: %q", got)
	}
}

func TestDockerConfigSecrets(t *testing.T) {
	auth := base64.StdEncoding.EncodeToString([]byte("robot:pa55word-x"))
	config := `{"auths":{"r.example":{"auth":"` + auth + `"},"q.example":{"username":"u","password":"another-pass","identitytoken":"tok"}}}`
	secrets, err := dockerConfigSecrets([]byte(config))
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

	_, err = dockerConfigSecrets([]byte(`{"auths": "` + auth))
	if err == nil || strings.Contains(err.Error(), auth) {
		t.Errorf("invalid config: err = %v, want one that does not quote it", err)
	}
}
