#!/usr/bin/env bash
# Build the SGX image of the worker with Gramine Shielded Containers (GSC):
#
#   avalon-worker:TAG          the ordinary image (Dockerfile)
#   avalon-worker-sgx:TAG      the same image with the command line the enclave will measure
#   gsc-avalon-worker-sgx:TAG  graminized and signed: what compose/gramine-sgx.yaml and
#                              deploy/k8s/ run
#
# and print its MRENCLAVE and MRSIGNER (gsc info-image), which requesters pin in their
# attestation policy. The successor of Avalon's build_gsc_python_worker.sh, for today's GSC:
# one app manifest (`gsc build IMAGE MANIFEST`), then `gsc sign-image`, then `gsc info-image`.
#
# Needs: Docker, a checkout of GSC at the release matching gsc/config.yaml's Gramine branch
# (GSC_DIR), GSC's Python requirements (docker, jinja2, tomli, tomli-w, pyyaml), and an enclave
# signing key: RSA-3072 with public exponent 3, e.g.
#   openssl genrsa -3 -out enclave-key.pem 3072
# Keep that key out of the image and out of the repository; MRSIGNER is its hash.
#
# Usage:
#   GSC_DIR=~/gsc SGX_SIGNING_KEY=~/keys/enclave-key.pem gsc/build-gsc-image.sh
#
# Settings (environment):
#   GSC_DIR          GSC checkout (required)
#   SGX_SIGNING_KEY  enclave signing key (required)
#   TAG              image tag (default latest)
#   BASE_IMAGE       passed to the Dockerfile (default: the Dockerfile's)
#   BIND             ZMQ endpoint the enclave listens on (default tcp://*:7777)
#   WORKERS          pool processes, each its own enclave (default 1; at most 8 with the
#                    sgx.max_threads of gsc/avalon-worker.manifest)
#   GSC_BUILD_TYPE   release (default) or debug; a debug enclave's quotes must be rejected
#   SKIP_APP_BUILD=1 use an existing avalon-worker:TAG instead of building it
#   GSC_GRAMINE_IMAGE  a Gramine image for GSC to use instead of cloning Gramine from GitHub,
#                    e.g. local/gramine-1.9 from gsc/build-gramine-image.sh (the vendored sources)
#   DOCKER_BUILD_NETWORK  --network for this script's own docker builds (e.g. host)
set -euo pipefail

repo="$(cd "$(dirname "$0")/.." && pwd)"
TAG="${TAG:-latest}"
BIND="${BIND:-tcp://*:7777}"
WORKERS="${WORKERS:-1}"
GSC_BUILD_TYPE="${GSC_BUILD_TYPE:-release}"
readonly MAX_WORKERS=8
readonly STATE_DIR=/var/lib/avalon-worker
readonly WORKLOADS=/opt/avalon-worker/workloads.json

die() { printf 'build-gsc-image: %s\n' "$*" >&2; exit 1; }

[ -n "${GSC_DIR:-}" ] || die "set GSC_DIR to a checkout of https://github.com/gramineproject/gsc (the tag matching gsc/config.yaml)"
[ -x "$GSC_DIR/gsc" ] || die "$GSC_DIR/gsc not found or not executable"
[ -n "${SGX_SIGNING_KEY:-}" ] || die "set SGX_SIGNING_KEY (create one with: openssl genrsa -3 -out enclave-key.pem 3072)"
[ -r "$SGX_SIGNING_KEY" ] || die "cannot read SGX_SIGNING_KEY=$SGX_SIGNING_KEY"
case "$WORKERS" in
    ''|*[!0-9]*) die "WORKERS must be a whole number" ;;
esac
[ "$WORKERS" -le "$MAX_WORKERS" ] || die "WORKERS=$WORKERS needs more than the sgx.max_threads in gsc/avalon-worker.manifest (raise it, then MAX_WORKERS here)"
case "$GSC_BUILD_TYPE" in
    release|debug|debugoptimized) ;;
    *) die "GSC_BUILD_TYPE must be release, debug or debugoptimized" ;;
esac
signing_key="$(cd "$(dirname "$SGX_SIGNING_KEY")" && pwd)/$(basename "$SGX_SIGNING_KEY")"
network=()
[ -z "${DOCKER_BUILD_NETWORK:-}" ] || network=(--network "$DOCKER_BUILD_NETWORK")
config="$repo/gsc/config.yaml"
if [ -n "${GSC_GRAMINE_IMAGE:-}" ]; then
    config="$(mktemp)"
    trap 'rm -f "$config"' EXIT
    sed -e '/^    Repository:/d' -e "s|^    Branch:.*|    Image: \"$GSC_GRAMINE_IMAGE\"|" "$repo/gsc/config.yaml" >"$config"
fi
app_image="avalon-worker:$TAG"
sgx_image="avalon-worker-sgx:$TAG"

if [ "${SKIP_APP_BUILD:-0}" != 1 ]; then
    echo "== docker build $app_image"
    build_args=()
    [ -n "${BASE_IMAGE:-}" ] && build_args+=(--build-arg "BASE_IMAGE=$BASE_IMAGE")
    docker build "${network[@]}" "${build_args[@]}" -t "$app_image" "$repo"
fi

# GSC measures ENTRYPOINT + CMD as the enclave's only command line, so it is fixed here, in one
# place, rather than left to whoever runs the container.
echo "== $sgx_image: measured command line"
cmd_json="$(python3 -c 'import json, sys; print(json.dumps(sys.argv[1:]))' \
    serve --bind "$BIND" --state-dir "$STATE_DIR" --workloads "$WORKLOADS" \
    --workers "$WORKERS" --attestation gramine)"
echo "   python3 -m avalon_worker $(python3 -c 'import json, shlex, sys; print(shlex.join(json.loads(sys.argv[1])))' "$cmd_json")"
printf 'FROM %s\nCMD %s\n' "$app_image" "$cmd_json" | docker build "${network[@]}" -t "$sgx_image" -

cd "$GSC_DIR"
# gsc refuses to rebuild over an existing result; remove stale ones so the output matches the inputs.
docker image rm "gsc-$sgx_image" "gsc-$sgx_image-unsigned" >/dev/null 2>&1 || true

echo "== gsc build ($GSC_BUILD_TYPE)"
./gsc build -c "$config" -b "$GSC_BUILD_TYPE" --rm "$sgx_image" "$repo/gsc/avalon-worker.manifest"

echo "== gsc sign-image"
./gsc sign-image -c "$config" "$sgx_image" "$signing_key"

echo "== gsc info-image gsc-$sgx_image"
./gsc info-image "gsc-$sgx_image"
cat <<EOT

Publish the mr_enclave above (and mr_signer, isv_prod_id, isv_svn) to requesters: a worker's
quote must carry exactly these values. Any change to the image, the manifest, GSC or Gramine
gives a new MRENCLAVE, and the worker's sealed keys do not carry over to it.
Run it: docker-compose -f docker-compose.yaml -f compose/gramine-sgx.yaml up process-work-order
EOT
