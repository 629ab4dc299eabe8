#!/usr/bin/env bash
# Runs every test: the Rust suite (unit + end-to-end against the real binaries), the demo,
# and the Ansible/Salt integration suite. Installs the Python tools it needs itself, into a
# virtual environment of its own (target/venv, or $TETHER_VENV), never into the system's or
# the user's site-packages.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

bash tests/install_deps.sh >&2

venv=${TETHER_VENV:-$PWD/target/venv}
requirements=tests/integrations/requirements.txt
if [ ! -x "$venv/bin/python" ]; then
    echo "== creating the Python virtual environment $venv" >&2
    python3 -m venv "$venv" >&2
fi
# Installs again only when requirements.txt changed since the last installation.
stamp=$venv/.tether-requirements
if ! cmp -s "$requirements" "$stamp"; then
    echo "== installing Python test tools into $venv (ansible-core, salt, pytest)" >&2
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$requirements" >&2
    cp "$requirements" "$stamp"
fi
# The tools (ansible-playbook, salt-call, ...) are found next to the venv's python first.
export PATH="$venv/bin:$PATH"

echo "== building" >&2
cargo build --all-targets >&2

echo "== cargo test" >&2
cargo test -- --test-threads=2

echo "== receiver suites again with every site on PostgreSQL (conformance)" >&2
TETHER_TEST_BACKEND=postgres cargo test --test receiver_core --test receiver_tokens \
    --test receiver_flows --test receiver_admin_api --test receiver_data \
    --test receiver_errors --test receiver_apply --test crash_consistency \
    --test receiver_data --test receiver_handoff --test receiver_schedule -- --test-threads=2

echo "== demo (debug binaries)" >&2
TETHER_BIN_DIR=target/debug bash tests/demo.sh >/dev/null

echo "== Ansible and Salt integration" >&2
TETHER_BIN="$PWD/target/debug/tether" TETHER_RECEIVER_BIN="$PWD/target/debug/tether-receiver" \
    "$venv/bin/python" -m pytest tests/integrations -q -rs
