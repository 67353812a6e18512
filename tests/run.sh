#!/usr/bin/env bash
# Builds imapmux from scratch (normal and ASan+UBSan) and runs every test:
# Criterion unit tests and the integration tests against real dovecot and
# redis-server on loopback, then the benchmark in its short mode.
# Exit status 0 only if everything passed.
set -euo pipefail
cd "$(dirname "$0")/.."

jobs=$(nproc 2>/dev/null || echo 2)

# On a fresh machine this installs what the build and the tests need (the
# Debian packages of deploy/install-deps.sh); where all are there it does nothing.
bash deploy/install-deps.sh --if-missing

echo "== build (RelWithDebInfo)"
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j"$jobs"

echo "== build (ASan + UBSan)"
cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DIMAPMUX_SANITIZE=ON >/dev/null
cmake --build build-asan -j"$jobs"

echo "== unit tests under ASan + UBSan"
(cd build-asan && ctest --output-on-failure -E '^integration/' -j"$jobs")

echo "== integration tests (daemon built with ASan + UBSan)"
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=0
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
(cd build-asan && ctest --output-on-failure -L integration)

echo "== fuzzing: every tests/fuzz/fuzz_*.c, reproducers replayed, then 240 s in all"
if command -v clang >/dev/null 2>&1; then
    cmake -S . -B build-fuzz -DCMAKE_C_COMPILER=clang -DIMAPMUX_FUZZ=ON -DIMAPMUX_TESTS=OFF >/dev/null
    cmake --build build-fuzz -j"$jobs" --target fuzz
    # each target: -max_total_time = 240 s / number of targets, -runs=2000000
    bash tests/fuzz/fuzz.sh -b build-fuzz -T 240 -r 2000000
else
    echo "clang not installed: fuzzing skipped"
fi

echo "== benchmark, short mode (checks that it works, not its figures)"
IMAPMUX_BIN="$PWD/build/imapmux" IMAPBENCH_BIN="$PWD/build/imapbench" \
    IMAPBENCH_OPENSSL_BIN="$PWD/build/imapbench-openssl" python3 tests/bench/bench.py --short

echo "== demo self-check"
python3 tests/integration/demo.py --for 3 --selfcheck --bin build/imapmux
