package runc

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// cgroupPath is the cgroupsPath of a build's container. It is relative, so
// runc creates the cgroup under the calling process's own cgroup, in each
// hierarchy: builds count against the limits of the service that runs them.
func cgroupPath(id string) string {
	return "slipway-" + id
}

// oomKills returns how many processes the kernel's OOM killer has killed in
// the memory cgroup of build id's container. The cgroup must still exist:
// the container ran with `runc run --keep` and is not yet deleted.
//
// On cgroup v1, and on hybrid hosts whose memory controller is v1, the count
// is the oom_kill line of memory.oom_control; on cgroup v2 it is the one of
// memory.events.
func oomKills(id string) (int64, error) {
	b, file, err := readMemoryFile(id, "memory.oom_control", "memory.events")
	if err != nil {
		return 0, err
	}
	for line := range strings.Lines(string(b)) {
		if n, ok := strings.CutPrefix(strings.TrimSpace(line), "oom_kill "); ok {
			return strconv.ParseInt(n, 10, 64)
		}
	}
	return 0, fmt.Errorf("no oom_kill count in %s (kernel older than 4.13?)", file)
}

// memoryPeak returns the highest memory use of build id's cgroup, in
// bytes: memory.peak on cgroup v2, memory.max_usage_in_bytes on v1. It
// counts the page cache of the files the build wrote as well as the
// processes' own memory. The cgroup must still exist, as for oomKills.
func memoryPeak(id string) (int64, error) {
	b, _, err := readMemoryFile(id, "memory.max_usage_in_bytes", "memory.peak")
	if err != nil {
		return 0, err
	}
	return strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
}

// readMemoryFile reads a file of build id's memory cgroup, named v1 or v2
// after the host's cgroup version, and returns it with the name it read.
func readMemoryFile(id, v1, v2 string) ([]byte, string, error) {
	dir, isV2, err := memoryCgroup()
	if err != nil {
		return nil, "", err
	}
	file := v1
	if isV2 {
		file = v2
	}
	b, err := os.ReadFile(filepath.Join(dir, cgroupPath(id), file))
	return b, file, err
}

// swapLimitable tells whether runc can keep a build's memory cgroup from
// swapping: on cgroup v2, and on v1 with swap accounting (memory.memsw.*).
func swapLimitable() bool {
	dir, v2, err := memoryCgroup()
	if err != nil {
		return false
	}
	if v2 {
		return true
	}
	_, err = os.Stat(filepath.Join(dir, "memory.memsw.limit_in_bytes"))
	return err == nil
}

// memoryCgroup returns the directory of this process's memory cgroup, as
// runc resolves a relative cgroupsPath against it, and whether it is on
// cgroup v2.
func memoryCgroup() (dir string, v2 bool, err error) {
	own, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return "", false, err
	}
	// Lines are "ID:CONTROLLERS:PATH"; cgroup v2's is "0::PATH".
	var v1Path, v2Path string
	for line := range strings.Lines(string(own)) {
		f := strings.SplitN(strings.TrimSpace(line), ":", 3)
		switch {
		case len(f) != 3:
		case slices.Contains(strings.Split(f[1], ","), "memory"):
			v1Path = f[2]
		case f[0] == "0" && f[1] == "":
			v2Path = f[2]
		}
	}
	switch {
	case v1Path != "":
		dir, err = cgroupDir(v1Path, func(fsType string, superOpts []string) bool {
			return fsType == "cgroup" && slices.Contains(superOpts, "memory")
		})
		return dir, false, err
	case v2Path != "":
		dir, err = cgroupDir(v2Path, func(fsType string, _ []string) bool {
			return fsType == "cgroup2"
		})
		return dir, true, err
	}
	return "", false, fmt.Errorf("no memory cgroup in /proc/self/cgroup")
}

// cgroupDir returns the directory of the cgroup at path (as in
// /proc/self/cgroup) in the first mounted hierarchy that match accepts.
func cgroupDir(path string, match func(fsType string, superOpts []string) bool) (string, error) {
	mountinfo, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return "", err
	}
	// Lines are "ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTS [OPTIONAL...] - FSTYPE SOURCE SUPEROPTS".
	sc := bufio.NewScanner(bytes.NewReader(mountinfo))
	for sc.Scan() {
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		f, g := strings.Fields(pre), strings.Fields(post)
		if !ok || len(f) < 5 || len(g) < 3 || !match(g[0], strings.Split(g[2], ",")) {
			continue
		}
		rel, err := filepath.Rel(f[3], path)
		if err != nil || !filepath.IsLocal(rel) {
			return "", fmt.Errorf("cgroup %s is outside the hierarchy mounted at %s", path, f[4])
		}
		return filepath.Join(f[4], rel), nil
	}
	if err := sc.Err(); err != nil {
		return "", err
	}
	return "", fmt.Errorf("cgroup hierarchy of %s is not mounted", path)
}
