#!/usr/bin/env bash
# Build the Gramine image that GSC takes as `Gramine.Image` (gsc/config.yaml), without GitHub:
# Gramine 1.9 built by scripts/build-gramine.sh from a folder of source tarballs, both backends,
# installed at /gramine/meson_build_output as GSC expects, on the same base image as the worker.
# (GSC's own `gsc build-gramine`, and `gsc build` without Gramine.Image, clone Gramine from
# GitHub.)
#
#   bash gsc/build-gramine-image.sh [IMAGE]        # default local/gramine-1.9
#
# Then, in the GSC configuration, replace Gramine.Repository and Gramine.Branch with
#   Image: "local/gramine-1.9"
# (gsc/build-gsc-image.sh does this when GSC_GRAMINE_IMAGE is set).
#
# Settings (environment):
#   GRAMINE_SOURCES    the source tarballs (default ../shared/vendor/gramine-1.9 next to this checkout)
#   SMOKE_BASE_IMAGE   the base image (default local/python-base, Debian 12 made with debootstrap;
#                      see scripts/compose-lib.sh); it must be the app image's distribution
#   CI_REQUIRE_DOCKER=1, DEBOOTSTRAP_MIRROR   see scripts/compose-lib.sh
set -euo pipefail
cd "$(dirname "$0")/.."
repo="$(pwd)"
image="${1:-local/gramine-1.9}"
readonly LOG_TAG=gsc-gramine-image
workdir="$(mktemp -d "${TMPDIR:-/tmp}/avalon-gramine-image.XXXXXX")"
# shellcheck source=scripts/compose-lib.sh
. scripts/compose-lib.sh
# A build tool, not a smoke test: no engine is a failure.
no_engine() { log "no Docker engine: $*"; exit 1; }
trap engine_cleanup EXIT

sources="${GRAMINE_SOURCES:-$repo/../shared/vendor/gramine-1.9}"
[ -f "$sources/gramine-1.9.tar.gz" ] || { log "no gramine-1.9.tar.gz in $sources: set GRAMINE_SOURCES"; exit 1; }
ensure_tools
ensure_engine
ensure_base_image

mkdir "$workdir/context"
cp scripts/build-gramine.sh "$workdir/context/"
cp -r "$sources" "$workdir/context/sources"
cat >"$workdir/context/Dockerfile" <<EOF
FROM $BASE_IMAGE_NAME
COPY build-gramine.sh /build/build-gramine.sh
COPY sources/ /build/sources/
RUN GRAMINE_SOURCES=/build/sources GRAMINE_PREFIX=/gramine/meson_build_output bash /build/build-gramine.sh \\
 && rm -rf /build /var/lib/apt/lists/*
EOF
log "building $image (Gramine from $sources; 10 to 30 minutes)"
docker build --network host -t "$image" "$workdir/context" >"$workdir/build.log" 2>&1 \
    || { tail -40 "$workdir/build.log" >&2; log "docker build failed"; exit 1; }
log "built $image: $(docker image inspect --format '{{.Id}}' "$image")"
