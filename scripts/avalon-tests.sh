#!/usr/bin/env bash
# Run Hyperledger Avalon's own test programs against this worker, and report every case.
#
#   bash scripts/avalon-tests.sh PATH/TO/AVALON [OUT_DIR]
#
# PATH/TO/AVALON is a git clone of hyperledger/avalon, with its history (the SDK's unit tests
# are taken from an older commit of it); this script never downloads Avalon. It starts
# `avalon-worker serve --listen-http --insecure-reuse-session-iv` on 127.0.0.1 with a fresh
# state directory, then runs, unmodified and from the clone:
#   - tests/Demo.py over json_requests, worker, work_orders, signature and workorder_receipt;
#   - the SDK's direct-model unit tests (commit 3cc5722, the newest where they import);
#   - examples/apps/generic_client as tools/run_tests.sh runs it, and as the inside-out-eval
#     and simple-wallet READMEs run it.
# Avalon's Python environment is built once from PyPI (requirements/avalon-tests.txt) in
# $AVALON_TESTS_ENV (default ~/.cache/avalon-worker/avalon-tests-env). The report (one row per
# case) goes to OUT_DIR (default ./avalon-tests-out); the exit status is 1 if a case FAILs.
# Not part of `make test`: it needs Avalon's tree. See docs/avalon.md.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ $# -lt 1 || ! -f "$1/tests/Demo.py" || ! -d "$1/examples/apps/generic_client" ]]; then
    echo "usage: bash scripts/avalon-tests.sh PATH/TO/AVALON [OUT_DIR]  (a git clone of hyperledger/avalon)" >&2
    exit 2
fi
avalon="$(cd "$1" && pwd)"
out="${2:-avalon-tests-out}"
env_dir="${AVALON_TESTS_ENV:-$HOME/.cache/avalon-worker/avalon-tests-env}"
python="${PYTHON:-python3}"

if [[ ! -x .venv/bin/python ]]; then
    echo "avalon-tests: installing avalon-worker into .venv (make test does the same)" >&2
    "$python" -m venv .venv && .venv/bin/pip install --quiet -e '.[test]'
fi
stamp="$env_dir/.installed-$(sha256sum requirements/avalon-tests.txt | cut -c1-16)"
if [[ ! -f "$stamp" ]]; then
    echo "avalon-tests: building Avalon's Python environment in $env_dir (a few minutes the first time)" >&2
    rm -rf "$env_dir"
    "$python" -m venv "$env_dir"
    "$env_dir/bin/pip" install --quiet -r requirements/avalon-tests.txt
    # Its own pin (pysha3) does not build on current Pythons, and the import does not need it.
    "$env_dir/bin/pip" install --quiet --no-deps 'fabric-sdk-py==1.0.0'
    touch "$stamp"
fi

exec .venv/bin/python scripts/avalon_tests/run.py "$avalon" "$env_dir/bin/python" "$out"
