package kube

import (
	"context"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/slipway-dev/slipway/pkg/build"
	"github.com/slipway-dev/slipway/pkg/secret"
)

// Kubelet reasons.
const (
	reasonDeadline = "DeadlineExceeded"
	reasonEvicted  = "Evicted"
	reasonOOM      = "OOMKilled"
)

// problemPrefix begins every Outcome.Problem of the runner: the build pod
// ended, or will never start, for a reason of the cluster rather than of
// the build.
const problemPrefix = "the build pod failed: "

// digestRE matches the digest Kaniko writes to its termination message.
var digestRE = regexp.MustCompile(`^sha256:[0-9a-f]{64}$`)

// commitRE matches the line the init container writes to its termination
// message once it has fetched the context: "commit <sha>" (SHA-1 or SHA-256).
var commitRE = regexp.MustCompile(`(?m)^commit ([0-9a-f]{40}|[0-9a-f]{64})[ \t\r]*$`)

// baseRE matches a line the init container writes to its termination
// message for each base image of the fetched Dockerfile: "base <ref>".
var baseRE = regexp.MustCompile(`(?m)^base (\S{1,512})[ \t\r]*$`)

// MaxBases bounds the bases BasesOf reads (and fetch-context writes: a
// termination message holds at most 4 KiB).
const MaxBases = 16

// BasesOf returns the base images the init container of a git build found
// in the fetched Dockerfile, after the build's arguments, as it wrote them
// to its termination message; nil until it has ended (successfully), or
// for a build without one. They are the repository's words: parse them before use.
func BasesOf(pod *corev1.Pod) []string {
	init := terminated(pod.Status.InitContainerStatuses, initContainer)
	if init == nil || init.ExitCode != 0 {
		return nil // a failed fetch's message is its error, which may quote the repository
	}
	var out []string
	for _, m := range baseRE.FindAllStringSubmatch(init.Message, MaxBases) {
		out = append(out, m[1])
	}
	return out
}

// OutcomeOf tells whether a build pod has ended, and how. While the build
// runs, done is false and the Outcome empty. Once it has ended:
//   - Succeeded: Outcome{Digest} from Kaniko's termination message, where
//     --digest-file puts it; without a valid digest, no Digest
//     (build.Classify says the executor reported none).
//   - Failed by activeDeadlineSeconds (status reason DeadlineExceeded):
//     TimedOut.
//   - Evicted (status reason Evicted) for memory: OOMKilled; for anything
//     else (ephemeral storage, say) a Problem with the kubelet's message.
//   - Disrupted (condition DisruptionTarget: preempted, drained, deleted by
//     the taint manager): a Problem.
//   - The init container failed: ContextFailed, with the init container's
//     ExitCode, and OOMKilled too when the memory limit killed it. Its log
//     (see Report) says why.
//   - Kaniko terminated: its ExitCode, and OOMKilled when its terminated
//     reason is OOMKilled.
//   - Not placed on a node: condition PodScheduled False with reason
//     Unschedulable for Options.StartTimeout (or the pod's deadline, when
//     shorter) since its creation, a Problem saying why and what it
//     requests; not started by any kubelet within activeDeadlineSeconds of
//     its creation (which the kubelet counts only from the start on a
//     node), TimedOut.
//   - Deleted before it ended (deletionTimestamp set), or a container kept
//     failing to start for Options.StartTimeout since the pod's start
//     (ErrImagePull, ImagePullBackOff, CreateContainerConfigError,
//     CreateContainerError; InvalidImageName and ErrImageNeverPull at once):
//     a Problem.
//
// Outcome.ExitCode is Kaniko's exit code, the init container's when that
// one failed, and -1 when neither has one. Outcome.Commit is the commit the
// init container wrote to its termination message ("commit <sha>"), when it
// did. A Problem begins with "the build pod failed: ".
func (r *Runner) OutcomeOf(pod *corev1.Pod) (o build.Outcome, done bool) {
	kaniko := terminated(pod.Status.ContainerStatuses, kanikoContainer)
	o.ExitCode = -1
	if kaniko != nil {
		o.ExitCode = int(kaniko.ExitCode)
	}
	if init := terminated(pod.Status.InitContainerStatuses, initContainer); init != nil {
		if m := commitRE.FindAllStringSubmatch(init.Message, -1); m != nil {
			o.Commit = m[len(m)-1][1]
		}
	}
	switch pod.Status.Phase {
	case corev1.PodSucceeded:
		o.ExitCode = 0
		if kaniko != nil {
			if d := strings.TrimSpace(kaniko.Message); digestRE.MatchString(d) {
				o.Digest = d
			}
		}
		return o, true
	case corev1.PodFailed:
		return failed(pod, o, kaniko), true
	}
	if pod.DeletionTimestamp != nil {
		o.Problem = deletedProblem(pod.Name)
		return o, true
	}
	if msg := r.notStarting(pod); msg != "" {
		o.Problem = problemPrefix + msg
		return o, true
	}
	if msg := r.unschedulable(pod); msg != "" {
		o.Problem = problemPrefix + msg
		return o, true
	}
	created := !pod.CreationTimestamp.IsZero()
	if created && pod.Status.StartTime == nil && pod.Spec.ActiveDeadlineSeconds != nil &&
		r.now().Sub(pod.CreationTimestamp.Time) >= time.Duration(*pod.Spec.ActiveDeadlineSeconds)*time.Second {
		// activeDeadlineSeconds counts from the start on a node only: a pod
		// no kubelet started within the build's time limit has timed out.
		o.TimedOut = true
		return o, true
	}
	return build.Outcome{}, false
}

// unschedulable describes why the scheduler cannot place the pod, once it
// has said so (condition PodScheduled False, reason Unschedulable) for
// Options.StartTimeout since the pod was created, or for its whole
// deadline when that is shorter; "" otherwise.
func (r *Runner) unschedulable(pod *corev1.Pod) string {
	if pod.CreationTimestamp.IsZero() {
		return "" // no API server's: its age is unknown
	}
	for _, c := range pod.Status.Conditions {
		if c.Type != corev1.PodScheduled || c.Status != corev1.ConditionFalse || c.Reason != corev1.PodReasonUnschedulable {
			continue
		}
		wait := r.opts.StartTimeout
		if d := pod.Spec.ActiveDeadlineSeconds; d != nil {
			wait = min(wait, time.Duration(*d)*time.Second)
		}
		if r.now().Sub(pod.CreationTimestamp.Time) < wait {
			return ""
		}
		return fmt.Sprintf("no node of the cluster can take it (%s): %s; it requests %s", c.Reason, c.Message, requests(pod))
	}
	return ""
}

// requests sums up what the pod's containers request, for messages.
func requests(pod *corev1.Pod) string {
	var cpu, mem resource.Quantity
	for _, c := range pod.Spec.Containers {
		cpu.Add(c.Resources.Requests[corev1.ResourceCPU])
		mem.Add(c.Resources.Requests[corev1.ResourceMemory])
	}
	return fmt.Sprintf("%s CPU and %s of memory", cpu.String(), mem.String())
}

// failed is OutcomeOf for a pod in phase Failed.
func failed(pod *corev1.Pod, o build.Outcome, kaniko *corev1.ContainerStateTerminated) build.Outcome {
	st := pod.Status
	if st.Reason == reasonDeadline {
		o.TimedOut = true
		return o
	}
	if st.Reason == reasonEvicted {
		if strings.Contains(strings.ToLower(st.Message), "memory") {
			o.OOMKilled = true
		} else {
			o.Problem = problemPrefix + "it was evicted: " + st.Message
		}
		return o
	}
	for _, c := range st.Conditions {
		if c.Type == corev1.DisruptionTarget && c.Status == corev1.ConditionTrue {
			o.Problem = fmt.Sprintf("%sit was stopped by the cluster (%s): %s", problemPrefix, c.Reason, c.Message)
			return o
		}
	}
	if init := terminated(st.InitContainerStatuses, initContainer); init != nil && init.ExitCode != 0 {
		o.ExitCode = int(init.ExitCode)
		o.ContextFailed = true
		o.OOMKilled = init.Reason == reasonOOM
		return o
	}
	if kaniko != nil {
		o.OOMKilled = kaniko.Reason == reasonOOM
		return o
	}
	o.Problem = fmt.Sprintf("%s%s: %s", problemPrefix, st.Reason, st.Message)
	return o
}

// deletedProblem is the Outcome.Problem of a build whose pod was deleted
// before it ended.
func deletedProblem(id string) string {
	return fmt.Sprintf("%spod %s was deleted before the build ended", problemPrefix, id)
}

// notStarting describes a container of the pod that will not start, or ""
// when there is none.
func (r *Runner) notStarting(pod *corev1.Pod) string {
	start := pod.CreationTimestamp.Time
	if pod.Status.StartTime != nil {
		start = pod.Status.StartTime.Time
	}
	late := r.now().Sub(start) >= r.opts.StartTimeout
	statuses := append(append([]corev1.ContainerStatus(nil), pod.Status.InitContainerStatuses...), pod.Status.ContainerStatuses...)
	for _, cs := range statuses {
		w := cs.State.Waiting
		if w == nil {
			continue
		}
		switch w.Reason {
		case "InvalidImageName", "ErrImageNeverPull":
		case "ErrImagePull", "ImagePullBackOff", "CreateContainerConfigError", "CreateContainerError":
			if !late {
				continue
			}
		default:
			continue
		}
		return fmt.Sprintf("container %s (%s) cannot start: %s: %s", cs.Name, cs.Image, w.Reason, w.Message)
	}
	return ""
}

// Report is what the reporter calls on each event about a build pod: it
// returns the build's ID and, once the pod has ended (done), its Outcome
// (OutcomeOf's) and log. The log is that of the container that ended the
// build (Kaniko, or the init container), with the build's credentials, read
// from its Secret, replaced by "[redacted]", and cut to Options.LogCap bytes
// when longer: its beginning and its end, where Kaniko states its error,
// around a marker line. A log the pod took with it when it was deleted is
// nil.
//
// An error means Report could not read what it needs (the Secret, the
// log), and comes with done false: the caller retries. How the build ended,
// however it ended, is in the Outcome. Report changes nothing; settling the
// build once is the caller's business.
func (r *Runner) Report(ctx context.Context, pod *corev1.Pod) (id string, o build.Outcome, log []byte, done bool, err error) {
	if pod == nil || pod.Namespace != r.opts.Namespace || pod.Labels[LabelManagedBy] != ManagedBy {
		return "", build.Outcome{}, nil, false, errors.New("kube: not a build pod")
	}
	o, done = r.OutcomeOf(pod)
	if !done {
		return pod.Name, o, nil, false, nil
	}
	if c := logContainer(pod); c != "" {
		if log, err = r.readLog(ctx, pod.Name, c); err != nil {
			return pod.Name, build.Outcome{}, nil, false, err
		}
	}
	return pod.Name, o, log, true, nil
}

// buildSecrets returns the credentials of build pod's Secret, to redact;
// none when the build has no Secret (it needs no credentials, or its pod is
// gone and the Secret with it).
func (r *Runner) buildSecrets(ctx context.Context, pod string) ([][]byte, error) {
	s, err := r.client.CoreV1().Secrets(r.opts.Namespace).Get(ctx, pod, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		return nil, nil
	case err != nil:
		return nil, fmt.Errorf("kube: get secret %s: %w", pod, err)
	}
	secrets, err := credentials(s.Data[corev1.DockerConfigJsonKey], string(s.Data[GitTokenKey]), secretValues(s.Data)...)
	if err != nil {
		return nil, fmt.Errorf("kube: secret %s: %w", pod, err)
	}
	return secrets, nil
}

// readLog returns a container's log, redacted and capped; nil when the pod
// is gone.
func (r *Runner) readLog(ctx context.Context, pod, container string) ([]byte, error) {
	secrets, err := r.buildSecrets(ctx, pod)
	if err != nil {
		return nil, err
	}
	buf := &capBuffer{max: r.opts.LogCap}
	red := secret.NewRedactor(buf, secrets...)
	err = r.copyLog(ctx, pod, container, red)
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	if err := red.Flush(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// copyLog copies a container's log to w.
func (r *Runner) copyLog(ctx context.Context, pod, container string, w io.Writer) error {
	rc, err := r.client.CoreV1().Pods(r.opts.Namespace).GetLogs(pod, &corev1.PodLogOptions{Container: container}).Stream(ctx)
	if err != nil {
		return fmt.Errorf("kube: log of %s in pod %s: %w", container, pod, err)
	}
	defer rc.Close()
	if _, err := io.Copy(w, rc); err != nil {
		return fmt.Errorf("kube: log of %s in pod %s: %w", container, pod, err)
	}
	return nil
}

// logContainer names the container whose log tells how the build went:
// the init container when it failed, Kaniko once it has started; "" when
// neither has run.
func logContainer(pod *corev1.Pod) string {
	if init := terminated(pod.Status.InitContainerStatuses, initContainer); init != nil && init.ExitCode != 0 {
		return initContainer
	}
	for _, cs := range pod.Status.ContainerStatuses {
		if cs.Name == kanikoContainer && (cs.State.Running != nil || cs.State.Terminated != nil) {
			return kanikoContainer
		}
	}
	return ""
}

// terminated returns the terminated state of the named container, nil
// while it has none.
func terminated(statuses []corev1.ContainerStatus, name string) *corev1.ContainerStateTerminated {
	for _, cs := range statuses {
		if cs.Name == name {
			return cs.State.Terminated
		}
	}
	return nil
}

// followPoll is how often Follow looks at a build pod whose Kaniko has not
// started yet.
const followPoll = time.Second

// Follow writes build id's log to w while its pod runs: Kaniko's log, from
// byte offset of the redacted log on, as Kaniko writes it, with the build's
// credentials replaced by "[redacted]" as in the log Report returns. It
// waits for Kaniko to start (the init container fetching a git context
// first, say) and returns when Kaniko's log ends or ctx is done, with the
// bytes it wrote. A build without a pod, or whose pod has ended, gets
// nothing: its log is the one Report returns, which the reporter records.
func (r *Runner) Follow(ctx context.Context, id string, offset int64, w io.Writer) (int64, error) {
	pods := r.client.CoreV1().Pods(r.opts.Namespace)
	for {
		pod, err := pods.Get(ctx, id, metav1.GetOptions{})
		switch {
		case apierrors.IsNotFound(err), ctx.Err() != nil:
			return 0, nil
		case err != nil:
			return 0, fmt.Errorf("kube: get pod %s: %w", id, err)
		case pod.Labels[LabelManagedBy] != ManagedBy:
			return 0, fmt.Errorf("kube: pod %s is not a build pod", id)
		}
		if _, done := r.OutcomeOf(pod); done {
			return 0, nil
		}
		if logContainer(pod) == kanikoContainer {
			break
		}
		select {
		case <-ctx.Done():
			return 0, nil
		case <-time.After(followPoll):
		}
	}
	secrets, err := r.buildSecrets(ctx, id)
	if err != nil {
		return 0, err
	}
	rc, err := pods.GetLogs(id, &corev1.PodLogOptions{Container: kanikoContainer, Follow: true}).Stream(ctx)
	if err != nil {
		if ctx.Err() != nil || apierrors.IsNotFound(err) {
			return 0, nil
		}
		return 0, fmt.Errorf("kube: follow the log of pod %s: %w", id, err)
	}
	defer rc.Close()
	out := &skipWriter{w: w, skip: offset}
	red := secret.NewRedactor(out, secrets...)
	_, err = io.Copy(red, rc)
	if ctx.Err() != nil {
		return out.n, nil
	}
	if ferr := red.Flush(); err == nil {
		err = ferr
	}
	if err != nil {
		return out.n, fmt.Errorf("kube: follow the log of pod %s: %w", id, err)
	}
	return out.n, nil
}

// skipWriter drops the first skip bytes written to it and counts the rest
// it writes to w.
type skipWriter struct {
	w    io.Writer
	skip int64
	n    int64
}

func (s *skipWriter) Write(p []byte) (int, error) {
	all := len(p)
	if s.skip > 0 {
		k := min(s.skip, int64(len(p)))
		s.skip -= k
		p = p[k:]
	}
	if len(p) == 0 {
		return all, nil
	}
	n, err := s.w.Write(p)
	s.n += int64(n)
	if err != nil {
		return all, err
	}
	return all, nil
}
