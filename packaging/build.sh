#!/usr/bin/env bash
# Builds the four packages into target/packages/ (or $OUT):
#   tether_<version>-<rev>_<arch>.deb      tether-receiver_<version>-<rev>_<arch>.deb
#   tether-<version>-<rev>.<arch>.rpm      tether-receiver-<version>-<rev>.<arch>.rpm
# from the metadata in Cargo.toml ([package.metadata.deb] and [package.metadata.generate-rpm],
# variant "receiver" for the second package), with cargo-deb and cargo-generate-rpm (installed
# with `cargo install --locked` when missing).
#
#   bash packaging/build.sh                       # release binaries, built once here
#   PROFILE=dev bash packaging/build.sh           # package the debug binaries already built
#   bash packaging/build.sh --tools               # only install the two cargo tools (CI)
#
# Optional: BIN_DIR (where the built binaries are; default target/<profile dir>), OUT,
# REVISION (package revision/release, default 1), FAST=1 (lighter compression, for tests).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

PROFILE=${PROFILE:-release}
REVISION=${REVISION:-1}
target_dir=${CARGO_TARGET_DIR:-$root/target}
case $PROFILE in
dev | debug) profile_dir=debug ;;
*) profile_dir=$PROFILE ;;
esac
OUT=${OUT:-$target_dir/packages}
BIN_DIR=${BIN_DIR:-$target_dir/$profile_dir}

# Versions this script was tested with; an already installed version is used as it is.
CARGO_DEB_VERSION=3.8.0
CARGO_GENERATE_RPM_VERSION=0.21.1
if ! cargo deb --version >/dev/null 2>&1; then
    echo "== installing cargo-deb $CARGO_DEB_VERSION" >&2
    cargo install --locked "cargo-deb@$CARGO_DEB_VERSION" >&2
fi
if ! cargo generate-rpm --version >/dev/null 2>&1; then
    echo "== installing cargo-generate-rpm $CARGO_GENERATE_RPM_VERSION" >&2
    cargo install --locked "cargo-generate-rpm@$CARGO_GENERATE_RPM_VERSION" >&2
fi
if [ "${1:-}" = --tools ]; then
    exit 0
fi

case $PROFILE in
dev | debug) ;; # packages what the test build already made: nothing is compiled here
*)
    echo "== building $PROFILE binaries" >&2
    cargo build --locked --profile "$PROFILE" --bin tether --bin tether-receiver >&2
    ;;
esac

# Both tools read the binaries from "target/release/" of the target directory they are given:
# a staging directory holding stripped copies, so the .deb and the .rpm carry identical
# binaries whatever the profile (cargo-generate-rpm does not strip).
stage=$OUT/.stage
rm -rf "$stage"
mkdir -p "$stage/release" "$OUT"
for bin in tether tether-receiver; do
    if [ ! -x "$BIN_DIR/$bin" ]; then
        echo "packaging/build.sh: $BIN_DIR/$bin is missing (build it first, or unset PROFILE)" >&2
        exit 2
    fi
    strip --strip-all -o "$stage/release/$bin" "$BIN_DIR/$bin"
done

# Man pages and shell completions, generated from the clap definitions by the binaries
# themselves (hidden `man` and `completions` subcommands); man pages gzipped as Debian and
# Fedora policy want them (-n: no timestamp, so rebuilds are identical).
for bin in tether tether-receiver; do
    docs=$stage/release/docs/$bin
    mkdir -p "$docs/man"
    "$stage/release/$bin" man --out "$docs/man" 2>/dev/null
    gzip -9n "$docs/man"/*.1
    "$stage/release/$bin" completions bash >"$docs/$bin.bash"
    "$stage/release/$bin" completions zsh >"$docs/_$bin"
    "$stage/release/$bin" completions fish >"$docs/$bin.fish"
done

deb_flags=(--no-build --no-strip --deb-revision "$REVISION" --output "$OUT/")
rpm_flags=(--target-dir "$stage" --set-metadata "release = \"$REVISION\"" --output "$OUT/")
if [ "${FAST:-0}" = 1 ]; then
    deb_flags+=(--fast)
    rpm_flags+=(--payload-compress gzip)
fi

echo "== .deb" >&2
CARGO_TARGET_DIR=$stage cargo deb --quiet "${deb_flags[@]}" >&2
CARGO_TARGET_DIR=$stage cargo deb --quiet --variant receiver "${deb_flags[@]}" >&2
echo "== .rpm" >&2
cargo generate-rpm "${rpm_flags[@]}" >&2
cargo generate-rpm --variant receiver "${rpm_flags[@]}" >&2
rm -rf "$stage"

# stdout: the four package paths, one a line.
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)
ls -1 "$OUT"/tether{,-receiver}_"$version-$REVISION"_*.deb "$OUT"/tether{,-receiver}-"$version-$REVISION".*.rpm
