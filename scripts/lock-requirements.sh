#!/usr/bin/env bash
# Regenerate the hash-pinned requirement files the container image installs from.
#
#   requirements/runtime.txt  <- the [project] dependencies of pyproject.toml and its `postgres`
#                                extra (the image serves --store postgresql://… too)
#   requirements/build.txt    <- requirements/build.in (what building our own wheel needs)
#
# Every pin carries the sha256 of every file PyPI lists for that version, so `pip install
# --require-hashes` in the Dockerfile refuses anything else. Identical inputs give identical
# images, and identical images give the same MRENCLAVE once graminized.
#
# Existing pins are kept; pass --upgrade (or --upgrade-package NAME) to move them.
set -euo pipefail
cd "$(dirname "$0")/.."

scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
python3 -m venv "$scratch/venv"
"$scratch/venv/bin/pip" install --quiet "pip-tools>=7.4"

export CUSTOM_COMPILE_COMMAND="scripts/lock-requirements.sh"
common=(--quiet --generate-hashes --allow-unsafe --strip-extras
        --no-emit-index-url --no-emit-trusted-host --no-emit-find-links "$@")
"$scratch/venv/bin/pip-compile" "${common[@]}" --extra postgres --output-file requirements/runtime.txt pyproject.toml
"$scratch/venv/bin/pip-compile" "${common[@]}" --output-file requirements/build.txt requirements/build.in
echo "requirements/runtime.txt and requirements/build.txt are up to date"
