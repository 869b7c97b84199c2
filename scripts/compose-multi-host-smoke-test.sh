#!/usr/bin/env bash
# Multi-host smoke test: compose/multi-host.yaml (PostgreSQL, two workers with two identities,
# two stateless listeners, all on 127.0.0.1 with host networking), then the nine sample work
# orders against each worker through each listener, every result verified.
#
# What it does, in order:
#   1. the tools, a Docker engine and the local Debian base image, as scripts/compose-smoke-test.sh
#      does (scripts/compose-lib.sh);
#   2. builds the worker image and a PostgreSQL image from Debian's package on the same base;
#   3. `up -d` the database, both workers and both listeners on free loopback ports, with a
#      fresh random database password;
#   4. waits until each listener lists both workers (WorkerLookUp), then for each listener runs
#      `run-orders --listener URL` in a requester container: nine orders on each worker it lists;
#   5. removes the containers, networks and volumes it created.
#
# Exit status: 0 when 2 listeners x 2 workers x 9 orders are verified; 1 when anything fails.
# Without a Docker engine it says so and exits 0, or 1 if CI_REQUIRE_DOCKER=1.
#
# Settings (environment): CI_REQUIRE_DOCKER, SMOKE_BASE_IMAGE, DEBOOTSTRAP_MIRROR (see
# scripts/compose-lib.sh), PIP_INDEX_URL, PIP_EXTRA_INDEX_URL, PIP_TRUSTED_HOST, BUILD_PIP_CERT
# (pip inside the worker image's build), SMOKE_TIMEOUT_S (waits, default 300).
set -euo pipefail
cd "$(dirname "$0")/.."

readonly PROJECT="avalon-multi-$$"
readonly LOG_TAG=compose-multi-host
readonly EXPECTED_ORDERS=9
readonly WAIT_S="${SMOKE_TIMEOUT_S:-300}"
COMPOSE=(docker-compose -p "$PROJECT" -f compose/multi-host.yaml)

workdir="$(mktemp -d "${TMPDIR:-/tmp}/avalon-multi-host-smoke.XXXXXX")"
compose_used=0
# shellcheck source=scripts/compose-lib.sh
. scripts/compose-lib.sh

# shellcheck disable=SC2317  # reached through the EXIT trap
cleanup() {
    local status=$?
    set +e
    if [ "$compose_used" = 1 ]; then
        if [ "$status" != 0 ]; then
            "${COMPOSE[@]}" logs --no-color --tail 30 >&2 2>&1
        fi
        "${COMPOSE[@]}" down --volumes --remove-orphans >"$workdir/down.log" 2>&1 \
            || { log "docker-compose down failed:"; cat "$workdir/down.log" >&2; }
        remove_built_images "$AVALON_WORKER_IMAGE" "$AVALON_POSTGRES_IMAGE"
    fi
    engine_cleanup
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

fail() {
    log "FAIL: $*"
    echo "$LOG_TAG: 0 passed, 1 failed"
    exit 1
}

ensure_tools
ensure_engine
ensure_base_image

# 2. images ------------------------------------------------------------------------------------
export BASE_IMAGE="$BASE_IMAGE_NAME"
export AVALON_WORKER_IMAGE="avalon-worker:smoke"
export AVALON_POSTGRES_IMAGE="avalon-postgres:smoke"
AVALON_DB_PASSWORD="$(python3 -c 'import secrets; print(secrets.token_urlsafe(24))')"
AVALON_DB_PORT="$(free_port)"
AVALON_WORKER_A_PORT="$(free_port)"
AVALON_WORKER_B_PORT="$(free_port)"
AVALON_LISTENER_1_PORT="$(free_port)"
AVALON_LISTENER_2_PORT="$(free_port)"
export AVALON_DB_PASSWORD AVALON_DB_PORT AVALON_WORKER_A_PORT AVALON_WORKER_B_PORT AVALON_LISTENER_1_PORT AVALON_LISTENER_2_PORT
compose_used=1

log "docker-compose build (BASE_IMAGE=$BASE_IMAGE, build network host)"
t0=$(date +%s)
"${COMPOSE[@]}" build >"$workdir/build.log" 2>&1 || { tail -n 40 "$workdir/build.log" >&2; fail "docker-compose build failed"; }
log "images built in $(( $(date +%s) - t0 )) s"

# 3. up ----------------------------------------------------------------------------------------
log "docker-compose up -d (PostgreSQL on 127.0.0.1:$AVALON_DB_PORT, listeners on :$AVALON_LISTENER_1_PORT and :$AVALON_LISTENER_2_PORT)"
"${COMPOSE[@]}" up -d --no-build >"$workdir/up.log" 2>&1 || { cat "$workdir/up.log" >&2; fail "docker-compose up failed"; }

# 4. orders ------------------------------------------------------------------------------------
listeners=("http://127.0.0.1:$AVALON_LISTENER_1_PORT/" "http://127.0.0.1:$AVALON_LISTENER_2_PORT/")
for url in "${listeners[@]}"; do
    if ! python3 - "$url" "$WAIT_S" <<'PY'
import json, sys, time, urllib.request
url, wait_s = sys.argv[1], float(sys.argv[2])
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "WorkerLookUp", "params": {}}).encode()
deadline = time.monotonic() + wait_s
count = 0
while time.monotonic() < deadline:
    try:
        request = urllib.request.Request(url, body, {"Content-Type": "application/json"})
        with opener.open(request, timeout=10) as response:
            count = json.loads(response.read())["result"]["totalCount"]
        if count == 2:
            sys.exit(0)
    except (OSError, KeyError, ValueError):
        pass
    time.sleep(1)
print(f"{url} lists {count} workers, not 2", file=sys.stderr)
sys.exit(1)
PY
    then
        fail "the listener $url did not list both workers within $WAIT_S s"
    fi
done
log "both listeners list both workers"

verified=0
for url in "${listeners[@]}"; do
    log "run-orders --listener $url (nine orders on each worker)"
    set +e
    timeout "$WAIT_S" "${COMPOSE[@]}" run --rm --no-deps requester \
        run-orders --listener "$url" /work-orders/test_work_orders.json 2>&1 | tee "$workdir/orders.log"
    status=${PIPESTATUS[0]}
    set -e
    [ "$status" -eq 0 ] || fail "run-orders through $url exited $status"
    count="$(grep -cE "^${EXPECTED_ORDERS} of ${EXPECTED_ORDERS} work orders verified" "$workdir/orders.log" || true)"
    [ "$count" -eq 2 ] || fail "through $url: $count of 2 workers had all $EXPECTED_ORDERS orders verified"
    verified=$(( verified + 2 * EXPECTED_ORDERS ))
done

log "PASS: $verified work orders verified (2 listeners x 2 workers x $EXPECTED_ORDERS)"
echo "$LOG_TAG: 1 passed, 0 failed"
