#!/usr/bin/env bash
# Installs what the test suite needs and a fresh Debian machine lacks, each only when missing:
# system packages from apt (as root, or with sudo) and cargo-deb / cargo-generate-rpm.
set -euo pipefail
cd "$(dirname "$0")/.."
# The packaging tests (tests/packaging.rs) build .deb/.rpm and install the .deb with dpkg into a
# throwaway root: Debian's dpkg, dpkg-dev (dependencies), binutils (strip) and rpm (to inspect
# the .rpm), then cargo-deb and cargo-generate-rpm. Each is installed only when missing.
missing=()
command -v dpkg-deb >/dev/null 2>&1 || missing+=(dpkg)
command -v dpkg-shlibdeps >/dev/null 2>&1 || missing+=(dpkg-dev)
command -v strip >/dev/null 2>&1 || missing+=(binutils)
command -v rpm >/dev/null 2>&1 || missing+=(rpm)
# tests/packaging.rs lints the .deb (offline).
command -v lintian >/dev/null 2>&1 || missing+=(lintian)
# tests/run_all.sh puts its Python tools into a virtual environment (target/venv).
python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || missing+=(python3-venv)
# The web console's browser test (tests/integrations/test_console_browser.py): headless Chromium
# and its WebDriver from Debian.
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v chromedriver >/dev/null 2>&1 || missing+=(chromium-driver)
# PostgreSQL (tests/receiver_postgres.rs runs throwaway clusters with initdb and pg_ctl).
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1 || missing+=(postgresql)
if [ ${#missing[@]} -gt 0 ]; then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo=sudo
    $sudo apt-get update -qq
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
bash packaging/build.sh --tools
