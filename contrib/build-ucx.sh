#!/usr/bin/env bash
# Build a UCX source release into a private prefix and print the directory
# that holds it:
#     DIR/prefix   the installed UCX (bin/ucx_info, bin/ucx_perftest, lib/ucx)
#     DIR/src      the release's source tree (what orc's --with-ucx-src takes)
# so orc builds against it with
#     configure --with-ucx=DIR/prefix --with-ucx-src=DIR/src
#
# The tarball defaults to ../shared/ucx/ucx-1.22.0.tar.gz beside the source
# tree (or beside its main checkout, or the local checkout it was cloned
# from; ORC_UCX_TARBALL overrides it); its checksum must match the .sha256
# file next to it. DIR is ${XDG_CACHE_HOME:-~/.cache}/orc/ucx-<version>-<tarball
# sha256 prefix>-<options hash> (ORC_UCX_CACHE overrides the parent), so a
# second run finds the build and costs nothing; another tarball or other
# options build beside it. Nothing is installed outside DIR.
#
# Options are those of a distribution build (Debian's UCX 1.13.1 package:
# multi-threading, verbs, rdmacm, cma, assertions and parameter checks on,
# trace logging compiled out), without what needs hardware or libraries these
# machines have no use for (CUDA, ROCm, ZE, Gaudi, gdrcopy, knem, xpmem, ugni,
# EFA, mlx5 direct verbs), bindings, docs, examples, test apps and static
# libraries (libtool would compile everything twice).
set -euo pipefail

die() { echo "build-ucx: $*" >&2; exit 1; }

top=$(cd "$(dirname "$0")/.." && pwd)
# ../shared/ucx/ beside the checkout; for a git worktree, beside its main
# checkout; for a clone of a local checkout (git clone /work/main DIR),
# beside that one. The first that has it.
default_tarball() {
    local rel=shared/ucx/ucx-1.22.0.tar.gz common origin d
    common=$(git -C "$top" rev-parse --path-format=absolute --git-common-dir 2>/dev/null) || common=
    origin=$(git -C "$top" config --get remote.origin.url 2>/dev/null) || origin=
    case "$origin" in file://*) origin=${origin#file://} ;; /*) ;; *) origin= ;; esac
    for d in "$top" ${common:+"$common/.."} ${origin:+"$origin"}; do
        if [ -f "$d/../$rel" ]; then
            echo "$d/../$rel"
            return
        fi
    done
    echo "$top/../$rel"
}
tarball=${ORC_UCX_TARBALL:-$(default_tarball)}
jobs=${ORC_UCX_JOBS:-2}

options=(
    --enable-mt --with-verbs --with-rdmacm --enable-cma
    --disable-logging --disable-debug --enable-assertions --enable-params-check
    --without-mlx5 --without-cuda --without-rocm --without-ze --without-gaudi
    --without-gdrcopy --without-knem --without-xpmem --without-ugni
    --without-efa --without-mad --without-fuse3 --without-bfd
    --without-valgrind --without-java --without-go --without-mpi
    --disable-doxygen-doc --disable-examples --disable-test-apps
    --disable-gtest --disable-static
)

[ -f "$tarball" ] || die "no UCX tarball at $tarball (set ORC_UCX_TARBALL)"
[ -f "$tarball.sha256" ] || die "no checksum file $tarball.sha256"
tarball=$(cd "$(dirname "$tarball")" && pwd)/$(basename "$tarball")
name=$(basename "$tarball" .tar.gz)
[[ $name =~ ^ucx-[0-9]+\.[0-9]+\.[0-9]+$ ]] ||
    die "$tarball: expected a name ucx-X.Y.Z.tar.gz"

expected=$(awk '{print $1; exit}' "$tarball.sha256")
actual=$(sha256sum "$tarball" | awk '{print $1}')
[ "$actual" = "$expected" ] ||
    die "$tarball: checksum $actual does not match $tarball.sha256 ($expected)"

cache=${ORC_UCX_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/orc}
stamp="$actual ${options[*]}"
dir=$cache/$name-${actual:0:16}-$(echo "${options[*]}" | sha256sum | cut -c1-8)

built() { [ -f "$dir/.built" ] && [ "$(cat "$dir/.built")" = "$stamp" ]; }
if built; then
    echo "$dir"
    exit 0
fi

# One build at a time per cache directory: a second caller waits, then finds
# the finished build.
mkdir -p "$cache"
exec 9>"$dir.lock"
flock 9
if built; then
    echo "$dir"
    exit 0
fi

log=$dir.log
echo "build-ucx: building $name into $dir (log: $log)" >&2
start=$SECONDS
rm -rf "$dir"
mkdir -p "$dir"
trap 'rm -rf "$dir/build"' EXIT
{
    tar -xzf "$tarball" -C "$dir"
    mv "$dir/$name" "$dir/src"
    # autogen.sh asks git for a submodule orc does not use: keep git from
    # finding a repository around the cache.
    (cd "$dir/src" && GIT_CEILING_DIRECTORIES=$dir ./autogen.sh)
    mkdir "$dir/build"
    cd "$dir/build"
    ../src/configure --prefix="$dir/prefix" "${options[@]}"
    make -j"$jobs"
    make install
} >"$log" 2>&1 || die "building $name failed; last lines of $log:
$(tail -n 30 "$log")"
rm -rf "$dir/build"
echo "$stamp" >"$dir/.built"
echo "build-ucx: built $name in $((SECONDS - start)) s" >&2
echo "$dir"
