#!/usr/bin/env bash
# Print the path of a UCX source tree of exactly the installed UCX version,
# fetching it from the distribution's source package on first use.
#
# The tree is cached outside the source tree, in
# ${ORC_UCX_SRC_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/orc}/ucx-<version>.
# Debian/Ubuntu only: enables deb-src (a separate sources file) if needed.
set -euo pipefail

die() { echo "get-ucx-src: $*" >&2; exit 1; }

command -v ucx_info >/dev/null || die "ucx_info not found: install ucx-utils first"
version=$(ucx_info -v | sed -n 's/^# Version \([0-9.]*\).*/\1/p')
[ -n "$version" ] || die "cannot read the installed UCX version from 'ucx_info -v'"

cache=${ORC_UCX_SRC_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/orc}
dest=$cache/ucx-$version
if [ -f "$dest/src/uct/base/uct_iface.h" ]; then
    echo "$dest"
    exit 0
fi

pkgver=$(dpkg-query -W -f='${source:Version}' libucx0 2>/dev/null || true)
[ -n "$pkgver" ] || die "package libucx0 is not installed: cannot tell which source package to fetch"

has_deb_src() {
    grep -rqsE '^(Types:.*deb-src|deb-src )' /etc/apt/sources.list /etc/apt/sources.list.d/
}
if ! has_deb_src; then
    [ "$(id -u)" = 0 ] || die "deb-src is not enabled and enabling it needs root"
    echo "get-ucx-src: enabling deb-src in /etc/apt/sources.list.d/orc-deb-src.sources" >&2
    if [ -f /etc/apt/sources.list.d/debian.sources ]; then
        sed 's/^Types: deb$/Types: deb-src/' /etc/apt/sources.list.d/debian.sources \
            > /etc/apt/sources.list.d/orc-deb-src.sources
    elif [ -f /etc/apt/sources.list.d/ubuntu.sources ]; then
        sed 's/^Types: deb$/Types: deb-src/' /etc/apt/sources.list.d/ubuntu.sources \
            > /etc/apt/sources.list.d/orc-deb-src.sources
    else
        grep -E '^deb ' /etc/apt/sources.list | sed 's/^deb /deb-src /' \
            > /etc/apt/sources.list.d/orc-deb-src.list
    fi
    apt-get update -qq >&2
fi

command -v dpkg-source >/dev/null || die "dpkg-source not found: install dpkg-dev"
work=$(mktemp -d "$cache.tmp.XXXXXX" 2>/dev/null || { mkdir -p "$cache"; mktemp -d "$cache/tmp.XXXXXX"; })
trap 'rm -rf "$work"' EXIT
(cd "$work" && apt-get source -qq "ucx=$pkgver" >&2) ||
    die "apt-get source ucx=$pkgver failed"
src=$(find "$work" -mindepth 1 -maxdepth 1 -type d -name 'ucx-*' | head -n 1)
[ -n "$src" ] && [ -f "$src/src/uct/base/uct_iface.h" ] ||
    die "the source package did not unpack a UCX tree"
mkdir -p "$cache"
rm -rf "$dest"
mv "$src" "$dest"
echo "$dest"
