package cluster

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"testing"

	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/restmapper"
	"sigs.k8s.io/yaml"
)

// Overlay is the infra/ overlay the tests apply.
const Overlay = "infra/overlays/dev"

// knativeCRDs are the CustomResourceDefinitions infra/ needs, from the Go
// modules that infra/go.mod pins: Serving's, Eventing's, and the networking
// ones Serving's resources refer to.
var knativeCRDs = map[string][]string{
	"knative.dev/serving":    {"config/core/300-resources/*.yaml", "config/core/999-cache.yaml"},
	"knative.dev/eventing":   {"config/core/resources/*.yaml"},
	"knative.dev/networking": {"config/*.yaml"},
}

// moduleDir is where the Go module cache holds module mod at the version
// infra/go.mod selects.
func moduleDir(t *testing.T, mod string) string {
	t.Helper()
	cmd := exec.Command("go", "mod", "download", "-json", mod)
	cmd.Dir = filepath.Join(env.repo, "infra")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go mod download %s (in infra/): %v", mod, err)
	}
	var m struct{ Dir string }
	if err := json.Unmarshal(out, &m); err != nil || m.Dir == "" {
		t.Fatalf("go mod download %s: no directory in %s", mod, out)
	}
	return m.Dir
}

// crdDocuments returns the Knative CRDs, as one YAML stream, and how many.
func crdDocuments(t *testing.T) ([]byte, int) {
	t.Helper()
	var buf bytes.Buffer
	n := 0
	for mod, globs := range knativeCRDs {
		dir := moduleDir(t, mod)
		for _, g := range globs {
			files, _ := filepath.Glob(filepath.Join(dir, g))
			for _, f := range files {
				b, err := os.ReadFile(f)
				if err != nil {
					t.Fatal(err)
				}
				for _, doc := range splitYAML(b) {
					var o map[string]any
					if yaml.Unmarshal(doc, &o) == nil && o["kind"] == "CustomResourceDefinition" {
						buf.WriteString("---\n")
						buf.Write(doc)
						buf.WriteString("\n")
						n++
					}
				}
			}
		}
	}
	if n == 0 {
		t.Fatal("no Knative CRD found in the modules")
	}
	return buf.Bytes(), n
}

func splitYAML(b []byte) [][]byte {
	var docs [][]byte
	for _, d := range bytes.Split(append([]byte("\n"), b...), []byte("\n---")) {
		if len(bytes.TrimSpace(d)) > 0 {
			docs = append(docs, d)
		}
	}
	return docs
}

// rendered is the overlay as kubectl's kustomize renders it, object by
// object.
func rendered(t *testing.T, ctx context.Context) []*unstructured.Unstructured {
	t.Helper()
	out, err := env.cluster.Kubectl(ctx, nil, "kustomize", filepath.Join(env.repo, Overlay))
	if err != nil {
		t.Fatal(err)
	}
	var objs []*unstructured.Unstructured
	for _, doc := range splitYAML(out) {
		var m map[string]any
		if err := yaml.Unmarshal(doc, &m); err != nil {
			t.Fatalf("rendered overlay: %v", err)
		}
		if m != nil {
			objs = append(objs, &unstructured.Unstructured{Object: m})
		}
	}
	return objs
}

// testInfra applies the Knative CRDs, then infra/'s overlay, both with
// server-side apply and strict field validation, and checks that the server
// stored every field the manifests set, as they set it.
func testInfra(t *testing.T) []*unstructured.Unstructured {
	c := needCluster(t)
	ctx := context.Background()
	crds, n := crdDocuments(t)
	if _, err := c.Kubectl(ctx, crds, "apply", "--server-side", "--validate=strict", "--field-manager=slipway-test", "-f", "-"); err != nil {
		t.Fatalf("applying %d Knative CRDs: %v", n, err)
	}
	if _, err := c.Kubectl(ctx, nil, "wait", "--for=condition=Established", "--timeout=60s", "crd", "--all"); err != nil {
		t.Fatal(err)
	}
	objs := rendered(t, ctx)
	out, err := c.Kubectl(ctx, nil, "apply", "--server-side", "--validate=strict", "--field-manager=slipway-test", "-k", filepath.Join(env.repo, Overlay))
	if err != nil {
		t.Fatalf("applying %s: %v", Overlay, err)
	}
	t.Logf("applied %d Knative CRDs and the %d objects of %s:\n%s", n, len(objs), Overlay, out)

	dc, err := discovery.NewDiscoveryClientForConfig(c.Admin)
	if err != nil {
		t.Fatal(err)
	}
	mapper := restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(dc))
	dyn, err := dynamic.NewForConfig(c.Admin)
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range objs {
		gvk := o.GroupVersionKind()
		m, err := mapper.RESTMapping(schema.GroupKind{Group: gvk.Group, Kind: gvk.Kind}, gvk.Version)
		if err != nil {
			t.Errorf("%s %s: %v", gvk.Kind, o.GetName(), err)
			continue
		}
		var ri dynamic.ResourceInterface = dyn.Resource(m.Resource)
		if o.GetNamespace() != "" {
			ri = dyn.Resource(m.Resource).Namespace(o.GetNamespace())
		}
		stored, err := ri.Get(ctx, o.GetName(), metav1.GetOptions{})
		if err != nil {
			t.Errorf("%s %s/%s was not stored: %v", gvk.Kind, o.GetNamespace(), o.GetName(), err)
			continue
		}
		for _, d := range subset(o.Object, stored.Object, "") {
			t.Errorf("%s %s/%s: %s", gvk.Kind, o.GetNamespace(), o.GetName(), d)
		}
	}
	return objs
}

// subset lists where want (a manifest) is not part of got (what the server
// stored): a missing or different field. Quantities compare by value.
func subset(want, got any, at string) []string {
	switch w := want.(type) {
	case map[string]any:
		g, ok := got.(map[string]any)
		if !ok {
			return []string{fmt.Sprintf("%s: stored %v, want an object", at, got)}
		}
		var ds []string
		for k, v := range w {
			if k == "status" && at == "" {
				continue
			}
			gv, ok := g[k]
			if !ok {
				if v == nil || isEmpty(v) {
					continue
				}
				ds = append(ds, fmt.Sprintf("%s.%s was dropped (%v)", at, k, v))
				continue
			}
			ds = append(ds, subset(v, gv, at+"."+k)...)
		}
		return ds
	case []any:
		g, ok := got.([]any)
		if !ok || len(g) != len(w) {
			return []string{fmt.Sprintf("%s: stored %v, want %v", at, got, want)}
		}
		var ds []string
		for i := range w {
			ds = append(ds, subset(w[i], g[i], fmt.Sprintf("%s[%d]", at, i))...)
		}
		return ds
	default:
		if reflect.DeepEqual(want, got) || fmt.Sprint(want) == fmt.Sprint(got) {
			return nil
		}
		ws, ok1 := want.(string)
		gs, ok2 := got.(string)
		if ok1 && ok2 {
			if qw, err := resource.ParseQuantity(ws); err == nil {
				if qg, err := resource.ParseQuantity(gs); err == nil && qw.Cmp(qg) == 0 {
					return nil
				}
			}
		}
		return []string{fmt.Sprintf("%s: stored %v, want %v", at, got, want)}
	}
}

func isEmpty(v any) bool {
	switch x := v.(type) {
	case map[string]any:
		return len(x) == 0
	case []any:
		return len(x) == 0
	}
	return false
}
