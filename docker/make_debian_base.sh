#!/usr/bin/env bash
# Build a local stand-in for `python:3.11-slim` from Debian packages, for machines that reach
# no image registry: debootstrap bookworm (its python3 is 3.11) + python3-venv, then
# `podman import` the root filesystem as a local image.
# Usage (as root): bash docker/make_debian_base.sh [IMAGE_NAME]
#   IMAGE_NAME     default localhost/nni-topo-pruner-base:bookworm
#   DEBIAN_MIRROR  default http://deb.debian.org/debian
# Needs: debootstrap, podman (Debian: apt-get install -y podman debootstrap).
set -euo pipefail

IMAGE_NAME=${1:-localhost/nni-topo-pruner-base:bookworm}
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

if [[ $(id -u) -ne 0 ]]; then
    echo "error: debootstrap needs root; run as root (or use a registry base: --build-arg BASE_IMAGE=python:3.11-slim)" >&2
    exit 2
fi
for tool in debootstrap podman; do
    command -v "$tool" >/dev/null || { echo "error: '$tool' not found; apt-get install -y podman debootstrap" >&2; exit 2; }
done

rootfs=$(mktemp -d /var/tmp/nni-topo-pruner-rootfs.XXXXXX)
trap 'rm -rf "$rootfs"' EXIT

# minbase keeps the image small; ca-certificates so pip can use HTTPS; python3-venv brings
# ensurepip's bundled pip wheel, which is all the Dockerfile needs (it works in a venv).
debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
    bookworm "$rootfs" "$DEBIAN_MIRROR"
rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*

# python:3.11-slim sets PATH and LANG; give the imported image the same so RUN lines behave alike.
tar --numeric-owner -C "$rootfs" -c . | podman import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["python3"]' \
    - "$IMAGE_NAME"
echo "built $IMAGE_NAME: $(podman image inspect --format '{{.Size}}' "$IMAGE_NAME") bytes"
