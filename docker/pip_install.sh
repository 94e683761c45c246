#!/bin/sh
# `pip install` with the package-index settings the Dockerfile takes as build arguments
# (INDEX_URL, EXTRA_INDEX_URLS, FIND_LINKS, TORCH_INDEX_URL, PIP_CA_BUNDLE; RUN lines see
# build arguments as environment variables). Used only while the image is built; nothing
# of these settings is written into the image's pip configuration.
# Usage: pip_install.sh [--torch-index] PIP_INSTALL_ARGS...
#   --torch-index  resolve from TORCH_INDEX_URL first (e.g. the PyTorch CPU wheel index),
#                  with INDEX_URL as an extra index for torch's own dependencies.
set -eu

index=${INDEX_URL:-https://pypi.org/simple}
if [ "${1:-}" = "--torch-index" ]; then
    shift
    if [ -z "${TORCH_INDEX_URL:-}" ]; then
        echo "pip_install.sh: --torch-index given but TORCH_INDEX_URL is empty" >&2
        exit 2
    fi
    set -- --index-url "$TORCH_INDEX_URL" --extra-index-url "$index" "$@"
else
    set -- --index-url "$index" "$@"
fi
# Word splitting on purpose: both arguments are space-separated lists, as in pip.conf.
for url in ${EXTRA_INDEX_URLS:-}; do set -- --extra-index-url "$url" "$@"; done
for location in ${FIND_LINKS:-}; do set -- --find-links "$location" "$@"; done
if [ -n "${PIP_CA_BUNDLE:-}" ]; then set -- --cert "$PIP_CA_BUNDLE" "$@"; fi

exec python -m pip install --no-cache-dir --disable-pip-version-check "$@"
