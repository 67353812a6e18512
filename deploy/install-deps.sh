#!/usr/bin/env bash
# Installs everything imapmux needs to build, test, run its demo and its
# benchmark on Debian 12.  Used by .ci/run, docker/Dockerfile and
# deploy/demo.sh, so all three stay in step.
#   deploy/install-deps.sh          build + test + demo dependencies
#   deploy/install-deps.sh --runtime only what the daemon needs at run time
#   deploy/install-deps.sh --if-missing   the first set, only when a package of
#                                         it is not installed (no apt run otherwise)
set -euo pipefail

runtime=(libuv1 android-libboringssl libhiredis0.14 libyaml-0-2 libcrypt1 libargon2-1 zlib1g ca-certificates
         libjansson4 libmicrohttpd12)
build=(build-essential cmake pkg-config libuv1-dev android-libboringssl-dev libhiredis-dev
       libcriterion-dev libyaml-dev libcrypt-dev libargon2-dev zlib1g-dev libssl-dev
       libjansson-dev libmicrohttpd-dev)
test=(python3 dovecot-imapd redis-server curl isync openssl procps iproute2 clang libclang-rt-14-dev
      haproxy strace prometheus)

if [ "${1:-}" = "--runtime" ]; then
    pkgs=("${runtime[@]}")
else
    pkgs=("${runtime[@]}" "${build[@]}" "${test[@]}")
fi

if [ "${1:-}" = "--if-missing" ]; then
    missing=()
    for p in "${pkgs[@]}"; do
        if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed"; then
            missing+=("$p")
        fi
    done
    if [ "${#missing[@]}" = 0 ]; then
        exit 0
    fi
    echo "== installing missing packages: ${missing[*]}"
fi

sudo=""
if [ "$(id -u)" != 0 ]; then
    sudo="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -q
# policy-rc.d keeps the packaged services (dovecot, redis) from starting:
# tests start their own on free loopback ports.
if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' | $sudo tee /usr/sbin/policy-rc.d >/dev/null
    $sudo chmod +x /usr/sbin/policy-rc.d
    trap '$sudo rm -f /usr/sbin/policy-rc.d' EXIT
fi
$sudo apt-get install -y -q --no-install-recommends "${pkgs[@]}"
