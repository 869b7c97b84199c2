# Shared by the Gramine scripts (sourced, not run): Gramine on PATH, and the worker installed as
# the enclave measures it. The sourcing script defines log() first.

# use_gramine REPO NO_GRAMINE
# Puts Gramine's tools on PATH (and its Python module on PYTHONPATH): the ones already there when
# they include the SGX signing tools, else a build of scripts/build-gramine.sh (cached: seconds
# the second time). Calls the function NO_GRAMINE, with the reason, when Gramine can be neither
# found nor built.
use_gramine() {
    local repo="$1" no_gramine="$2" status=0 prefix site
    if command -v gramine-direct >/dev/null && command -v gramine-sgx-sign >/dev/null; then
        return 0
    fi
    prefix="$(bash "$repo/scripts/build-gramine.sh")" || status=$?
    if [ "$status" = 3 ]; then
        "$no_gramine" "no Gramine on PATH and it could not be built (see above)"
    elif [ "$status" != 0 ]; then
        log "building Gramine failed"
        exit 1
    fi
    export PATH="$prefix/bin:$PATH"
    for site in "$prefix"/lib/python3*/site-packages "$prefix"/lib/python3*/dist-packages \
        "$prefix"/local/lib/python3*/dist-packages; do
        [ -d "$site/graminelibos" ] && export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
    done
    return 0
}

# What a CI stage does without Gramine (use_gramine's NO_GRAMINE): skip, saying so, or fail
# under CI_REQUIRE_GRAMINE=1. STAGE is the stage's name, first word of its summary line.
skip_stage_without_gramine() {
    log "no Gramine available: $*"
    if [ "${CI_REQUIRE_GRAMINE:-0}" = "1" ]; then
        log "CI_REQUIRE_GRAMINE=1, so this is a failure"
        echo "$STAGE: 0 passed, 1 failed"
        exit 1
    fi
    log "skipping the $STAGE stage (set CI_REQUIRE_GRAMINE=1 to make this an error)"
    echo "$STAGE: 0 passed, 0 failed, 1 skipped"
    exit 0
}

# Makes sure `PYTHON -m venv` works (Debian ships venv apart: python3-venv).
ensure_venv() {
    local python="$1"
    "$python" -c 'import ensurepip, venv' 2>/dev/null && return 0
    log "installing with apt-get: python3-venv"
    apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >&2
}

# install_enclave_packages PYTHON SOURCE DEST
# (its scratch files go to DEST.build, removed when it is done: put DEST where a failure is cleaned up)
# Installs the worker (from the checkout SOURCE: its tracked files, as they are in the work tree)
# and its dependencies (requirements/runtime.txt, every one pinned by hash) for PYTHON into DEST,
# such that the files are the same bytes wherever and whenever it runs:
#   - the wheel is built with the pinned build tools (requirements/build.txt), without build
#     isolation, from a copy of the tracked files only (no stray file of the work tree), and
#     without README.md: it would go into the wheel's METADATA, so that an edit of the docs would
#     be a new MRENCLAVE, and a worker sealed to it would lose its keys;
#   - no .pyc files (compiled bytecode may differ from one run to the next; the enclave's
#     Python does not write any either);
#   - nothing that records where or how it was installed: the console scripts (their first line
#     names the installing interpreter's path), RECORD (their hashes), direct_url.json (the
#     wheel's path), INSTALLER and REQUESTED. Python needs none of them to import a package.
# File times and the order of directory entries do not matter: Gramine hashes contents and
# lists the files of a directory sorted.
install_enclave_packages() {
    local python="$1" source="$2" dest="$3" scratch wheel epoch
    scratch="$dest.build"
    mkdir -p "$scratch"
    epoch="$(git -C "$source" log -1 --format=%ct 2>/dev/null || echo 1704067200)"
    "$python" -m venv "$scratch/venv"
    "$scratch/venv/bin/python" -m pip install --quiet --disable-pip-version-check --require-hashes \
        --no-deps -r "$source/requirements/build.txt" >&2
    mkdir "$scratch/src"
    if git -C "$source" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
        (cd "$source" && git ls-files -z -- pyproject.toml src | xargs -0 cp --parents -t "$scratch/src")
    else
        (cd "$source" && tar cf - --exclude=__pycache__ --exclude='*.egg-info' pyproject.toml src) \
            | tar xf - -C "$scratch/src"
    fi
    (cd "$scratch/src" && SOURCE_DATE_EPOCH="$epoch" "$scratch/venv/bin/python" -m pip wheel --quiet \
        --disable-pip-version-check --no-deps --no-build-isolation --no-index --wheel-dir "$scratch/dist" . >&2)
    wheel="$(echo "$scratch"/dist/*.whl)"
    { cat "$source/requirements/runtime.txt"
      printf 'avalon-worker @ file://%s --hash=sha256:%s\n' "$wheel" "$(sha256sum <"$wheel" | cut -d' ' -f1)"
    } >"$scratch/requirements.txt"
    "$scratch/venv/bin/python" -m pip install --quiet --disable-pip-version-check --require-hashes --no-deps \
        --only-binary=:all: --no-compile --target "$dest" -r "$scratch/requirements.txt" >&2
    rm -rf "$dest/bin"
    find "$dest" -path '*.dist-info/*' \( -name RECORD -o -name INSTALLER -o -name REQUESTED \
        -o -name direct_url.json \) -delete
    rm -rf "$scratch"
}
