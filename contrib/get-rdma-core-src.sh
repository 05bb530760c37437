#!/usr/bin/env bash
# Print the path of an unpacked rdma-core source tree of exactly the installed
# libibverbs version, for the softnic libibverbs provider: a provider is built
# against libibverbs/driver.h (provider ABI), which no -dev package installs.
# Only its headers are used; the provider links against the system library.
#
# The tarball is checked against pinned SHA-256 sums and unpacked once into
# ${ORC_RDMA_CORE_SRC_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/orc}/rdma-core-<version>-<sha256 prefix>.
# It is taken from the first of:
#   1. $ORC_RDMA_CORE_TARBALL (a file);
#   2. rdma-core-<version>.tar.gz in each directory of $ORC_RDMA_CORE_TARBALL_DIRS
#      (colon-separated; default /work/shared/rdma-core, the machines' copy);
#   3. Debian's source package (apt-get source; deb-src must be enabled, see
#      contrib/get-ucx-src.sh). Debian's archive does not serve
#      rdma-core_44.0.orig.tar.gz to every machine: where it answers 404 this
#      step fails and the provider cannot be built.
# Exit status 1 with a message on stderr when no verified tarball is found.
set -euo pipefail

die() { echo "get-rdma-core-src: $*" >&2; exit 1; }

# Pinned tarballs: "<version> <sha256> <what>"
known_sums="
44.0 5d66b2f0dc15cffbe3f01c5a9d861dbf28f352c700bdecf2dc12f700b008ec5f git-archive-of-tag-v44.0
44.0 25d6601e60f27bbcd75e07fe340400cb80e6c3c487679700535385cfc9d9858b debian-rdma-core_44.0.orig.tar.gz
"

version=$(dpkg-query -W -f='${source:Upstream-Version}' libibverbs1 2>/dev/null || true)
[ -n "$version" ] || die "libibverbs1 is not installed: cannot tell which rdma-core version to use"
echo "$known_sums" | grep -q "^$version " ||
    die "no pinned rdma-core $version tarball checksum in $0 (pinned: $(echo "$known_sums" | awk 'NF {print $1}' | sort -u | tr '\n' ' '))"

cache=${ORC_RDMA_CORE_SRC_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/orc}
tmpdirs=()
trap 'rm -rf "${tmpdirs[@]}"' EXIT
# one unpacker at a time (builds and helpers may run this concurrently)
mkdir -p "$cache"
exec 9>"$cache/rdma-core-$version.lock"
flock 9

# an already unpacked, verified tree
for sum in $(echo "$known_sums" | awk -v v="$version" '$1 == v {print $2}'); do
    dest=$cache/rdma-core-$version-${sum:0:12}
    if [ -f "$dest/libibverbs/driver.h" ]; then
        echo "$dest"
        exit 0
    fi
done

sum_ok() { # FILE -> prints the sum if pinned for $version
    local s
    s=$(sha256sum "$1" | awk '{print $1}')
    echo "$known_sums" | awk -v v="$version" -v s="$s" '$1 == v && $2 == s {print s}'
}

unpack() { # TARBALL SUM
    local work src dest=$cache/rdma-core-$version-${2:0:12}
    mkdir -p "$cache"
    work=$(mktemp -d "$cache/rdma-core.tmp.XXXXXX")
    tmpdirs+=("$work")
    tar -xzf "$1" -C "$work" || die "cannot unpack $1"
    src=$work/rdma-core-$version
    [ -f "$src/libibverbs/driver.h" ] || die "$1 did not unpack an rdma-core-$version tree"
    rm -rf "$dest"
    mv "$src" "$dest"
    echo "$dest"
    exit 0
}

try_file() {
    local f=$1 sum
    [ -f "$f" ] || return 0
    sum=$(sum_ok "$f")
    if [ -z "$sum" ]; then
        echo "get-rdma-core-src: $f: SHA-256 matches no pinned rdma-core $version tarball; ignored" >&2
        return 0
    fi
    unpack "$f" "$sum"
}

if [ -n "${ORC_RDMA_CORE_TARBALL:-}" ]; then
    [ -f "$ORC_RDMA_CORE_TARBALL" ] || die "ORC_RDMA_CORE_TARBALL=$ORC_RDMA_CORE_TARBALL does not exist"
    try_file "$ORC_RDMA_CORE_TARBALL"
    die "ORC_RDMA_CORE_TARBALL=$ORC_RDMA_CORE_TARBALL is not a pinned rdma-core $version tarball"
fi

IFS=: read -r -a dirs <<< "${ORC_RDMA_CORE_TARBALL_DIRS:-/work/shared/rdma-core}"
for d in "${dirs[@]}"; do
    [ -n "$d" ] && try_file "$d/rdma-core-$version.tar.gz"
done

# Debian's source package: apt verifies the orig tarball against the .dsc
if command -v apt-get >/dev/null && command -v dpkg-source >/dev/null; then
    pkgver=$(dpkg-query -W -f='${source:Version}' libibverbs1)
    mkdir -p "$cache"
    work=$(mktemp -d "$cache/rdma-core.apt.XXXXXX")
    tmpdirs+=("$work")
    if (cd "$work" && apt-get source -qq --download-only "rdma-core=$pkgver" >/dev/null 2>&1); then
        for f in "$work"/rdma-core_"$version".orig.tar.*; do
            [ -f "$f" ] || continue
            sum=$(sum_ok "$f")
            [ -n "$sum" ] && unpack "$f" "$sum"
        done
    fi
fi

die "no rdma-core $version source tarball found: set ORC_RDMA_CORE_TARBALL to rdma-core-$version.tar.gz
  (upstream tag v$version packed with git archive --prefix=rdma-core-$version/, or Debian's
  rdma-core_$version.orig.tar.gz); tried ORC_RDMA_CORE_TARBALL_DIRS (${ORC_RDMA_CORE_TARBALL_DIRS:-/work/shared/rdma-core})
  and 'apt-get source rdma-core' (needs deb-src; Debian's archive does not serve the orig tarball to every machine)"
