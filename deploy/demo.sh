#!/usr/bin/env bash
# Runs imapmux for real on this machine: a local Dovecot with a demo mailbox
# and imapmux in front of it on loopback.  Installs missing Debian packages
# (deploy/install-deps.sh), builds if needed, then prints how to connect.
#   bash deploy/demo.sh                 run until Ctrl-C
#   bash deploy/demo.sh --for 10 --selfcheck
set -euo pipefail
cd "$(dirname "$0")/.."

need_install=0
for cmd in dovecot cmake curl openssl python3 cc; do
    command -v "$cmd" >/dev/null 2>&1 || need_install=1
done
for hdr in /usr/include/uv.h /usr/include/yaml.h /usr/include/hiredis/hiredis.h \
           /usr/include/android/openssl/ssl.h /usr/include/criterion/criterion.h; do
    [ -e "$hdr" ] || need_install=1
done
if [ "$need_install" = 1 ]; then
    echo "== installing dependencies (deploy/install-deps.sh)"
    bash deploy/install-deps.sh
fi

if [ ! -x build/imapmux ] || [ -n "$(find proxy common CMakeLists.txt -newer build/imapmux -print -quit)" ]; then
    echo "== building into build/"
    cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
    cmake --build build -j"$(nproc 2>/dev/null || echo 2)" --target imapmux
fi

exec python3 tests/integration/harness.py demo --bin build/imapmux "$@"
