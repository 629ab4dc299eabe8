#!/usr/bin/env bash
# Runs every test: the Rust suite (unit + end-to-end against the real binaries), the demo,
# and the Ansible/Salt integration suite. Installs the Python tools it needs itself.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

echo "== installing Python test tools (ansible-core, salt, pytest)" >&2
python3 -m pip install --quiet --disable-pip-version-check -r tests/integrations/requirements.txt >&2

echo "== building" >&2
cargo build --all-targets >&2

echo "== cargo test" >&2
cargo test -- --test-threads=2

echo "== receiver suites again with every site on PostgreSQL (conformance)" >&2
TETHER_TEST_BACKEND=postgres cargo test --test receiver_core --test receiver_tokens \
    --test receiver_flows --test receiver_admin_api --test receiver_data \
    --test receiver_errors --test receiver_apply -- --test-threads=2

echo "== demo (debug binaries)" >&2
TETHER_BIN_DIR=target/debug bash tests/demo.sh >/dev/null

echo "== Ansible and Salt integration" >&2
TETHER_BIN="$PWD/target/debug/tether" TETHER_RECEIVER_BIN="$PWD/target/debug/tether-receiver" \
    python3 -m pytest tests/integrations -q
