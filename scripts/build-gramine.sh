#!/usr/bin/env bash
# Build Gramine v1.9 from source into a cache directory, both backends in one build: `gramine-direct`
# (runs the manifest without an enclave) and the SGX side (`gramine-sgx`, and `gramine-sgx-sign` and
# `gramine-sgx-sigstruct-view`, which sign and measure an enclave without SGX hardware), and print
# the prefix on stdout. A second run with the same sources reuses the cache and takes a second.
#
#   PREFIX=$(bash scripts/build-gramine.sh) && export PATH="$PREFIX/bin:$PATH"
#
# Where the sources come from, first match wins:
#   1. GRAMINE_SOURCES: a folder holding gramine-1.9.tar.gz and the tarballs its meson wraps
#      download (glibc, mbedtls, curl, cJSON, libcbor, tomlc99, uthash) plus a SHA256SUMS file;
#   2. ../shared/vendor/gramine-1.9 next to this checkout, when it exists;
#   3. the official release archive of Gramine v1.9, with meson fetching its wraps from their
#      official URLs (needs network access to github.com, ftp.gnu.org and friends).
# If none of these can be had, it says so on stderr and exits 3: install Gramine from its own
# packages instead (https://gramine.readthedocs.io/en/stable/installation.html).
#
# Settings (environment):
#   GRAMINE_CACHE_DIR   where builds are kept (default ${XDG_CACHE_HOME:-~/.cache}/avalon-worker/gramine)
#   GRAMINE_PREFIX      install here instead, e.g. /gramine/meson_build_output for GSC's
#                       Gramine.Image (gsc/build-gramine-image.sh); reused when built from the same
#                       sources and options
#   GRAMINE_NO_APT=1    do not install build dependencies with apt-get (they must be present)
#
# Build dependencies (Debian 12 names), installed with apt-get when missing and running as root.
# The SGX side needs protobuf-c (the PAL talks protobuf to aesmd), the kernel's <asm/sgx.h>
# (linux-libc-dev, Linux >= 5.11: the in-kernel driver's interface, the only one Gramine 1.9 knows)
# and python3-cryptography (gramine-sgx-sign). No SGX hardware, SDK or PSW is needed to build or sign.
readonly BUILD_DEPS=(build-essential autoconf bison gawk meson ninja-build nasm pkg-config cmake
    python3-click python3-jinja2 python3-pyelftools python3-tomli python3-tomli-w
    python3-voluptuous bzip2 xz-utils patch curl ca-certificates
    libprotobuf-c-dev protobuf-c-compiler linux-libc-dev python3-cryptography)
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
readonly VERSION=1.9
readonly RELEASE_URL="https://github.com/gramineproject/gramine/archive/refs/tags/v${VERSION}.tar.gz"

log() { printf 'build-gramine: %s\n' "$*" >&2; }

sources="${GRAMINE_SOURCES:-}"
if [ -z "$sources" ] && [ -d "$here/../shared/vendor/gramine-${VERSION}" ]; then
    sources="$(cd "$here/../shared/vendor/gramine-${VERSION}" && pwd)"
fi
if [ -n "$sources" ] && [ ! -f "$sources/gramine-${VERSION}.tar.gz" ]; then
    log "GRAMINE_SOURCES=$sources has no gramine-${VERSION}.tar.gz"
    exit 3
fi

# What the build is made of: the cache key covers the hashes of every source file and these
# options, so changed sources or a changed configuration never reuse an old build.
readonly MESON_OPTIONS=(--buildtype=release -Ddirect=enabled -Dsgx=enabled -Dlibc=glibc
    -Dlibgomp=disabled -Dtests=disabled)
if [ -n "$sources" ]; then
    key_input="$( (cd "$sources" && sha256sum ./*.tar.* | sort -k2); echo "${MESON_OPTIONS[*]}")"
else
    key_input="$(echo "release ${RELEASE_URL}"; echo "${MESON_OPTIONS[*]}")"
fi
key="$(printf '%s' "$key_input" | sha256sum | cut -c1-16)"
cache_root="${GRAMINE_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/avalon-worker/gramine}"
prefix="${GRAMINE_PREFIX:-$cache_root/$VERSION-$key}"
if [ -x "$prefix/bin/gramine-direct" ] && [ -x "$prefix/bin/gramine-sgx-sign" ] \
    && [ "$(cat "$prefix/.complete" 2>/dev/null)" = "$key" ]; then
    log "reusing the build in $prefix"
    echo "$prefix"
    exit 0
fi

missing=()
for pkg in "${BUILD_DEPS[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'ok installed' || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
    if [ "${GRAMINE_NO_APT:-0}" = 1 ] || [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
        log "missing build dependencies: ${missing[*]} (install them, or run as root with apt-get)"
        exit 3
    fi
    log "installing build dependencies with apt-get: ${missing[*]}"
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
fi

work="$(mktemp -d "${TMPDIR:-/tmp}/gramine-build.XXXXXX")"
trap 'rm -rf "$work"' EXIT
cd "$work"
if [ -n "$sources" ]; then
    log "building Gramine $VERSION from $sources into $prefix (several minutes, mostly glibc)"
    (cd "$sources" && sha256sum --quiet -c SHA256SUMS) >&2 || { log "a source tarball does not match SHA256SUMS"; exit 1; }
    tar xzf "$sources/gramine-${VERSION}.tar.gz"
    src="$work/gramine-${VERSION}"
    mkdir -p "$src/subprojects/packagecache"
    for f in "$sources"/*.tar.*; do
        [ "$(basename "$f")" = "gramine-${VERSION}.tar.gz" ] || cp "$f" "$src/subprojects/packagecache/"
    done
    # A wrap names the tarball it expects and its hash; where a tarball in the folder was made
    # from the project's git tag instead of its release upload, the hash differs: use the one
    # the folder's SHA256SUMS vouches for (checked just above).
    for wrap in "$src"/subprojects/*.wrap; do
        name="$(sed -n 's/^source_filename *= *//p' "$wrap")"
        [ -n "$name" ] && [ -f "$sources/$name" ] || continue
        hash="$(awk -v n="$name" '$2 == n { print $1 }' "$sources/SHA256SUMS")"
        sed -i "s/^source_hash *=.*/source_hash = $hash/" "$wrap"
    done
else
    log "no Gramine sources folder; downloading the v$VERSION release from $RELEASE_URL"
    if ! curl -fsSL "$RELEASE_URL" -o release.tar.gz; then
        log "cannot download Gramine's sources. Install Gramine from its packages, or set"
        log "GRAMINE_SOURCES to a folder with its source tarballs (see the header of this script)."
        exit 3
    fi
    tar xzf release.tar.gz
    src="$work/gramine-${VERSION}"
fi

meson setup "$work/build" "$src" --prefix="$prefix" "${MESON_OPTIONS[@]}" >"$work/setup.log" 2>&1 \
    || { tail -40 "$work/setup.log" >&2; log "meson setup failed"; exit 1; }
ninja -C "$work/build" >"$work/build.log" 2>&1 || { tail -60 "$work/build.log" >&2; log "build failed"; exit 1; }
rm -rf "$prefix"
ninja -C "$work/build" install >"$work/install.log" 2>&1 || { tail -40 "$work/install.log" >&2; log "install failed"; exit 1; }
echo "$key" >"$prefix/.complete"
log "built Gramine $VERSION in $prefix"
echo "$prefix"
