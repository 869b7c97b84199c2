#!/usr/bin/env bash
# Build, sign and measure the worker's SGX enclave: the enclave an SGX host runs with
# `gramine-sgx`, its MRENCLAVE, and everything it was made of.
#
#   bash scripts/measure-enclave.sh --key enclave-key.pem [--out DIR] [NAME=value ...]
#   bash scripts/measure-enclave.sh --throwaway-key            # CI: a key made here, then deleted
#   bash scripts/measure-enclave.sh --check DIR                # does DIR still match this host?
#
# What it does, in order:
#   1. checks the signing key: RSA-3072 with public exponent 3 (`openssl genrsa -3 -out KEY 3072`);
#   2. takes Gramine's tools from PATH, or builds Gramine with scripts/build-gramine.sh (cached);
#   3. installs the worker and its dependencies, pinned by hash, for the Debian interpreter
#      (/usr/bin/python3) into DIR/packages, the same bytes from any checkout, directory or day
#      (see install_enclave_packages in scripts/gramine-lib.sh), and the workload registry
#      into DIR/app;
#   4. renders gramine/python-worker.manifest.template with gramine/Makefile (the manifest an
#      SGX host runs: no gramine-direct test settings) and signs it with gramine-sgx-sign;
#   5. checks that every trusted file still has the hash the signed manifest records;
#   6. says what it measured and prints, last, the four lines
#        mr_enclave: <64 hex>
#        mr_signer: <64 hex>
#        isv_prod_id: N
#        isv_svn: N
#
# DIR (default build/enclave) is then the signed enclave: python-worker.manifest.sgx,
# python-worker.sig, packages/, app/, trusted-files.sha256 (every measured file and its hash,
# to compare with another build) and measurement.txt (this report). Its paths are relative,
# so it can be moved: run it with `cd DIR && gramine-sgx python-worker`, on a host that has the
# same interpreter, libraries and Gramine (docs/deployment.md: "Which MRENCLAVE to trust").
# DIR is replaced only when everything succeeded; a failed run leaves it as it was.
#
# NAME=value arguments are manifest options of gramine/Makefile (BIND, WORKERS, LISTEN_HTTP,
# STATE_DIR, APP_DIR, ENCLAVE_SIZE, EDMM, DEBUG, ISVPRODID, ISVSVN); each is part of the
# measurement.
#
# Exit status: 0 on success; 2 on bad input (a key that is missing or not RSA-3072 with
# exponent 3, a manifest that does not render, a trusted file changed after signing, an
# unknown option), with one line naming the file or key; 1 when anything else fails; 3 when
# Gramine can be neither found nor built.
#
# Settings (environment):
#   GRAMINE_PYTHON          the interpreter to measure (default /usr/bin/python3)
#   SOURCE_DATE_EPOCH       the date in SIGSTRUCT (default: the commit's date; not part of MRENCLAVE)
#   GRAMINE_SOURCES, GRAMINE_CACHE_DIR   see scripts/build-gramine.sh
set -euo pipefail
cd "$(dirname "$0")/.."
repo="$(pwd)"
readonly OPTIONS=(BIND WORKERS LISTEN_HTTP STATE_DIR APP_DIR ENCLAVE_SIZE EDMM DEBUG ISVPRODID ISVSVN)

log() { printf 'measure-enclave: %s\n' "$*" >&2; }
bad_input() { log "$*"; exit 2; }
# shellcheck disable=SC2329  # called through use_gramine
no_gramine() { log "no Gramine available: $*"; exit 3; }

key="" throwaway=0 out="$repo/build/enclave" check="" make_options=()
while [ $# -gt 0 ]; do
    case "$1" in
        --key) [ $# -ge 2 ] || bad_input "--key needs a file"; key="$2"; shift ;;
        --throwaway-key) throwaway=1 ;;
        --out) [ $# -ge 2 ] || bad_input "--out needs a directory"; out="$2"; shift ;;
        --check) [ $# -ge 2 ] || bad_input "--check needs a directory"; check="$2"; shift ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *=*)
            name="${1%%=*}"
            [[ " ${OPTIONS[*]} " == *" $name "* ]] || bad_input "unknown option $name (known: ${OPTIONS[*]})"
            make_options+=("$1") ;;
        *) bad_input "unknown argument $1 (see --help)" ;;
    esac
    shift
done

# The files of the signed manifest in directory $1 against the hashes it records, listed into $2;
# exit 2 naming the first that differs: Gramine would refuse to open it inside the enclave.
check_trusted_files() {
    local dir="$1" list="$2" failed file
    python3 "$repo/scripts/trusted-files.py" "$dir/python-worker.manifest.sgx" >"$list" || exit 2
    failed="$(cd "$dir" && sha256sum --quiet --strict -c "$list" 2>/dev/null)" && return 0
    failed="$(head -1 <<<"$failed")"
    file="${failed%: FAILED*}"
    case "$failed" in
        *"FAILED open or read") bad_input "$file is missing or unreadable, but the signed manifest measures it: sign again" ;;
        *) bad_input "$file changed after the manifest was signed (its sha256 differs): sign again" ;;
    esac
}

if [ -n "$check" ]; then
    [ -f "$check/python-worker.manifest.sgx" ] || bad_input "$check/python-worker.manifest.sgx: no signed manifest there"
    list="$(mktemp)"
    trap 'rm -f "$list"' EXIT
    check_trusted_files "$check" "$list"
    echo "measure-enclave: every trusted file of $check has the hash its signed manifest records"
    exit 0
fi

# DIR is replaced at the end: it must be new, empty, or an earlier result.
if [ -e "$out" ] && [ -n "$(ls -A "$out" 2>/dev/null)" ] && [ ! -f "$out/python-worker.manifest.sgx" ]; then
    bad_input "$out is neither empty nor a signed enclave directory: give --out a new directory"
fi

# 1. The signing key --------------------------------------------------------------------------------
scratch="$(mktemp -d "${TMPDIR:-/tmp}/avalon-measure.XXXXXX")"
stage=""
# shellcheck disable=SC2317  # reached through the EXIT trap
cleanup() { rm -rf "$scratch"; [ -z "$stage" ] || rm -rf "$stage"; }
trap cleanup EXIT
if [ "$throwaway" = 1 ]; then
    [ -z "$key" ] || bad_input "give --key or --throwaway-key, not both"
    key="$scratch/throwaway-key.pem"
    openssl genrsa -3 -out "$key" 3072 2>/dev/null
    log "signing with a throw-away key (made now, deleted at the end): MRSIGNER names nobody"
fi
[ -n "$key" ] || bad_input "no signing key: give --key FILE (RSA-3072, exponent 3: openssl genrsa -3 -out FILE 3072) or --throwaway-key"
[ -r "$key" ] || bad_input "cannot read the signing key $key"
key_text="$(openssl pkey -in "$key" -passin pass: -noout -text 2>/dev/null)" \
    || bad_input "the signing key $key is not an unencrypted private key in PEM"
bits="$(sed -n 's/^Private-Key: (\([0-9]*\) bit.*/\1/p' <<<"$key_text")"
exponent="$(sed -n 's/^publicExponent: \([0-9]*\).*/\1/p' <<<"$key_text")"
[ -n "$exponent" ] || bad_input "the signing key $key is not an RSA key; SGX needs RSA-3072 with exponent 3"
[ "$bits" = 3072 ] || bad_input "the signing key $key is RSA-$bits; SGX needs RSA-3072 with exponent 3"
[ "$exponent" = 3 ] || bad_input "the signing key $key has exponent $exponent; SGX needs RSA-3072 with exponent 3"
key="$(cd "$(dirname "$key")" && pwd)/$(basename "$key")"

# 2. Gramine ----------------------------------------------------------------------------------------
# shellcheck source=scripts/gramine-lib.sh
. scripts/gramine-lib.sh
use_gramine "$repo" no_gramine
for tool in gramine-manifest gramine-sgx-sign gramine-sgx-sigstruct-view; do
    command -v "$tool" >/dev/null || { log "$tool is not on PATH"; exit 3; }
done

# 3. The measured install ---------------------------------------------------------------------------
enclave_python="$(readlink -f "${GRAMINE_PYTHON:-/usr/bin/python3}")"
[ -x "$enclave_python" ] || bad_input "no interpreter at ${GRAMINE_PYTHON:-/usr/bin/python3}"
ensure_venv "$enclave_python"
mkdir -p "$(dirname "$out")"
out="$(cd "$(dirname "$out")" && pwd)/$(basename "$out")"
stage="$(mktemp -d "$(dirname "$out")/.enclave.XXXXXX")"
log "installing the worker and its pinned dependencies"
install_enclave_packages "$enclave_python" "$repo" "$stage/packages" >"$scratch/install.log" 2>&1 \
    || { tail -20 "$scratch/install.log" >&2; log "installing the packages failed"; exit 1; }
mkdir "$stage/app"
cp src/avalon_worker/data/workloads.json "$stage/app/"

# 4. Render and sign --------------------------------------------------------------------------------
epoch="${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || echo 1704067200)}"
sign_date="$(date -u -d "@$epoch" +%Y-%m-%d)"
render=(make --no-print-directory -s -f "$repo/gramine/Makefile" -C "$stage" ENTRYPOINT="$enclave_python"
        PACKAGES=packages APP_URI=app "${make_options[@]}")
log "rendering and signing the manifest (hashing every trusted file)"
if ! "${render[@]}" python-worker.manifest >"$scratch/render.log" 2>&1; then
    bad_input "gramine/python-worker.manifest.template does not render: $(grep -v '^make' "$scratch/render.log" | tail -1)"
fi
if ! "${render[@]}" SGX=1 SGX_SIGNING_KEY="$key" SGX_SIGN_DATE="$sign_date" >"$scratch/sign.log" 2>&1; then
    tail -20 "$scratch/sign.log" >&2
    log "gramine-sgx-sign failed"
    exit 1
fi

# 5. The files are still those the manifest measured ------------------------------------------------
check_trusted_files "$stage" "$stage/trusted-files.sha256"

# 6. What was measured ------------------------------------------------------------------------------
sigstruct="$(gramine-sgx-sigstruct-view --output-format=json "$stage/python-worker.sig")"
field() { python3 -c 'import json, sys; print(json.loads(sys.argv[1])[sys.argv[2]])' "$sigstruct" "$1"; }
gramine_prefix="$(dirname "$(dirname "$(command -v gramine-sgx-sign)")")"
libpal="$(find "$gramine_prefix" -path '*/sgx/libpal.so' -print -quit 2>/dev/null)"
commit="$(git rev-parse --short=12 HEAD 2>/dev/null || echo 'not a git checkout')"
[ -z "$(git status --porcelain -- src pyproject.toml requirements 2>/dev/null)" ] \
    || commit="$commit, with uncommitted changes to what is measured"
owner_of() { dpkg-query -W -f='${Package} ${Version}' "$(dpkg -S "$1" 2>/dev/null | head -1 | cut -d: -f1)" 2>/dev/null || true; }
{
    echo "enclave: $out"
    echo "interpreter: $enclave_python ($("$enclave_python" -c 'import platform; print("Python", platform.python_version())'); Debian $(owner_of "$enclave_python"); sha256 $(sha256sum <"$enclave_python" | cut -c1-64))"
    echo "project: avalon-worker $(sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml), commit $commit"
    echo "packages (requirements/runtime.txt, pinned by hash, and the project's wheel): $(cd "$stage/packages" && ls -d ./*.dist-info | sed 's|^\./||; s/\.dist-info$//; s/-/ /' | paste -sd, | sed 's/,/, /g')"
    echo "gramine: $gramine_prefix (libpal.so for SGX: sha256 $(sha256sum <"$libpal" | cut -c1-64))"
    echo "manifest options: $("${render[@]}" print-options | grep -v -e '^ENTRYPOINT=' -e '^APP_URI=' -e '^PACKAGES=' | paste -sd' ')"
    echo "host files measured: $(python3 scripts/trusted-files.py --debian-packages "$stage/python-worker.manifest.sgx" --except "$gramine_prefix/")"
    echo "trusted files: $(wc -l <"$stage/trusted-files.sha256"), listed with their sha256 in trusted-files.sha256"
    echo "mr_enclave: $(field mr_enclave)"
    echo "mr_signer: $(field mr_signer)"
    echo "isv_prod_id: $(field isv_prod_id)"
    echo "isv_svn: $(field isv_svn)"
} >"$stage/measurement.txt"
rm -rf "$out"
mv "$stage" "$out"
stage=""
cat "$out/measurement.txt"
