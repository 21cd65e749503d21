package infra

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"go/parser"
	"go/token"
	"maps"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/mod/modfile"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	eventingconfig "knative.dev/eventing/pkg/apis/config"
	eventingv1 "knative.dev/eventing/pkg/apis/eventing/v1"
	"knative.dev/eventing/pkg/apis/feature"
	"knative.dev/eventing/pkg/apis/sources"
	sourcesv1 "knative.dev/eventing/pkg/apis/sources/v1"
	"knative.dev/pkg/apis"
	duckv1 "knative.dev/pkg/apis/duck/v1"
	servingconfig "knative.dev/serving/pkg/apis/config"
	servingv1 "knative.dev/serving/pkg/apis/serving/v1"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/api/pkg/util"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"
)

const (
	appNamespace   = "slipway"
	buildNamespace = "slipway-builds"
	configMapName  = "slipway-config"
	imageName      = "slipway"
	eventsPath     = "/events"
	servicePrefix  = "slipway-"
	// funcSpecVersion is the func.yaml schema Slipway is written against:
	// the last one with scale under deploy.options, which every func CLI
	// since 0.36.0 reads as is and newer ones migrate on load.
	funcSpecVersion = "0.36.0"
	// skaffoldAPIVersion is Skaffold's newest config version (Skaffold 2.19).
	skaffoldAPIVersion = "skaffold/v4beta14"
)

// renders are the kustomizations deployed to a cluster, relative to infra/.
var renders = []string{"base", "overlays/dev"}

// consumes lists, per role, the event types it receives through Triggers.
var consumes = map[string][]string{
	"api":        nil,
	"receiver":   {"platform.workspace.created", "platform.workspace.updated", "platform.workspace.deleted", "platform.image.rebuild.requested"},
	"dispatcher": {"dev.slipway.build.queued", "dev.slipway.build.cancelled"},
	"reporter":   {sources.ApiServerSourceAddEventType, sources.ApiServerSourceUpdateEventType, sources.ApiServerSourceDeleteEventType},
	// The reconciler also starts the rebuild a build's end lets through.
	"reconciler": {sourcesv1.PingSourceEventType, "dev.slipway.build.succeeded", "dev.slipway.build.failed", "dev.slipway.build.cancelled"},
}

// slipwayEmits are the event types Slipway's roles publish (CONTRACT.md,
// "Events out"); platformEmits are those the platform publishes to the Broker.
var (
	slipwayEmits = []string{
		"dev.slipway.image.created", "dev.slipway.image.updated", "dev.slipway.image.deleted",
		"dev.slipway.build.queued", "dev.slipway.build.started", "dev.slipway.build.succeeded",
		"dev.slipway.build.failed", "dev.slipway.build.cancelled",
	}
	platformEmits = []string{"platform.workspace.created", "platform.workspace.updated", "platform.workspace.deleted", "platform.image.rebuild.requested"}
)

// configKeys must be set, non-empty, in slipway-config.
var configKeys = []string{
	"SLIPWAY_STORE", "SLIPWAY_FIRESTORE_PROJECT", "SLIPWAY_RUNNER", "SLIPWAY_BUILD_NAMESPACE",
	"SLIPWAY_REGISTRY", "SLIPWAY_OIDC_ISSUER", "SLIPWAY_OIDC_AUDIENCE", "SLIPWAY_KANIKO_IMAGE",
	"SLIPWAY_BUILD_TIMEOUT", "SLIPWAY_BUILD_MEMORY", "SLIPWAY_BUILD_CPU", "SLIPWAY_EVENT_PUBLISHERS",
	"SLIPWAY_INIT_IMAGE", "SLIPWAY_CREDENTIALS_KEY_DIR",
}

// privateRanges are the cluster-internal ranges build pods must not reach.
var privateRanges = []string{"10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16"}

// knativeObject is what Knative's webhooks call on every object admitted.
type knativeObject interface {
	runtime.Object
	apis.Defaultable
	apis.Validatable
}

// manifests is one rendered kustomization, every object in its Go type.
type manifests struct {
	services        []*servingv1.Service
	brokers         []*eventingv1.Broker
	triggers        []*eventingv1.Trigger
	pingSources     []*sourcesv1.PingSource
	apiSources      []*sourcesv1.ApiServerSource
	sinkBindings    []*sourcesv1.SinkBinding
	namespaces      []*corev1.Namespace
	serviceAccounts []*corev1.ServiceAccount
	configMaps      []*corev1.ConfigMap
	roles           []*rbacv1.Role
	roleBindings    []*rbacv1.RoleBinding
	networkPolicies []*networkingv1.NetworkPolicy
	// knative holds the Knative objects again, by "Kind namespace/name".
	knative map[string]knativeObject
}

// render builds the kustomization at dir (relative to infra/) with
// kustomize's Go API and decodes every object strictly into its Go type.
func render(t *testing.T, dir string) *manifests {
	t.Helper()
	resMap, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		t.Fatalf("kustomize %s: %v", dir, err)
	}
	m := &manifests{knative: map[string]knativeObject{}}
	for _, res := range resMap.Resources() {
		data, err := res.MarshalJSON()
		if err != nil {
			t.Fatalf("%s: %s: %v", dir, res.CurId(), err)
		}
		if err := m.add(res.GetApiVersion(), res.GetKind(), data); err != nil {
			t.Errorf("%s: %s %s/%s: %v", dir, res.GetKind(), res.GetNamespace(), res.GetName(), err)
		}
	}
	if t.Failed() {
		t.FailNow()
	}
	return m
}

// add decodes one object by its apiVersion and kind; a kind not deployed
// on purpose is an error.
func (m *manifests) add(apiVersion, kind string, data []byte) error {
	switch apiVersion + " " + kind {
	case "serving.knative.dev/v1 Service":
		return decodeKnative(m, kind, data, &m.services)
	case "eventing.knative.dev/v1 Broker":
		return decodeKnative(m, kind, data, &m.brokers)
	case "eventing.knative.dev/v1 Trigger":
		return decodeKnative(m, kind, data, &m.triggers)
	case "sources.knative.dev/v1 PingSource":
		return decodeKnative(m, kind, data, &m.pingSources)
	case "sources.knative.dev/v1 ApiServerSource":
		return decodeKnative(m, kind, data, &m.apiSources)
	case "sources.knative.dev/v1 SinkBinding":
		return decodeKnative(m, kind, data, &m.sinkBindings)
	case "v1 Namespace":
		return decodeInto(data, &m.namespaces)
	case "v1 ServiceAccount":
		return decodeInto(data, &m.serviceAccounts)
	case "v1 ConfigMap":
		return decodeInto(data, &m.configMaps)
	case "rbac.authorization.k8s.io/v1 Role":
		return decodeInto(data, &m.roles)
	case "rbac.authorization.k8s.io/v1 RoleBinding":
		return decodeInto(data, &m.roleBindings)
	case "networking.k8s.io/v1 NetworkPolicy":
		return decodeInto(data, &m.networkPolicies)
	}
	return fmt.Errorf("unexpected kind %s %s: decode it into its Go type in this test before deploying it", apiVersion, kind)
}

// decodeInto decodes data strictly into a new *T and appends it to list.
func decodeInto[T any](data []byte, list *[]*T) error {
	obj := new(T)
	if err := decodeStrict(data, obj); err != nil {
		return err
	}
	*list = append(*list, obj)
	return nil
}

// decodeKnative is decodeInto for Knative types, which it also records for
// defaulting and validation.
func decodeKnative[T any, P interface {
	*T
	knativeObject
	metav1.Object
}](m *manifests, kind string, data []byte, list *[]*T) error {
	if err := decodeInto(data, list); err != nil {
		return err
	}
	obj := P((*list)[len(*list)-1])
	m.knative[kind+" "+obj.GetNamespace()+"/"+obj.GetName()] = obj
	return nil
}

// decodeStrict decodes one JSON document into v; unknown fields are errors.
func decodeStrict(data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return fmt.Errorf("trailing data after the object")
	}
	return nil
}

// admissionContext is what Knative's webhooks pass on create, with the stock
// configuration of Serving and Eventing (config-defaults, config-features,
// config-autoscaler, config-br-defaults, feature flags).
func admissionContext() context.Context {
	ctx := apis.WithinCreate(context.Background())
	ctx = servingconfig.ToContext(ctx, servingconfig.FromContextOrDefaults(ctx))
	ctx = eventingconfig.ToContext(ctx, eventingconfig.FromContextOrDefaults(ctx))
	return feature.ToContext(ctx, feature.FromContextOrDefaults(ctx))
}

func TestManifests(t *testing.T) {
	for _, dir := range renders {
		t.Run(dir, func(t *testing.T) {
			m := render(t, dir)
			t.Run("knative admission", m.checkAdmission)
			t.Run("namespaces", m.checkNamespaces)
			t.Run("config", m.checkConfig)
			t.Run("roles", m.checkRoles)
			t.Run("triggers", m.checkTriggers)
			t.Run("sources", m.checkSources)
			t.Run("sink binding", m.checkSinkBinding)
			t.Run("rbac", m.checkRBAC)
			t.Run("build network", m.checkBuildNetwork)
		})
	}
}

// checkAdmission runs Knative's own defaulting and validation on every
// Knative object, as the webhooks would when it is applied.
func (m *manifests) checkAdmission(t *testing.T) {
	if len(m.knative) == 0 {
		t.Fatal("no Knative objects rendered")
	}
	ctx := admissionContext()
	for id, obj := range m.knative {
		// Defaulting changes the object; the other checks read it as written.
		obj := obj.DeepCopyObject().(knativeObject)
		obj.SetDefaults(ctx)
		if err := obj.Validate(ctx); err != nil {
			t.Errorf("%s: %v", id, err)
		}
	}
}

func (m *manifests) checkNamespaces(t *testing.T) {
	for _, ns := range []string{appNamespace, buildNamespace} {
		if find(m.namespaces, "", ns) == nil {
			t.Errorf("namespace %s is not rendered", ns)
		}
	}
}

func (m *manifests) checkConfig(t *testing.T) {
	cm := find(m.configMaps, appNamespace, configMapName)
	if cm == nil {
		t.Fatalf("ConfigMap %s/%s is not rendered", appNamespace, configMapName)
	}
	for _, key := range configKeys {
		if cm.Data[key] == "" {
			t.Errorf("%s: %s is missing or empty", configMapName, key)
		}
	}
	want := map[string]string{
		"SLIPWAY_STORE":           "firestore",
		"SLIPWAY_RUNNER":          "kubernetes",
		"SLIPWAY_BUILD_NAMESPACE": buildNamespace,
	}
	for key, value := range want {
		if cm.Data[key] != value {
			t.Errorf("%s: %s = %q, want %q", configMapName, key, cm.Data[key], value)
		}
	}
	for _, key := range []string{"SLIPWAY_BUILD_MEMORY", "SLIPWAY_BUILD_CPU"} {
		if _, err := resource.ParseQuantity(cm.Data[key]); err != nil {
			t.Errorf("%s: %s: %v", configMapName, key, err)
		}
	}
	if d, err := time.ParseDuration(cm.Data["SLIPWAY_BUILD_TIMEOUT"]); err != nil || d <= 0 {
		t.Errorf("%s: SLIPWAY_BUILD_TIMEOUT = %q is not a positive duration", configMapName, cm.Data["SLIPWAY_BUILD_TIMEOUT"])
	}
}

// checkRoles checks that each role has its Service and ServiceAccount, runs
// as `slipway serve --role ROLE`, scales to zero, and receives exactly the
// event types it consumes; and that no Service is outside the roles.
func (m *manifests) checkRoles(t *testing.T) {
	for _, svc := range m.services {
		if _, ok := consumes[strings.TrimPrefix(svc.Name, servicePrefix)]; !ok || !strings.HasPrefix(svc.Name, servicePrefix) {
			t.Errorf("Service %s/%s belongs to no role", svc.Namespace, svc.Name)
		}
	}
	for role, types := range consumes {
		name := servicePrefix + role
		svc := find(m.services, appNamespace, name)
		if svc == nil {
			t.Errorf("role %s: Service %s/%s is not rendered", role, appNamespace, name)
			continue
		}
		checkService(t, role, svc)
		if sa := svc.Spec.Template.Spec.ServiceAccountName; sa != name {
			t.Errorf("role %s: serviceAccountName = %q, want %q", role, sa, name)
		}
		if find(m.serviceAccounts, appNamespace, name) == nil {
			t.Errorf("role %s: ServiceAccount %s/%s is not rendered", role, appNamespace, name)
		}
		var got []string
		for _, tr := range m.triggers {
			if ref := tr.Spec.Subscriber.Ref; ref != nil && ref.Kind == "Service" && ref.Name == name && tr.Spec.Filter != nil {
				got = append(got, tr.Spec.Filter.Attributes["type"])
			}
		}
		slices.Sort(got)
		want := slices.Sorted(slices.Values(types))
		if !slices.Equal(got, want) {
			t.Errorf("role %s: Triggers deliver %q, want %q", role, got, want)
		}
	}
}

// checkService checks one role's Knative Service on its own.
func checkService(t *testing.T, role string, svc *servingv1.Service) {
	t.Helper()
	tmpl := svc.Spec.Template
	if v := tmpl.Annotations["autoscaling.knative.dev/min-scale"]; v != "0" {
		t.Errorf("role %s: template annotation autoscaling.knative.dev/min-scale = %q, want \"0\"", role, v)
	}
	if n, err := strconv.Atoi(tmpl.Annotations["autoscaling.knative.dev/max-scale"]); err != nil || n < 1 {
		t.Errorf("role %s: template annotation autoscaling.knative.dev/max-scale = %q, want a count of at least 1",
			role, tmpl.Annotations["autoscaling.knative.dev/max-scale"])
	}
	visibility := svc.Labels["networking.knative.dev/visibility"]
	if role == "api" && visibility == "cluster-local" {
		t.Errorf("role api: the public API is cluster-local")
	}
	if role != "api" && visibility != "cluster-local" {
		t.Errorf("role %s: label networking.knative.dev/visibility = %q, want cluster-local", role, visibility)
	}
	if len(tmpl.Spec.Containers) != 1 {
		t.Fatalf("role %s: %d containers, want 1", role, len(tmpl.Spec.Containers))
	}
	c := tmpl.Spec.Containers[0]
	if name, _, _ := util.SplitImageName(c.Image); name != imageName {
		t.Errorf("role %s: image %q is not %q: Skaffold would not replace it", role, c.Image, imageName)
	}
	if want := []string{"serve", "--role", role}; !slices.Equal(c.Args, want) || len(c.Command) != 0 {
		t.Errorf("role %s: command %q args %q, want args %q", role, c.Command, c.Args, want)
	}
	if len(c.Ports) != 1 || c.Ports[0].ContainerPort != 8080 {
		t.Errorf("role %s: ports %v, want containerPort 8080", role, c.Ports)
	}
	if !slices.Contains(c.Env, corev1.EnvVar{Name: "SLIPWAY_ADDR", Value: ":8080"}) {
		t.Errorf("role %s: env SLIPWAY_ADDR=:8080 is missing", role)
	}
	if !slices.ContainsFunc(c.EnvFrom, func(e corev1.EnvFromSource) bool {
		return e.ConfigMapRef != nil && e.ConfigMapRef.Name == configMapName
	}) {
		t.Errorf("role %s: envFrom ConfigMap %s is missing", role, configMapName)
	}
	for _, name := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
		req, hasReq := c.Resources.Requests[name]
		lim, hasLim := c.Resources.Limits[name]
		if !hasReq || !hasLim {
			t.Errorf("role %s: %s needs both a request and a limit", role, name)
		} else if req.Cmp(lim) > 0 {
			t.Errorf("role %s: %s request %s exceeds limit %s", role, name, req.String(), lim.String())
		}
	}
}

// sourceTypes returns the event types that the sources in the render send
// to each Broker, keyed "namespace/name".
func (m *manifests) sourceTypes() map[string][]string {
	types := map[string][]string{}
	add := func(ns string, sink duckv1.Destination, t ...string) {
		if ref := sink.Ref; ref != nil && ref.Kind == "Broker" && ref.APIVersion == "eventing.knative.dev/v1" {
			key := cmp.Or(ref.Namespace, ns) + "/" + ref.Name
			types[key] = append(types[key], t...)
		}
	}
	for _, ps := range m.pingSources {
		add(ps.Namespace, ps.Spec.Sink, sourcesv1.PingSourceEventType)
	}
	for _, src := range m.apiSources {
		if src.Spec.EventMode == sourcesv1.ResourceMode {
			add(src.Namespace, src.Spec.Sink, sources.ApiServerSourceAddEventType,
				sources.ApiServerSourceUpdateEventType, sources.ApiServerSourceDeleteEventType)
		} else {
			add(src.Namespace, src.Spec.Sink, sources.ApiServerSourceAddRefEventType,
				sources.ApiServerSourceUpdateRefEventType, sources.ApiServerSourceDeleteRefEventType)
		}
	}
	return types
}

// checkTriggers checks that every Trigger filters on exactly one known type
// that something publishes to its Broker, and delivers to a rendered
// Service's /events.
func (m *manifests) checkTriggers(t *testing.T) {
	if len(m.triggers) == 0 {
		t.Fatal("no Triggers rendered")
	}
	fromSources := m.sourceTypes()
	seen := map[string]bool{}
	for _, tr := range m.triggers {
		id := tr.Namespace + "/" + tr.Name
		broker := tr.Namespace + "/" + tr.Spec.Broker
		if find(m.brokers, tr.Namespace, tr.Spec.Broker) == nil {
			t.Errorf("Trigger %s: Broker %s is not rendered", id, broker)
		}
		var filter map[string]string
		if tr.Spec.Filter != nil {
			filter = tr.Spec.Filter.Attributes
		}
		typ := filter["type"]
		if len(filter) != 1 || typ == "" {
			t.Errorf("Trigger %s: filter %v, want exactly one exact `type`", id, filter)
		}
		if len(tr.Spec.Filters) != 0 {
			t.Errorf("Trigger %s: spec.filters is set; filter on the exact type only", id)
		}
		if !slices.Contains(slipwayEmits, typ) && !slices.Contains(platformEmits, typ) &&
			!slices.Contains(fromSources[broker], typ) {
			t.Errorf("Trigger %s: type %q is emitted by neither Slipway, the platform nor a source sending to %s", id, typ, broker)
		}
		ref := tr.Spec.Subscriber.Ref
		if ref == nil || ref.APIVersion != "serving.knative.dev/v1" || ref.Kind != "Service" {
			t.Errorf("Trigger %s: subscriber %v is not a Knative Service", id, ref)
			continue
		}
		if find(m.services, cmp.Or(ref.Namespace, tr.Namespace), ref.Name) == nil {
			t.Errorf("Trigger %s: subscriber Service %s is not rendered", id, ref.Name)
		}
		if u := tr.Spec.Subscriber.URI; u == nil || u.Scheme != "" || u.Host != "" || u.Path != eventsPath {
			t.Errorf("Trigger %s: subscriber uri %v, want %s", id, u, eventsPath)
		}
		key := ref.Name + " " + typ
		if seen[key] {
			t.Errorf("Trigger %s: a second Trigger delivers %s to %s", id, typ, ref.Name)
		}
		seen[key] = true
	}
}

// checkSources checks the reconciler's clock and the reporter's pod watch:
// both publish to a rendered Broker, and the ApiServerSource watches only
// Slipway's pods in the build namespace with a service account allowed to.
func (m *manifests) checkSources(t *testing.T) {
	if len(m.pingSources) == 0 {
		t.Error("no PingSource rendered for the reconciler")
	}
	for _, ps := range m.pingSources {
		m.checkBrokerSink(t, "PingSource "+ps.Namespace+"/"+ps.Name, ps.Namespace, ps.Spec.Sink)
	}
	if len(m.apiSources) != 1 {
		t.Fatalf("%d ApiServerSources rendered, want 1 for the build pods", len(m.apiSources))
	}
	src := m.apiSources[0]
	id := "ApiServerSource " + src.Namespace + "/" + src.Name
	m.checkBrokerSink(t, id, src.Namespace, src.Spec.Sink)
	if src.Spec.EventMode != sourcesv1.ResourceMode {
		t.Errorf("%s: mode %q, want %s", id, src.Spec.EventMode, sourcesv1.ResourceMode)
	}
	want := []sourcesv1.APIVersionKindSelector{{
		APIVersion:    "v1",
		Kind:          "Pod",
		LabelSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app.kubernetes.io/managed-by": "slipway"}},
	}}
	if !reflect.DeepEqual(src.Spec.Resources, want) {
		t.Errorf("%s: resources %+v, want %+v", id, src.Spec.Resources, want)
	}
	watched := m.selectedNamespaces(t, src)
	if !slices.Equal(watched, []string{buildNamespace}) {
		t.Errorf("%s: watches namespaces %q, want [%s]", id, watched, buildNamespace)
	}
	sa := src.Spec.ServiceAccountName
	if sa == "" || find(m.serviceAccounts, src.Namespace, sa) == nil {
		t.Fatalf("%s: serviceAccountName %q is not a rendered ServiceAccount", id, sa)
	}
	// The eventing controller refuses the source unless its account may do this.
	grants := m.grants(t)
	for _, ns := range watched {
		for _, verb := range []string{"get", "list", "watch"} {
			if !allowed(grants, src.Namespace+"/"+sa, ns, "pods", verb) {
				t.Errorf("%s: ServiceAccount %s may not %s pods in %s", id, sa, verb, ns)
			}
		}
	}
}

// selectedNamespaces resolves an ApiServerSource's namespaces against the
// rendered ones, which carry Kubernetes' kubernetes.io/metadata.name label.
func (m *manifests) selectedNamespaces(t *testing.T, src *sourcesv1.ApiServerSource) []string {
	t.Helper()
	if src.Spec.NamespaceSelector == nil {
		return []string{src.Namespace}
	}
	sel, err := metav1.LabelSelectorAsSelector(src.Spec.NamespaceSelector)
	if err != nil {
		t.Fatalf("ApiServerSource %s: namespaceSelector: %v", src.Name, err)
	}
	var names []string
	for _, ns := range m.namespaces {
		set := labels.Set{"kubernetes.io/metadata.name": ns.Name}
		for k, v := range ns.Labels {
			set[k] = v
		}
		if sel.Matches(set) {
			names = append(names, ns.Name)
		}
	}
	return names
}

// checkBrokerSink checks that a source's sink is a rendered Broker.
func (m *manifests) checkBrokerSink(t *testing.T, id, ns string, sink duckv1.Destination) {
	t.Helper()
	ref := sink.Ref
	if ref == nil || ref.APIVersion != "eventing.knative.dev/v1" || ref.Kind != "Broker" || sink.URI != nil {
		t.Errorf("%s: sink %v is not a Broker", id, sink)
		return
	}
	if find(m.brokers, cmp.Or(ref.Namespace, ns), ref.Name) == nil {
		t.Errorf("%s: sink Broker %s is not rendered", id, ref.Name)
	}
}

// checkSinkBinding checks that every Slipway Service gets K_SINK pointing at
// a rendered Broker, so that every role can publish what it emits.
func (m *manifests) checkSinkBinding(t *testing.T) {
	for _, svc := range m.services {
		i := slices.IndexFunc(m.sinkBindings, func(sb *sourcesv1.SinkBinding) bool { return binds(t, sb, svc) })
		if i < 0 {
			t.Errorf("Service %s/%s is the subject of no SinkBinding: it has no K_SINK", svc.Namespace, svc.Name)
			continue
		}
		sb := m.sinkBindings[i]
		m.checkBrokerSink(t, "SinkBinding "+sb.Namespace+"/"+sb.Name, sb.Namespace, sb.Spec.Sink)
	}
}

// binds reports whether svc is a subject of sb.
func binds(t *testing.T, sb *sourcesv1.SinkBinding, svc *servingv1.Service) bool {
	t.Helper()
	subj := sb.Spec.Subject
	if subj.APIVersion != "serving.knative.dev/v1" || subj.Kind != "Service" ||
		cmp.Or(subj.Namespace, sb.Namespace) != svc.Namespace {
		return false
	}
	if subj.Selector == nil {
		return subj.Name == svc.Name
	}
	sel, err := metav1.LabelSelectorAsSelector(subj.Selector)
	if err != nil {
		t.Fatalf("SinkBinding %s: %v", sb.Name, err)
	}
	return sel.Matches(labels.Set(svc.Labels))
}

// grant is one policy rule held by one service account ("namespace/name")
// in one namespace.
type grant struct {
	account   string
	namespace string
	rule      rbacv1.PolicyRule
}

// grants resolves the RoleBindings to the rules they give; anything that is
// not a ServiceAccount bound to a rendered Role fails the test.
func (m *manifests) grants(t *testing.T) []grant {
	t.Helper()
	var out []grant
	for _, rb := range m.roleBindings {
		id := rb.Namespace + "/" + rb.Name
		if rb.RoleRef.Kind != "Role" || rb.RoleRef.APIGroup != rbacv1.GroupName {
			t.Errorf("RoleBinding %s: roleRef %s %s, want a Role", id, rb.RoleRef.APIGroup, rb.RoleRef.Kind)
			continue
		}
		role := find(m.roles, rb.Namespace, rb.RoleRef.Name)
		if role == nil {
			t.Errorf("RoleBinding %s: Role %s is not rendered in %s", id, rb.RoleRef.Name, rb.Namespace)
			continue
		}
		for _, s := range rb.Subjects {
			ns := cmp.Or(s.Namespace, rb.Namespace)
			if s.Kind != rbacv1.ServiceAccountKind || find(m.serviceAccounts, ns, s.Name) == nil {
				t.Errorf("RoleBinding %s: subject %s %s/%s is not a rendered ServiceAccount", id, s.Kind, ns, s.Name)
				continue
			}
			for _, r := range role.Rules {
				out = append(out, grant{account: ns + "/" + s.Name, namespace: rb.Namespace, rule: r})
			}
		}
	}
	return out
}

// allowed reports whether account may use verb on a core-group resource in ns.
func allowed(grants []grant, account, ns, res, verb string) bool {
	return slices.ContainsFunc(grants, func(g grant) bool {
		return g.account == account && g.namespace == ns && grantsCore(g.rule, res, verb)
	})
}

// grantsCore reports whether rule allows verb on a core-group resource.
func grantsCore(rule rbacv1.PolicyRule, res, verb string) bool {
	return slices.Contains(rule.APIGroups, "") && slices.Contains(rule.Resources, res) && slices.Contains(rule.Verbs, verb)
}

// checkRBAC checks the shape of least privilege: Roles only in the build
// namespace, no wildcards, bindings to Slipway's ServiceAccounts only.
func (m *manifests) checkRBAC(t *testing.T) {
	for _, r := range m.roles {
		if r.Namespace != buildNamespace {
			t.Errorf("Role %s/%s: Slipway's rights are in %s only", r.Namespace, r.Name, buildNamespace)
		}
		for _, rule := range r.Rules {
			if slices.Contains(rule.Verbs, "*") || slices.Contains(rule.Resources, "*") || slices.Contains(rule.APIGroups, "*") {
				t.Errorf("Role %s/%s: wildcard in rule %v", r.Namespace, r.Name, rule)
			}
		}
	}
	// Which rights each role has is derived from its code, in the main
	// module: pkg/dispatch's TestRoleRightsAreWhatTheirCodeCalls compares
	// base/rbac.yaml both ways with the Kubernetes calls each role makes.
	// Here: every binding resolves to a rendered Role and ServiceAccount,
	// and only Slipway's own accounts hold rights.
	for _, g := range m.grants(t) {
		if !strings.HasPrefix(g.account, appNamespace+"/"+servicePrefix) {
			t.Errorf("%s holds Slipway's rights in %s", g.account, g.namespace)
		}
	}
}

// checkBuildNetwork checks the fence around build pods: no ingress at all;
// egress to kube-dns on port 53 and to addresses outside the private ranges,
// and to nothing else.
func (m *manifests) checkBuildNetwork(t *testing.T) {
	var covering bool
	var dns, internet bool
	for _, np := range m.networkPolicies {
		if np.Namespace != buildNamespace {
			continue
		}
		id := np.Namespace + "/" + np.Name
		if len(np.Spec.PodSelector.MatchLabels) == 0 && len(np.Spec.PodSelector.MatchExpressions) == 0 &&
			slices.Contains(np.Spec.PolicyTypes, networkingv1.PolicyTypeIngress) &&
			slices.Contains(np.Spec.PolicyTypes, networkingv1.PolicyTypeEgress) {
			covering = true
		}
		if len(np.Spec.Ingress) != 0 {
			t.Errorf("NetworkPolicy %s allows ingress to build pods", id)
		}
		for i, rule := range np.Spec.Egress {
			if len(rule.To) == 0 {
				t.Errorf("NetworkPolicy %s: egress rule %d allows every destination", id, i)
			}
			for _, peer := range rule.To {
				switch {
				case peer.IPBlock != nil:
					if err := checkPublicBlock(peer.IPBlock); err != nil {
						t.Errorf("NetworkPolicy %s: egress rule %d: %v", id, i, err)
					}
					internet = internet || peer.IPBlock.CIDR == "0.0.0.0/0"
				case isKubeDNS(peer) && onlyDNSPorts(rule.Ports):
					dns = true
				default:
					t.Errorf("NetworkPolicy %s: egress rule %d reaches in-cluster peer %v on ports %v", id, i, peer, rule.Ports)
				}
			}
		}
	}
	if !covering {
		t.Errorf("no NetworkPolicy in %s selects every pod for both ingress and egress", buildNamespace)
	}
	if !dns {
		t.Errorf("build pods cannot reach kube-dns on port 53")
	}
	if !internet {
		t.Errorf("build pods cannot reach the internet (0.0.0.0/0 less the private ranges)")
	}
}

// checkPublicBlock fails an ipBlock that reaches into a private range without
// excepting all of it.
func checkPublicBlock(b *networkingv1.IPBlock) error {
	_, block, err := net.ParseCIDR(b.CIDR)
	if err != nil {
		return err
	}
	var except []*net.IPNet
	for _, e := range b.Except {
		_, n, err := net.ParseCIDR(e)
		if err != nil {
			return err
		}
		except = append(except, n)
	}
	for _, r := range privateRanges {
		_, private, _ := net.ParseCIDR(r)
		if !block.Contains(private.IP) && !private.Contains(block.IP) {
			continue
		}
		if !slices.ContainsFunc(except, func(e *net.IPNet) bool { return covers(e, private) }) {
			return fmt.Errorf("ipBlock %s reaches %s", b.CIDR, r)
		}
	}
	return nil
}

// covers reports whether outer contains all of inner.
func covers(outer, inner *net.IPNet) bool {
	outerOnes, outerBits := outer.Mask.Size()
	innerOnes, innerBits := inner.Mask.Size()
	return outerBits == innerBits && outerOnes <= innerOnes && outer.Contains(inner.IP)
}

// isKubeDNS reports whether peer is exactly the cluster DNS pods.
func isKubeDNS(peer networkingv1.NetworkPolicyPeer) bool {
	return peer.NamespaceSelector != nil && peer.PodSelector != nil &&
		len(peer.NamespaceSelector.MatchExpressions) == 0 && len(peer.PodSelector.MatchExpressions) == 0 &&
		maps.Equal(peer.NamespaceSelector.MatchLabels, map[string]string{"kubernetes.io/metadata.name": "kube-system"}) &&
		maps.Equal(peer.PodSelector.MatchLabels, map[string]string{"k8s-app": "kube-dns"})
}

// onlyDNSPorts reports whether ports is non-empty and all port 53.
func onlyDNSPorts(ports []networkingv1.NetworkPolicyPort) bool {
	return len(ports) > 0 && !slices.ContainsFunc(ports, func(p networkingv1.NetworkPolicyPort) bool {
		return p.Port == nil || p.Port.IntValue() != 53 || p.EndPort != nil
	})
}

// TestDevOverlay checks what the example overlay changes: the image tag and
// the deployment's settings, while keeping the image name Skaffold replaces.
func TestDevOverlay(t *testing.T) {
	base, dev := render(t, "base"), render(t, "overlays/dev")
	key := "SLIPWAY_FIRESTORE_PROJECT"
	baseCM, devCM := find(base.configMaps, appNamespace, configMapName), find(dev.configMaps, appNamespace, configMapName)
	if baseCM == nil || devCM == nil {
		t.Fatalf("ConfigMap %s is not rendered", configMapName)
	}
	if devCM.Data[key] == baseCM.Data[key] {
		t.Errorf("overlays/dev does not set %s", key)
	}
	for _, svc := range dev.services {
		name, tag, _ := util.SplitImageName(svc.Spec.Template.Spec.Containers[0].Image)
		if name != imageName || tag == "" {
			t.Errorf("overlays/dev: Service %s runs %q, want %s with a tag", svc.Name, svc.Spec.Template.Spec.Containers[0].Image, imageName)
		}
	}
}

// funcFile is the subset of Knative Functions' func.yaml (spec 0.36.0) that
// Slipway uses; a field outside it fails strict decoding and has to be added
// here on purpose.
type funcFile struct {
	SpecVersion string `json:"specVersion"`
	Name        string `json:"name"`
	Runtime     string `json:"runtime"`
	Registry    string `json:"registry,omitempty"`
	// Namespace is where `func deploy` deploys; deploy.namespace is
	// func's own record of the last deployment's, not a setting.
	Namespace string    `json:"namespace"`
	Image     string    `json:"image,omitempty"`
	Created   time.Time `json:"created"`
	Deploy    struct {
		Namespace string `json:"namespace"`
		Options   struct {
			Scale *struct {
				Min *int64 `json:"min"`
				Max *int64 `json:"max"`
			} `json:"scale"`
			Resources struct {
				Requests funcResources `json:"requests"`
				Limits   funcResources `json:"limits"`
			} `json:"resources"`
		} `json:"options"`
		HealthEndpoints struct {
			Liveness  string `json:"liveness"`
			Readiness string `json:"readiness"`
		} `json:"healthEndpoints"`
	} `json:"deploy"`
}

// funcResources is func.yaml's resource requests or limits.
type funcResources struct {
	CPU    string `json:"cpu"`
	Memory string `json:"memory"`
}

func TestFuncYAML(t *testing.T) {
	var f funcFile
	if err := yaml.UnmarshalStrict(readRepoFile(t, "func.yaml"), &f); err != nil {
		t.Fatalf("func.yaml: %v", err)
	}
	if f.SpecVersion != funcSpecVersion {
		t.Errorf("specVersion %q, want %q", f.SpecVersion, funcSpecVersion)
	}
	if !regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`).MatchString(f.Name) || f.Name != "slipway" {
		t.Errorf("name %q, want slipway", f.Name)
	}
	if f.Runtime != "go" {
		t.Errorf("runtime %q, want go", f.Runtime)
	}
	if f.Created.IsZero() {
		t.Error("created is required")
	}
	if f.Namespace != appNamespace || f.Deploy.Namespace != "" {
		t.Errorf("namespace %q, deploy.namespace %q: want namespace %s (deploy.namespace is func's record of the last deployment)", f.Namespace, f.Deploy.Namespace, appNamespace)
	}
	scale := f.Deploy.Options.Scale
	if scale == nil || scale.Min == nil || *scale.Min != 0 || scale.Max == nil || *scale.Max < 1 {
		t.Errorf("deploy.options.scale must be min 0 and max at least 1")
	}
	res := f.Deploy.Options.Resources
	for _, pair := range [][2]string{{res.Requests.CPU, res.Limits.CPU}, {res.Requests.Memory, res.Limits.Memory}} {
		req, err1 := resource.ParseQuantity(pair[0])
		lim, err2 := resource.ParseQuantity(pair[1])
		if err1 != nil || err2 != nil || req.Cmp(lim) > 0 {
			t.Errorf("deploy.options.resources: request %q and limit %q must be quantities, request <= limit", pair[0], pair[1])
		}
	}
	if h := f.Deploy.HealthEndpoints; h.Liveness != "/health/liveness" || h.Readiness != "/health/readiness" {
		t.Errorf("deploy.healthEndpoints %+v, want the contract's /health/liveness and /health/readiness", h)
	}
}

// skaffoldFile is the subset of Skaffold's config that Slipway uses.
type skaffoldFile struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Metadata   struct {
		Name string `json:"name"`
	} `json:"metadata"`
	Build struct {
		Artifacts []struct {
			Image   string `json:"image"`
			Context string `json:"context,omitempty"`
			Ko      *struct {
				Dir  string `json:"dir,omitempty"`
				Main string `json:"main"`
			} `json:"ko"`
		} `json:"artifacts"`
	} `json:"build"`
	Manifests struct {
		Kustomize struct {
			Paths []string `json:"paths"`
		} `json:"kustomize"`
	} `json:"manifests"`
	Deploy struct {
		Kubectl *struct{} `json:"kubectl"`
	} `json:"deploy"`
	ResourceSelector struct {
		Allow []struct {
			GroupKind string   `json:"groupKind"`
			Image     []string `json:"image"`
		} `json:"allow"`
	} `json:"resourceSelector"`
}

// imageSettings are the ConfigMap's settings that name images, and the
// Skaffold artifact each must be: build pods run them.
var imageSettings = map[string]string{"SLIPWAY_INIT_IMAGE": imageName, "SLIPWAY_KANIKO_IMAGE": "kaniko-executor"}

// TestSkaffoldReplacesEveryImage checks that `skaffold run` puts the images
// it builds everywhere they are used: in the Services (Skaffold rewrites
// their image fields itself) and in the ConfigMap's image settings, which
// build pods run. Those must render as the artifacts' names, so that
// Skaffold can match them, and skaffold.yaml's resourceSelector must let it
// rewrite exactly those fields of the ConfigMap. Without Skaffold, the
// init image follows the Services' image (a kustomize replacement).
func TestSkaffoldReplacesEveryImage(t *testing.T) {
	var s skaffoldFile
	if err := yaml.UnmarshalStrict(readRepoFile(t, "skaffold.yaml"), &s); err != nil {
		t.Fatalf("skaffold.yaml: %v", err)
	}
	var paths []string
	for _, a := range s.ResourceSelector.Allow {
		if a.GroupKind == "ConfigMap" {
			paths = append(paths, a.Image...)
		}
	}
	for _, p := range s.Manifests.Kustomize.Paths {
		m := render(t, strings.TrimPrefix(p, "infra/"))
		cm := find(m.configMaps, appNamespace, configMapName)
		if cm == nil {
			t.Fatalf("%s: no ConfigMap %s", p, configMapName)
		}
		for key, artifact := range imageSettings {
			name, _, _ := util.SplitImageName(cm.Data[key])
			if name != artifact {
				t.Errorf("%s: %s is %q: Skaffold replaces only its artifact %q", p, key, cm.Data[key], artifact)
			}
			if !slices.Contains(paths, ".data."+key) {
				t.Errorf("skaffold.yaml: resourceSelector does not let Skaffold rewrite ConfigMap field .data.%s", key)
			}
		}
		if svc := m.services[0]; cm.Data["SLIPWAY_INIT_IMAGE"] != svc.Spec.Template.Spec.Containers[0].Image {
			t.Errorf("%s: SLIPWAY_INIT_IMAGE %q is not the Services' image %q", p, cm.Data["SLIPWAY_INIT_IMAGE"], svc.Spec.Template.Spec.Containers[0].Image)
		}
	}
}

func TestSkaffoldYAML(t *testing.T) {
	var s skaffoldFile
	if err := yaml.UnmarshalStrict(readRepoFile(t, "skaffold.yaml"), &s); err != nil {
		t.Fatalf("skaffold.yaml: %v", err)
	}
	if s.APIVersion != skaffoldAPIVersion || s.Kind != "Config" {
		t.Errorf("apiVersion %q kind %q, want %s Config", s.APIVersion, s.Kind, skaffoldAPIVersion)
	}
	if s.Deploy.Kubectl == nil {
		t.Error("deploy.kubectl is missing: nothing applies the rendered manifests")
	}
	var images []string
	for _, a := range s.Build.Artifacts {
		images = append(images, a.Image)
		if a.Ko == nil || a.Context != "" {
			t.Errorf("artifact %s: want a ko build from the repository root", a.Image)
			continue
		}
		switch a.Image {
		case imageName:
			if a.Ko.Main != "./cmd/slipway" || a.Ko.Dir != "" {
				t.Errorf("artifact %s: main %q dir %q, want ./cmd/slipway in the root module", a.Image, a.Ko.Main, a.Ko.Dir)
			}
			checkMainPackage(t, filepath.Join(a.Ko.Dir, a.Ko.Main))
		case "kaniko-executor":
			checkToolModule(t, a.Ko.Dir, a.Ko.Main)
		}
	}
	if want := []string{"kaniko-executor", imageName}; !slices.Equal(slices.Sorted(slices.Values(images)), want) {
		t.Errorf("artifacts %q, want %q", images, want)
	}
	if len(s.Manifests.Kustomize.Paths) == 0 {
		t.Fatal("manifests.kustomize.paths is empty")
	}
	for _, p := range s.Manifests.Kustomize.Paths {
		rel, ok := strings.CutPrefix(p, "infra/")
		if !ok {
			t.Errorf("kustomize path %q is outside infra/", p)
			continue
		}
		m := render(t, rel)
		if !slices.ContainsFunc(m.services, func(svc *servingv1.Service) bool {
			name, _, _ := util.SplitImageName(svc.Spec.Template.Spec.Containers[0].Image)
			return name == imageName
		}) {
			t.Errorf("kustomize path %q: no Service runs image %q for Skaffold to replace", p, imageName)
		}
	}
}

// checkMainPackage checks that dir, relative to the repository root, holds a
// Go main package.
func checkMainPackage(t *testing.T, dir string) {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(repoRoot(t), dir, "*.go"))
	if err != nil || len(files) == 0 {
		t.Errorf("%s: no Go files (%v)", dir, err)
		return
	}
	for _, file := range files {
		if strings.HasSuffix(file, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(token.NewFileSet(), file, nil, parser.PackageClauseOnly)
		if err != nil {
			t.Errorf("%s: %v", file, err)
			return
		}
		if f.Name.Name == "main" {
			return
		}
	}
	t.Errorf("%s is not a main package", dir)
}

// checkToolModule checks that dir, relative to the repository root, is a Go
// module that requires the module providing the main package pkg.
func checkToolModule(t *testing.T, dir, pkg string) {
	t.Helper()
	path := filepath.Join(dir, "go.mod")
	data := readRepoFile(t, path)
	mod, err := modfile.Parse(path, data, nil)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	if !slices.ContainsFunc(mod.Require, func(r *modfile.Require) bool {
		return pkg == r.Mod.Path || strings.HasPrefix(pkg, r.Mod.Path+"/")
	}) {
		t.Errorf("%s requires no module providing %s", path, pkg)
	}
}

func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	return root
}

func readRepoFile(t *testing.T, name string) []byte {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(repoRoot(t), name))
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// find returns the object named ns/name in list, or nil.
func find[T any, P interface {
	*T
	metav1.Object
}](list []*T, ns, name string) *T {
	for _, obj := range list {
		if o := P(obj); o.GetNamespace() == ns && o.GetName() == name {
			return obj
		}
	}
	return nil
}
