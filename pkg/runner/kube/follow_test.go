package kube

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// logServer is the part of a Kubernetes API server that Follow speaks to,
// on loopback: a running build pod, its Secret, and a log that streams in
// two parts, the second only once the test releases it. client-go talks to
// it over real HTTP, so what streams here streams from a real API server.
type logServer struct {
	*httptest.Server
	release chan struct{}
	follow  chan bool // whether each log request asked to follow
}

func newLogServer(t *testing.T) *logServer {
	s := &logServer{release: make(chan struct{}), follow: make(chan bool, 4)}
	base := "/api/v1/namespaces/" + ns
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+base+"/pods/"+buildID, func(w http.ResponseWriter, r *http.Request) {
		pod := corev1.Pod{TypeMeta: metav1.TypeMeta{Kind: "Pod", APIVersion: "v1"},
			ObjectMeta: metav1.ObjectMeta{Name: buildID, Namespace: ns, Labels: map[string]string{LabelManagedBy: ManagedBy}}}
		running(&pod.Status)
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(pod)
	})
	mux.HandleFunc("GET "+base+"/secrets/"+buildID, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(corev1.Secret{TypeMeta: metav1.TypeMeta{Kind: "Secret", APIVersion: "v1"},
			ObjectMeta: metav1.ObjectMeta{Name: buildID, Namespace: ns}, Data: map[string][]byte{GitTokenKey: []byte(gitToken)}})
	})
	mux.HandleFunc("GET "+base+"/pods/"+buildID+"/log", func(w http.ResponseWriter, r *http.Request) {
		s.follow <- r.URL.Query().Get("follow") == "true" && r.URL.Query().Get("container") == kanikoContainer
		w.Header().Set("Content-Type", "text/plain")
		io.WriteString(w, "INFO step 1 with "+gitToken+"\n")
		w.(http.Flusher).Flush()
		select {
		case <-s.release:
		case <-r.Context().Done():
			return
		}
		io.WriteString(w, "INFO step 2\n")
	})
	s.Server = httptest.NewServer(mux)
	t.Cleanup(s.Close)
	return s
}

// TestFollowStreamsWhileThePodRuns checks that a running build's log
// reaches the follower as Kaniko writes it, redacted, before the pod ends,
// and that a follower from an offset gets the rest only.
func TestFollowStreamsWhileThePodRuns(t *testing.T) {
	srv := newLogServer(t)
	client, err := kubernetes.NewForConfig(&rest.Config{Host: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	r, err := New(client, Options{KanikoImage: "k", InitImage: "i"})
	if err != nil {
		t.Fatal(err)
	}
	pr, pw := io.Pipe()
	type result struct {
		n   int64
		err error
	}
	done := make(chan result, 1)
	go func() {
		n, err := r.Follow(context.Background(), buildID, 0, pw)
		pw.Close()
		done <- result{n, err}
	}()
	lines := bufio.NewReader(pr)
	first, err := lines.ReadString('\n')
	if err != nil {
		t.Fatalf("reading the first line: %v; Follow: %+v", err, <-done)
	}
	if want := "INFO step 1 with [redacted]\n"; first != want {
		t.Errorf("first line %q, want %q", first, want)
	}
	if !<-srv.follow {
		t.Error("the log was not asked for with follow=true of the kaniko container")
	}
	// The first line arrived while the log still runs: now let it end.
	close(srv.release)
	rest, _ := io.ReadAll(lines)
	if string(rest) != "INFO step 2\n" {
		t.Errorf("rest %q", rest)
	}
	res := <-done
	if res.err != nil || res.n != int64(len(first)+len(rest)) {
		t.Errorf("Follow = %d, %v; want %d bytes", res.n, res.err, len(first)+len(rest))
	}

	var tail strings.Builder
	n, err := r.Follow(context.Background(), buildID, int64(len(first)), &tail)
	if err != nil || tail.String() != "INFO step 2\n" || n != int64(tail.Len()) {
		t.Errorf("Follow from offset %d = %d, %v, %q; want the second line", len(first), n, err, tail.String())
	}
}
