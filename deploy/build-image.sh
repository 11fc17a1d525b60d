#!/usr/bin/env bash
# Build aserve's container image with podman and smoke-test it, with no container registry.
#
#   deploy/build-image.sh            # build $IMAGE (default aserve:dev), then smoke-test it
#   deploy/build-image.sh --check    # exit 0 when podman can build here (installs it if missing)
#   deploy/build-image.sh --smoke    # only the smoke test, of the image already built
#   EXTRAS=s3 deploy/build-image.sh  # the build argument EXTRAS (aserve's pip extras)
#
# The Dockerfile stays the ordinary one (`docker build .` anywhere). What this machine needs
# around it, all passed on the command line or in files outside the checkout:
#   * rootful podman from Debian with runc (crun refuses this host's hybrid cgroups) and
#     ulimits within the host's, in a containers.conf passed through CONTAINERS_CONF;
#   * a local stand-in for the base image $BASE_IMAGE: a `debootstrap --variant=minbase`
#     Debian root with Debian's python3 and a venv at /usr/local (so `python` and `pip` are
#     where the official image has them), tagged with the official name; built once and kept
#     in podman's store and as a tarball in $CACHE_DIR; the build then uses --pull=never;
#   * --network=host for the build, and the machine's CA bundle lent to every build step with
#     a pip.conf naming it (pip in a fresh image trusts only its own bundle).
# The smoke test runs the image as TF Serving's is run (confined as in the Kubernetes
# manifests: read-only root, no capabilities), waits for readiness, predicts over
# REST and gRPC, reads the metrics, runs the HEALTHCHECK, sends SIGTERM and checks the exit
# status; then SIGTERM during start-up must end a second container at once. It prints the
# build time, the image size and the time to ready.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
IMAGE="${IMAGE:-aserve:dev}"
EXTRAS="${EXTRAS:-}"
BASE_IMAGE="${BASE_IMAGE:-docker.io/library/python:3.11-slim-bookworm}"
SUITE="${SUITE:-bookworm}"  # the Debian release whose python3 (3.11) matches BASE_IMAGE
CACHE_DIR="${CACHE_DIR:-/var/cache/aserve-image}"
CA_BUNDLE="${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}"
PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"  # the smoke client: needs grpcio and the TF Serving API
MODEL_NAME=half_plus_two
MODEL_DIR="$ROOT/examples/models/half_plus_two"

log() { printf '%s build-image: %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { log "FAILED: $*"; exit 1; }

ensure_packages() {  # podman, runc, debootstrap from Debian, when missing and apt is at hand
    local missing=()
    for tool in podman runc debootstrap; do
        command -v "$tool" >/dev/null || missing+=("$tool")
    done
    ((${#missing[@]} == 0)) && return 0
    [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null || return 1
    log "installing ${missing[*]} with apt-get"
    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq "${missing[@]}" >/dev/null
}

write_containers_conf() {
    # runc, cgroupfs, no journald; ulimits no higher than the host's (raising them needs
    # CAP_SYS_RESOURCE, which this host withholds; nproc above pid_max is refused too)
    local nofile nproc
    nofile="$(ulimit -Hn)"
    nproc="$(ulimit -Hu)"
    [[ $nproc == unlimited ]] && nproc=4194304
    ((nproc > $(cat /proc/sys/kernel/pid_max))) && nproc="$(cat /proc/sys/kernel/pid_max)"
    mkdir -p "$CACHE_DIR"
    cat >"$CACHE_DIR/containers.conf" <<EOF
[containers]
default_ulimits = ["nofile=$nofile:$nofile", "nproc=$nproc:$nproc"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
EOF
    export CONTAINERS_CONF="$CACHE_DIR/containers.conf"
}

check() {
    [[ $(id -u) == 0 ]] || { log "needs root (rootful podman)"; return 1; }
    ensure_packages || { log "podman, runc or debootstrap missing and not installable"; return 1; }
    write_containers_conf
    podman info >/dev/null 2>&1 || {
        log "podman info fails: $(podman info 2>&1 | tail -1)"
        return 1
    }
}

base_image() {  # the stand-in for $BASE_IMAGE, unless podman has an image of that name
    if podman image exists "$BASE_IMAGE"; then
        log "base image $BASE_IMAGE: in podman's store"
        return
    fi
    local tarball="$CACHE_DIR/${BASE_IMAGE//[\/:]/_}.tar"
    if [[ ! -s $tarball ]]; then
        local rootfs="$CACHE_DIR/rootfs"
        log "base image: debootstrap $SUITE (minbase) with python3 and a venv at /usr/local"
        rm -rf "$rootfs"
        debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
            "$SUITE" "$rootfs" http://deb.debian.org/debian >"$CACHE_DIR/debootstrap.log" 2>&1 ||
            die "debootstrap (see $CACHE_DIR/debootstrap.log)"
        chroot "$rootfs" python3 -m venv /usr/local
        rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* \
            "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/locale/* \
            "$rootfs"/usr/local/bin/[Aa]ctivate*
        tar -C "$rootfs" -cf "$tarball.part" . && mv "$tarball.part" "$tarball"
        rm -rf "$rootfs"
    fi
    log "base image: importing $tarball as $BASE_IMAGE"
    podman import --change 'ENV PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV LANG=C.UTF-8' --change 'CMD ["python3"]' "$tarball" "$BASE_IMAGE" >/dev/null
}

build() {
    local pip_conf="$CACHE_DIR/pip.conf" started=$SECONDS old new
    printf '[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n' >"$pip_conf"
    old=$(podman image inspect --format '{{.Id}}' "$IMAGE" 2>/dev/null || true)
    log "building $IMAGE (EXTRAS='$EXTRAS')"
    # --layers=false: no intermediate images left behind (the sources change every build)
    podman build --pull=never --network=host --format=docker --layers=false \
        --build-arg "PYTHON_IMAGE=$BASE_IMAGE" --build-arg "EXTRAS=$EXTRAS" \
        -v "$CA_BUNDLE:/etc/ssl/certs/ca-certificates.crt:ro" -v "$pip_conf:/etc/pip.conf:ro" \
        -t "$IMAGE" "$ROOT" >"$CACHE_DIR/build.log" 2>&1 || {
        tail -30 "$CACHE_DIR/build.log" >&2
        die "podman build (see $CACHE_DIR/build.log)"
    }
    BUILD_SECONDS=$((SECONDS - started))
    new=$(podman image inspect --format '{{.Id}}' "$IMAGE")
    if [[ -n $old && $old != "$new" ]]; then  # the previous build, untagged now: 2.3 GB
        podman rmi "$old" >/dev/null 2>&1 || true
    fi
}

free_port() {
    "$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

smoke() {
    local rest grpc name="aserve-smoke-$$" started code pid1
    rest=$(free_port)
    grpc=$(free_port)
    trap 'podman rm -f '"$name"' >/dev/null 2>&1 || true' EXIT
    log "smoke test: docker run as for TF Serving's image, ports $grpc (gRPC) and $rest (REST)"
    started=$(date +%s.%N)
    # (podman tries to set up a systemd timer for the HEALTHCHECK, and says so on stderr: there
    # is no systemd here; `podman healthcheck run` below runs the check instead). Confined as
    # the Kubernetes manifests confine it: read-only root, a /tmp, no capabilities.
    podman run -d --name "$name" -p "127.0.0.1:$grpc:8500" -p "127.0.0.1:$rest:8501" \
        --read-only --read-only-tmpfs=false --tmpfs /tmp --cap-drop=ALL \
        --security-opt=no-new-privileges \
        -v "$MODEL_DIR:/models/$MODEL_NAME:ro" -e "MODEL_NAME=$MODEL_NAME" "$IMAGE" \
        --monitoring_config_file=/etc/aserve/monitoring.config >/dev/null 2>"$CACHE_DIR/run.log"
    TF_CPP_MIN_LOG_LEVEL=3 "$PYTHON" "$ROOT/deploy/smoke.py" --rest "127.0.0.1:$rest" \
        --grpc "127.0.0.1:$grpc" --model "$MODEL_NAME" --started "$started" \
        --metrics /monitoring/prometheus/metrics >"$CACHE_DIR/client.log" 2>&1 || {
        cat "$CACHE_DIR/client.log" >&2
        podman logs "$name" 2>&1 | tail -30 >&2
        die "smoke client"
    }
    sed 's/^/    /' "$CACHE_DIR/client.log" | grep -v -e I0000 -e W0000 -e 'WARNING: All' >&2
    READY_SECONDS=$(awk '$1 == "ready" { print $2 }' "$CACHE_DIR/client.log")
    [[ $(podman exec "$name" id -u) == 1000 ]] || die "the server does not run as UID 1000"
    pid1=$(podman exec "$name" cat /proc/1/cmdline | tr '\0' ' ')
    [[ $pid1 == *"bin/aserve --port=8500 --rest_api_port=8501 --model_name=$MODEL_NAME"* ]] ||
        die "PID 1 is not aserve: $pid1"
    podman healthcheck run "$name" >/dev/null || die "HEALTHCHECK reports unhealthy"
    log "smoke test: UID 1000, PID 1 is aserve, HEALTHCHECK healthy; sending SIGTERM"
    podman kill --signal TERM "$name" >/dev/null
    code=$(timeout 60 podman wait "$name") || die "no exit within 60 s of SIGTERM"
    podman logs "$name" >"$CACHE_DIR/smoke.log" 2>&1
    [[ $code == 0 ]] || {
        tail -20 "$CACHE_DIR/smoke.log" >&2
        die "exit status $code after SIGTERM"
    }
    grep -q "INFO aserve: stopped$" "$CACHE_DIR/smoke.log" ||
        die "no orderly shutdown in the log (see $CACHE_DIR/smoke.log)"
    log "smoke test: exit status 0 after SIGTERM, shut down in order"
    log "smoke test: $(grep -o 'request path: .*' "$CACHE_DIR/smoke.log" || echo 'request path not logged')"
    podman rm "$name" >/dev/null 2>&1
    trap - EXIT
}

catches_sigterm() {  # the process $1 has a SIGTERM handler (bit 15 of its SigCgt mask)
    local mask
    mask=$(awk '/^SigCgt:/ { print $2 }' "/proc/$1/status" 2>/dev/null) && [[ -n $mask ]] &&
        (((16#$mask >> 14) & 1))
}

early_sigterm() {  # as PID 1, SIGTERM during start-up (TensorFlow's import) must not be lost
    local name="aserve-early-$$" pid code waited=0
    trap 'podman rm -f '"$name"' >/dev/null 2>&1 || true' EXIT
    podman run -d --name "$name" -v "$MODEL_DIR:/models/$MODEL_NAME:ro" \
        -e "MODEL_NAME=$MODEL_NAME" "$IMAGE" >/dev/null 2>>"$CACHE_DIR/run.log"
    pid=$(podman inspect --format '{{.State.Pid}}' "$name")
    until catches_sigterm "$pid"; do
        ((waited++ < 400)) || die "PID 1 never caught SIGTERM"
        sleep 0.05
    done
    podman kill --signal TERM "$name" >/dev/null
    code=$(timeout 20 podman wait "$name") || die "SIGTERM during start-up: no exit within 20 s"
    podman logs "$name" >"$CACHE_DIR/early.log" 2>&1
    [[ $code == 0 ]] || die "SIGTERM during start-up: exit status $code"
    grep -q "SIGTERM during start-up" "$CACHE_DIR/early.log" ||
        log "(SIGTERM came after start-up; see $CACHE_DIR/early.log)"
    log "smoke test: SIGTERM during start-up: exit status 0 at once"
    podman rm "$name" >/dev/null 2>&1
    trap - EXIT
}

main() {
    if [[ ${1:-} == --check ]]; then
        check
        return
    fi
    check || die "podman cannot build here"
    [[ -x $PYTHON ]] || die "no smoke client Python at $PYTHON (set PYTHON=...)"
    BUILD_SECONDS="-"
    if [[ ${1:-} != --smoke ]]; then
        base_image
        build
    fi
    smoke
    early_sigterm
    local size
    size=$(podman image inspect --format '{{.Size}}' "$IMAGE")
    printf 'image %s: build %s s, size %s MB, ready %s s after podman run\n' \
        "$IMAGE" "$BUILD_SECONDS" "$((size / 1000000))" "$READY_SECONDS"
    echo "image smoke test passed"
}

main "$@"
