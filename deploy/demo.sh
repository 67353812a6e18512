#!/usr/bin/env bash
# Runs imapmux for real on this machine, on loopback: a Redis routing table,
# two Dovecot backends, imapmux in front of them with its audit log.
# Installs missing Debian packages (deploy/install-deps.sh), builds if needed,
# then prints what to try.
#   bash deploy/demo.sh                 run until Ctrl-C
#   bash deploy/demo.sh --for 10 --selfcheck
set -euo pipefail
cd "$(dirname "$0")/.."

bash deploy/install-deps.sh --if-missing

if [ ! -x build/imapmux ] || [ -n "$(find proxy common CMakeLists.txt -newer build/imapmux -print -quit)" ] \
   || [ ! -x build/imapmuxctl ]; then
    echo "== building into build/"
    cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
    cmake --build build -j"$(nproc 2>/dev/null || echo 2)" --target imapmux imapmuxctl
fi

exec python3 tests/integration/demo.py --bin build/imapmux "$@"
