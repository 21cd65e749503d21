package cluster

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2"
	"github.com/google/uuid"
	authv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/slipway-dev/slipway/internal/kubecluster"
	"github.com/slipway-dev/slipway/pkg/auth"
)

// The roles, as infra/ names their Knative Services and ServiceAccounts.
var roleNames = []string{"api", "receiver", "dispatcher", "reporter", "reconciler"}

// deployment is Slipway's cluster column running against the cluster: the
// five roles as processes, the Firestore emulator, the Broker's stand-in
// (a router that follows infra/'s Triggers) and the ApiServerSource's (a
// pod watcher with its ServiceAccount's token).
type deployment struct {
	t       *testing.T
	c       *kubecluster.Cluster
	dir     string
	objs    []*unstructured.Unstructured
	issuer  *auth.Issuer
	config  map[string]string // the ConfigMap's data, as the Services load it
	env     map[string]string // what the harness sets instead (see roleEnv)
	router  *router
	mu      sync.Mutex
	urls    map[string]string // Knative Service name -> base URL of its process
	procs   map[string]*exec.Cmd
	logs    map[string]*bytes.Buffer
	stopped []func()
}

// object finds a rendered object by kind and name.
func (d *deployment) object(kind, name string) *unstructured.Unstructured {
	for _, o := range d.objs {
		if o.GetKind() == kind && o.GetName() == name {
			return o
		}
	}
	d.t.Fatalf("infra/ has no %s %s", kind, name)
	return nil
}

// saDir writes what a pod of ServiceAccount sa would find at
// /var/run/secrets/kubernetes.io/serviceaccount: a bound token from the
// TokenRequest API, the cluster's CA and the namespace.
func (d *deployment) saDir(ns, sa string) (dir, token string) {
	ctx := context.Background()
	exp := int64(3600)
	tr, err := d.c.Client.CoreV1().ServiceAccounts(ns).CreateToken(ctx, sa,
		&authv1.TokenRequest{Spec: authv1.TokenRequestSpec{ExpirationSeconds: &exp}}, metav1.CreateOptions{})
	if err != nil {
		d.t.Fatalf("a token for ServiceAccount %s/%s: %v", ns, sa, err)
	}
	dir = filepath.Join(d.dir, "sa", sa)
	ca, err := os.ReadFile(d.c.CAFile)
	if err != nil {
		d.t.Fatal(err)
	}
	os.MkdirAll(dir, 0o755)
	for name, body := range map[string][]byte{"token": []byte(tr.Status.Token), "ca.crt": ca, "namespace": []byte(ns)} {
		if err := os.WriteFile(filepath.Join(dir, name), body, 0o644); err != nil {
			d.t.Fatal(err)
		}
	}
	return dir, tr.Status.Token
}

// startRole runs `slipway ARGS` as the role's Knative Service declares it,
// with the Service's ServiceAccount token and CA mounted where
// rest.InClusterConfig reads them (in a mount namespace of its own),
// KUBERNETES_SERVICE_HOST/PORT pointing at the API server, the ConfigMap's
// settings with the harness's overrides, and K_SINK at the router. It
// returns once the role answers its readiness probe.
func (d *deployment) startRole(service string, override map[string]string) {
	t := d.t
	svc := d.object("Service", service)
	containers, _, _ := unstructured.NestedSlice(svc.Object, "spec", "template", "spec", "containers")
	if len(containers) != 1 {
		t.Fatalf("Service %s: want one container, have %d", service, len(containers))
	}
	ctr := containers[0].(map[string]any)
	var args []string
	for _, a := range ctr["args"].([]any) {
		args = append(args, a.(string))
	}
	sa, _, _ := unstructured.NestedString(svc.Object, "spec", "template", "spec", "serviceAccountName")
	saDir, _ := d.saDir(svc.GetNamespace(), sa)

	port := freePort(t)
	vars := map[string]string{}
	for k, v := range d.config {
		vars[k] = v
	}
	if envs, ok := ctr["env"].([]any); ok {
		for _, e := range envs {
			m := e.(map[string]any)
			if v, ok := m["value"].(string); ok {
				vars[m["name"].(string)] = v
			}
		}
	}
	for k, v := range d.env {
		vars[k] = v
	}
	for k, v := range override {
		vars[k] = v
	}
	if vars["SLIPWAY_OIDC_ISSUER"] == "" {
		delete(vars, "SLIPWAY_OIDC_ISSUER")
		delete(vars, "SLIPWAY_OIDC_AUDIENCE")
	}
	host, apiPort, _ := net.SplitHostPort(strings.TrimPrefix(d.c.Server, "https://"))
	vars["SLIPWAY_ADDR"] = fmt.Sprintf("127.0.0.1:%d", port)
	vars["KUBERNETES_SERVICE_HOST"], vars["KUBERNETES_SERVICE_PORT"] = host, apiPort
	vars["K_SINK"] = d.router.url
	environ := []string{"PATH=" + os.Getenv("PATH"), "HOME=" + d.dir}
	for k, v := range vars {
		environ = append(environ, k+"="+v)
	}
	// A private mount namespace: a tmpfs on /run, the ServiceAccount's
	// files bound at the in-cluster path, then slipway.
	script := `set -e; mount -t tmpfs tmpfs /run; mkdir -p /run/secrets/kubernetes.io/serviceaccount;
mount --bind "$0" /run/secrets/kubernetes.io/serviceaccount; exec "$@"`
	cmd := exec.Command("unshare", append([]string{"--mount", "--propagation", "private", "sh", "-c", script, saDir,
		filepath.Join(env.bin, "slipway")}, args...)...)
	cmd.Env = environ
	logb := &bytes.Buffer{}
	logf, err := os.Create(filepath.Join(d.dir, service+".log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout = io.MultiWriter(logf, &lockedWriter{w: logb, mu: &d.mu})
	cmd.Stderr = cmd.Stdout
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); logf.Close(); close(exited) }()
	url := fmt.Sprintf("http://127.0.0.1:%d", port)
	d.mu.Lock()
	if old := d.procs[service]; old != nil {
		syscall.Kill(-old.Process.Pid, syscall.SIGKILL)
	}
	d.procs[service], d.urls[service], d.logs[service] = cmd, url, logb
	d.mu.Unlock()
	d.stopped = append(d.stopped, func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		select {
		case <-exited:
			t.Fatalf("%s exited at start:\n%s", service, d.roleLog(service))
		default:
		}
		resp, err := http.Get(url + "/health/readiness")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s is not ready after 30s:\n%s", service, d.roleLog(service))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (d *deployment) roleLog(service string) string {
	d.mu.Lock()
	defer d.mu.Unlock()
	if b := d.logs[service]; b != nil {
		return b.String()
	}
	return ""
}

type lockedWriter struct {
	w  io.Writer
	mu *sync.Mutex
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func (d *deployment) serviceURL(service string) string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.urls[service]
}

func (d *deployment) stop() {
	for i := len(d.stopped) - 1; i >= 0; i-- {
		d.stopped[i]()
	}
}

func freePort(t *testing.T) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// router stands in for the Broker: it accepts CloudEvents at url and
// delivers each to the subscriber of every Trigger whose filter matches it,
// as infra/ declares them, with the event publisher's token, retrying on
// failure as a Broker's delivery does. It records every delivery.
type router struct {
	d        *deployment
	url      string
	token    string
	triggers []trigger
	mu       sync.Mutex
	log      []delivery
	sent     []sent
	drops    map[string]int
	srv      *http.Server
}

// sent is an event delivered to a Trigger's subscriber, kept for resend.
type sent struct {
	tr trigger
	e  cloudevents.Event
}

type trigger struct {
	name    string
	filter  map[string]string
	service string
	path    string
}

// delivery is one event delivered to one Trigger's subscriber.
type delivery struct {
	Trigger, Type, Subject, ID string
	Status                     int
}

func newRouter(d *deployment, token string) *router {
	r := &router{d: d, token: token}
	for _, o := range d.objs {
		if o.GetKind() != "Trigger" {
			continue
		}
		tr := trigger{name: o.GetName(), filter: map[string]string{}}
		attrs, _, _ := unstructured.NestedStringMap(o.Object, "spec", "filter", "attributes")
		for k, v := range attrs {
			tr.filter[k] = v
		}
		tr.service, _, _ = unstructured.NestedString(o.Object, "spec", "subscriber", "ref", "name")
		tr.path, _, _ = unstructured.NestedString(o.Object, "spec", "subscriber", "uri")
		if broker, _, _ := unstructured.NestedString(o.Object, "spec", "broker"); broker != "default" {
			d.t.Fatalf("Trigger %s: broker %q, want default", tr.name, broker)
		}
		r.triggers = append(r.triggers, tr)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		d.t.Fatal(err)
	}
	r.url = "http://" + ln.Addr().String()
	r.srv = &http.Server{Handler: r, ReadHeaderTimeout: 10 * time.Second}
	go r.srv.Serve(ln)
	return r
}

func (r *router) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	e, err := cloudevents.NewEventFromHTTPRequest(req)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	r.send(*e)
	w.WriteHeader(http.StatusAccepted)
}

// matches is a Trigger's filter: every attribute equal (extensions too).
func (tr trigger) matches(e cloudevents.Event) bool {
	for k, v := range tr.filter {
		var have string
		switch k {
		case "type":
			have = e.Type()
		case "source":
			have = e.Source()
		case "subject":
			have = e.Subject()
		default:
			x, ok := e.Extensions()[k]
			if !ok {
				return false
			}
			have = fmt.Sprint(x)
		}
		if have != v {
			return false
		}
	}
	return true
}

// send routes e asynchronously, as the Broker does.
func (r *router) send(e cloudevents.Event) {
	r.mu.Lock()
	if r.drops[e.Type()] > 0 {
		r.drops[e.Type()]--
		r.mu.Unlock()
		return
	}
	r.mu.Unlock()
	for _, tr := range r.triggers {
		if tr.matches(e) {
			go r.deliver(tr, e)
		}
	}
}

func (r *router) deliver(tr trigger, e cloudevents.Event) {
	body, _ := json.Marshal(e)
	status := 0
	for attempt := range 10 {
		base := r.d.serviceURL(tr.service)
		if base == "" {
			break
		}
		req, _ := http.NewRequest(http.MethodPost, base+tr.path, bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/cloudevents+json")
		req.Header.Set("Authorization", "Bearer "+r.token)
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			status = resp.StatusCode
			if status < 300 {
				break
			}
		}
		time.Sleep(time.Duration(100<<attempt) * time.Millisecond)
	}
	r.mu.Lock()
	r.log = append(r.log, delivery{tr.name, e.Type(), e.Subject(), e.ID(), status})
	r.sent = append(r.sent, sent{tr, e})
	r.mu.Unlock()
}

// drop makes the router lose the next n events of type typ, as a crash
// between a change and its event would.
func (r *router) drop(typ string, n int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.drops == nil {
		r.drops = map[string]int{}
	}
	r.drops[typ] += n
}

// resendLast delivers the last delivered event of type typ again, as
// at-least-once delivery may; false when there was none.
func (r *router) resendLast(typ string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for i := len(r.log) - 1; i >= 0; i-- {
		if r.log[i].Type == typ {
			go r.deliver(r.sent[i].tr, r.sent[i].e)
			return true
		}
	}
	return false
}

// resend delivers again, as at-least-once delivery may, every event
// already delivered whose delivery matches, and returns how many.
func (r *router) resend(match func(delivery) bool) int {
	r.mu.Lock()
	var again []sent
	for i, dl := range r.log {
		if match(dl) {
			again = append(again, r.sent[i])
		}
	}
	r.mu.Unlock()
	for _, s := range again {
		go r.deliver(s.tr, s.e)
	}
	return len(again)
}

// deliveries returns what was delivered so far.
func (r *router) deliveries() []delivery {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]delivery(nil), r.log...)
}

// ping sends the PingSource's event to the Broker, as its schedule would.
func (d *deployment) ping() {
	src := d.object("PingSource", "slipway-reconcile")
	data, _, _ := unstructured.NestedString(src.Object, "spec", "data")
	e := cloudevents.NewEvent()
	e.SetID(uuid.NewString())
	e.SetType("dev.knative.sources.ping")
	e.SetSource("/apis/v1/namespaces/slipway/pingsources/slipway-reconcile")
	e.SetData(cloudevents.ApplicationJSON, json.RawMessage(data))
	d.router.send(e)
}

// publish sends a platform event to the Broker.
func (d *deployment) publish(typ string, data any) {
	e := cloudevents.NewEvent()
	e.SetID(uuid.NewString())
	e.SetType(typ)
	e.SetSource("/platform/test")
	e.SetTime(time.Now())
	e.SetData(cloudevents.ApplicationJSON, data)
	d.router.send(e)
}
