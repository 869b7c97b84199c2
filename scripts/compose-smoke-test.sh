#!/usr/bin/env bash
# Compose smoke test: build the image, `docker-compose up` the worker and the test client, and
# check that all nine sample work orders come back verified.
#
# What it does, in order:
#   1. installs docker.io, docker-compose and debootstrap with apt-get if they are missing;
#   2. uses the running Docker engine, or starts `dockerd --bridge=none --iptables=false` (and
#      stops it again at the end);
#   3. builds a local Debian bookworm base image with debootstrap (once; it is reused while the
#      image `local/python-base` exists), so that no registry other than the package archives
#      is needed;
#   4. builds with compose/host-network.yaml (host networking for the build and both
#      containers; everything talks over 127.0.0.1) and runs
#      `up --exit-code-from test-send-work-order`;
#   5. removes the containers, networks and volumes it created, and the image it built.
#
# Exit status: 0 when the nine orders are verified; 1 when anything fails. When no Docker engine
# can be had at all it says so and exits 0, or 1 if CI_REQUIRE_DOCKER=1.
#
# Settings (environment):
#   CI_REQUIRE_DOCKER=1      an engine that cannot start is a failure, not a skip
#   SMOKE_BASE_IMAGE         base image to build on (default local/python-base, made here)
#   DEBOOTSTRAP_MIRROR       Debian mirror for the base image (default: debootstrap's own)
#   PIP_INDEX_URL, PIP_EXTRA_INDEX_URL, PIP_TRUSTED_HOST, BUILD_PIP_CERT
#                            package-index settings for pip inside the build (docker-compose.yaml)
#   SMOKE_TIMEOUT_S          limit for `up` (default 600)
#   SMOKE_KEEP_IMAGES=1      keep the image it built
set -euo pipefail
cd "$(dirname "$0")/.."

readonly PROJECT="avalon-smoke-$$"
readonly EXPECTED_ORDERS=9
readonly UP_TIMEOUT_S="${SMOKE_TIMEOUT_S:-600}"
readonly LOG_TAG=compose-smoke
COMPOSE_FILES=(-f docker-compose.yaml -f compose/host-network.yaml)
COMPOSE=(docker-compose)

workdir="$(mktemp -d "${TMPDIR:-/tmp}/avalon-compose-smoke.XXXXXX")"
compose_used=0
# shellcheck source=scripts/compose-lib.sh
. scripts/compose-lib.sh

# shellcheck disable=SC2317  # reached through the EXIT trap
cleanup() {
    local status=$?
    set +e
    if [ "$compose_used" = 1 ]; then
        "${COMPOSE[@]}" -p "$PROJECT" "${COMPOSE_FILES[@]}" down --volumes --remove-orphans >"$workdir/down.log" 2>&1 \
            || { log "docker-compose down failed:"; cat "$workdir/down.log" >&2; }
        remove_built_images "$AVALON_WORKER_IMAGE"
    fi
    engine_cleanup
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

ensure_tools     # 1. tools
ensure_engine    # 2. engine
ensure_base_image  # 3. base image

# 4. build and run ----------------------------------------------------------------------------
port="$(free_port)"
export BASE_IMAGE="$BASE_IMAGE_NAME"
export AVALON_WORKER_IMAGE="avalon-worker:smoke"
export AVALON_WORKER_PORT="$port"
compose_used=1

log "docker-compose build (BASE_IMAGE=$BASE_IMAGE, build network host)"
t0=$(date +%s)
if ! "${COMPOSE[@]}" -p "$PROJECT" "${COMPOSE_FILES[@]}" build >"$workdir/build.log" 2>&1; then
    tail -n 40 "$workdir/build.log" >&2
    log "docker-compose build failed"
    echo "compose-smoke: 0 passed, 1 failed"
    exit 1
fi
build_s=$(( $(date +%s) - t0 ))
size_bytes="$(docker image inspect --format '{{.Size}}' "$AVALON_WORKER_IMAGE")"
log "image $AVALON_WORKER_IMAGE: $(( size_bytes / 1000000 )) MB, built in ${build_s} s"

log "docker-compose up --exit-code-from test-send-work-order (worker on 127.0.0.1:$port)"
t0=$(date +%s)
set +e
timeout "$UP_TIMEOUT_S" "${COMPOSE[@]}" -p "$PROJECT" "${COMPOSE_FILES[@]}" up --no-color \
    --exit-code-from test-send-work-order 2>&1 | tee "$workdir/up.log"
up_status=${PIPESTATUS[0]}
set -e
log "up finished in $(( $(date +%s) - t0 )) s with status $up_status"

# 5. verdict ----------------------------------------------------------------------------------
# Client rows look like "test-send-work-order_1  | 006db586…91fdb  python-fib  10  3.2  verified  Fibonacci number at position 10 = 55".
verified_rows="$(grep -E '^test-send-work-order[^|]*\|' "$workdir/up.log" | grep -cE '\|\s+[0-9a-fA-F]{16,}\s+python-\S+\s+.*\sverified\s' || true)"
summary_ok=0
grep -qE "\| ${EXPECTED_ORDERS} of ${EXPECTED_ORDERS} work orders verified" "$workdir/up.log" && summary_ok=1
if [ "$up_status" -eq 0 ] && [ "$verified_rows" -eq "$EXPECTED_ORDERS" ] && [ "$summary_ok" = 1 ]; then
    log "PASS: $verified_rows of $EXPECTED_ORDERS work orders verified through docker-compose"
    echo "compose-smoke: 1 passed, 0 failed"
    exit 0
fi
log "FAIL: up status $up_status, $verified_rows verified rows (want $EXPECTED_ORDERS), summary line found: $summary_ok"
echo "compose-smoke: 0 passed, 1 failed"
exit 1
