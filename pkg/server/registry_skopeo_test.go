package server_test

import (
	"encoding/json"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// skopeo runs Debian's skopeo against the server's plain-HTTP loopback
// registry with a Slipway token as the password of subject ("" for none).
func skopeo(t *testing.T, e *env, subject string, args ...string) (string, error) {
	t.Helper()
	bin, err := exec.LookPath("skopeo")
	if err != nil {
		t.Fatal("skopeo is not installed: run `make deps` (apt-get install skopeo)")
	}
	cmd := []string{"--insecure-policy", args[0], "--tls-verify=false"}
	if args[0] == "copy" {
		cmd = []string{"--insecure-policy", "copy", "--src-tls-verify=false", "--dest-tls-verify=false"}
		if subject != "" {
			cmd = append(cmd, "--src-creds", subject+":"+e.token(subject), "--dest-creds", subject+":"+e.token(subject))
		}
	} else if subject != "" {
		cmd = append(cmd, "--creds", subject+":"+e.token(subject))
	}
	out, err := exec.Command(bin, append(cmd, args[1:]...)...).CombinedOutput()
	return string(out), err
}

// TestRegistryWithSkopeo: a second real client through the token flow.
func TestRegistryWithSkopeo(t *testing.T) {
	e, refA, _ := registryEnv(t)
	host := e.srv.RegistryHost()
	out, err := skopeo(t, e, "bob", "inspect", "docker://"+refA)
	var info struct{ Digest, Name string }
	if err != nil || json.Unmarshal([]byte(out), &info) != nil || info.Digest != refA[strings.Index(refA, "@")+1:] {
		t.Fatalf("skopeo inspect as a member: %v\n%s", err, out)
	}
	for _, who := range []string{"mallory", "carol", ""} {
		if out, err := skopeo(t, e, who, "inspect", "docker://"+refA); err == nil || !strings.Contains(strings.ToLower(out), "unauthorized") {
			t.Fatalf("skopeo inspect as %q: %v\n%s", who, err, out)
		}
	}
	out, err = skopeo(t, e, "bob", "list-tags", "docker://"+host+"/team/a")
	if err != nil || !strings.Contains(out, `"latest"`) {
		t.Fatalf("skopeo list-tags as a member: %v\n%s", err, out)
	}
	// Copy a base out as anyone, and not into a workspace's repository.
	dir := filepath.Join(t.TempDir(), "busybox")
	if out, err := skopeo(t, e, "mallory", "copy", "docker://"+e.base()+":latest", "dir:"+dir); err != nil {
		t.Fatalf("skopeo copy library/busybox out: %v\n%s", err, out)
	}
	if out, err := skopeo(t, e, "alice", "copy", "dir:"+dir, "docker://"+host+"/team/a:overwritten"); err == nil || !strings.Contains(strings.ToLower(out), "unauthorized") {
		t.Fatalf("skopeo copy into team/a as its owner: %v\n%s", err, out)
	}
	if out, err := skopeo(t, e, "platform", "copy", "dir:"+dir, "docker://"+host+"/library/copied:1"); err != nil {
		t.Fatalf("skopeo copy into library/ as the publisher: %v\n%s", err, out)
	}
	if out, err := skopeo(t, e, "alice", "delete", "docker://"+refA); err == nil || !strings.Contains(strings.ToLower(out), "unauthorized") {
		t.Fatalf("skopeo delete as the owner: %v\n%s", err, out)
	}
}
