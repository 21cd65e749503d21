package kube

import (
	"errors"
	"fmt"
	"maps"
	"math"
	"path"
	"regexp"
	"slices"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/slipway-dev/slipway/pkg/build"
	"github.com/slipway-dev/slipway/pkg/image"
	"github.com/slipway-dev/slipway/pkg/secret"
)

// Labels of build pods and their Secrets. The ApiServerSource that feeds the
// reporter selects pods by LabelManagedBy=ManagedBy.
const (
	LabelManagedBy = "app.kubernetes.io/managed-by"
	ManagedBy      = "slipway"
	LabelImage     = "slipway.dev/image" // the image's ID
	LabelBuild     = "slipway.dev/build" // the build's number
)

// Keys of a build's Secret.
const (
	// GitTokenKey holds the token of a private git context; only the init
	// container sees it, as the environment variable GitTokenEnv.
	GitTokenKey = "git-token"
	// DockerfileKey holds the Dockerfile of a local context.
	DockerfileKey = "Dockerfile"
)

// The build pod's layout. Its init container, for git contexts only, runs
// the InitImage's entrypoint (slipway) with the arguments
//
//	fetch-context --url URL [--ref REF] [--dir DIR] --dest /workspace
//
// and the token, if any, in $SLIPWAY_GIT_TOKEN: it checks the commit out
// into /workspace (an emptyDir) as gitctx.Fetch does with dest /workspace,
// writes "commit <sha>" to its termination message (/dev/termination-log),
// where OutcomeOf reads it, and Kaniko builds /workspace/DIR.
const (
	kanikoContainer  = "kaniko"
	initContainer    = "fetch-context"
	workspaceVolume  = "workspace"
	tmpVolume        = "tmp"
	dockerVolume     = "docker-config"
	dockerfileVolume = "dockerfile"
	secretsVolume    = "build-secrets"
	workspaceDir     = "/workspace"
	dockerConfigDir  = "/kaniko/.docker"
	terminationLog   = "/dev/termination-log"
	// BuildSecretPrefix starts the build Secret's key of each build secret
	// (BuildSecretPrefix + id), mounted at image.SecretsDir/ID.
	BuildSecretPrefix = "build-secret."
	// GitTokenEnv is the init container's environment variable that holds
	// the git token, from the Secret's GitTokenKey.
	GitTokenEnv = "SLIPWAY_GIT_TOKEN"
)

// initUser is the init container's user and group: the nonroot user of
// distroless and ko images. Fetching a context needs no privilege.
const initUser = 65532

// terminationGrace is how long a deleted build pod's containers get to stop
// after SIGTERM before SIGKILL: a cancelled build stops within seconds.
const terminationGrace = 5

// kanikoCapabilities are the only capabilities the executor keeps. Kaniko
// runs as root but needs no more than what unpacking images and running RUN
// steps as their USER take (Kaniko documents no list; see its issues #778,
// #1171 and #2201, and shipwright-io/build's Kaniko strategy):
//   - CHOWN, FOWNER, FSETID: restore the owners, modes and set-user/group-ID
//     bits of the files it unpacks and copies (without FSETID, chmod silently
//     drops the set-group-ID bit of files whose group root is not in);
//   - DAC_OVERRIDE: read and write files whatever their modes;
//   - SETUID, SETGID: run RUN steps as the Dockerfile's USER;
//   - SETFCAP: unpack, or install with rpm/dpkg, files with file capabilities;
//   - KILL: kill what a RUN step left running as another user.
//
// Left out of Docker's defaults: MKNOD (Kaniko skips /dev, the only place
// base images keep device nodes), NET_RAW, NET_BIND_SERVICE, SYS_CHROOT,
// SETPCAP and AUDIT_WRITE, which builds do not need.
var kanikoCapabilities = []corev1.Capability{"CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "SETGID", "SETUID", "SETFCAP"}

// ContextSource is where a build pod gets its build context: exactly one of
// Dockerfile (a local context: the Dockerfile's text, the whole context) and
// Git.
type ContextSource struct {
	Dockerfile string
	Git        *image.Git
	// GitToken authenticates to Git's repository; empty for a public one.
	// It reaches the pod only through the build's Secret.
	GitToken string
}

// validSecretID is a build secret's id: a workspace credential's name.
var validSecretID = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)

// buildPod is what Create makes of a spec: the pod, and the Secret (nil
// when the build needs none) to create once the pod exists.
type buildPod struct {
	pod    *corev1.Pod
	secret *corev1.Secret
}

// newBuildPod checks spec and src and returns the objects of the build.
func (r *Runner) newBuildPod(spec build.Spec, src ContextSource) (*buildPod, error) {
	imageID, number, err := ParseID(spec.ID)
	if err != nil {
		return nil, err
	}
	if len(spec.Destinations) == 0 {
		return nil, fmt.Errorf("kube: build %s: no destination", spec.ID)
	}
	if _, err := secret.DockerConfigSecrets(spec.DockerConfig); err != nil {
		return nil, fmt.Errorf("kube: build %s: %w", spec.ID, err)
	}
	dockerfile, err := cleanRelative(spec.Dockerfile)
	if err != nil {
		return nil, fmt.Errorf("kube: build %s: Dockerfile: %w", spec.ID, err)
	}
	if dockerfile == "" {
		dockerfile = "Dockerfile"
	}
	labels := map[string]string{LabelManagedBy: ManagedBy, LabelImage: imageID, LabelBuild: strconv.Itoa(number)}
	secretData := map[string][]byte{}
	if spec.DockerConfig != nil {
		secretData[corev1.DockerConfigJsonKey] = spec.DockerConfig
	}

	kaniko := corev1.Container{
		Name:                     kanikoContainer,
		Image:                    r.opts.KanikoImage,
		Env:                      []corev1.EnvVar{{Name: "DOCKER_CONFIG", Value: dockerConfigDir}},
		Resources:                r.resources(spec.Limits),
		VolumeMounts:             []corev1.VolumeMount{{Name: workspaceVolume, MountPath: workspaceDir}},
		TerminationMessagePath:   terminationLog,
		TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError,
		SecurityContext: &corev1.SecurityContext{
			RunAsUser:                ptr(int64(0)),
			RunAsGroup:               ptr(int64(0)),
			RunAsNonRoot:             ptr(false),
			Privileged:               ptr(false),
			AllowPrivilegeEscalation: ptr(false),
			Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}, Add: kanikoCapabilities},
		},
	}
	volumes := []corev1.Volume{{Name: workspaceVolume, VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}}
	var initContainers []corev1.Container
	contextDir := workspaceDir

	switch {
	case src.Git != nil && src.Dockerfile != "":
		return nil, fmt.Errorf("kube: build %s: the context source has both a Dockerfile and a git repository", spec.ID)
	case src.Git != nil:
		if r.opts.InitImage == "" {
			return nil, fmt.Errorf("kube: build %s: a git context needs Options.InitImage", spec.ID)
		}
		if src.Git.URL == "" {
			return nil, fmt.Errorf("kube: build %s: the git context has no URL", spec.ID)
		}
		dir, err := image.CleanDir(src.Git.Dir)
		if err != nil {
			return nil, fmt.Errorf("kube: build %s: %w", spec.ID, err)
		}
		args := []string{"fetch-context", "--url", src.Git.URL}
		if src.Git.Ref != "" {
			args = append(args, "--ref", src.Git.Ref)
		}
		if dir != "" {
			args = append(args, "--dir", dir)
			contextDir = path.Join(workspaceDir, dir)
		}
		args = append(args, "--dest", workspaceDir)
		// For the bases it reports (BasesOf): the FROMs after the build's
		// arguments, which are plain values (secrets are not arguments).
		for _, kv := range spec.BuildArgs {
			args = append(args, "--build-arg", kv)
		}
		fetch := corev1.Container{
			Name:      initContainer,
			Image:     r.opts.InitImage,
			Args:      args,
			Resources: r.resources(spec.Limits),
			VolumeMounts: []corev1.VolumeMount{
				{Name: workspaceVolume, MountPath: workspaceDir},
				{Name: tmpVolume, MountPath: "/tmp"},
			},
			TerminationMessagePath:   terminationLog,
			TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError,
			SecurityContext: &corev1.SecurityContext{
				RunAsUser:                ptr(int64(initUser)),
				RunAsGroup:               ptr(int64(initUser)),
				RunAsNonRoot:             ptr(true),
				Privileged:               ptr(false),
				AllowPrivilegeEscalation: ptr(false),
				ReadOnlyRootFilesystem:   ptr(true),
				Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
			},
		}
		if src.GitToken != "" {
			secretData[GitTokenKey] = []byte(src.GitToken)
			fetch.Env = []corev1.EnvVar{{Name: GitTokenEnv, ValueFrom: &corev1.EnvVarSource{
				SecretKeyRef: &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: spec.ID}, Key: GitTokenKey},
			}}}
		}
		initContainers = []corev1.Container{fetch}
		volumes = append(volumes, corev1.Volume{Name: tmpVolume, VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}})
	case src.Dockerfile != "":
		if src.GitToken != "" {
			return nil, fmt.Errorf("kube: build %s: a git token without a git context", spec.ID)
		}
		// The Dockerfile is the whole context: one file of the Secret,
		// mounted into the empty workspace, as the runc runner's context
		// directory holds just the Dockerfile.
		secretData[DockerfileKey] = []byte(src.Dockerfile)
		kaniko.VolumeMounts = append(kaniko.VolumeMounts, corev1.VolumeMount{
			Name: dockerfileVolume, MountPath: path.Join(workspaceDir, dockerfile), SubPath: DockerfileKey, ReadOnly: true,
		})
		volumes = append(volumes, secretVolume(dockerfileVolume, spec.ID, DockerfileKey, DockerfileKey, 0o444))
	default:
		return nil, fmt.Errorf("kube: build %s: the context source has neither a Dockerfile nor a git repository", spec.ID)
	}

	if spec.DockerConfig != nil {
		kaniko.VolumeMounts = append(kaniko.VolumeMounts, corev1.VolumeMount{Name: dockerVolume, MountPath: dockerConfigDir, ReadOnly: true})
		volumes = append(volumes, secretVolume(dockerVolume, spec.ID, corev1.DockerConfigJsonKey, "config.json", 0o400))
	}
	if len(spec.Secrets) > 0 {
		// Read-only files of root's, mode 0400, as the runc runner mounts
		// them: Kaniko leaves the mount point out of every snapshot.
		vol := &corev1.SecretVolumeSource{SecretName: spec.ID, DefaultMode: ptr(int32(0o400))}
		for _, id := range slices.Sorted(maps.Keys(spec.Secrets)) {
			if !validSecretID.MatchString(id) {
				return nil, fmt.Errorf("kube: build %s: secret id %q is not a credential name", spec.ID, id)
			}
			secretData[BuildSecretPrefix+id] = spec.Secrets[id]
			vol.Items = append(vol.Items, corev1.KeyToPath{Key: BuildSecretPrefix + id, Path: id})
		}
		kaniko.VolumeMounts = append(kaniko.VolumeMounts, corev1.VolumeMount{Name: secretsVolume, MountPath: image.SecretsDir, ReadOnly: true})
		volumes = append(volumes, corev1.Volume{Name: secretsVolume, VolumeSource: corev1.VolumeSource{Secret: vol}})
	}
	// The digest goes to Kaniko's termination message, where OutcomeOf reads it.
	kaniko.Args = build.ExecutorArgs(spec, path.Join(contextDir, dockerfile), contextDir, terminationLog)

	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: spec.ID, Namespace: r.opts.Namespace, Labels: labels},
		Spec: corev1.PodSpec{
			RestartPolicy:                 corev1.RestartPolicyNever,
			ActiveDeadlineSeconds:         deadline(spec.Limits),
			TerminationGracePeriodSeconds: ptr(int64(terminationGrace)),
			AutomountServiceAccountToken:  ptr(false),
			EnableServiceLinks:            ptr(false),
			HostNetwork:                   false,
			HostPID:                       false,
			HostIPC:                       false,
			SecurityContext: &corev1.PodSecurityContext{
				SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
			},
			InitContainers: initContainers,
			Containers:     []corev1.Container{kaniko},
			Volumes:        volumes,
		},
	}
	b := &buildPod{pod: pod}
	if len(secretData) > 0 {
		typ := corev1.SecretTypeOpaque
		if spec.DockerConfig != nil {
			typ = corev1.SecretTypeDockerConfigJson
		}
		b.secret = &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Name: spec.ID, Namespace: r.opts.Namespace, Labels: labels},
			Type:       typ,
			Immutable:  ptr(true),
			Data:       secretData,
		}
	}
	return b, nil
}

// resources turns a build's limits into a container's: it requests what a
// build needs to be placed (Options.CPURequest and Options.MemoryRequest,
// each at most its limit) and is limited to Limits.MemoryBytes and
// Limits.CPUs. The CPU request is always explicit: without one, Kubernetes
// requests the limit, and a node smaller than the limit never takes the
// pod. Limits.Pids has no per-pod setting: the kubelet's --pod-max-pids
// bounds every pod.
func (r *Runner) resources(l build.Limits) corev1.ResourceRequirements {
	rr := corev1.ResourceRequirements{Requests: corev1.ResourceList{}, Limits: corev1.ResourceList{}}
	mem := r.opts.MemoryRequest
	if l.MemoryBytes > 0 {
		rr.Limits[corev1.ResourceMemory] = *resource.NewQuantity(l.MemoryBytes, resource.BinarySI)
		mem = min(mem, l.MemoryBytes)
	}
	rr.Requests[corev1.ResourceMemory] = *resource.NewQuantity(mem, resource.BinarySI)
	cpu := r.opts.CPURequest
	if l.CPUs > 0 {
		rr.Limits[corev1.ResourceCPU] = *milliCPU(l.CPUs)
		cpu = min(cpu, l.CPUs)
	}
	rr.Requests[corev1.ResourceCPU] = *milliCPU(cpu)
	if len(rr.Limits) == 0 {
		rr.Limits = nil
	}
	return rr
}

// milliCPU is a CPU quantity of cores, rounded up to a millicore.
func milliCPU(cores float64) *resource.Quantity {
	return resource.NewMilliQuantity(int64(math.Ceil(cores*1000)), resource.DecimalSI)
}

// deadline is the pod's activeDeadlineSeconds: Limits.Timeout rounded up,
// nil for none. The kubelet counts it from the pod's start, image pulls and
// context fetch included.
func deadline(l build.Limits) *int64 {
	if l.Timeout <= 0 {
		return nil
	}
	return ptr(int64(math.Ceil(l.Timeout.Seconds())))
}

// secretVolume is a volume with one key of the build's Secret as file name.
func secretVolume(name, secret, key, file string, mode int32) corev1.Volume {
	return corev1.Volume{Name: name, VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{
		SecretName:  secret,
		Items:       []corev1.KeyToPath{{Key: key, Path: file}},
		DefaultMode: ptr(mode),
	}}}
}

// ParseID splits a build ID, "<image ID>-<number>", into its parts, and
// checks that it can name a pod and label it: the ID is a DNS subdomain
// (lower case) and the image ID a label value (at most 63 characters).
func ParseID(id string) (imageID string, number int, err error) {
	i := strings.LastIndexByte(id, '-')
	if i <= 0 {
		return "", 0, fmt.Errorf("kube: build ID %q is not <image>-<number>", id)
	}
	imageID, num := id[:i], id[i+1:]
	number, err = strconv.Atoi(num)
	if err != nil || number < 0 || strconv.Itoa(number) != num {
		return "", 0, fmt.Errorf("kube: build ID %q is not <image>-<number>", id)
	}
	if errs := validation.IsDNS1123Subdomain(id); len(errs) > 0 {
		return "", 0, fmt.Errorf("kube: build ID %q cannot name a pod: %s", id, strings.Join(errs, "; "))
	}
	if errs := validation.IsValidLabelValue(imageID); len(errs) > 0 {
		return "", 0, fmt.Errorf("kube: image ID %q cannot be a label value: %s", imageID, strings.Join(errs, "; "))
	}
	return imageID, number, nil
}

// cleanRelative returns p as a clean slash-separated relative path that
// stays in its directory; "" for "" or ".".
func cleanRelative(p string) (string, error) {
	if strings.ContainsRune(p, 0) || strings.Contains(p, `\`) || path.IsAbs(p) {
		return "", fmt.Errorf("%q is not a relative path", p)
	}
	clean := path.Clean(p)
	switch {
	case clean == ".":
		return "", nil
	case clean == ".." || strings.HasPrefix(clean, "../"):
		return "", errors.New("the path leaves the build context")
	}
	return clean, nil
}

func ptr[T any](v T) *T { return &v }
