package kube

import (
	"context"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/slipway-dev/slipway/pkg/build"
)

// Errors of builds whose executor did not decide how they ended. They stand
// for facts that build.Outcome has no field for yet.
var (
	// ErrContext is wrapped when the init container failed to fetch the
	// git context, so Kaniko never ran; the Outcome's ExitCode is the init
	// container's and the error ends with its last message line. The
	// build's failure reason is git.
	ErrContext = errors.New("fetching the build context failed")
	// ErrPod is wrapped when the build pod ended, or will never start, for a
	// reason of the cluster rather than of the build: an image that cannot
	// be pulled, a Secret that does not come, an eviction for anything but
	// memory, a disruption (preemption, node drain), a deletion by someone
	// else. The build's failure reason is internal, with the error's text.
	ErrPod = errors.New("the build pod failed")
)

// Kubelet reasons.
const (
	reasonDeadline = "DeadlineExceeded"
	reasonEvicted  = "Evicted"
	reasonOOM      = "OOMKilled"
)

// digestRE matches the digest Kaniko writes to its termination message.
var digestRE = regexp.MustCompile(`^sha256:[0-9a-f]{64}$`)

// OutcomeOf tells whether a build pod has ended, and how. While the build
// runs, done is false. Once it has ended:
//   - Succeeded: Outcome{Digest} from Kaniko's termination message, where
//     --digest-file puts it; without a valid digest, Outcome{} (build.Classify
//     says the executor reported none).
//   - Failed by activeDeadlineSeconds (status reason DeadlineExceeded):
//     TimedOut.
//   - Evicted (status reason Evicted) for memory: OOMKilled; for anything
//     else (ephemeral storage, say) an error wrapping ErrPod with the
//     kubelet's message.
//   - Disrupted (condition DisruptionTarget: preempted, drained, deleted by
//     the taint manager): an error wrapping ErrPod.
//   - The init container failed: OOMKilled when the memory limit killed
//     it, otherwise an error wrapping ErrContext.
//   - Kaniko terminated: its ExitCode, and OOMKilled when its terminated
//     reason is OOMKilled.
//   - Deleted before it ended (deletionTimestamp set), or a container kept
//     failing to start for Options.StartTimeout since the pod's start
//     (ErrImagePull, ImagePullBackOff, CreateContainerConfigError,
//     CreateContainerError; InvalidImageName and ErrImageNeverPull at once):
//     an error wrapping ErrPod.
//
// Outcome.ExitCode is Kaniko's exit code, the init container's when that
// one failed, and -1 when neither has one.
func (r *Runner) OutcomeOf(pod *corev1.Pod) (o build.Outcome, done bool, err error) {
	kaniko := terminated(pod.Status.ContainerStatuses, kanikoContainer)
	o.ExitCode = -1
	if kaniko != nil {
		o.ExitCode = int(kaniko.ExitCode)
	}
	switch pod.Status.Phase {
	case corev1.PodSucceeded:
		o.ExitCode = 0
		if kaniko != nil {
			if d := strings.TrimSpace(kaniko.Message); digestRE.MatchString(d) {
				o.Digest = d
			}
		}
		return o, true, nil
	case corev1.PodFailed:
		o, err = failed(pod, o, kaniko)
		return o, true, err
	}
	if pod.DeletionTimestamp != nil {
		return o, true, deleted(pod.Name)
	}
	if msg := r.notStarting(pod); msg != "" {
		return o, true, fmt.Errorf("%w: %s", ErrPod, msg)
	}
	return build.Outcome{}, false, nil
}

// failed is OutcomeOf for a pod in phase Failed.
func failed(pod *corev1.Pod, o build.Outcome, kaniko *corev1.ContainerStateTerminated) (build.Outcome, error) {
	st := pod.Status
	if st.Reason == reasonDeadline {
		o.TimedOut = true
		return o, nil
	}
	if st.Reason == reasonEvicted {
		if strings.Contains(strings.ToLower(st.Message), "memory") {
			o.OOMKilled = true
			return o, nil
		}
		return o, fmt.Errorf("%w: it was evicted: %s", ErrPod, st.Message)
	}
	for _, c := range st.Conditions {
		if c.Type == corev1.DisruptionTarget && c.Status == corev1.ConditionTrue {
			return o, fmt.Errorf("%w: it was stopped by the cluster (%s): %s", ErrPod, c.Reason, c.Message)
		}
	}
	if init := terminated(st.InitContainerStatuses, initContainer); init != nil && init.ExitCode != 0 {
		o.ExitCode = int(init.ExitCode)
		if init.Reason == reasonOOM {
			o.OOMKilled = true
			return o, nil
		}
		err := fmt.Errorf("%w (exit code %d)", ErrContext, init.ExitCode)
		if line := lastLine(init.Message); line != "" {
			err = fmt.Errorf("%w: %s", err, line)
		}
		return o, err
	}
	if kaniko != nil {
		o.OOMKilled = kaniko.Reason == reasonOOM
		return o, nil
	}
	return o, fmt.Errorf("%w: %s: %s", ErrPod, st.Reason, st.Message)
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
// and log and OutcomeOf's error, which wraps ErrContext or ErrPod. The log
// is that of the container that ended the build (Kaniko, or the init
// container), with the build's credentials, read from its Secret, replaced
// by "[redacted]", and cut to Options.LogCap bytes when longer: its
// beginning and its end, where Kaniko states its error, around a marker
// line. A log the pod
// took with it when it was deleted is nil.
//
// An error with done false means Report could not read what it needs (the
// Secret, the log): the caller retries. Report changes nothing; settling
// the build once is the caller's business.
func (r *Runner) Report(ctx context.Context, pod *corev1.Pod) (id string, o build.Outcome, log []byte, done bool, err error) {
	if pod == nil || pod.Namespace != r.opts.Namespace || pod.Labels[LabelManagedBy] != ManagedBy {
		return "", build.Outcome{}, nil, false, errors.New("kube: not a build pod")
	}
	o, done, outErr := r.OutcomeOf(pod)
	if !done {
		return pod.Name, o, nil, false, nil
	}
	if c := logContainer(pod); c != "" {
		if log, err = r.readLog(ctx, pod.Name, c); err != nil {
			return pod.Name, build.Outcome{}, nil, false, err
		}
	}
	return pod.Name, o, log, true, outErr
}

// readLog returns a container's log, redacted and capped; nil when the pod
// is gone.
func (r *Runner) readLog(ctx context.Context, pod, container string) ([]byte, error) {
	var secrets [][]byte
	s, err := r.client.CoreV1().Secrets(r.opts.Namespace).Get(ctx, pod, metav1.GetOptions{})
	switch {
	case err == nil:
		if secrets, err = credentials(s.Data[corev1.DockerConfigJsonKey], string(s.Data[GitTokenKey])); err != nil {
			return nil, fmt.Errorf("kube: secret %s: %w", pod, err)
		}
	case !apierrors.IsNotFound(err): // none: the build needs no credentials
		return nil, fmt.Errorf("kube: get secret %s: %w", pod, err)
	}
	buf := &capBuffer{max: r.opts.LogCap}
	red := &redactor{w: buf, secrets: secrets}
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

// lastLine is the last non-blank line of a termination message, which the
// kubelet fills with the end of the log when the container wrote none.
func lastLine(msg string) string {
	lines := strings.Split(strings.TrimSpace(msg), "\n")
	line := strings.TrimSpace(lines[len(lines)-1])
	if len(line) > 500 {
		line = line[:500] + "…"
	}
	return line
}
