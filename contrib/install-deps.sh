#!/usr/bin/env bash
# Install the Debian packages orc needs to build, test and run (Debian 12).
# Installs only what is missing; needs root (or sudo).
set -euo pipefail

packages=(
    build-essential autoconf automake libtool pkg-config dpkg-dev
    clang libclang-rt-14-dev clang-format
    libucx-dev ucx-utils libibverbs-dev librdmacm-dev rdma-core
    libyaml-dev libhwloc-dev libgtest-dev
    libmicrohttpd-dev libjansson-dev libcurl4-openssl-dev libgnutls28-dev
    etcd-server etcd-client systemd
    iproute2 procps curl openssl
    gnuplot-nox
    python3 ibverbs-utils perftest
)

missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' ||
        missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
    echo "install-deps: all ${#packages[@]} packages present"
    exit 0
fi

sudo=""
if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null || { echo "install-deps: need root to install: ${missing[*]}" >&2; exit 1; }
    sudo=sudo
fi
echo "install-deps: installing ${missing[*]}"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
