package kube

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/slipway-dev/slipway/pkg/build"
	"github.com/slipway-dev/slipway/pkg/image"
	"github.com/slipway-dev/slipway/pkg/secret"
)

const (
	ns          = DefaultNamespace
	buildID     = "img1-7"
	registryPwd = "s3cr3t-password"
	gitToken    = "ghp_tok3n-value"
	digest      = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	dockerfile  = "FROM busybox\nRUN echo hi\n"
)

var registryAuth = base64.StdEncoding.EncodeToString([]byte("robot:" + registryPwd))

// harness is a Runner on a fake clientset that, like the API server,
// gives created pods a UID, and that announces each watch of pods on
// watching once it is registered.
type harness struct {
	cs       *fake.Clientset
	r        *Runner
	watching chan struct{}
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	cs := fake.NewClientset()
	cs.PrependReactor("create", "pods", func(a k8stesting.Action) (bool, runtime.Object, error) {
		p := a.(k8stesting.CreateAction).GetObject().(*corev1.Pod)
		p.UID = types.UID("uid-" + p.Name)
		if p.CreationTimestamp.IsZero() {
			p.CreationTimestamp = metav1.Now()
		}
		return false, nil, nil
	})
	watching := make(chan struct{}, 16)
	cs.PrependWatchReactor("pods", func(a k8stesting.Action) (bool, watch.Interface, error) {
		w, err := cs.Tracker().Watch(a.GetResource(), a.GetNamespace())
		watching <- struct{}{}
		return true, w, err
	})
	r, err := New(cs, Options{KanikoImage: "kaniko:test", InitImage: "slipway:test"})
	if err != nil {
		t.Fatal(err)
	}
	return &harness{cs: cs, r: r, watching: watching}
}

func testSpec() build.Spec {
	return build.Spec{
		ID:                 buildID,
		Dockerfile:         "Dockerfile",
		Destinations:       []string{"registry.internal:5000/app:latest", "ghcr.io/acme/app:1"},
		DockerConfig:       []byte(`{"auths":{"ghcr.io":{"auth":"` + registryAuth + `"}}}`),
		InsecureRegistries: []string{"registry.internal:5000"},
		CacheRepo:          "registry.internal:5000/slipway-cache/app",
		Limits:             build.Limits{MemoryBytes: 2 << 30, CPUs: 1.5, Timeout: 90*time.Second + 500*time.Millisecond},
	}
}

func gitSource() ContextSource {
	return ContextSource{
		Git:      &image.Git{URL: "https://git.example.com/acme/app.git", Ref: "v1.2", Dir: "services/api/", Credential: "gh"},
		GitToken: gitToken,
	}
}

func (h *harness) pod(t *testing.T) *corev1.Pod {
	t.Helper()
	p, err := h.cs.CoreV1().Pods(ns).Get(context.Background(), buildID, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func (h *harness) secret(t *testing.T) *corev1.Secret {
	t.Helper()
	s, err := h.cs.CoreV1().Secrets(ns).Get(context.Background(), buildID, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// setStatus changes the build pod's status as the kubelet would.
func (h *harness) setStatus(t *testing.T, change func(*corev1.PodStatus)) {
	t.Helper()
	p := h.pod(t)
	change(&p.Status)
	if _, err := h.cs.CoreV1().Pods(ns).UpdateStatus(context.Background(), p, metav1.UpdateOptions{}); err != nil {
		t.Error(err)
	}
}

// logContainers returns the containers whose logs were asked for.
func (h *harness) logContainers() []string {
	var cs []string
	for _, a := range h.cs.Actions() {
		if a.GetSubresource() == "log" {
			cs = append(cs, a.(k8stesting.GenericAction).GetValue().(*corev1.PodLogOptions).Container)
		}
	}
	return cs
}

// assertNoSecrets fails when a credential or the Dockerfile shows in the
// pod's spec: they travel in the Secret only.
func assertNoSecrets(t *testing.T, p *corev1.Pod) {
	t.Helper()
	b, err := json.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{registryPwd, registryAuth, gitToken, "FROM busybox"} {
		if bytes.Contains(b, []byte(s)) {
			t.Errorf("pod spec contains %q", s)
		}
	}
	for _, c := range append(p.Spec.InitContainers, p.Spec.Containers...) {
		for _, e := range c.Env {
			if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef == nil {
				t.Errorf("container %s: env %s comes from something else than the build's Secret", c.Name, e.Name)
			}
		}
	}
}

func running(p *corev1.PodStatus) {
	p.Phase = corev1.PodRunning
	p.StartTime = &metav1.Time{Time: time.Now()}
	p.ContainerStatuses = []corev1.ContainerStatus{{Name: kanikoContainer, State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{}}}}
}

func kanikoEnded(phase corev1.PodPhase, exit int32, reason, msg string) func(*corev1.PodStatus) {
	return func(p *corev1.PodStatus) {
		p.Phase = phase
		p.ContainerStatuses = []corev1.ContainerStatus{{Name: kanikoContainer, State: corev1.ContainerState{
			Terminated: &corev1.ContainerStateTerminated{ExitCode: exit, Reason: reason, Message: msg},
		}}}
	}
}

func TestPodLocalContext(t *testing.T) {
	h := newHarness(t)
	if err := h.r.Create(context.Background(), testSpec(), ContextSource{Dockerfile: dockerfile}); err != nil {
		t.Fatal(err)
	}
	p := h.pod(t)
	assertNoSecrets(t, p)

	wantLabels := map[string]string{LabelManagedBy: ManagedBy, LabelImage: "img1", LabelBuild: "7"}
	if !reflect.DeepEqual(p.Labels, wantLabels) {
		t.Errorf("labels = %v, want %v", p.Labels, wantLabels)
	}
	s := p.Spec
	if s.RestartPolicy != corev1.RestartPolicyNever {
		t.Errorf("restartPolicy = %s", s.RestartPolicy)
	}
	if s.ActiveDeadlineSeconds == nil || *s.ActiveDeadlineSeconds != 91 {
		t.Errorf("activeDeadlineSeconds = %v, want 91 (90.5 s rounded up)", s.ActiveDeadlineSeconds)
	}
	if s.AutomountServiceAccountToken == nil || *s.AutomountServiceAccountToken {
		t.Error("the service account token is mounted")
	}
	if s.EnableServiceLinks == nil || *s.EnableServiceLinks {
		t.Error("service links are enabled")
	}
	if s.HostNetwork || s.HostPID || s.HostIPC || s.ShareProcessNamespace != nil {
		t.Error("the pod shares a host namespace")
	}
	if s.SecurityContext == nil || s.SecurityContext.SeccompProfile == nil || s.SecurityContext.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Error("seccomp profile is not RuntimeDefault")
	}
	if s.TerminationGracePeriodSeconds == nil || *s.TerminationGracePeriodSeconds != terminationGrace {
		t.Errorf("terminationGracePeriodSeconds = %v", s.TerminationGracePeriodSeconds)
	}
	if len(s.InitContainers) != 0 {
		t.Errorf("a local context has init containers: %v", s.InitContainers)
	}
	if len(s.Containers) != 1 {
		t.Fatalf("containers = %d, want 1", len(s.Containers))
	}
	k := s.Containers[0]
	if k.Name != kanikoContainer || k.Image != "kaniko:test" {
		t.Errorf("container %s image %s", k.Name, k.Image)
	}
	wantArgs := []string{
		"--dockerfile", "/workspace/Dockerfile",
		"--context", "dir:///workspace",
		"--digest-file", "/dev/termination-log",
		"--push-retry", "2", "--verbosity", "info", "--log-format", "text", "--force",
		"--destination", "registry.internal:5000/app:latest",
		"--destination", "ghcr.io/acme/app:1",
		"--insecure-registry", "registry.internal:5000", "--skip-tls-verify-registry", "registry.internal:5000",
		"--cache=true", "--cache-repo", "registry.internal:5000/slipway-cache/app",
	}
	wantArgs = append(wantArgs, build.DefaultTuning()...)
	if !slices.Equal(k.Args, wantArgs) {
		t.Errorf("args =\n%q\nwant\n%q", k.Args, wantArgs)
	}
	if len(k.Command) != 0 {
		t.Errorf("command = %q, want the image's entrypoint", k.Command)
	}
	assertKanikoSecurity(t, k)
	assertResources(t, k.Resources)
	if k.TerminationMessagePolicy != corev1.TerminationMessageFallbackToLogsOnError || k.TerminationMessagePath != "/dev/termination-log" {
		t.Errorf("termination message %s %s", k.TerminationMessagePath, k.TerminationMessagePolicy)
	}
	wantMounts := []corev1.VolumeMount{
		{Name: workspaceVolume, MountPath: "/workspace"},
		{Name: dockerfileVolume, MountPath: "/workspace/Dockerfile", SubPath: DockerfileKey, ReadOnly: true},
		{Name: dockerVolume, MountPath: "/kaniko/.docker", ReadOnly: true},
	}
	if !reflect.DeepEqual(k.VolumeMounts, wantMounts) {
		t.Errorf("mounts =\n%+v\nwant\n%+v", k.VolumeMounts, wantMounts)
	}
	vols := map[string]corev1.Volume{}
	for _, v := range s.Volumes {
		vols[v.Name] = v
	}
	if v := vols[workspaceVolume]; v.EmptyDir == nil {
		t.Error("workspace is not an emptyDir")
	}
	if v := vols[dockerVolume].Secret; v == nil || v.SecretName != buildID || !reflect.DeepEqual(v.Items, []corev1.KeyToPath{{Key: ".dockerconfigjson", Path: "config.json"}}) || *v.DefaultMode != 0o400 {
		t.Errorf("docker config volume = %+v", vols[dockerVolume])
	}
	if v := vols[dockerfileVolume].Secret; v == nil || v.SecretName != buildID || !reflect.DeepEqual(v.Items, []corev1.KeyToPath{{Key: DockerfileKey, Path: DockerfileKey}}) {
		t.Errorf("Dockerfile volume = %+v", vols[dockerfileVolume])
	}

	sec := h.secret(t)
	if sec.Type != corev1.SecretTypeDockerConfigJson {
		t.Errorf("secret type = %s", sec.Type)
	}
	if string(sec.Data[".dockerconfigjson"]) != string(testSpec().DockerConfig) || string(sec.Data[DockerfileKey]) != dockerfile || len(sec.Data) != 2 {
		t.Errorf("secret data = %q", sec.Data)
	}
	if sec.Immutable == nil || !*sec.Immutable || !reflect.DeepEqual(sec.Labels, wantLabels) {
		t.Errorf("secret immutable %v labels %v", sec.Immutable, sec.Labels)
	}
	assertOwned(t, sec, p)
}

func assertKanikoSecurity(t *testing.T, k corev1.Container) {
	t.Helper()
	sc := k.SecurityContext
	if sc == nil || sc.RunAsUser == nil || *sc.RunAsUser != 0 || *sc.AllowPrivilegeEscalation || *sc.Privileged {
		t.Fatalf("kaniko securityContext = %+v", sc)
	}
	if !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) {
		t.Errorf("dropped capabilities = %v", sc.Capabilities.Drop)
	}
	want := []corev1.Capability{"CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "SETGID", "SETUID", "SETFCAP"}
	if !slices.Equal(sc.Capabilities.Add, want) {
		t.Errorf("added capabilities = %v, want %v", sc.Capabilities.Add, want)
	}
}

func assertResources(t *testing.T, rr corev1.ResourceRequirements) {
	t.Helper()
	// The pod requests the defaults, not its limits: Kubernetes would
	// request the CPU limit were the request left out, and a node smaller
	// than the limit would never take the pod.
	for res, want := range map[string]string{"requests.memory": "512Mi", "limits.memory": "2Gi", "requests.cpu": "250m", "limits.cpu": "1500m"} {
		list := rr.Requests
		if strings.HasPrefix(res, "limits.") {
			list = rr.Limits
		}
		q, ok := list[corev1.ResourceName(res[strings.IndexByte(res, '.')+1:])]
		if !ok || q.Cmp(resource.MustParse(want)) != 0 {
			t.Errorf("%s = %s (set: %v), want %s", res, q.String(), ok, want)
		}
	}
}

func assertOwned(t *testing.T, s *corev1.Secret, p *corev1.Pod) {
	t.Helper()
	want := []metav1.OwnerReference{{APIVersion: "v1", Kind: "Pod", Name: p.Name, UID: p.UID}}
	if p.UID == "" || !reflect.DeepEqual(s.OwnerReferences, want) {
		t.Errorf("secret owners = %+v, want %+v", s.OwnerReferences, want)
	}
}

func TestPodGitContext(t *testing.T) {
	h := newHarness(t)
	spec := testSpec()
	spec.DockerConfig = nil
	spec.BuildArgs = []string{"BASE=registry.example/base:1"}
	if err := h.r.Create(context.Background(), spec, gitSource()); err != nil {
		t.Fatal(err)
	}
	p := h.pod(t)
	assertNoSecrets(t, p)
	if len(p.Spec.InitContainers) != 1 {
		t.Fatalf("init containers = %d, want 1", len(p.Spec.InitContainers))
	}
	in := p.Spec.InitContainers[0]
	wantArgs := []string{"fetch-context", "--url", "https://git.example.com/acme/app.git", "--ref", "v1.2", "--dir", "services/api", "--dest", "/workspace",
		"--build-arg", "BASE=registry.example/base:1"}
	if in.Image != "slipway:test" || !slices.Equal(in.Args, wantArgs) || len(in.Command) != 0 {
		t.Errorf("init container %s %q %q, want args %q", in.Image, in.Command, in.Args, wantArgs)
	}
	wantEnv := []corev1.EnvVar{{Name: GitTokenEnv, ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{
		LocalObjectReference: corev1.LocalObjectReference{Name: buildID}, Key: "git-token",
	}}}}
	if !reflect.DeepEqual(in.Env, wantEnv) {
		t.Errorf("init env = %+v", in.Env)
	}
	sc := in.SecurityContext
	if !*sc.RunAsNonRoot || *sc.RunAsUser == 0 || *sc.AllowPrivilegeEscalation || !*sc.ReadOnlyRootFilesystem ||
		!slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(sc.Capabilities.Add) != 0 {
		t.Errorf("init securityContext = %+v", sc)
	}
	wantInitMounts := []corev1.VolumeMount{{Name: workspaceVolume, MountPath: "/workspace"}, {Name: tmpVolume, MountPath: "/tmp"}}
	if !reflect.DeepEqual(in.VolumeMounts, wantInitMounts) {
		t.Errorf("init mounts = %+v", in.VolumeMounts)
	}
	assertResources(t, in.Resources)
	if in.TerminationMessagePolicy != corev1.TerminationMessageFallbackToLogsOnError {
		t.Errorf("init terminationMessagePolicy = %s", in.TerminationMessagePolicy)
	}

	k := p.Spec.Containers[0]
	assertKanikoSecurity(t, k)
	if !slices.Equal(k.Args[:4], []string{"--dockerfile", "/workspace/services/api/Dockerfile", "--context", "dir:///workspace/services/api"}) {
		t.Errorf("kaniko args = %q", k.Args)
	}
	if !reflect.DeepEqual(k.VolumeMounts, []corev1.VolumeMount{{Name: workspaceVolume, MountPath: "/workspace"}}) {
		t.Errorf("kaniko mounts = %+v (no docker config, no Dockerfile)", k.VolumeMounts)
	}
	sec := h.secret(t)
	if sec.Type != corev1.SecretTypeOpaque || len(sec.Data) != 1 || string(sec.Data[GitTokenKey]) != gitToken {
		t.Errorf("secret %s %q", sec.Type, sec.Data)
	}
	assertOwned(t, sec, p)
}

func TestPodPublicGitContextHasNoSecret(t *testing.T) {
	h := newHarness(t)
	spec := testSpec()
	spec.DockerConfig = nil
	spec.Limits = build.Limits{}
	if err := h.r.Create(context.Background(), spec, ContextSource{Git: &image.Git{URL: "https://git.example.com/a.git"}}); err != nil {
		t.Fatal(err)
	}
	p := h.pod(t)
	if got := p.Spec.InitContainers[0].Args; !slices.Equal(got, []string{"fetch-context", "--url", "https://git.example.com/a.git", "--dest", "/workspace"}) {
		t.Errorf("init args = %q", got)
	}
	if p.Spec.InitContainers[0].Env != nil || p.Spec.ActiveDeadlineSeconds != nil || p.Spec.Containers[0].Resources.Limits != nil {
		t.Errorf("unexpected env, deadline or limits: %+v", p.Spec)
	}
	if _, err := h.cs.CoreV1().Secrets(ns).Get(context.Background(), buildID, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("a build without credentials has a Secret (err %v)", err)
	}
}

func TestCreateIsIdempotent(t *testing.T) {
	h := newHarness(t)
	for range 2 {
		if err := h.r.Create(context.Background(), testSpec(), ContextSource{Dockerfile: dockerfile}); err != nil {
			t.Fatal(err)
		}
	}
	pods, _ := h.cs.CoreV1().Pods(ns).List(context.Background(), metav1.ListOptions{})
	secrets, _ := h.cs.CoreV1().Secrets(ns).List(context.Background(), metav1.ListOptions{})
	if len(pods.Items) != 1 || len(secrets.Items) != 1 {
		t.Errorf("%d pods, %d secrets, want 1 and 1", len(pods.Items), len(secrets.Items))
	}
	assertOwned(t, h.secret(t), h.pod(t))
}

func TestCreateRefusesForeignPod(t *testing.T) {
	h := newHarness(t)
	foreign := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: buildID, Namespace: ns}}
	if _, err := h.cs.CoreV1().Pods(ns).Create(context.Background(), foreign, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := h.r.Create(context.Background(), testSpec(), ContextSource{Dockerfile: dockerfile}); err == nil {
		t.Error("Create took over a pod that is not a build's")
	}
}

func TestCreateDeletesPodWhenSecretFails(t *testing.T) {
	h := newHarness(t)
	h.cs.PrependReactor("create", "secrets", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, apierrors.NewForbidden(schema.GroupResource{Resource: "secrets"}, buildID, errors.New("no"))
	})
	if err := h.r.Create(context.Background(), testSpec(), ContextSource{Dockerfile: dockerfile}); !apierrors.IsForbidden(err) {
		t.Fatalf("Create = %v, want the Secret's error", err)
	}
	if _, err := h.cs.CoreV1().Pods(ns).Get(context.Background(), buildID, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("the pod is left without its Secret (err %v)", err)
	}
}

func TestCreateRejects(t *testing.T) {
	local := ContextSource{Dockerfile: dockerfile}
	for name, tc := range map[string]struct {
		change func(*build.Spec)
		src    ContextSource
	}{
		"upper-case ID":       {func(s *build.Spec) { s.ID = "Img-1" }, local},
		"no number":           {func(s *build.Spec) { s.ID = "img" }, local},
		"bad number":          {func(s *build.Spec) { s.ID = "img-01" }, local},
		"bad image label":     {func(s *build.Spec) { s.ID = "img--1" }, local},
		"long image ID":       {func(s *build.Spec) { s.ID = strings.Repeat("a", 64) + "-1" }, local},
		"no destination":      {func(s *build.Spec) { s.Destinations = nil }, local},
		"Dockerfile escapes":  {func(s *build.Spec) { s.Dockerfile = "../Dockerfile" }, local},
		"bad docker config":   {func(s *build.Spec) { s.DockerConfig = []byte("{") }, local},
		"no source":           {nil, ContextSource{}},
		"both sources":        {nil, ContextSource{Dockerfile: dockerfile, Git: &image.Git{URL: "https://x/y.git"}}},
		"token without git":   {nil, ContextSource{Dockerfile: dockerfile, GitToken: gitToken}},
		"git without URL":     {nil, ContextSource{Git: &image.Git{}}},
		"git dir escapes":     {nil, ContextSource{Git: &image.Git{URL: "https://x/y.git", Dir: "../.."}}},
		"absolute Dockerfile": {func(s *build.Spec) { s.Dockerfile = "/etc/passwd" }, local},
	} {
		t.Run(name, func(t *testing.T) {
			h := newHarness(t)
			spec := testSpec()
			if tc.change != nil {
				tc.change(&spec)
			}
			err := h.r.Create(context.Background(), spec, tc.src)
			if err == nil {
				t.Fatal("accepted")
			}
			if strings.Contains(err.Error(), gitToken) {
				t.Errorf("error shows the token: %v", err)
			}
			if pods, _ := h.cs.CoreV1().Pods(ns).List(context.Background(), metav1.ListOptions{}); len(pods.Items) != 0 {
				t.Error("a pod was created")
			}
		})
	}
}

type runResult struct {
	o   build.Outcome
	err error
	log string
}

// run runs a build in the background; kubelet changes the pod's status
// once Run watches it.
func (h *harness) run(t *testing.T, ctx context.Context, spec build.Spec, src *ContextSource, kubelet func()) runResult {
	t.Helper()
	done := make(chan runResult, 1)
	go func() {
		var log bytes.Buffer
		var res runResult
		if src == nil {
			res.o, res.err = h.r.Run(ctx, spec, &log)
		} else {
			res.o, res.err = h.r.RunWith(ctx, spec, *src, &log)
		}
		res.log = log.String()
		done <- res
	}()
	select {
	case <-h.watching:
	case res := <-done:
		t.Fatalf("Run returned before watching: %+v", res)
	case <-time.After(10 * time.Second):
		t.Fatal("Run does not watch the pod")
	}
	kubelet()
	select {
	case res := <-done:
		return res
	case <-time.After(10 * time.Second):
		t.Fatal("Run does not return")
	}
	return runResult{}
}

func (h *harness) assertPodGone(t *testing.T) {
	t.Helper()
	if _, err := h.cs.CoreV1().Pods(ns).Get(context.Background(), buildID, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("the build pod is still there (err %v)", err)
	}
}

func assertReason(t *testing.T, o build.Outcome, logTail string, want build.Reason) {
	t.Helper()
	f := build.Classify(o, testSpec().Limits, logTail, nil)
	switch {
	case want == "" && f != nil:
		t.Errorf("Classify(%+v) = %+v, want success", o, f)
	case want != "" && (f == nil || f.Reason != want):
		t.Errorf("Classify(%+v) = %+v, want reason %s", o, f, want)
	}
}

func TestRunSucceeds(t *testing.T) {
	h := newHarness(t)
	spec := testSpec()
	spec.ContextDir = t.TempDir()
	if err := os.WriteFile(filepath.Join(spec.ContextDir, "Dockerfile"), []byte(dockerfile), 0o600); err != nil {
		t.Fatal(err)
	}
	res := h.run(t, context.Background(), spec, nil, func() {
		h.setStatus(t, running)
		// Still running: Run must not return yet.
		select {
		case <-h.watching:
			t.Error("Run watched again after a running pod's update")
		case <-time.After(50 * time.Millisecond):
		}
		assertNoSecrets(t, h.pod(t))
		if got := h.secret(t).Data[DockerfileKey]; string(got) != dockerfile {
			t.Errorf("Run's Dockerfile in the Secret = %q", got)
		}
		h.setStatus(t, kanikoEnded(corev1.PodSucceeded, 0, "Completed", digest+"\n"))
	})
	if res.err != nil || res.o != (build.Outcome{Digest: digest}) {
		t.Fatalf("Run = %+v, %v", res.o, res.err)
	}
	if res.log != "fake logs" || !slices.Equal(h.logContainers(), []string{kanikoContainer}) {
		t.Errorf("log %q from %v", res.log, h.logContainers())
	}
	h.assertPodGone(t)
	assertReason(t, res.o, res.log, "")
}

func TestRunOOMKilled(t *testing.T) {
	h := newHarness(t)
	res := h.run(t, context.Background(), testSpec(), &ContextSource{Dockerfile: dockerfile}, func() {
		h.setStatus(t, kanikoEnded(corev1.PodFailed, 137, "OOMKilled", ""))
	})
	if res.err != nil || res.o != (build.Outcome{ExitCode: 137, OOMKilled: true}) {
		t.Fatalf("Run = %+v, %v", res.o, res.err)
	}
	h.assertPodGone(t)
	assertReason(t, res.o, res.log, build.ReasonOOM)
}

func TestRunDeadlineExceeded(t *testing.T) {
	h := newHarness(t)
	res := h.run(t, context.Background(), testSpec(), &ContextSource{Dockerfile: dockerfile}, func() {
		h.setStatus(t, func(p *corev1.PodStatus) {
			kanikoEnded(corev1.PodFailed, 137, "Error", "")(p)
			p.Reason, p.Message = "DeadlineExceeded", "Pod was active on the node longer than the specified deadline"
		})
	})
	if res.err != nil || !res.o.TimedOut {
		t.Fatalf("Run = %+v, %v", res.o, res.err)
	}
	h.assertPodGone(t)
	assertReason(t, res.o, res.log, build.ReasonTimeout)
}

func TestRunContextFetchFails(t *testing.T) {
	h := newHarness(t)
	src := gitSource()
	res := h.run(t, context.Background(), testSpec(), &src, func() {
		h.setStatus(t, func(p *corev1.PodStatus) {
			p.Phase = corev1.PodFailed
			p.InitContainerStatuses = []corev1.ContainerStatus{{Name: initContainer, State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{
				ExitCode: 2, Reason: "Error", Message: "fetching https://git.example.com/acme/app.git\ngit context: repository not found\n",
			}}}}
			p.ContainerStatuses = []corev1.ContainerStatus{{Name: kanikoContainer, State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "PodInitializing"}}}}
		})
	})
	if res.err != nil || res.o != (build.Outcome{ExitCode: 2, ContextFailed: true}) {
		t.Errorf("Run = %+v, %v; want ContextFailed with the init container's exit code", res.o, res.err)
	}
	if res.log != "fake logs" || !slices.Equal(h.logContainers(), []string{initContainer}) {
		t.Errorf("log %q from %v, want the init container's", res.log, h.logContainers())
	}
	h.assertPodGone(t)
	assertReason(t, res.o, res.log, build.ReasonGit)
}

func TestRunGitContextCommit(t *testing.T) {
	h := newHarness(t)
	src := gitSource()
	const sha = "0123456789abcdef0123456789abcdef01234567"
	res := h.run(t, context.Background(), testSpec(), &src, func() {
		h.setStatus(t, func(p *corev1.PodStatus) {
			kanikoEnded(corev1.PodSucceeded, 0, "Completed", digest)(p)
			p.InitContainerStatuses = []corev1.ContainerStatus{{Name: initContainer, State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{
				ExitCode: 0, Reason: "Completed", Message: "commit " + sha + "\n",
			}}}}
		})
	})
	if res.err != nil || res.o != (build.Outcome{Digest: digest, Commit: sha}) {
		t.Fatalf("Run = %+v, %v; want the digest and the commit", res.o, res.err)
	}
	if !slices.Equal(h.logContainers(), []string{kanikoContainer}) {
		t.Errorf("log from %v, want Kaniko's", h.logContainers())
	}
	h.assertPodGone(t)
	assertReason(t, res.o, res.log, "")
}

func TestRunCancelled(t *testing.T) {
	h := newHarness(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	res := h.run(t, ctx, testSpec(), &ContextSource{Dockerfile: dockerfile}, func() {
		h.setStatus(t, running)
		cancel()
	})
	if res.err != nil || res.o != (build.Outcome{Cancelled: true}) {
		t.Fatalf("Run = %+v, %v", res.o, res.err)
	}
	h.assertPodGone(t)
	assertReason(t, res.o, res.log, build.ReasonCancelled)
}

func TestRunPodDeletedBySomeoneElse(t *testing.T) {
	h := newHarness(t)
	res := h.run(t, context.Background(), testSpec(), &ContextSource{Dockerfile: dockerfile}, func() {
		if err := h.cs.CoreV1().Pods(ns).Delete(context.Background(), buildID, metav1.DeleteOptions{}); err != nil {
			t.Error(err)
		}
	})
	if res.err != nil || res.o.ExitCode != -1 || !strings.Contains(res.o.Problem, "pod "+buildID+" was deleted") {
		t.Errorf("Run = %+v, %v; want a Problem saying the pod was deleted", res.o, res.err)
	}
	assertReason(t, res.o, res.log, build.ReasonInternal)
}

func TestRunRefusesRicherContextDir(t *testing.T) {
	h := newHarness(t)
	spec := testSpec()
	spec.ContextDir = t.TempDir()
	for _, f := range []string{"Dockerfile", "main.go"} {
		if err := os.WriteFile(filepath.Join(spec.ContextDir, f), []byte(dockerfile), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := h.r.Run(context.Background(), spec, nil); err == nil || !strings.Contains(err.Error(), "RunWith") {
		t.Errorf("Run = %v, want a refusal naming RunWith", err)
	}
	if len(h.cs.Actions()) != 0 {
		t.Errorf("Run called the API: %v", h.cs.Actions())
	}
}

func TestOutcomeOf(t *testing.T) {
	r, err := New(fake.NewClientset(), Options{KanikoImage: "k", InitImage: "i"})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	r.now = func() time.Time { return now }
	started := func(ago time.Duration) *metav1.Time { return &metav1.Time{Time: now.Add(-ago)} }
	waiting := func(name, reason string, ago time.Duration) corev1.PodStatus {
		st := corev1.PodStatus{Phase: corev1.PodPending, StartTime: started(ago)}
		cs := corev1.ContainerStatus{Name: name, Image: "registry/x:1", State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: reason, Message: "Back-off pulling image"}}}
		if name == initContainer {
			st.InitContainerStatuses = []corev1.ContainerStatus{cs}
		} else {
			st.ContainerStatuses = []corev1.ContainerStatus{cs}
		}
		return st
	}
	ended := func(phase corev1.PodPhase, exit int32, reason, msg string) corev1.PodStatus {
		var st corev1.PodStatus
		kanikoEnded(phase, exit, reason, msg)(&st)
		return st
	}
	with := func(st corev1.PodStatus, change func(*corev1.PodStatus)) corev1.PodStatus {
		change(&st)
		return st
	}
	initEnded := func(exit int32, reason string) corev1.PodStatus {
		return corev1.PodStatus{Phase: corev1.PodFailed, InitContainerStatuses: []corev1.ContainerStatus{{Name: initContainer, State: corev1.ContainerState{
			Terminated: &corev1.ContainerStateTerminated{ExitCode: exit, Reason: reason, Message: "git context: authentication failed"},
		}}}}
	}
	const sha1, sha256 = "0123456789abcdef0123456789abcdef01234567", "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	fetched := func(msg string) func(*corev1.PodStatus) {
		return func(s *corev1.PodStatus) {
			s.InitContainerStatuses = []corev1.ContainerStatus{{Name: initContainer, State: corev1.ContainerState{
				Terminated: &corev1.ContainerStateTerminated{ExitCode: 0, Reason: "Completed", Message: msg},
			}}}
		}
	}
	kanikoFailedLog := "INFO[0001] RUN exit 3\nerror building image: error building stage: failed to execute command: waiting for process to exit: exit status 3\n"

	for _, tc := range []struct {
		name    string
		status  corev1.PodStatus
		deleted bool
		done    bool
		want    build.Outcome // but its Problem
		problem string        // what Outcome.Problem contains; "" for none
		logTail string
		reason  build.Reason // of build.Classify
	}{
		{name: "pending", status: corev1.PodStatus{Phase: corev1.PodPending}},
		{name: "running", status: corev1.PodStatus{Phase: corev1.PodRunning, StartTime: started(time.Hour)}},
		{name: "init running", status: corev1.PodStatus{Phase: corev1.PodPending, InitContainerStatuses: []corev1.ContainerStatus{{Name: initContainer, State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{}}}}}},
		{name: "succeeded", status: ended(corev1.PodSucceeded, 0, "Completed", " "+digest+"\n"), done: true, want: build.Outcome{Digest: digest}},
		{name: "succeeded without digest", status: ended(corev1.PodSucceeded, 0, "Completed", "sha256:abc"), done: true, want: build.Outcome{}, reason: build.ReasonInternal},
		{name: "succeeded upper-case digest", status: ended(corev1.PodSucceeded, 0, "Completed", strings.ToUpper(digest)), done: true, want: build.Outcome{}, reason: build.ReasonInternal},
		{name: "kaniko failed", status: ended(corev1.PodFailed, 1, "Error", kanikoFailedLog), done: true, want: build.Outcome{ExitCode: 1}, logTail: kanikoFailedLog, reason: build.ReasonDockerfile},
		{name: "kaniko OOMKilled", status: ended(corev1.PodFailed, 137, "OOMKilled", ""), done: true, want: build.Outcome{ExitCode: 137, OOMKilled: true}, reason: build.ReasonOOM},
		{name: "deadline", status: with(ended(corev1.PodFailed, 137, "Error", ""), func(s *corev1.PodStatus) { s.Reason = "DeadlineExceeded" }), done: true, want: build.Outcome{ExitCode: 137, TimedOut: true}, reason: build.ReasonTimeout},
		{name: "deadline while fetching", status: corev1.PodStatus{Phase: corev1.PodFailed, Reason: "DeadlineExceeded"}, done: true, want: build.Outcome{ExitCode: -1, TimedOut: true}, reason: build.ReasonTimeout},
		{name: "evicted for memory", status: corev1.PodStatus{Phase: corev1.PodFailed, Reason: "Evicted", Message: "The node was low on resource: memory. Threshold quantity: 100Mi, available: 12Mi. Container kaniko was using 2Gi"}, done: true, want: build.Outcome{ExitCode: -1, OOMKilled: true}, reason: build.ReasonOOM},
		{name: "evicted for disk", status: corev1.PodStatus{Phase: corev1.PodFailed, Reason: "Evicted", Message: "Pod ephemeral local storage usage exceeds the total limit of containers 1Gi."}, done: true, want: build.Outcome{ExitCode: -1},
			problem: "the build pod failed: it was evicted: Pod ephemeral local storage usage exceeds the total limit of containers 1Gi.", reason: build.ReasonInternal},
		{name: "preempted", status: with(ended(corev1.PodFailed, 143, "Error", ""), func(s *corev1.PodStatus) {
			s.Conditions = []corev1.PodCondition{{Type: corev1.DisruptionTarget, Status: corev1.ConditionTrue, Reason: "PreemptionByScheduler", Message: "Preempted in order to admit critical pod"}}
		}), done: true, want: build.Outcome{ExitCode: 143}, problem: "the build pod failed: it was stopped by the cluster (PreemptionByScheduler): Preempted in order to admit critical pod", reason: build.ReasonInternal},
		{name: "init failed", status: initEnded(128, "Error"), done: true, want: build.Outcome{ExitCode: 128, ContextFailed: true}, logTail: "git context: authentication failed\n", reason: build.ReasonGit},
		{name: "init OOMKilled", status: initEnded(137, "OOMKilled"), done: true, want: build.Outcome{ExitCode: 137, ContextFailed: true, OOMKilled: true}, reason: build.ReasonOOM},
		{name: "node shut down", status: corev1.PodStatus{Phase: corev1.PodFailed, Reason: "NodeShutdown", Message: "Pod was terminated in response to imminent node shutdown."}, done: true, want: build.Outcome{ExitCode: -1},
			problem: "the build pod failed: NodeShutdown: Pod was terminated in response to imminent node shutdown.", reason: build.ReasonInternal},
		{name: "pull failing, early", status: waiting(kanikoContainer, "ImagePullBackOff", time.Minute)},
		{name: "pull failing, late", status: waiting(kanikoContainer, "ImagePullBackOff", 3*time.Minute), done: true, want: build.Outcome{ExitCode: -1},
			problem: "the build pod failed: container kaniko (registry/x:1) cannot start: ImagePullBackOff: Back-off pulling image", reason: build.ReasonInternal},
		{name: "init pull failing, late", status: waiting(initContainer, "ErrImagePull", 3*time.Minute), done: true, want: build.Outcome{ExitCode: -1},
			problem: "container fetch-context (registry/x:1) cannot start: ErrImagePull", reason: build.ReasonInternal},
		{name: "invalid image name", status: waiting(initContainer, "InvalidImageName", 0), done: true, want: build.Outcome{ExitCode: -1},
			problem: "(registry/x:1) cannot start: InvalidImageName", reason: build.ReasonInternal},
		{name: "secret not there yet", status: waiting(kanikoContainer, "CreateContainerConfigError", 5*time.Second)},
		{name: "initializing", status: waiting(kanikoContainer, "PodInitializing", time.Hour)},
		{name: "deleted while running", status: corev1.PodStatus{Phase: corev1.PodRunning}, deleted: true, done: true, want: build.Outcome{ExitCode: -1},
			problem: "the build pod failed: pod " + buildID + " was deleted before the build ended", reason: build.ReasonInternal},
		{name: "deleted after it succeeded", status: ended(corev1.PodSucceeded, 0, "Completed", digest), deleted: true, done: true, want: build.Outcome{Digest: digest}},
		{name: "succeeded with commit", status: with(ended(corev1.PodSucceeded, 0, "Completed", digest), fetched("commit "+sha1+"\n")), done: true, want: build.Outcome{Digest: digest, Commit: sha1}},
		{name: "succeeded with SHA-256 commit", status: with(ended(corev1.PodSucceeded, 0, "Completed", digest), fetched("fetched\ncommit "+sha256)), done: true, want: build.Outcome{Digest: digest, Commit: sha256}},
		{name: "succeeded with bad commit line", status: with(ended(corev1.PodSucceeded, 0, "Completed", digest), fetched("commit "+sha1[:39]+"\ncommit: "+sha1+"\ncommit "+strings.ToUpper(sha1))), done: true, want: build.Outcome{Digest: digest}},
		{name: "kaniko failed with commit", status: with(ended(corev1.PodFailed, 1, "Error", kanikoFailedLog), fetched("commit "+sha1)), done: true, want: build.Outcome{ExitCode: 1, Commit: sha1}, logTail: kanikoFailedLog, reason: build.ReasonDockerfile},
		{name: "kaniko pull failing with commit", status: with(waiting(kanikoContainer, "ImagePullBackOff", 3*time.Minute), fetched("commit "+sha1)), done: true, want: build.Outcome{ExitCode: -1, Commit: sha1},
			problem: "ImagePullBackOff", reason: build.ReasonInternal},
		{name: "running with commit", status: with(corev1.PodStatus{Phase: corev1.PodRunning, StartTime: started(time.Minute)}, fetched("commit "+sha1))},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: buildID, CreationTimestamp: metav1.Time{Time: now.Add(-time.Hour)}}, Status: tc.status}
			if tc.deleted {
				pod.DeletionTimestamp = &metav1.Time{Time: now}
			}
			o, done := r.OutcomeOf(pod)
			problem := o.Problem
			o.Problem = ""
			if done != tc.done || o != tc.want {
				t.Errorf("OutcomeOf = %+v, %v; want %+v, %v", o, done, tc.want, tc.done)
			}
			switch {
			case tc.problem == "" && problem != "":
				t.Errorf("Problem %q, want none", problem)
			case tc.problem != "" && (!strings.Contains(problem, tc.problem) || !strings.HasPrefix(problem, "the build pod failed: ")):
				t.Errorf("Problem %q, want one containing %q", problem, tc.problem)
			}
			if tc.done {
				o.Problem = problem
				assertReason(t, o, tc.logTail, tc.reason)
			}
		})
	}
}

func TestReport(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	if err := h.r.Create(ctx, testSpec(), ContextSource{Dockerfile: dockerfile}); err != nil {
		t.Fatal(err)
	}
	h.setStatus(t, running)
	id, o, log, done, err := h.r.Report(ctx, h.pod(t))
	if id != buildID || done || err != nil || log != nil || o != (build.Outcome{}) {
		t.Errorf("running: Report = %q %+v %q %v %v", id, o, log, done, err)
	}
	if len(h.logContainers()) != 0 {
		t.Error("Report read the log of a running build")
	}

	h.setStatus(t, kanikoEnded(corev1.PodSucceeded, 0, "Completed", digest))
	before := len(h.cs.Actions())
	id, o, log, done, err = h.r.Report(ctx, h.pod(t))
	if id != buildID || !done || err != nil || string(log) != "fake logs" || o != (build.Outcome{Digest: digest}) {
		t.Errorf("succeeded: Report = %q %+v %q %v %v", id, o, log, done, err)
	}
	for _, a := range h.cs.Actions()[before:] {
		if a.GetVerb() != "get" {
			t.Errorf("Report changed something: %s %s", a.GetVerb(), a.GetResource().Resource)
		}
	}
	h.pod(t) // Report deletes nothing

	capped, err := New(h.cs, Options{KanikoImage: "k", InitImage: "i", LogCap: 4})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, log, _, _ := capped.Report(ctx, h.pod(t)); !bytes.HasPrefix(log, []byte("fa\n[slipway: the log is cut here")) || !bytes.HasSuffix(log, []byte("]\ngs")) {
		t.Errorf("capped log = %q", log)
	}

	stranger := h.pod(t)
	delete(stranger.Labels, LabelManagedBy)
	if _, _, _, _, err := h.r.Report(ctx, stranger); err == nil {
		t.Error("Report accepted a pod that is not a build's")
	}
}

func TestReportContextFailure(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	if err := h.r.Create(ctx, testSpec(), gitSource()); err != nil {
		t.Fatal(err)
	}
	h.setStatus(t, func(p *corev1.PodStatus) {
		p.Phase = corev1.PodFailed
		p.InitContainerStatuses = []corev1.ContainerStatus{{Name: initContainer, State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 1}}}}
	})
	_, o, log, done, err := h.r.Report(ctx, h.pod(t))
	if !done || err != nil || o != (build.Outcome{ExitCode: 1, ContextFailed: true}) || string(log) != "fake logs" || !slices.Equal(h.logContainers(), []string{initContainer}) {
		t.Errorf("Report = %+v %q %v %v (log of %v)", o, log, done, err, h.logContainers())
	}
}

func TestReportRetriesWithoutSecret(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	if err := h.r.Create(ctx, testSpec(), ContextSource{Dockerfile: dockerfile}); err != nil {
		t.Fatal(err)
	}
	h.setStatus(t, kanikoEnded(corev1.PodFailed, 1, "Error", ""))
	h.cs.PrependReactor("get", "secrets", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, apierrors.NewForbidden(schema.GroupResource{Resource: "secrets"}, buildID, errors.New("no"))
	})
	_, _, log, done, err := h.r.Report(ctx, h.pod(t))
	if done || err == nil || log != nil {
		t.Errorf("Report = %q %v %v; want not done and an error: the log cannot be redacted", log, done, err)
	}
}

func TestLeftoversAndCleanup(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	add := func(name string, phase corev1.PodPhase, managed bool) {
		p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns}, Status: corev1.PodStatus{Phase: phase}}
		if managed {
			p.Labels = map[string]string{LabelManagedBy: ManagedBy}
		}
		if _, err := h.cs.CoreV1().Pods(ns).Create(ctx, p, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	add("b-2", corev1.PodFailed, true)
	add("a-1", corev1.PodSucceeded, true)
	add("c-3", corev1.PodRunning, true)
	add("other", corev1.PodSucceeded, false)
	ids, err := h.r.Leftovers()
	if err != nil || !slices.Equal(ids, []string{"a-1", "b-2"}) {
		t.Fatalf("Leftovers = %v, %v", ids, err)
	}
	if err := h.r.Cleanup("a-1"); err != nil {
		t.Fatal(err)
	}
	if err := h.r.Cleanup("a-1"); err != nil {
		t.Errorf("second Cleanup: %v", err)
	}
	if ids, _ := h.r.Leftovers(); !slices.Equal(ids, []string{"b-2"}) {
		t.Errorf("Leftovers after Cleanup = %v", ids)
	}
	if err := h.r.Cancel(ctx, "c-3"); err != nil {
		t.Fatal(err)
	}
	pods, _ := h.cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
	if len(pods.Items) != 2 {
		t.Errorf("%d pods left, want b-2 and other", len(pods.Items))
	}
}

func TestNewChecksOptions(t *testing.T) {
	cs := fake.NewClientset()
	for _, o := range []Options{{InitImage: "i"}, {KanikoImage: "k"}} {
		if _, err := New(cs, o); err == nil {
			t.Errorf("New(%+v) accepted", o)
		}
	}
	if _, err := New(nil, Options{KanikoImage: "k", InitImage: "i"}); err == nil {
		t.Error("New accepted no client")
	}
	r, err := New(cs, Options{KanikoImage: "k", InitImage: "i"})
	if err != nil || r.opts.Namespace != DefaultNamespace || r.opts.StartTimeout != DefaultStartTimeout || r.opts.LogCap != DefaultLogCap {
		t.Errorf("New = %+v, %v", r, err)
	}
}

func TestCredentials(t *testing.T) {
	config := []byte(`{"auths":{"a.io":{"auth":"` + registryAuth + `"},"b.io":{"password":"other-password","identitytoken":"tiny"}}}`)
	got, err := credentials(config, gitToken)
	if err != nil {
		t.Fatal(err)
	}
	var s []string
	for _, b := range got {
		s = append(s, string(b))
	}
	slices.Sort(s)
	want := []string{registryAuth, "robot:" + registryPwd, gitToken, registryPwd, "other-password"}
	slices.Sort(want)
	if !slices.Equal(s, want) {
		t.Errorf("credentials = %q, want %q", s, want)
	}
	if _, err := credentials([]byte(`{"auths": "`+registryPwd), ""); err == nil || strings.Contains(err.Error(), registryPwd) {
		t.Errorf("bad config: %v", err)
	}
	if got, err := credentials(nil, ""); len(got) != 0 || err != nil {
		t.Errorf("no credentials = %q, %v", got, err)
	}
}

// TestCredentialsRedacted checks that a redactor of a build's credentials
// redacts its registry credentials and its git token.
func TestCredentialsRedacted(t *testing.T) {
	secrets, err := credentials(testSpec().DockerConfig, gitToken)
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	r := secret.NewRedactor(&out, secrets...)
	text := "token " + gitToken + " auth " + registryAuth + " pass " + registryPwd + " end ghp_tok"
	for i := 0; i < len(text); i += 3 { // split the secrets across writes
		if _, err := r.Write([]byte(text[i:min(i+3, len(text))])); err != nil {
			t.Fatal(err)
		}
	}
	if err := r.Flush(); err != nil {
		t.Fatal(err)
	}
	if want := "token [redacted] auth [redacted] pass [redacted] end ghp_tok"; out.String() != want {
		t.Errorf("redacted = %q, want %q", out.String(), want)
	}
}

func TestCapBuffer(t *testing.T) {
	c := &capBuffer{max: 100}
	c.Write([]byte("short"))
	if got := string(c.Bytes()); got != "short" {
		t.Errorf("fitting log = %q", got)
	}
	c = &capBuffer{max: 100}
	c.Write(bytes.Repeat([]byte("a"), 50))
	c.Write(bytes.Repeat([]byte("b"), 50))
	if got := string(c.Bytes()); got != strings.Repeat("a", 50)+strings.Repeat("b", 50) {
		t.Errorf("exactly fitting log = %q", got)
	}
	c = &capBuffer{max: 100}
	full := strings.Repeat("0123456789", 100) + "error building image: the end"
	for i := 0; i < len(full); i += 7 {
		c.Write([]byte(full[i:min(i+7, len(full))]))
	}
	got := string(c.Bytes())
	head, tail, ok := strings.Cut(got, "\n[slipway: the log is cut here: it is longer than 100 bytes]\n")
	// Half of max from the beginning, half from the end.
	if !ok || head != full[:50] || tail != full[len(full)-50:] {
		t.Errorf("cut log = %q", got)
	}
	// At the default cap, a 10 MiB log keeps its last 2 MiB: the push and
	// the error of a long build, not just the last few kilobytes.
	c = &capBuffer{max: DefaultLogCap}
	var long bytes.Buffer
	for i := 0; long.Len() < 10<<20; i++ {
		fmt.Fprintf(&long, "line %d of a long build\n", i)
	}
	long.WriteString("Pushed registry.local/team/img@sha256:abc\n")
	for p := long.Bytes(); len(p) > 0; p = p[min(len(p), 32<<10):] {
		c.Write(p[:min(len(p), 32<<10)])
	}
	got = string(c.Bytes())
	if _, tail, ok := strings.Cut(got, "[slipway: the log is cut here"); !ok || len(got) > DefaultLogCap+200 ||
		!strings.HasSuffix(long.String(), tail[strings.Index(tail, "\n")+1:]) || len(tail) < DefaultLogCap/2 {
		t.Errorf("a 10 MiB log capped at %d bytes kept %d bytes, %d of them after the cut", DefaultLogCap, len(got), len(tail))
	}
}

// TestRequestsAreAtMostTheLimits checks the requests of a build whose
// limits are below the default requests, and of one without limits.
func TestRequestsAreAtMostTheLimits(t *testing.T) {
	r, err := New(fake.NewClientset(), Options{KanikoImage: "k", InitImage: "i", CPURequest: 0.5, MemoryRequest: 1 << 30})
	if err != nil {
		t.Fatal(err)
	}
	small := r.resources(build.Limits{MemoryBytes: 256 << 20, CPUs: 0.1})
	if q := small.Requests[corev1.ResourceMemory]; q.Cmp(resource.MustParse("256Mi")) != 0 {
		t.Errorf("memory request %s, want the limit 256Mi", q.String())
	}
	if q := small.Requests[corev1.ResourceCPU]; q.Cmp(resource.MustParse("100m")) != 0 {
		t.Errorf("cpu request %s, want the limit 100m", q.String())
	}
	free := r.resources(build.Limits{})
	if free.Limits != nil {
		t.Errorf("limits %v, want none", free.Limits)
	}
	if q := free.Requests[corev1.ResourceCPU]; q.Cmp(resource.MustParse("500m")) != 0 {
		t.Errorf("cpu request %s, want the configured 500m", q.String())
	}
}

// TestOutcomeOfUnplacedPod checks that a pod no node takes ends the build:
// one the scheduler calls Unschedulable after StartTimeout (or its deadline,
// when shorter), and one no kubelet started within its deadline, which the
// kubelet's own activeDeadlineSeconds never counts.
func TestOutcomeOfUnplacedPod(t *testing.T) {
	r, err := New(fake.NewClientset(), Options{KanikoImage: "k", InitImage: "i"})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	r.now = func() time.Time { return now }
	unschedulable := corev1.PodStatus{Phase: corev1.PodPending, Conditions: []corev1.PodCondition{{
		Type: corev1.PodScheduled, Status: corev1.ConditionFalse, Reason: corev1.PodReasonUnschedulable,
		Message: "0/1 nodes are available: 1 Insufficient cpu.",
	}}}
	scheduled := corev1.PodStatus{Phase: corev1.PodPending, Conditions: []corev1.PodCondition{{Type: corev1.PodScheduled, Status: corev1.ConditionTrue}}}
	for _, tc := range []struct {
		name     string
		status   corev1.PodStatus
		age      time.Duration
		deadline int64 // activeDeadlineSeconds; 0 for none
		done     bool
		timedOut bool
	}{
		{name: "unschedulable, early", status: unschedulable, age: time.Minute, deadline: 1800},
		{name: "unschedulable, past StartTimeout", status: unschedulable, age: 3 * time.Minute, deadline: 1800, done: true},
		{name: "unschedulable, no deadline", status: unschedulable, age: 3 * time.Minute, done: true},
		{name: "unschedulable, past a short deadline", status: unschedulable, age: 40 * time.Second, deadline: 30, done: true},
		{name: "scheduled, not started, early", status: scheduled, age: 10 * time.Minute, deadline: 1800},
		{name: "scheduled, never started within the deadline", status: scheduled, age: 31 * time.Minute, deadline: 1800, done: true, timedOut: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: buildID, CreationTimestamp: metav1.Time{Time: now.Add(-tc.age)}}, Status: tc.status}
			pod.Spec.Containers = []corev1.Container{{Name: kanikoContainer, Resources: r.resources(testSpec().Limits)}}
			if tc.deadline > 0 {
				pod.Spec.ActiveDeadlineSeconds = &tc.deadline
			}
			o, done := r.OutcomeOf(pod)
			if done != tc.done || o.TimedOut != tc.timedOut {
				t.Fatalf("OutcomeOf = %+v, %v; want done %v, timed out %v", o, done, tc.done, tc.timedOut)
			}
			if !done {
				return
			}
			f := build.Classify(o, testSpec().Limits, "", nil)
			if tc.timedOut {
				if f.Reason != build.ReasonTimeout {
					t.Errorf("failure %+v, want a timeout", f)
				}
				return
			}
			want := "the build pod failed: no node of the cluster can take it (Unschedulable): 0/1 nodes are available: 1 Insufficient cpu.; it requests 250m CPU and 512Mi of memory"
			if f.Reason != build.ReasonInternal || f.Message != want {
				t.Errorf("failure %+v, want internal: %q", f, want)
			}
		})
	}
}

// TestLeftoversHoldUnplacedPods checks that the pod of a build that failed
// because no node takes it is among the pods to clean up: it never ends on
// its own.
func TestLeftoversHoldUnplacedPods(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "a-1", Namespace: ns, Labels: map[string]string{LabelManagedBy: ManagedBy},
		CreationTimestamp: metav1.Time{Time: time.Now().Add(-time.Hour)}},
		Status: corev1.PodStatus{Phase: corev1.PodPending, Conditions: []corev1.PodCondition{{Type: corev1.PodScheduled, Status: corev1.ConditionFalse, Reason: corev1.PodReasonUnschedulable}}}}
	if _, err := h.cs.CoreV1().Pods(ns).Create(ctx, p, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if ids, err := h.r.Leftovers(); err != nil || !slices.Equal(ids, []string{"a-1"}) {
		t.Errorf("Leftovers = %v, %v; want the unschedulable pod", ids, err)
	}
}

// TestPodBuildSecrets: a build's secrets go into its Secret, never the pod
// spec, and are mounted read-only at /run/secrets/ID in the Kaniko
// container, as the runc runner mounts them; the log's redactor knows them.
func TestPodBuildSecrets(t *testing.T) {
	h := newHarness(t)
	const value = "hub-token-5e1d09"
	spec := testSpec()
	spec.Secrets = map[string][]byte{"token": []byte(value), "pip-conf": []byte("[global]\nindex-url = https://u:p@pypi.example/simple\n")}
	if err := h.r.Create(context.Background(), spec, ContextSource{Dockerfile: dockerfile}); err != nil {
		t.Fatal(err)
	}
	p := h.pod(t)
	assertNoSecrets(t, p)
	if b, _ := json.Marshal(p); bytes.Contains(b, []byte(value)) {
		t.Fatal("the pod spec holds a build secret")
	}
	s := h.secret(t)
	if string(s.Data[BuildSecretPrefix+"token"]) != value || len(s.Data[BuildSecretPrefix+"pip-conf"]) == 0 {
		t.Fatalf("the build's Secret lacks the build secrets: keys %v", slices.Collect(maps.Keys(s.Data)))
	}
	var mount *corev1.VolumeMount
	for i, m := range p.Spec.Containers[0].VolumeMounts {
		if m.MountPath == "/run/secrets" {
			mount = &p.Spec.Containers[0].VolumeMounts[i]
		}
	}
	if mount == nil || !mount.ReadOnly {
		t.Fatalf("no read-only mount at /run/secrets: %+v", p.Spec.Containers[0].VolumeMounts)
	}
	var vol *corev1.Volume
	for i, v := range p.Spec.Volumes {
		if v.Name == mount.Name {
			vol = &p.Spec.Volumes[i]
		}
	}
	if vol == nil || vol.Secret == nil || vol.Secret.SecretName != buildID || *vol.Secret.DefaultMode != 0o400 || len(vol.Secret.Items) != 2 ||
		vol.Secret.Items[0] != (corev1.KeyToPath{Key: BuildSecretPrefix + "pip-conf", Path: "pip-conf"}) ||
		vol.Secret.Items[1] != (corev1.KeyToPath{Key: BuildSecretPrefix + "token", Path: "token"}) {
		t.Fatalf("secrets volume = %+v", vol)
	}
	secrets, err := h.r.buildSecrets(context.Background(), buildID)
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	r := secret.NewRedactor(&out, secrets...)
	r.Write([]byte("echo " + value + " done"))
	r.Flush()
	if out.String() != "echo [redacted] done" {
		t.Fatalf("the log's redactor of a finished pod: %q", out.String())
	}
	// An id that is no credential name never becomes a path.
	spec.ID = "img1-8"
	spec.Secrets = map[string][]byte{"../x": []byte(value)}
	if err := h.r.Create(context.Background(), spec, ContextSource{Dockerfile: dockerfile}); err == nil {
		t.Fatal("a secret id with a path was accepted")
	}
}

// BasesOf reads the base lines of the init container's termination message,
// at most MaxBases, and nothing before it has ended.
func TestBasesOf(t *testing.T) {
	pod := func(state corev1.ContainerState) *corev1.Pod {
		return &corev1.Pod{Status: corev1.PodStatus{InitContainerStatuses: []corev1.ContainerStatus{{Name: initContainer, State: state}}}}
	}
	msg := "commit " + strings.Repeat("a", 40) + "\nbase r.example/a:1\nbase  spaced\nbase r.example/b@sha256:" + strings.Repeat("0", 64) + "\n"
	got := BasesOf(pod(corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{Message: msg}}))
	if want := []string{"r.example/a:1", "r.example/b@sha256:" + strings.Repeat("0", 64)}; !slices.Equal(got, want) {
		t.Errorf("BasesOf = %q, want %q", got, want)
	}
	many := strings.Repeat("base r.example/x:1\n", 40)
	if got := BasesOf(pod(corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{Message: many}})); len(got) != MaxBases {
		t.Errorf("%d bases read, want at most %d", len(got), MaxBases)
	}
	failed := "fetching the build context failed: git context: ref \"x\nbase evil.example/x:1\" not found\n"
	if got := BasesOf(pod(corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 1, Message: failed}})); got != nil {
		t.Errorf("a failed fetch's message gave bases %q", got)
	}
	if got := BasesOf(pod(corev1.ContainerState{Running: &corev1.ContainerStateRunning{}})); got != nil {
		t.Errorf("running init container: %q", got)
	}
	if got := BasesOf(&corev1.Pod{}); got != nil {
		t.Errorf("no init container: %q", got)
	}
}
