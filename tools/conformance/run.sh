#!/bin/sh
# Runs the OCI distribution-spec conformance suite (pull, push, discovery
# and management: the suite's defaults for distribution-spec 1.1) against
# plain CNCF Distribution and against `slipway serve`, each on a fresh data
# dir on loopback, and compares the two runs test by test. Exits non-zero
# when Slipway's results differ from Distribution's.
#
# Usage: tools/conformance/run.sh [OUT_DIR]   (from the repository root,
# after `make bin/slipway bin/conformance bin/registry`)
#
# Settings (environment):
#   CONFORMANCE_AUTH=1        authenticate to Slipway's registry: basic auth
#                             with a Slipway token of CONFORMANCE_SUBJECT as
#                             the password (the registry's token flow). The
#                             default, 1, is harmless while the registry is open.
#   CONFORMANCE_SUBJECT       the subject (default: platform, an event
#                             publisher, which may push to library/)
#   CONFORMANCE_REPO1/2       repositories used (default library/conformance1, 2)
set -eu
out=${1:-$(mktemp -d)}
bin=$(cd "$(dirname "$0")/../.." && pwd)/bin
repo1=${CONFORMANCE_REPO1:-library/conformance1}
repo2=${CONFORMANCE_REPO2:-library/conformance2}
subject=${CONFORMANCE_SUBJECT:-platform}
auth=${CONFORMANCE_AUTH:-1}
mkdir -p "$out"
pids=""
cleanup() { for p in $pids; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT INT TERM

freeport() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
waitfor() { # URL
	i=0
	until curl -s -o /dev/null "$1"; do
		i=$((i+1)); [ $i -lt 100 ] || { echo "no answer from $1" >&2; exit 1; }
		sleep 0.1
	done
}
# suite NAME REGISTRY [USER PASSWORD]: runs the suite, keeps its report
# in $out/NAME and the one-line-per-test results in $out/NAME.txt.
suite() {
	mkdir -p "$out/$1"
	OCI_REGISTRY=$2 OCI_TLS=disabled OCI_REPO1=$repo1 OCI_REPO2=$repo2 \
	OCI_USERNAME=${3:-} OCI_PASSWORD=${4:-} OCI_RESULTS_DIR="$out/$1" OCI_LOG=error \
		"$bin/conformance" >"$out/$1/stdout.txt" 2>"$out/$1/stderr.txt" || true
	grep -E '^ *(OCI Conformance Test[^:]*|[A-Za-z0-9 -]+\.+): *(Pass|FAIL|Skip|Disabled|Error)$' "$out/$1/stdout.txt" |
		sed -E 's/^ +//; s/\.+:/:/; s/: +/: /' | sort -u >"$out/$1.txt"
	[ -s "$out/$1.txt" ] || { echo "the suite against $1 reported nothing: see $out/$1" >&2; exit 1; }
}

# Plain Distribution: its own registry command, filesystem storage, delete on.
port=$(freeport)
mkdir -p "$out/distribution-data"
cat >"$out/distribution.yml" <<YML
version: 0.1
log: {level: error, accesslog: {disabled: true}}
storage: {filesystem: {rootdirectory: $out/distribution-data}, delete: {enabled: true}}
http: {addr: 127.0.0.1:$port}
YML
"$bin/registry" serve "$out/distribution.yml" >"$out/distribution.log" 2>&1 &
pids="$pids $!"
waitfor "http://127.0.0.1:$port/v2/"
suite distribution "127.0.0.1:$port"

# Slipway: `slipway serve` on a fresh data dir.
port=$(freeport)
data="$out/slipway-data"
"$bin/slipway" serve --addr "127.0.0.1:$port" --data "$data" >"$out/slipway.log" 2>&1 &
pids="$pids $!"
waitfor "http://127.0.0.1:$port/health/readiness"
if [ "$auth" = 1 ]; then
	suite slipway "127.0.0.1:$port" "$subject" "$("$bin/slipway" token "$subject" --data "$data")"
else
	suite slipway "127.0.0.1:$port"
fi

echo "Distribution: $(grep -c ': Pass$' "$out/distribution.txt") pass, $(grep -vc ': Pass$' "$out/distribution.txt") other; Slipway: $(grep -c ': Pass$' "$out/slipway.txt") pass, $(grep -vc ': Pass$' "$out/slipway.txt") other"
echo "Groups plain Distribution itself does not pass, and its skips (optional features it lacks):"
grep -E '^OCI Conformance Test/[^/]+: (FAIL|Error)$|: Skip$' "$out/distribution.txt" | sed 's/^OCI Conformance Test\//  /'
if diff -u "$out/distribution.txt" "$out/slipway.txt" >"$out/diff.txt"; then
	echo "conformance: Slipway's registry answers as plain Distribution does ($out)"
else
	echo "conformance: Slipway's results differ from plain Distribution's:" >&2
	cat "$out/diff.txt" >&2
	exit 1
fi
