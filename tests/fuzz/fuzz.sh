#!/usr/bin/env bash
# Runs every libFuzzer target of tests/fuzz (each tests/fuzz/fuzz_X.c) built
# in a fuzz build directory: first it replays the crash reproducers kept in
# tests/fuzz/regress/X/, then it fuzzes X from the seeds in
# tests/fuzz/corpus/X/ with the dictionary tests/fuzz/X.dict (each used when
# present), bounded in runs and time.  One summary line per target.  Exit
# status 0 only if every target was built, no reproducer fails any more and
# no fuzzer found a crash, leak, timeout or out-of-memory.
#
# Usage: tests/fuzz/fuzz.sh [-b BUILD_DIR] [-T TOTAL_SECONDS | -t SECONDS] [-r RUNS]
#                           [-j JOBS] [-c CORPUS_ROOT] [X ...]
#   X   only these targets (fuzz_X or X); default: every tests/fuzz/fuzz_*.c
#   -b  fuzz build directory (default build-fuzz; build it with --target fuzz)
#   -T  time for all targets together, split evenly (default 240)
#   -t  time per target instead (e.g. 3600 before a release)
#   -r  runs per target at most (default 2000000; 0: no bound but time)
#   -j  parallel fuzzing jobs per target (default 1)
#   -c  keep each target's corpus in CORPUS_ROOT/X (seeded from the repository
#       on first use) so that a long run goes on from the last one; default: a
#       temporary copy of the seeds, removed at the end
# Nothing is written to the sources: corpora, logs and crash files go to a
# temporary directory (or CORPUS_ROOT); crash files are copied to
# BUILD_DIR/fuzz-artifacts/.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD

build=build-fuzz
total=240
per=""
runs=2000000
jobs=1
corpus_root=""
while getopts "b:T:t:r:j:c:" opt; do
    case $opt in
    b) build=$OPTARG ;;
    T) total=$OPTARG ;;
    t) per=$OPTARG ;;
    r) runs=$OPTARG ;;
    j) jobs=$OPTARG ;;
    c) corpus_root=$OPTARG ;;
    *) sed -n '2,24p' "$0" >&2; exit 2 ;;
    esac
done
shift $((OPTIND - 1))

FUZZ_INPUT_TIMEOUT_S=10   # one input running longer than this is a finding
FUZZ_RSS_LIMIT_MB=1024    # so is memory past this
FUZZ_GRACE_S=60           # on top of -max_total_time before timeout(1) stops a target

targets=()
for src in tests/fuzz/fuzz_*.c; do
    [ -e "$src" ] || continue
    name=$(basename "$src" .c)
    targets+=("${name#fuzz_}")
done
if [ $# -gt 0 ]; then
    targets=()
    for t in "$@"; do
        t=${t#fuzz_}
        if [ ! -e "tests/fuzz/fuzz_$t.c" ]; then
            echo "no target tests/fuzz/fuzz_$t.c" >&2
            exit 2
        fi
        targets+=("$t")
    done
fi
if [ ${#targets[@]} -eq 0 ]; then
    echo "no fuzz targets in tests/fuzz" >&2
    exit 1
fi
# libFuzzer runs in a temporary directory: every path absolute
case $build in /*) ;; *) build="$root/$build" ;; esac
case $corpus_root in /* | "") ;; *) corpus_root="$root/$corpus_root" ;; esac
if [ -z "$per" ]; then
    per=$((total / ${#targets[@]}))
    [ "$per" -ge 5 ] || per=5
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$build/fuzz-artifacts"

# first_of prints the first of its arguments that exists
first_of() {
    for p in "$@"; do
        if [ -e "$p" ]; then
            echo "$p"
            return
        fi
    done
}

failed=0
for t in "${targets[@]}"; do
    bin="$build/fuzz_$t"
    if [ ! -x "$bin" ]; then
        echo "fuzz_$t: NOT BUILT ($bin missing; cmake --build $build --target fuzz)"
        failed=1
        continue
    fi
    seeds=$(first_of "$root/tests/fuzz/corpus/$t" "$root/tests/fuzz/corpus/fuzz_$t")
    dict=$(first_of "$root/tests/fuzz/$t.dict" "$root/tests/fuzz/fuzz_$t.dict")
    regress=$(first_of "$root/tests/fuzz/regress/$t" "$root/tests/fuzz/regress/fuzz_$t")
    work="$tmp/$t"
    mkdir -p "$work/artifacts"
    opts=(-timeout=$FUZZ_INPUT_TIMEOUT_S -rss_limit_mb=$FUZZ_RSS_LIMIT_MB
          -artifact_prefix="$work/artifacts/")
    [ -n "$dict" ] && opts+=(-dict="$dict")

    # 1. every reproducer, once each
    nreg=0
    if [ -n "$regress" ]; then
        mapfile -t files < <(find "$regress" -type f | sort)
        nreg=${#files[@]}
        if [ "$nreg" -gt 0 ] &&
            ! "$bin" "${opts[@]}" "${files[@]}" >"$work/regress.log" 2>&1; then
            echo "fuzz_$t: FAILED on a reproducer in $regress:"
            grep -E "^(==[0-9]+==ERROR|SUMMARY|Running:)" "$work/regress.log" | tail -n 4 || true
            failed=1
            continue
        fi
    fi

    # 2. fuzzing, bounded
    if [ -n "$corpus_root" ]; then
        corpus="$corpus_root/$t"
        if [ ! -d "$corpus" ]; then
            mkdir -p "$corpus"
            [ -n "$seeds" ] && cp "$seeds"/* "$corpus"/ 2>/dev/null || true
        fi
    else
        corpus="$work/corpus"
        mkdir -p "$corpus"
        [ -n "$seeds" ] && cp "$seeds"/* "$corpus"/ 2>/dev/null || true
    fi
    nseed=$(find "$corpus" -type f | wc -l)
    fopts=("${opts[@]}" -max_total_time="$per" -print_final_stats=1)
    [ "$runs" -gt 0 ] && fopts+=(-runs="$runs")
    [ "$jobs" -gt 1 ] && fopts+=(-jobs="$jobs" -workers="$jobs")
    start=$(date +%s)
    rc=0
    (cd "$work" && timeout $((per + FUZZ_GRACE_S)) "$bin" "${fopts[@]}" "$corpus" \
        >"$work/fuzz.log" 2>&1) || rc=$?
    secs=$(($(date +%s) - start))
    # with -jobs each worker logs to fuzz-N.log in the working directory
    cat "$work"/fuzz-*.log >>"$work/fuzz.log" 2>/dev/null || true
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$work/fuzz.log" |
        awk '{s += $1} END {print s + 0}')
    cov=$(grep -oE 'cov: [0-9]+' "$work/fuzz.log" | tail -n 1 | awk '{print $2}' || true)
    ncorp=$(find "$corpus" -type f | wc -l)
    crashes=$(find "$work/artifacts" -type f | wc -l)
    if [ "$rc" -ne 0 ] || [ "$crashes" -gt 0 ]; then
        echo "fuzz_$t: FAILED (exit $rc) after ${secs}s; reproducers kept in $build/fuzz-artifacts/:"
        grep -E "^(==[0-9]+==ERROR|SUMMARY)" "$work/fuzz.log" | head -n 4 || true
        for f in "$work"/artifacts/*; do
            [ -e "$f" ] || continue
            cp "$f" "$build/fuzz-artifacts/fuzz_$t-$(basename "$f")"
            echo "  fuzz-artifacts/fuzz_$t-$(basename "$f")"
        done
        failed=1
        continue
    fi
    printf 'fuzz_%s: ok  %s runs in %ss, coverage %s, corpus %s -> %s, %s reproducers replayed%s\n' \
        "$t" "$execs" "$secs" "${cov:-?}" "$nseed" "$ncorp" "$nreg" "${dict:+, dict $(basename "$dict")}"
done
exit $failed
