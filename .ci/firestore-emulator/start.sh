#!/usr/bin/env bash
# Starts a Firestore emulator in the background on 127.0.0.1:PORT, waits until
# it accepts connections, and prints the FIRESTORE_EMULATOR_HOST value
# (127.0.0.1:PORT) on stdout.
#
#   start.sh [npm|official] [PORT]
#
# npm (the default) is @firestore-emulator/server, pinned in package-lock.json
# (`npm ci` runs first when node_modules is missing). It keeps documents in
# memory and answers simple queries, but does not honour transactions,
# update-time preconditions or atomic commits, nor run collection-group
# queries: it is for smoke tests. official is Google's emulator (Java), from
# the Debian package google-cloud-cli-firestore-emulator or `gcloud components
# install cloud-firestore-emulator`, found next to gcloud or at
# $FIRESTORE_OFFICIAL_EMULATOR; when it is not installed, start.sh exits 3.
#
# PORT defaults to $FIRESTORE_EMULATOR_PORT, else a free port. The emulator
# runs in its own process group, whose id goes to $FIRESTORE_EMULATOR_PIDFILE
# when set: stop it with `kill -- -"$(cat "$FIRESTORE_EMULATOR_PIDFILE")"`.
# Its output goes to $FIRESTORE_EMULATOR_LOG (default: a temporary file, named
# on stderr).
set -euo pipefail

dir="$(cd "$(dirname "$0")" && pwd)"
kind="${1:-npm}"
port="${2:-${FIRESTORE_EMULATOR_PORT:-0}}"
log="${FIRESTORE_EMULATOR_LOG:-}"

# open_log creates the default log file when none was given.
open_log() {
	if [ -z "$log" ]; then
		log="$(mktemp "${TMPDIR:-/tmp}/firestore-emulator.XXXXXX")"
		echo "firestore emulator log: $log" >&2
	fi
}

# free_port prints a loopback port nothing listens on.
free_port() {
	local p
	while :; do
		p=$((20000 + RANDOM % 40000))
		if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
			echo "$p"
			return
		fi
	done
}

set -m # the emulator gets its own process group, with its children
case "$kind" in
npm)
	if [ ! -d "$dir/node_modules/@firestore-emulator/server" ]; then
		(cd "$dir" && npm ci --ignore-scripts --no-audit --no-fund) >&2
	fi
	open_log
	# FirestoreServer.start binds 0.0.0.0: bind its gRPC server to the
	# loopback address instead, and report the port the kernel chose.
	(cd "$dir" && exec node -e '
const { FirestoreServer } = require("@firestore-emulator/server");
const { ServerCredentials } = require("@grpc/grpc-js");
const fs = new FirestoreServer();
fs.server.bindAsync("127.0.0.1:" + process.argv[1], ServerCredentials.createInsecure(), (err, port) => {
	if (err) { console.error(err); process.exit(1); }
	console.log("listening on 127.0.0.1:" + port);
});
for (const sig of ["SIGINT", "SIGTERM", "SIGHUP"]) process.on(sig, () => { fs.stop(); process.exit(0); });
' "$port") >"$log" 2>&1 </dev/null &
	pid=$!
	ready='^listening on '
	;;
official)
	emulator="${FIRESTORE_OFFICIAL_EMULATOR:-}"
	if [ -z "$emulator" ] && gcloud="$(command -v gcloud)"; then
		emulator="$(dirname "$(readlink -f "$gcloud")")/../platform/cloud-firestore-emulator/cloud_firestore_emulator"
	fi
	if [ ! -f "$emulator" ] || [ ! -x "$emulator" ]; then
		echo "the official Firestore emulator is not installed (apt-get install google-cloud-cli-firestore-emulator," \
			"or gcloud components install cloud-firestore-emulator; or set FIRESTORE_OFFICIAL_EMULATOR)" >&2
		exit 3
	fi
	[ "$port" != 0 ] || port="$(free_port)"
	open_log
	"$emulator" start --host=127.0.0.1 --port="$port" >"$log" 2>&1 </dev/null &
	pid=$!
	ready='^Dev App Server is now running'
	;;
*)
	echo "usage: $0 [npm|official] [PORT]" >&2
	exit 2
	;;
esac
set +m
if [ -n "${FIRESTORE_EMULATOR_PIDFILE:-}" ]; then
	echo "$pid" >"$FIRESTORE_EMULATOR_PIDFILE"
fi

for _ in $(seq 1 600); do
	if ! kill -0 "$pid" 2>/dev/null; then
		echo "the $kind Firestore emulator exited; its log ($log):" >&2
		cat "$log" >&2
		exit 1
	fi
	if grep -q "$ready" "$log"; then
		[ "$kind" = official ] || port="$(sed -n 's/^listening on 127\.0\.0\.1://p' "$log")"
		if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
			echo "127.0.0.1:$port"
			exit 0
		fi
	fi
	sleep 0.1
done
echo "the $kind Firestore emulator did not start within 60s; its log ($log):" >&2
cat "$log" >&2
kill -- -"$pid" 2>/dev/null || true
exit 1
