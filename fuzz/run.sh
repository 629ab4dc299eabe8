#!/usr/bin/env bash
# Runs the fuzz targets for SECONDS each: bash fuzz/run.sh SECONDS [TARGET...]
#
# Every target (or the named ones) starts from its committed seeds (fuzz/seeds/<target>/),
# copied into a scratch corpus fuzz/corpus/<target>/ that grows across runs (delete it to
# start afresh). A crash or panic fails the run; its input is in fuzz/artifacts/<target>/.
# Ends with a table of executions per target. Needs the nightly toolchain and cargo-fuzz.
set -uo pipefail
cd "$(dirname "$0")"

secs=${1:-}
if ! [[ "$secs" =~ ^[0-9]+$ ]] || [ "$secs" -eq 0 ]; then
    echo "usage: bash fuzz/run.sh SECONDS [TARGET...]" >&2
    exit 2
fi
shift
fuzz=(cargo +nightly fuzz)
# FUZZ_FLAGS go to `cargo fuzz build` and `run`; CI's smoke uses --dev (unoptimised, quicker
# to build; seconds of fuzzing need no speed).
read -r -a flags <<<"${FUZZ_FLAGS:-}"
if [ $# -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <("${fuzz[@]}" list)
fi
[ ${#targets[@]} -gt 0 ] || { echo "no fuzz targets" >&2; exit 2; }

# Build first, so the time of each run is fuzzing only (`cargo fuzz build` takes one target
# or none, which builds them all).
build=()
[ ${#targets[@]} -eq 1 ] && build=("${targets[0]}")
"${fuzz[@]}" build "${flags[@]}" "${build[@]}" || exit 1

logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT
failed=0
rows=()
for t in "${targets[@]}"; do
    [ -d "seeds/$t" ] || { echo "no seeds for $t (fuzz/seeds/$t)" >&2; exit 2; }
    mkdir -p "corpus/$t"
    cp -n "seeds/$t"/* "corpus/$t"/ 2>/dev/null || true
    echo "== $t: ${secs}s" >&2
    log="$logs/$t.log"
    # -timeout: one input taking 10 s is a finding (a hang), not patience.
    "${fuzz[@]}" run "${flags[@]}" "$t" "corpus/$t" -- \
        -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        >"$log" 2>&1
    rc=$?
    execs=$(sed -n 's/^stat::number_of_executed_units: *\([0-9]*\).*/\1/p' "$log" | tail -1)
    [ -n "$execs" ] || execs=$(sed -n 's/^#\([0-9]*\)[[:space:]]*DONE.*/\1/p' "$log" | tail -1)
    [ -n "$execs" ] || execs=$(sed -n 's/^#\([0-9]*\)[[:space:]].*/\1/p' "$log" | tail -1)
    persec=$(sed -n 's/.*exec\/s: *\([0-9]*\).*/\1/p' "$log" | tail -1)
    corpus=$(find "corpus/$t" -type f | wc -l)
    if [ $rc -eq 0 ]; then
        result=ok
    else
        failed=1
        result="FAILED (exit $rc)"
        art=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -1)
        [ -n "$art" ] && result="$result: $art"
        echo "--- $t failed; the end of its log:" >&2
        tail -40 "$log" >&2
    fi
    rows+=("$(printf '%-22s %12s %9s %8s  %s' "$t" "${execs:-?}" "${persec:-?}" "$corpus" "$result")")
done

printf '\n%-22s %12s %9s %8s  %s\n' target executions exec/s corpus result
for r in "${rows[@]}"; do echo "$r"; done
exit $failed
