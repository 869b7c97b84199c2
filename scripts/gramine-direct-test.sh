#!/usr/bin/env bash
# Run the worker inside Gramine's library OS with `gramine-direct` (the same manifest, trusted-file
# checks, encrypted mounts and process model as gramine-sgx, without the enclave), and check it.
#
# What it does, in order:
#   1. uses `gramine-direct` from PATH, or builds Gramine with scripts/build-gramine.sh (cached:
#      a second run takes seconds);
#   2. installs avalon-worker and its pinned dependencies for the Debian interpreter
#      (/usr/bin/python3: the enclave's first binary must be a real interpreter, not a shim) as
#      scripts/measure-enclave.sh does for the enclave it signs: the same files, which the
#      manifest mounts and measures (PACKAGES);
#   3. runs tests/test_gramine_direct.py: the pool, --workers 0, the identity on the encrypted
#      mount, the file policy and attestation modes, each under gramine-direct;
#   4. renders the manifest with gramine/Makefile, starts the worker under gramine-direct with two
#      worker processes and runs the nine sample work orders against it from outside with
#      `avalon-worker run-orders`.
# Its last line is `gramine-direct: N of N work orders verified`.
#
# With --bench it does steps 1 and 2, renders the manifest as in step 4 and runs
# benchmarks/gramine_direct.py instead (the library OS's cost against the native worker).
#
# Exit status: 0 when everything passed; 1 on any failure. Without Gramine (no sources, no build
# tools) it says so and exits 0, or 1 if CI_REQUIRE_GRAMINE=1.
#
# Settings (environment):
#   CI_REQUIRE_GRAMINE=1   no Gramine is a failure, not a skip
#   GRAMINE_SOURCES, GRAMINE_CACHE_DIR   see scripts/build-gramine.sh
#   GRAMINE_PYTHON         the interpreter to run inside Gramine (default /usr/bin/python3)
set -euo pipefail
cd "$(dirname "$0")/.."
repo="$(pwd)"
readonly EXPECTED_ORDERS=9
started=$SECONDS
mode=test
[ "${1:-}" = "--bench" ] && mode=bench

readonly STAGE=gramine-direct
log() { printf '%s: %s\n' "$STAGE" "$*" >&2; }

# Not under /tmp: inside Gramine /tmp is the manifest's tmpfs, which hides host folders there.
work="$(mktemp -d /var/tmp/avalon-gramine-direct.XXXXXX)"
worker_pid=""
# shellcheck disable=SC2317  # reached through the EXIT trap
cleanup() {
    if [ -n "$worker_pid" ] && kill -0 "$worker_pid" 2>/dev/null; then
        kill -TERM "$worker_pid" 2>/dev/null || true
        sleep 2
        kill -KILL "$worker_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

# 1. Gramine ---------------------------------------------------------------------------------------
# shellcheck source=scripts/gramine-lib.sh
. scripts/gramine-lib.sh
use_gramine "$repo" skip_stage_without_gramine
log "using $(command -v gramine-direct) ($(( SECONDS - started )) s so far)"

# 2. The interpreter Gramine runs, and the worker installed as the enclave measures it -------------
enclave_python="$(readlink -f "${GRAMINE_PYTHON:-/usr/bin/python3}")"
[ -x "$enclave_python" ] || { log "no interpreter at ${GRAMINE_PYTHON:-/usr/bin/python3}"; exit 1; }
ensure_venv "$enclave_python"
packages="$work/enclave/packages"
install_enclave_packages "$enclave_python" "$repo" "$packages"

# The project's own virtualenv runs the tests and the requester side (outside Gramine).
make --no-print-directory .venv/bin/.installed >&2
export AVALON_GRAMINE_ENTRYPOINT="$enclave_python" AVALON_GRAMINE_PACKAGES="$packages"
log "enclave interpreter $enclave_python, packages in $packages"

# The manifest for the sample orders and the benchmark: the built-in workloads, a state directory
# on the encrypted mount (with a random key: gramine-direct has no sealing key), two processes.
app="$work/app" state="$work/state" out="$work/manifest"
mkdir -p "$app" "$state" "$out"
cp src/avalon_worker/data/workloads.json "$app/"
make --no-print-directory -s -f "$repo/gramine/Makefile" -C "$out" ENTRYPOINT="$enclave_python" \
    APP_DIR="$app" STATE_DIR="$state" PACKAGES="$packages" WORKERS=2 \
    INSECURE_DIRECT_TEST_KEY="$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')" >&2
log "manifest rendered ($(( SECONDS - started )) s so far)"

if [ "$mode" = bench ]; then
    # The native runs: the same interpreter and packages, as the enclave starts them (-S).
    printf '#!/bin/sh\nPYTHONPATH="%s" exec "%s" -S "$@"\n' "$packages" "$enclave_python" >"$work/python-native"
    chmod +x "$work/python-native"
    .venv/bin/python benchmarks/gramine_direct.py --manifest "$out/python-worker" --state-dir "$state" \
        --workloads "$app/workloads.json" --python "$work/python-native"
    exit 0
fi

# 3. Tests under gramine-direct ---------------------------------------------------------------------
AVALON_GRAMINE_DIRECT=1 .venv/bin/python -m pytest -q -p no:cacheprovider --basetemp="$work/pytest" \
    tests/test_gramine_direct.py
log "tests passed ($(( SECONDS - started )) s so far)"

# 4. The nine sample orders -------------------------------------------------------------------------

port="$(.venv/bin/python -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
gramine-direct "$out/python-worker" -m avalon_worker serve --bind "tcp://127.0.0.1:$port" \
    --state-dir "$state" --workloads "$app/workloads.json" --workers 2 --rsa-bits 2048 \
    --attestation auto >"$work/worker.out" 2>&1 &  # Gramine sends stderr to stdout anyway
worker_pid=$!
for _ in $(seq 1 600); do  # up to 5 minutes: each Gramine process starts in seconds, more on a busy machine
    grep -q '^listening on ' "$work/worker.out" 2>/dev/null && break
    kill -0 "$worker_pid" 2>/dev/null || break
    sleep 0.5
done
if ! grep -q '^listening on ' "$work/worker.out"; then
    log "the worker did not start under gramine-direct:"
    tail -30 "$work/worker.out" >&2
    exit 1
fi
log "worker listening on tcp://127.0.0.1:$port under gramine-direct"
.venv/bin/avalon-worker run-orders --endpoint "tcp://127.0.0.1:$port" tests/test_work_orders.json \
    >"$work/orders.out" 2>"$work/orders.err" || true
cat "$work/orders.out" >&2
verified="$(sed -n 's/^\([0-9][0-9]*\) of [0-9][0-9]* work orders verified.*/\1/p' "$work/orders.out" | tail -1)"
verified="${verified:-0}"
kill -TERM "$worker_pid"
worker_status=0
wait "$worker_pid" || worker_status=$?
worker_pid=""
if [ "$worker_status" != 0 ]; then
    log "the worker exited with status $worker_status after SIGTERM:"
    tail -20 "$work/worker.out" >&2
    verified=0
fi
log "done in $(( SECONDS - started )) s"
echo "gramine-direct: $verified of $EXPECTED_ORDERS work orders verified"
[ "$verified" = "$EXPECTED_ORDERS" ]
