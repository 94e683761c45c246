#!/usr/bin/env bash
# Build a local stand-in for `python:3.11-slim` from Debian packages, for machines that reach
# no image registry: debootstrap bookworm (its python3 is 3.11) + python3-venv, then import the
# root filesystem as a local image with `docker import` or `podman import`.
# Usage (as root): bash docker/make_debian_base.sh [IMAGE_NAME]
#   IMAGE_NAME     default localhost/nni-topo-pruner-base:bookworm
#   ENGINE         docker or podman (default: docker if its daemon answers, else podman)
#   DEBIAN_MIRROR  default http://deb.debian.org/debian
# Needs: debootstrap and docker (daemon running) or podman
#   (Debian: apt-get install -y debootstrap docker.io   or   apt-get install -y debootstrap podman).
set -euo pipefail

IMAGE_NAME=${1:-localhost/nni-topo-pruner-base:bookworm}
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

if [[ $(id -u) -ne 0 ]]; then
    echo "error: debootstrap needs root; run as root (or use a registry base: --build-arg BASE_IMAGE=python:3.11-slim)" >&2
    exit 2
fi
command -v debootstrap >/dev/null || { echo "error: 'debootstrap' not found; apt-get install -y debootstrap" >&2; exit 2; }

engine=${ENGINE:-}
if [[ -z $engine ]]; then
    if command -v docker >/dev/null && docker info >/dev/null 2>&1; then engine=docker
    elif command -v podman >/dev/null; then engine=podman
    elif command -v docker >/dev/null; then
        echo "error: docker is installed but its daemon does not answer ('docker info' fails); start it (as root: dockerd > /var/log/dockerd.log 2>&1 &) or install podman" >&2
        exit 2
    else
        echo "error: neither docker nor podman found; apt-get install -y docker.io (then start dockerd) or apt-get install -y podman" >&2
        exit 2
    fi
fi
case $engine in
    docker) docker info >/dev/null 2>&1 || { echo "error: ENGINE=docker but the Docker daemon does not answer ('docker info' fails); start dockerd" >&2; exit 2; } ;;
    podman) command -v podman >/dev/null || { echo "error: ENGINE=podman but podman is not installed; apt-get install -y podman" >&2; exit 2; } ;;
    *) echo "error: ENGINE must be docker or podman, not '$engine'" >&2; exit 2 ;;
esac

rootfs=$(mktemp -d /var/tmp/nni-topo-pruner-rootfs.XXXXXX)
trap 'rm -rf "$rootfs"' EXIT

# minbase keeps the image small; ca-certificates so pip can use HTTPS; python3-venv brings
# ensurepip's bundled pip wheel, which is all the Dockerfile needs (it works in a venv).
debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
    bookworm "$rootfs" "$DEBIAN_MIRROR"
rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*

# python:3.11-slim sets PATH and LANG; give the imported image the same so RUN lines behave alike.
# (`docker import` and `podman import` take the same tar stream and --change instructions.)
tar --numeric-owner -C "$rootfs" -c . | "$engine" import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["python3"]' \
    - "$IMAGE_NAME"
echo "built $IMAGE_NAME with $engine: $("$engine" image inspect --format '{{.Size}}' "$IMAGE_NAME") bytes"
