#!/usr/bin/env bash
# A full enrollment on loopback, narrated: a site (tether-receiver), a registration-only
# automation user, a host that registers with a pinned fingerprint, its daemon serving a
# TLS pull, a push arriving, and the machine-readable status. Everything lives in a
# temporary directory that is removed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -z "${TETHER_BIN_DIR:-}" ]; then
    echo "== building release binaries (first time: a few minutes)" >&2
    cargo build --release --bins >&2
    TETHER_BIN_DIR=target/release
fi
BIN="$(cd "$TETHER_BIN_DIR" && pwd)"
RCV="$BIN/tether-receiver"
TETHER="$BIN/tether"

WORK="$(mktemp -d)"
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

if [ -t 1 ]; then BOLD=$'\033[1m' PLAIN=$'\033[0m'; else BOLD='' PLAIN=''; fi
say() { printf '\n%s== %s%s\n' "$BOLD" "$*" "$PLAIN"; }
json() { python3 -c "import json,sys; d=json.load(sys.stdin); print(eval(sys.argv[1], {'d': d}))" "$1"; }
wait_file() { for _ in $(seq 1 200); do [ -s "$1" ] && return 0; sleep 0.05; done; echo "timed out waiting for $1" >&2; exit 1; }

SITE_DIR="$WORK/site"
AGENT_OUTPUT="$WORK/agent-output.txt"
cp tests/fixtures/agent-output-linux.txt "$AGENT_OUTPUT"

say "1. The site: create the CAs, the server certificate and the database"
FP="$("$RCV" init --dir "$SITE_DIR" --site demo --json | json "d['fingerprint']")"
echo "site 'demo' initialised in $SITE_DIR"
echo "server certificate fingerprint (operators pin this on the agents): $FP"

say "2. A registration-only automation user (password from stdin, never on argv)"
printf 'demo-Passw0rd' | "$RCV" user add deploy --role agent_registration --password-stdin --dir "$SITE_DIR" >/dev/null
echo "user 'deploy' with role agent_registration: may register hosts, nothing else"

say "3. Hosts on the site: web01 (pulled by the site) and batch01 (pushes its data)"
"$RCV" host add batch01 --mode push --dir "$SITE_DIR" >/dev/null
echo "hosts created"

say "4. Start the agent receiver on an ephemeral loopback port"
"$RCV" serve --dir "$SITE_DIR" --listen 127.0.0.1:0 --ready-file "$WORK/receiver.addr" 2>"$WORK/receiver.log" &
PIDS+=($!)
wait_file "$WORK/receiver.addr"
RECEIVER="$(cat "$WORK/receiver.addr")"
echo "receiver listening on https://$RECEIVER/demo/agent-receiver/"

say "5. web01's daemon: serves pulls on an ephemeral port (agent output from a file here)"
export TETHER_HOME="$WORK/web01"
mkdir -p "$TETHER_HOME"
printf '[agent]\nfile = "%s"\n[pull]\nregistry_poll_ms = 200\n' "$AGENT_OUTPUT" > "$TETHER_HOME/tether.toml"
"$TETHER" daemon --listen 127.0.0.1:0 --ready-file "$WORK/web01.addr" 2>"$WORK/web01.log" &
PIDS+=($!)
wait_file "$WORK/web01.addr"
PULL_ADDR="$(head -n1 "$WORK/web01.addr")"
echo "daemon up on $PULL_ADDR, nothing registered yet (so it serves nothing, not even plaintext)"
"$RCV" host add web01 --address 127.0.0.1 --agent-port "${PULL_ADDR##*:}" --dir "$SITE_DIR" >/dev/null

say "6. Register web01 with the pinned fingerprint (password via the environment)"
TETHER_PASSWORD='demo-Passw0rd' "$TETHER" register -s "$RECEIVER" -i demo -H web01 -U deploy --trust-fingerprint "$FP"
echo
echo "and again (idempotent):"
TETHER_PASSWORD='demo-Passw0rd' "$TETHER" register --json -s "$RECEIVER" -i demo -H web01 -U deploy --trust-fingerprint "$FP" \
    | json "'changed: %s, action: %s' % (d['changed'], d['action'])"

say "7. The site pulls web01 over mutual TLS (no daemon restart needed)"
sleep 0.5
"$RCV" fetch web01 --dir "$SITE_DIR"
"$RCV" agent-data web01 --dir "$SITE_DIR" | head -n 3

say "8. batch01 registers and pushes its agent output"
export TETHER_HOME="$WORK/batch01"
mkdir -p "$TETHER_HOME"
printf '[agent]\nfile = "%s"\n' "$AGENT_OUTPUT" > "$TETHER_HOME/tether.toml"
TETHER_PASSWORD='demo-Passw0rd' "$TETHER" register -s "$RECEIVER" -i demo -H batch01 -U deploy --trust-fingerprint "$FP" >/dev/null
"$TETHER" push
"$RCV" agent-data batch01 --dir "$SITE_DIR" | head -n 3

say "9. web01's status, as a machine reads it"
TETHER_HOME="$WORK/web01" "$TETHER" status --json

say "10. The audit log on the site"
"$RCV" audit --dir "$SITE_DIR" --limit 5

say "Done: cleaning up $WORK"
