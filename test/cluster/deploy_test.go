package cluster

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/uuid"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"

	"github.com/slipway-dev/slipway/internal/kubecluster"
	"github.com/slipway-dev/slipway/pkg/auth"
	"github.com/slipway-dev/slipway/pkg/registry/baseimage"
	"github.com/slipway-dev/slipway/pkg/secret"
)

// Images the build pods run, pushed to the cluster's image registry, and the
// builds' base image in the platform's registry.
const (
	kanikoRepo = "slipway/kaniko-executor:test"
	initRepo   = "slipway/slipway:test"
	baseRepo   = "library/busybox:test"
)

// deploy brings Slipway's cluster column up on the cluster, with infra/'s
// objects (already applied) as its configuration.
func deploy(t *testing.T, objs []*unstructured.Unstructured) *deployment {
	c := env.cluster
	ctx := context.Background()
	d := &deployment{t: t, c: c, dir: t.TempDir(), objs: objs, urls: map[string]string{}, procs: map[string]*exec.Cmd{}, logs: map[string]*bytes.Buffer{}}

	// The images.
	ca, err := os.ReadFile(c.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	hostCAs, _ := os.ReadFile("/etc/ssl/certs/ca-certificates.crt")
	bundle := append(append([]byte{}, hostCAs...), ca...)
	kaniko := c.ImageRegistry + "/" + kanikoRepo
	if err := kubecluster.PushBinary(ctx, kaniko, filepath.Join(env.bin, "executor"), "/kaniko/executor",
		map[string][]byte{"/kaniko/ssl/certs/ca-certificates.crt": bundle, "/etc/ssl/certs/ca-certificates.crt": bundle, "/kaniko/.docker/.keep": nil, "/workspace/.keep": nil},
		[]string{"SSL_CERT_DIR=/kaniko/ssl/certs", "HOME=/root", "USER=root"}); err != nil {
		t.Fatal(err)
	}
	initImage := c.ImageRegistry + "/" + initRepo
	if err := kubecluster.PushBinary(ctx, initImage, filepath.Join(env.bin, "slipway"), "/ko-app/slipway",
		map[string][]byte{"/etc/ssl/certs/ca-certificates.crt": bundle}, nil); err != nil {
		t.Fatal(err)
	}
	// The builds' base: busybox, through the plain registry into the
	// platform's (TLS) one.
	plainBase := c.ImageRegistry + "/" + baseRepo
	if _, err := baseimage.PushBusybox(ctx, plainBase); err != nil {
		t.Fatal(err)
	}
	tr, err := c.RegistryTransport()
	if err != nil {
		t.Fatal(err)
	}
	src, _ := name.ParseReference(plainBase, name.Insecure)
	img, err := remote.Image(src, remote.WithContext(ctx))
	if err != nil {
		t.Fatal(err)
	}
	dst, _ := name.ParseReference(c.Registry + "/" + baseRepo)
	if err := remote.Write(dst, img, remote.WithContext(ctx), remote.WithTransport(tr)); err != nil {
		t.Fatalf("pushing the base image to the platform's registry: %v", err)
	}

	// Keys: the token issuer's (local tokens stand for the platform's OIDC
	// tokens) and the credentials key, as the Secret would mount it.
	data := filepath.Join(d.dir, "data")
	if d.issuer, err = auth.LoadIssuer(data); err != nil {
		t.Fatal(err)
	}
	keyDir := filepath.Join(d.dir, "credentials-key")
	os.MkdirAll(keyDir, 0o700)
	key := make([]byte, 32)
	rand.Read(key)
	if err := os.WriteFile(filepath.Join(keyDir, secret.KeyFile), key, 0o600); err != nil {
		t.Fatal(err)
	}

	// The store.
	fsHost := startFirestore(t, d.dir)

	cm := d.object("ConfigMap", "slipway-config")
	d.config, _, _ = unstructured.NestedStringMap(cm.Object, "data")
	d.env = map[string]string{
		// What a deployment sets per environment, here.
		"SLIPWAY_FIRESTORE_PROJECT": "slipway-cluster-test",
		"FIRESTORE_EMULATOR_HOST":   fsHost,
		"SLIPWAY_REGISTRY":          c.Registry,
		// The roles trust the platform registry's CA, as a deployment's
		// pods do (its base-image lookups and pushes go there).
		"SSL_CERT_FILE":               c.CAFile,
		"SLIPWAY_KANIKO_IMAGE":        kaniko,
		"SLIPWAY_INIT_IMAGE":          initImage,
		"SLIPWAY_CREDENTIALS_KEY_DIR": keyDir,
		"SLIPWAY_DATA":                data,
		// No OIDC issuer runs here: local tokens instead.
		"SLIPWAY_OIDC_ISSUER": "",
		"SLIPWAY_LOG_LEVEL":   "debug",
	}
	platform, err := d.issuer.Issue("platform", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	d.router = newRouter(d, platform)
	d.stopped = append(d.stopped, func() { d.router.srv.Close() })
	d.watchPods()
	env.onInterrupt = append(env.onInterrupt, d.stop)
	for _, r := range roleNames {
		d.startRole("slipway-"+r, nil)
	}
	return d
}

// startFirestore starts Google's Firestore emulator (which honours
// transactions and collection-group queries, as the store needs), or,
// when it is not installed, the npm one, and returns its host.
func startFirestore(t *testing.T, dir string) string {
	for _, kind := range []string{"official", "npm"} {
		pidfile := filepath.Join(dir, "firestore-"+kind+".pid")
		cmd := exec.Command(filepath.Join(env.repo, ".ci/firestore-emulator/start.sh"), kind)
		cmd.Env = append(os.Environ(), "FIRESTORE_EMULATOR_PIDFILE="+pidfile, "FIRESTORE_EMULATOR_LOG="+filepath.Join(dir, "firestore-"+kind+".log"))
		cmd.Stderr = os.Stderr
		out, err := cmd.Output()
		if ee, ok := err.(*exec.ExitError); ok && ee.ExitCode() == 3 {
			t.Logf("the %s Firestore emulator is not installed", kind)
			continue
		}
		if err != nil {
			t.Fatalf("starting the %s Firestore emulator: %v", kind, err)
		}
		stop := func() {
			if b, err := os.ReadFile(pidfile); err == nil {
				var pid int
				fmt.Sscan(string(b), &pid)
				syscall.Kill(-pid, syscall.SIGKILL)
			}
		}
		t.Cleanup(stop)
		env.onInterrupt = append(env.onInterrupt, stop)
		host := strings.TrimSpace(string(out))
		t.Logf("the store: the %s Firestore emulator at %s", kind, host)
		if kind == "npm" {
			t.Log("the npm emulator honours no transactions: the store's behaviour under concurrency is not tested here")
		}
		return host
	}
	t.Fatal("no Firestore emulator could start")
	return ""
}

// watchPods stands in for the ApiServerSource: with its ServiceAccount's
// token it lists and watches the pods it selects, in the namespaces it
// selects, and sends each add, update and delete to the Broker as a
// dev.knative.apiserver.resource.* event whose data is the pod (mode
// Resource).
func (d *deployment) watchPods() {
	t := d.t
	src := d.object("ApiServerSource", "slipway-build-pods")
	sa, _, _ := unstructured.NestedString(src.Object, "spec", "serviceAccountName")
	mode, _, _ := unstructured.NestedString(src.Object, "spec", "mode")
	if mode != "Resource" {
		t.Fatalf("ApiServerSource mode %q: the reporter decodes pods (mode Resource)", mode)
	}
	nsSel, _, _ := unstructured.NestedStringMap(src.Object, "spec", "namespaceSelector", "matchLabels")
	ns := nsSel["kubernetes.io/metadata.name"]
	resources, _, _ := unstructured.NestedSlice(src.Object, "spec", "resources")
	if ns == "" || len(resources) != 1 {
		t.Fatalf("ApiServerSource: want one namespace by name and one resource, have %v and %v", nsSel, resources)
	}
	sel, _, _ := unstructured.NestedStringMap(resources[0].(map[string]any), "selector", "matchLabels")
	var parts []string
	for k, v := range sel {
		parts = append(parts, k+"="+v)
	}
	_, token := d.saDir(src.GetNamespace(), sa)
	client, err := kubernetes.NewForConfig(&rest.Config{Host: d.c.Server, BearerToken: token, TLSClientConfig: rest.TLSClientConfig{CAFile: d.c.CAFile}})
	if err != nil {
		t.Fatal(err)
	}
	f := informers.NewSharedInformerFactoryWithOptions(client, 0, informers.WithNamespace(ns),
		informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.LabelSelector = strings.Join(parts, ",") }))
	inf := f.Core().V1().Pods().Informer()
	send := func(verb string, obj any) {
		pod, ok := obj.(*corev1.Pod)
		if !ok {
			if tomb, ok := obj.(cache.DeletedFinalStateUnknown); ok {
				pod, _ = tomb.Obj.(*corev1.Pod)
			}
		}
		if pod == nil {
			return
		}
		p := pod.DeepCopy()
		p.APIVersion, p.Kind = "v1", "Pod"
		e := cloudevents.NewEvent()
		e.SetID(uuid.NewString())
		e.SetType("dev.knative.apiserver.resource." + verb)
		e.SetSource(d.c.Server)
		e.SetSubject("/apis/v1/namespaces/" + p.Namespace + "/pods/" + p.Name)
		body, _ := json.Marshal(p)
		e.SetData(cloudevents.ApplicationJSON, json.RawMessage(body))
		d.router.send(e)
	}
	inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(o any) { send("add", o) },
		UpdateFunc: func(_, o any) { send("update", o) },
		DeleteFunc: func(o any) { send("delete", o) },
	})
	stop := make(chan struct{})
	f.Start(stop)
	d.stopped = append(d.stopped, func() { close(stop) })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if !cache.WaitForCacheSync(ctx.Done(), inf.HasSynced) {
		t.Fatal("the pod watcher could not list pods with the ServiceAccount's token")
	}
}
