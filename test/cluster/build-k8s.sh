#!/usr/bin/env bash
# build-k8s.sh: build the Kubernetes binaries of the test cluster from the
# tools module tools/k8s into a cache directory outside the repository, keyed
# by a hash of the pin (go.mod, go.sum), the Go version and this script, and
# reuse them when they are there. Prints the directory.
#
# The cache root is $SLIPWAY_K8S_CACHE, else /var/cache/slipway-k8s when
# writable, else ${XDG_CACHE_HOME:-$HOME/.cache}/slipway-k8s. It survives
# between CI runs on one machine; a new pin gets a new directory.
set -euo pipefail
cd "$(dirname "$0")/../.."
GO=${GO:-go}
MOD=tools/k8s
CMDS="kube-apiserver kube-controller-manager kube-scheduler kubelet kubectl"

root=${SLIPWAY_K8S_CACHE:-}
if [ -z "$root" ]; then
	if mkdir -p /var/cache/slipway-k8s 2>/dev/null && [ -w /var/cache/slipway-k8s ]; then
		root=/var/cache/slipway-k8s
	else
		root=${XDG_CACHE_HOME:-$HOME/.cache}/slipway-k8s
	fi
fi
key=$( { cat "$MOD/go.mod" "$MOD/go.sum" "$0"; $GO version; } | sha256sum | cut -c1-16)
dir=$root/$key
if [ -f "$dir/.complete" ]; then
	echo "$dir"
	exit 0
fi
mkdir -p "$dir"
version=$(cd "$MOD" && $GO list -m -f '{{.Version}}' k8s.io/kubernetes)
major=${version#v}; major=${major%%.*}
minor=${version#v*.}; minor=${minor%%.*}
vpkg=k8s.io/component-base/version
ldflags="-s -w -X $vpkg.gitVersion=$version -X $vpkg.gitMajor=$major -X $vpkg.gitMinor=$minor -X $vpkg.gitTreeState=clean"
start=$(date +%s)
for c in $CMDS; do
	echo "build-k8s: building $c $version" >&2
	(cd "$MOD" && CGO_ENABLED=0 $GO build -trimpath -ldflags "$ldflags" -o "$dir/$c.tmp" "k8s.io/kubernetes/cmd/$c")
	mv "$dir/$c.tmp" "$dir/$c"
done
echo "build-k8s: built in $(( $(date +%s) - start ))s into $dir" >&2
touch "$dir/.complete"
echo "$dir"
