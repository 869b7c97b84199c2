# Shared by the compose smoke tests (sourced, not run): the tools, a Docker engine, the local
# Debian base image, and clean-up. The sourcing script sets LOG_TAG and workdir (a scratch
# directory removed at exit) before calling anything here, and calls engine_cleanup at exit.
#
# Settings (environment):
#   CI_REQUIRE_DOCKER=1      an engine that cannot start is a failure, not a skip
#   SMOKE_BASE_IMAGE         base image to build on (default local/python-base, made here)
#   DEBOOTSTRAP_MIRROR       Debian mirror for the base image (default: debootstrap's own)
#   SMOKE_KEEP_IMAGES=1      keep the images the test built (removed at its end otherwise)

started_dockerd_pid=""
BASE_IMAGE_NAME="${SMOKE_BASE_IMAGE:-local/python-base}"

log() { printf '%s: %s\n' "$LOG_TAG" "$*" >&2; }

no_engine() {
    log "no Docker engine available: $*"
    if [ "${CI_REQUIRE_DOCKER:-0}" = "1" ]; then
        log "CI_REQUIRE_DOCKER=1, so this is a failure"
        echo "$LOG_TAG: 0 passed, 1 failed"
        exit 1
    fi
    log "skipping (set CI_REQUIRE_DOCKER=1 to make this an error)"
    echo "$LOG_TAG: 0 passed, 0 failed, 1 skipped"
    exit 0
}

unmount_below() {
    # debootstrap mounts /proc and /sys inside the target; a failed run can leave them there.
    local dir="$1" mnt
    [ -d "$dir" ] || return 0
    awk -v d="$dir" 'index($2, d) == 1 { print $2 }' /proc/mounts | sort -r | while read -r mnt; do
        umount -l "$mnt" 2>/dev/null || true
    done
}

# Installs docker.io, docker-compose and debootstrap with apt-get if they are missing.
ensure_tools() {
    local missing=()
    command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
    command -v docker-compose >/dev/null 2>&1 || missing+=(docker-compose)
    command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
    if [ "${#missing[@]}" -gt 0 ]; then
        if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
            no_engine "missing ${missing[*]} and cannot install them (needs root and apt-get)"
        fi
        log "installing with apt-get: ${missing[*]}"
        if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"; } \
                >"$workdir/apt.log" 2>&1; then
            tail -n 20 "$workdir/apt.log" >&2
            no_engine "apt-get could not install ${missing[*]}"
        fi
    fi
}

# Uses the running Docker engine, or starts `dockerd --bridge=none --iptables=false`.
ensure_engine() {
    if ! docker info >/dev/null 2>&1; then
        log "starting dockerd --bridge=none --iptables=false"
        dockerd --bridge=none --iptables=false >"$workdir/dockerd.log" 2>&1 &
        started_dockerd_pid=$!
        for _ in $(seq 1 60); do
            docker info >/dev/null 2>&1 && break
            kill -0 "$started_dockerd_pid" 2>/dev/null || break
            sleep 1
        done
        if ! docker info >/dev/null 2>&1; then
            tail -n 20 "$workdir/dockerd.log" >&2
            no_engine "dockerd did not start (log above)"
        fi
    fi
    log "engine: Docker $(docker version --format '{{.Server.Version}}' 2>/dev/null || echo '?')"
}

# Builds local/python-base (Debian bookworm with python3) with debootstrap, once: it is reused
# while the image exists, so that no registry other than the package archives is needed.
ensure_base_image() {
    if [ "$BASE_IMAGE_NAME" != local/python-base ] || docker image inspect local/python-base >/dev/null 2>&1; then
        log "base image: $BASE_IMAGE_NAME"
        return 0
    fi
    log "building local/python-base with debootstrap (Debian bookworm, python3)"
    local rootfs="$workdir/rootfs" t0
    t0=$(date +%s)
    # shellcheck disable=SC2086  # the mirror is optional: no argument means debootstrap's default
    if ! debootstrap --variant=minbase --include=python3,python3-venv,python3-pip,ca-certificates \
            bookworm "$rootfs" ${DEBOOTSTRAP_MIRROR:-} >"$workdir/debootstrap.log" 2>&1; then
        tail -n 20 "$workdir/debootstrap.log" >&2
        log "debootstrap failed"
        exit 1
    fi
    unmount_below "$rootfs"
    # Package downloads during the image build may pass a TLS-inspecting proxy whose CA only the
    # host's bundle holds.
    if [ -f /etc/ssl/certs/ca-certificates.crt ]; then
        cp /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/ca-certificates.crt"
    fi
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
    tar -C "$rootfs" -c . | docker import --change 'ENV LANG=C.UTF-8' - local/python-base >/dev/null
    log "local/python-base built in $(( $(date +%s) - t0 )) s"
}

# Removes the images named in the arguments, which this run built, and says so; SMOKE_KEEP_IMAGES=1
# keeps them (.ci/run keeps them for the next stage, which builds on the same layers). The base
# image stays: the next run reuses it.
remove_built_images() {
    local image removed=()
    if [ "${SMOKE_KEEP_IMAGES:-0}" = 1 ]; then
        log "kept the images this test built (SMOKE_KEEP_IMAGES=1): $*"
        return 0
    fi
    for image in "$@"; do
        if docker image inspect "$image" >/dev/null 2>&1 && docker image rm "$image" >/dev/null 2>&1; then
            removed+=("$image")
        fi
    done
    if [ "${#removed[@]}" -gt 0 ]; then
        log "removed the images this test built: ${removed[*]} (kept the base image $BASE_IMAGE_NAME for the next run)"
    fi
}

# Stops the dockerd this script started, if any, and removes the scratch directory.
engine_cleanup() {
    if [ -n "$started_dockerd_pid" ] && kill -0 "$started_dockerd_pid" 2>/dev/null; then
        kill -TERM "$started_dockerd_pid" 2>/dev/null
        for _ in $(seq 1 30); do
            kill -0 "$started_dockerd_pid" 2>/dev/null || break
            sleep 1
        done
        kill -0 "$started_dockerd_pid" 2>/dev/null && kill -KILL "$started_dockerd_pid" 2>/dev/null
        log "stopped the dockerd this test started (pid $started_dockerd_pid)"
    fi
    unmount_below "$workdir"
    rm -rf --one-file-system "$workdir"
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
