#!/usr/bin/env bash
# The SGX enclave, signed and measured twice: the CI stage for a reproducible MRENCLAVE.
#
# What it does, in order:
#   1. takes Gramine from PATH, or builds it with scripts/build-gramine.sh (cached: seconds the
#      second time), SGX signing tools included;
#   2. clones this repository's HEAD twice, into two directories of different names and depths,
#      and runs scripts/measure-enclave.sh in each, one after the other (different times, a
#      different umask and temporary directory), both signing with one throw-away key made here;
#   3. compares: the two MR_ENCLAVE lines (printed, both), the signed manifests and the .sig
#      files must be equal byte for byte; where they differ it shows the first measured files
#      that do;
#   4. runs tests/test_signed_enclave.py on the first enclave (every trusted file with its
#      recorded hash, our SIGSTRUCT parser against gramine-sgx-sigstruct-view, the policy from
#      `verify --print-policy-template --sigstruct`, the signed manifest run under gramine-direct,
#      a changed file refused) and the tests of tests/test_sigstruct.py that need Gramine.
# Its last line is `sgx-measurement: MR_ENCLAVE reproduced: <64 hex>`.
#
# HEAD is what is measured: uncommitted changes are not (it says so when there are some).
#
# Exit status: 0 when both builds agree and the tests pass; 1 otherwise. Without Gramine (no
# sources, no build tools) it says so and exits 0, or 1 if CI_REQUIRE_GRAMINE=1.
#
# Settings (environment): CI_REQUIRE_GRAMINE, GRAMINE_SOURCES, GRAMINE_CACHE_DIR (see
# scripts/build-gramine.sh), GRAMINE_PYTHON (see scripts/measure-enclave.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
repo="$(pwd)"
started=$SECONDS

readonly STAGE=sgx-measurement
log() { printf '%s: %s\n' "$STAGE" "$*" >&2; }

work="$(mktemp -d /var/tmp/avalon-sgx-measurement.XXXXXX)"
trap 'rm -rf "$work"' EXIT

# 1. Gramine ---------------------------------------------------------------------------------------
# shellcheck source=scripts/gramine-lib.sh
. scripts/gramine-lib.sh
use_gramine "$repo" skip_stage_without_gramine
log "using $(command -v gramine-sgx-sign) ($(( SECONDS - started )) s so far)"

# 2. Two clean clones, two builds ------------------------------------------------------------------
[ -z "$(git status --porcelain)" ] || log "the work tree has uncommitted changes: they are not measured (HEAD is)"
openssl genrsa -3 -out "$work/key.pem" 3072 2>/dev/null
clones=("$work/a/avalon-worker" "$work/b/somewhere/much/deeper/checkout-of-the-worker")
for i in 0 1; do
    clone="${clones[$i]}"
    git clone --quiet --no-hardlinks "$repo" "$clone"
    mkdir -p "$work/tmp$i"
    log "measuring the enclave in $clone"
    ( [ "$i" = 0 ] || umask 0027
      TMPDIR="$work/tmp$i" bash "$clone/scripts/measure-enclave.sh" --key "$work/key.pem" \
          --out "$clone/build/enclave" >"$work/measure$i.out" ) \
        || { cat "$work/measure$i.out"; log "measure-enclave.sh failed in $clone"; exit 1; }
    log "measured in $clone ($(( SECONDS - started )) s so far)"
done

# 3. The same enclave -----------------------------------------------------------------------------
cat "$work/measure0.out"
first="$(sed -n 's/^mr_enclave: //p' "$work/measure0.out")"
second="$(sed -n 's/^mr_enclave: //p' "$work/measure1.out")"
echo "sgx-measurement: build 1 (${clones[0]}): mr_enclave: $first"
echo "sgx-measurement: build 2 (${clones[1]}): mr_enclave: $second"
enclave0="${clones[0]}/build/enclave" enclave1="${clones[1]}/build/enclave"
if [ -z "$first" ] || [ "$first" != "$second" ]; then
    log "the two builds measure differently; the first files that differ:"
    diff "$enclave0/trusted-files.sha256" "$enclave1/trusted-files.sha256" | head -20 >&2 || true
    echo "sgx-measurement: 0 passed, 1 failed"
    exit 1
fi
for file in python-worker.manifest.sgx python-worker.sig trusted-files.sha256; do
    cmp "$enclave0/$file" "$enclave1/$file" || { log "$file differs between the builds"; exit 1; }
done

# 4. The signed enclave, checked -----------------------------------------------------------------
make --no-print-directory .venv/bin/.installed >&2
AVALON_SIGNED_ENCLAVE="$enclave0" CI_REQUIRE_GRAMINE=1 .venv/bin/python -m pytest -q -p no:cacheprovider \
    --basetemp="$work/pytest" tests/test_signed_enclave.py tests/test_sigstruct.py
log "done in $(( SECONDS - started )) s"
echo "sgx-measurement: MR_ENCLAVE reproduced: $first"
