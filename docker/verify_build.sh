#!/usr/bin/env bash
# Prove that docker/Dockerfile builds and that the image's test and smoke commands pass, on a
# machine with no Docker daemon, no image registry and no way to run containers: podman builds
# with chroot isolation on a Debian base made here (docker/make_debian_base.sh); the verify
# stages (docker/Dockerfile.verify, on the built image) run `python -m pytest -q` and the smoke
# benchmark inside the build, as the image's user.
# Not part of CI (minutes to tens of minutes). See docs/docker.md for what this does and does not prove.
#
# Usage (as root, from anywhere):  bash docker/verify_build.sh [--worktree | --ref GIT_REF] [--tests-only | --smoke-only]
#   --ref REF     build from `git archive REF` (default HEAD: exactly a commit, no stray files)
#   --worktree    build from the working tree as it is (the .dockerignore'd repository root)
#   --context DIR build from DIR (a prepared copy of the repository, e.g. to try a change of pins)
#   --tests-only  run the test suite but not the smoke benchmark
#   --smoke-only  run the smoke benchmark (the image's default command) but not the test suite
# Environment:
#   BASE_IMAGE    base to build on (default: localhost/nni-topo-pruner-base:bookworm, made if absent)
#   IMAGE         tag of the built image (default localhost/nni-topo-pruner:verify)
#   VERIFY_OUT    where the logs and smoke results are written (default /var/tmp/nni-topo-pruner-verify)
#   DATA_DIR      folder holding cifar10_subset.npz, mounted read-only at /data for the tests and
#                 the smoke run (default: ../shared/data next to the repository)
#   SKIP_VERIFY=1 only build the runtime image (no tests, no smoke run)
#   PYTEST_ARGS   extra pytest arguments for the verify stage (e.g. "-x")
#   EXTRA_BUILD_ARGS  extra arguments for `podman build` (e.g. "--build-arg TORCH_INDEX_URL=...")
set -euo pipefail
trap 'echo "[verify_build] failed (exit $?) at line $LINENO: $BASH_COMMAND" >&2' ERR

repo=$(cd "$(dirname "$0")/.." && pwd)
source_mode=ref
ref=HEAD
report_target=verify-report
while [[ $# -gt 0 ]]; do
    case $1 in
        --worktree) source_mode=worktree; shift ;;
        --context) source_mode=dir; context_dir=${2:?--context needs a directory}; shift 2 ;;
        --ref) ref=${2:?--ref needs a git reference}; shift 2 ;;
        --tests-only) report_target=verify-tests-report; shift ;;
        --smoke-only) report_target=verify-smoke-report; shift ;;
        -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
        *) echo "error: unknown argument '$1' (expected --worktree, --ref REF, --context DIR, --tests-only or --smoke-only)" >&2; exit 2 ;;
    esac
done

BASE_IMAGE=${BASE_IMAGE:-localhost/nni-topo-pruner-base:bookworm}
IMAGE=${IMAGE:-localhost/nni-topo-pruner:verify}
VERIFY_OUT=${VERIFY_OUT:-/var/tmp/nni-topo-pruner-verify}
DATA_DIR=${DATA_DIR:-$repo/../shared/data}
command -v podman >/dev/null || { echo "error: podman not found; apt-get install -y podman debootstrap" >&2; exit 2; }

log() { printf '[verify_build %s] %s\n' "$(date +%H:%M:%S)" "$*"; }
elapsed() { echo $(( $(date +%s) - $1 ))s; }

# 1. Base image: a local stand-in for python:3.11-slim (no registry reachable here).
if ! podman image exists "$BASE_IMAGE"; then
    if [[ $BASE_IMAGE != localhost/nni-topo-pruner-base:* ]]; then
        echo "error: base image '$BASE_IMAGE' not in local storage" >&2; exit 2
    fi
    t=$(date +%s); log "building base image $BASE_IMAGE (debootstrap)"
    ENGINE=podman bash "$repo/docker/make_debian_base.sh" "$BASE_IMAGE"
    log "base image built in $(elapsed "$t")"
fi

# 2. Build context.
if [[ $source_mode == ref ]]; then
    commit=$(git -C "$repo" rev-parse --verify "$ref^{commit}")
    snapshot=$(mktemp -d /var/tmp/nni-topo-pruner-context.XXXXXX)
    trap 'rm -rf "$snapshot"' EXIT  # the temporary snapshot only, never the repository
    git -C "$repo" archive --format=tar "$commit" | tar -x -C "$snapshot"
    context=$snapshot
    source_commit=$commit
    log "context: git archive of $ref ($commit)"
elif [[ $source_mode == worktree ]]; then
    context=$repo
    source_commit="$(git -C "$repo" rev-parse HEAD)+worktree"
    log "context: working tree $repo ($source_commit: HEAD plus uncommitted changes)"
else
    [[ -f $context_dir/docker/Dockerfile ]] || { echo "error: --context $context_dir has no docker/Dockerfile" >&2; exit 2; }
    context=$(cd "$context_dir" && pwd)
    source_commit="unknown+context"
    log "context: directory $context"
fi

# 3. What the build may reach: this machine's pip settings (CA bundle, local wheel folders and
#    file:// indexes), mounted read-only at the same paths, so that torch comes from local files
#    and HTTPS to the registry passes the TLS check. None of it ends up in the image.
pip_get() { python3 -m pip config get "$1" 2>/dev/null || true; }
ca_bundle=${PIP_CERT:-$(pip_get global.cert)}
ca_bundle=${ca_bundle:-/etc/ssl/certs/ca-certificates.crt}
find_links=${PIP_FIND_LINKS:-$(pip_get global.find-links)}
extra_indexes=${PIP_EXTRA_INDEX_URL:-$(pip_get global.extra-index-url)}
index_url=${PIP_INDEX_URL:-$(pip_get global.index-url)}
index_url=${index_url:-https://pypi.org/simple}

build_args=(--build-arg "BASE_IMAGE=$BASE_IMAGE" --build-arg "INDEX_URL=$index_url" --build-arg "SOURCE_COMMIT=$source_commit")
mounts=()
if [[ -f $ca_bundle ]]; then
    mounts+=(-v "$ca_bundle:/etc/ssl/certs/host-ca-bundle.crt:ro")
    build_args+=(--build-arg PIP_CA_BUNDLE=/etc/ssl/certs/host-ca-bundle.crt)
fi
kept_links=()
for location in $find_links; do
    location=${location#file://}
    if [[ -d $location ]]; then mounts+=(-v "$location:$location:ro"); kept_links+=("$location"); fi
done
kept_indexes=()
for url in $extra_indexes; do
    if [[ $url == file://* ]]; then
        # A file:// simple index links to ../../files: mount the folder that holds `simple/`.
        root=$(dirname "${url#file://}")
        [[ -d $root ]] || continue
        mounts+=(-v "$root:$root:ro")
    fi
    kept_indexes+=("$url")
done
build_args+=(--build-arg "FIND_LINKS=${kept_links[*]}" --build-arg "EXTRA_INDEX_URLS=${kept_indexes[*]}")
log "pip inside the build: index $index_url; extra indexes: ${kept_indexes[*]:-none}; find-links: ${kept_links[*]:-none}; CA bundle: $ca_bundle"

build() {  # build DOCKERFILE TARGET [extra podman args...]
    local dockerfile=$1 target=$2; shift 2
    # shellcheck disable=SC2086  # EXTRA_BUILD_ARGS is a list of words on purpose
    nice -n 19 podman build --isolation chroot --layers -f "$context/docker/$dockerfile" \
        --target "$target" "${build_args[@]}" "${mounts[@]}" ${EXTRA_BUILD_ARGS:-} "$@" "$context"
}

# 4. The image users get (default target).
t=$(date +%s); log "building target runtime -> $IMAGE"
build Dockerfile runtime -t "$IMAGE"
log "runtime image built in $(elapsed "$t")"

# 5. Its configuration, checked without running it (running containers is not possible here).
config=$(podman image inspect --format '{{.Config.User}}|{{json .Config.Cmd}}|{{.Config.WorkingDir}}' "$IMAGE")
log "image revision label: $(podman image inspect --format '{{index .Config.Labels "org.opencontainers.image.revision"}}' "$IMAGE")"
log "image config (user|cmd|workdir): $config"
expected='pruner|["python","-m","benchmarks.run","--preset","smoke","--out-dir","/results"]|/app'
[[ $config == "$expected" ]] || { echo "error: image config is '$config', expected '$expected'" >&2; exit 1; }
size=$(podman image inspect --format '{{.Size}}' "$IMAGE")
log "image size: $size bytes ($(( size / 1024 / 1024 )) MiB, uncompressed, base included)"

[[ ${SKIP_VERIFY:-0} == 1 ]] && { log "SKIP_VERIFY=1: tests and smoke benchmark not run"; exit 0; }

# 6. Test suite and smoke benchmark, run by the image's user inside the build; logs come back.
#    The data folder is mounted where the image's /data mount point is (as `docker run -v` would).
data_mount=()
if [[ -f $DATA_DIR/cifar10_subset.npz ]]; then
    data_mount=(-v "$(cd "$DATA_DIR" && pwd):/data:ro")
    log "data: $DATA_DIR/cifar10_subset.npz mounted at /data (sha256 $(sha256sum "$DATA_DIR/cifar10_subset.npz" | cut -c1-16)...)"
else
    log "warning: no cifar10_subset.npz in DATA_DIR=$DATA_DIR: data-dependent tests skip and the smoke run fails"
fi
t=$(date +%s); log "building target $report_target -> $VERIFY_OUT"
rm -rf "$VERIFY_OUT"; mkdir -p "$VERIFY_OUT"
build Dockerfile.verify "$report_target" --build-arg "APP_IMAGE=$IMAGE" --build-arg "PYTEST_ARGS=${PYTEST_ARGS:-}" --build-arg "VERIFY_RUN_ID=$(date +%s)" "${data_mount[@]}" --output "type=local,dest=$VERIFY_OUT"
log "$report_target passed in $(elapsed "$t")"
if [[ -f $VERIFY_OUT/pytest.log ]]; then
    log "tests ran as: $(cat "$VERIFY_OUT/user.txt")"
    summary=$(tail -n 1 "$VERIFY_OUT/pytest.log")
    log "pytest: $summary"
    if [[ $summary =~ (failed|error) || ! $summary =~ passed ]]; then  # the build fails on these already; belt and braces
        echo "error: the test run did not pass: $summary" >&2; exit 1
    fi
fi
if [[ -d $VERIFY_OUT/smoke ]]; then
    log "smoke ran as: $(cat "$VERIFY_OUT/smoke-user.txt")"
    log "smoke benchmark outputs: $(cd "$VERIFY_OUT/smoke" && find . -maxdepth 1 -type f | sort | tr '\n' ' ')"
    log "smoke benchmark: $(grep -a -v -e '%|' -e '^\s*$' "$VERIFY_OUT/smoke.log" | tail -n 1)"
fi
