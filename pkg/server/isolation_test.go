package server_test

import (
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// A build reaches the server's registry, and nothing else of the host's
// loopback: a RUN step asking the server's HOST:PORT for the API gets 404
// (that address leads builds to a listener that serves the registry
// alone), a RUN step connecting to another loopback port is refused, and
// the build still pulls its base from and pushes to the registry by that
// same HOST:PORT.
func TestBuildReachesOnlyTheRegistry(t *testing.T) {
	e := buildEnv(t, nil)
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, "reached the host service")
	}))
	defer other.Close()
	_, otherPort, _ := net.SplitHostPort(other.Listener.Addr().String())
	host := e.srv.RegistryHost()
	probe := func(file, url string) string {
		return fmt.Sprintf("RUN timeout 10 wget -q -O - %s >/probe/%s 2>&1; echo \" exit $?\" >>/probe/%s", url, file, file)
	}
	dockerfile := strings.Join([]string{
		"FROM " + e.base(),
		"RUN mkdir /probe",
		probe("api", "http://"+host+"/api/v1/info"),
		probe("page", "http://"+host+"/"),
		probe("traversal", "http://"+host+"/v2/%2e%2e/api/v1/info"),
		probe("registry", "http://"+host+"/v2/"),
		probe("other", "http://127.0.0.1:"+otherPort+"/"),
	}, "\n") + "\n"
	img := e.newImage(localImage("team/isolated", dockerfile))
	n := e.startBuild(img.ID)
	b := e.waitFor(img.ID, n, 2*time.Minute, ended)
	if b.Status != "succeeded" || b.Reference == nil {
		t.Fatalf("build: %+v\n%s", b, e.buildLog(img.ID, n))
	}
	ref, err := name.ParseReference(*b.Reference)
	if err != nil {
		t.Fatal(err)
	}
	pulled, err := remote.Image(ref, e.ts.RegistryAs("alice"))
	if err != nil {
		t.Fatalf("pull %s: %v", ref, err)
	}
	got := files(t, pulled)
	for _, f := range []string{"/probe/api", "/probe/page", "/probe/traversal"} {
		if !strings.Contains(got[f], "404 Not Found") || strings.Contains(got[f], "exit 0") {
			t.Errorf("%s: a RUN step asking the server's address for anything but the registry got %q, want 404", f, got[f])
		}
	}
	if r := got["/probe/registry"]; strings.Contains(r, "refused") || strings.Contains(r, "404") {
		t.Errorf("a RUN step asking the registry's /v2/ got %q, want the registry's answer", r)
	}
	if o := got["/probe/other"]; !strings.Contains(o, "refused") || strings.Contains(o, "reached") || strings.Contains(o, "exit 0") {
		t.Errorf("a RUN step connecting to host loopback port %s got %q, want connection refused", otherPort, o)
	}
}
