#!/usr/bin/env bash
# Prove the Docker image by running it: build docker/Dockerfile from a fresh clone with
# `docker build`, then with `docker run`
#   smoke    the default command (the smoke benchmark), /results and /data mounted; its outputs
#            (report.md, results.json, plots, runs/) checked on the host
#   full     the `full` preset against the mounted whole CIFAR-10 (cifar10.npz): --baseline-only
#            restores the committed baseline weights (never trains: refused unless the committed
#            baseline matches the container's data), and --report-only re-renders a copy of the
#            committed benchmarks/results/vgg16_cifar10_full_bn
#   perms    uid/permissions: a host folder owned by another uid, --user UID:GID, read-only
#            /data, no /cache mount
#   sigterm  `docker stop` during a smoke run: exit 143, "interrupted", the out-dir resumes
#   cuda     what a machine without a GPU can check of the GPU variant: the image's torch is a
#            CUDA build, and `--set device=cuda` without a GPU stops with exit 2 and a clear
#            message (running on a GPU, `docker run --gpus all`, is not verified by this script)
#   tests    the CI test suite (`python -m pytest -q`) inside the container, as the image's user
#            (last: the longest step)
# Not part of CI (.ci/run uses no Docker); run by hand, as root (or a member of the docker group).
# See docs/docker.md for its measured output.
#
# Usage: bash docker/verify_run.sh [--ref GIT_REF] [--no-cache] [--steps LIST] [--keep]
#   --ref REF      commit to clone and build (default HEAD of this checkout)
#   --no-cache     build without Docker's layer cache (a build from scratch; the base image is kept)
#   --steps LIST   comma-separated subset of build,smoke,sigterm,full,perms,cuda,tests (default: all;
#                  every step but build needs the image, which build makes)
#   --keep         keep the clone and the outputs folder (default: outputs kept, clone removed)
# Environment:
#   BASE_IMAGE     base to build on (default localhost/nni-topo-pruner-base:bookworm, made with
#                  docker/make_debian_base.sh if absent; python:3.11-slim where a registry answers)
#   IMAGE          tag of the built image (default nni-topo-pruner:verify-run)
#   DATA_DIR       folder holding cifar10_subset.npz (and cifar10.npz for the full step), mounted
#                  read-only at /data (default ../shared/data beside this checkout)
#   VERIFY_OUT     outputs and logs (default /var/tmp/nni-topo-pruner-verify-run; emptied first)
#   VERIFY_THREADS torch threads in the containers (OMP_NUM_THREADS, default 1)
#   DOCKER_BUILD_ARGS / DOCKER_RUN_ARGS  extra words for every `docker build` / `docker run`
#                  (e.g. "--cpu-shares 128" to give the containers a low CPU weight)
#   PIP_CERT, PIP_INDEX_URL, PIP_EXTRA_INDEX_URL, PIP_FIND_LINKS  pip settings for the build
#                  (default: this machine's `pip config`); file:// indexes and local wheel folders
#                  are served to the build over http://127.0.0.1 (the build runs with
#                  --network host; port VERIFY_INDEX_PORT, default 39467), the CA bundle is
#                  copied into the clone's docker/build-ca/.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
ref=HEAD
no_cache=()
steps=build,smoke,sigterm,full,perms,cuda,tests
keep=0
while [[ $# -gt 0 ]]; do
    case $1 in
        --ref) ref=${2:?--ref needs a git reference}; shift 2 ;;
        --no-cache) no_cache=(--no-cache); shift ;;
        --steps) steps=${2:?--steps needs a list}; shift 2 ;;
        --keep) keep=1; shift ;;
        -h|--help) sed -n '2,40p' "$0"; exit 0 ;;
        *) echo "error: unknown argument '$1' (see --help)" >&2; exit 2 ;;
    esac
done
for step in ${steps//,/ }; do
    case $step in build|tests|smoke|full|perms|sigterm|cuda) ;; *) echo "error: unknown step '$step'" >&2; exit 2 ;; esac
done
want() { [[ ,$steps, == *,$1,* ]]; }

BASE_IMAGE=${BASE_IMAGE:-localhost/nni-topo-pruner-base:bookworm}
IMAGE=${IMAGE:-nni-topo-pruner:verify-run}
DATA_DIR=${DATA_DIR:-$repo/../shared/data}
VERIFY_OUT=${VERIFY_OUT:-/var/tmp/nni-topo-pruner-verify-run}
VERIFY_THREADS=${VERIFY_THREADS:-1}
# shellcheck disable=SC2206  # lists of words on purpose
build_extra=(${DOCKER_BUILD_ARGS:-})
# shellcheck disable=SC2206
run_extra=(${DOCKER_RUN_ARGS:-})

log() { printf '[verify_run %s] %s\n' "$(date +%H:%M:%S)" "$*"; }
fail() { printf '[verify_run %s] FAILED: %s\n' "$(date +%H:%M:%S)" "$*" >&2; exit 1; }
now() { date +%s.%N; }
secs() { python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.0f}')" "$1" "$(now)"; }
results=()   # one line per step, printed at the end
passed() { results+=("PASS  $1"); log "PASS $1"; }

# --- preflight: docker present and its daemon answering, data present ---------------------------
command -v docker >/dev/null || { echo "error: 'docker' not found; as root: apt-get update && apt-get install -y docker.io, then start the daemon (dockerd > /var/log/dockerd.log 2>&1 &)" >&2; exit 2; }
if ! docker info >/dev/null 2>&1; then
    echo "error: the Docker daemon does not answer ('docker info' fails: $(docker info 2>&1 | grep -m1 -i -e error -e cannot || true)); start it (as root: dockerd > /var/log/dockerd.log 2>&1 &) or join the docker group" >&2
    exit 2
fi
command -v git >/dev/null || { echo "error: git not found" >&2; exit 2; }
[[ -f $DATA_DIR/cifar10_subset.npz ]] || { echo "error: no cifar10_subset.npz in DATA_DIR=$DATA_DIR (the tests and the smoke run need it)" >&2; exit 2; }
DATA_DIR=$(cd "$DATA_DIR" && pwd)
if want full && [[ ! -f $DATA_DIR/cifar10.npz ]]; then
    echo "error: the full step needs the whole CIFAR-10, $DATA_DIR/cifar10.npz (or leave it out: --steps build,smoke,sigterm,perms,cuda,tests)" >&2; exit 2
fi
# The classic builder: the one every Docker engine has (BuildKit needs the buildx plugin with a
# recent client), and the one that honours --cpu-shares and --network host on `docker build`.
export DOCKER_BUILDKIT=0

# --- temporary things, removed on exit: the clone, the index server, containers -----------------
work=$(mktemp -d /var/tmp/nni-topo-pruner-verify-run.XXXXXX)
server_pid=""
containers=()
cleanup() {
    local status=$?
    for name in "${containers[@]}"; do docker rm -f "$name" >/dev/null 2>&1 || true; done
    [[ -n $server_pid ]] && kill "$server_pid" 2>/dev/null || true
    if [[ $keep == 1 ]]; then log "kept the clone in $work"; else rm -rf "$work"; fi
    if [[ $status -ne 0 ]]; then
        log "stopped (exit $status); steps passed before that:"; printf '  %s\n' "${results[@]:-none}"
    fi
}
trap cleanup EXIT
trap 'echo "[verify_run] failed (exit $?) at line $LINENO: $BASH_COMMAND" >&2' ERR
rm -rf "$VERIFY_OUT"; mkdir -p "$VERIFY_OUT"
log "outputs and logs in $VERIFY_OUT; docker $(docker version --format '{{.Client.Version}} (client) / {{.Server.Version}} (engine)')"

# --- a fresh clone of the commit ----------------------------------------------------------------
commit=$(git -C "$repo" rev-parse --verify "$ref^{commit}")
git clone --quiet --no-checkout "$repo" "$work/src"
git -C "$work/src" checkout --quiet "$commit"
src=$work/src
log "fresh clone of $commit in $src"

docker_run() {  # docker run with the common arguments
    docker run --rm "${run_extra[@]}" -e "OMP_NUM_THREADS=$VERIFY_THREADS" "$@"
}
image_present() { docker image inspect "$1" >/dev/null 2>&1; }

# --- build ------------------------------------------------------------------------------------
if want build; then
    if ! image_present "$BASE_IMAGE"; then
        [[ $BASE_IMAGE == localhost/nni-topo-pruner-base:* ]] || fail "base image $BASE_IMAGE not in local storage (docker pull it, or unset BASE_IMAGE)"
        t=$(now); log "building base image $BASE_IMAGE (debootstrap, docker import)"
        ENGINE=docker bash "$src/docker/make_debian_base.sh" "$BASE_IMAGE" > "$VERIFY_OUT/base-image.log" 2>&1 \
            || { tail -n 20 "$VERIFY_OUT/base-image.log" >&2; fail "base image"; }
        log "base image built in $(secs "$t") s"
    fi

    # pip inside the build: this machine's settings. Local indexes and wheel folders are served
    # over http://127.0.0.1 (reachable with --network host; the classic builder mounts nothing),
    # the CA bundle goes into the clone's docker/build-ca/ (seen by the deps stage only).
    pip_get() { python3 -m pip config get "$1" 2>/dev/null || true; }
    ca_bundle=${PIP_CERT:-$(pip_get global.cert)}
    ca_bundle=${ca_bundle:-/etc/ssl/certs/ca-certificates.crt}
    index_url=${PIP_INDEX_URL:-$(pip_get global.index-url)}
    index_url=${index_url:-https://pypi.org/simple}
    extra_indexes=${PIP_EXTRA_INDEX_URL:-$(pip_get global.extra-index-url)}
    find_links=${PIP_FIND_LINKS:-$(pip_get global.find-links)}
    served=$work/served; mkdir -p "$served"
    build_extra_indexes=(); build_find_links=(); n=0
    for url in $extra_indexes; do
        if [[ $url == file://* ]]; then  # a file:// simple index links to ../../files: serve the folder above simple/
            root=$(dirname "${url#file://}"); [[ -d $root ]] || continue
            ln -s "$root" "$served/index$n"; url="@SERVER@/index$n/$(basename "${url#file://}")"; n=$((n + 1))
        fi
        build_extra_indexes+=("$url")
    done
    for location in $find_links; do
        location=${location#file://}
        if [[ -d $location ]]; then ln -s "$location" "$served/links$n"; build_find_links+=("@SERVER@/links$n/"); n=$((n + 1))
        elif [[ $location == http* ]]; then build_find_links+=("$location"); fi
    done
    if [[ $index_url == file://* ]]; then
        root=$(dirname "${index_url#file://}"); ln -s "$root" "$served/index$n"
        index_url="@SERVER@/index$n/$(basename "${index_url#file://}")"; n=$((n + 1))
    fi
    server="none"
    if [[ $n -gt 0 ]]; then
        # A fixed port: the URLs are build arguments, part of the cache key of the RUN lines that
        # see them, so a new port each time would reinstall every dependency.
        port=${VERIFY_INDEX_PORT:-39467}
        nice -n 10 python3 -u -m http.server --bind 127.0.0.1 --directory "$served" "$port" > "$work/server.log" 2>&1 &
        server_pid=$!
        for _ in $(seq 50); do grep -q 'port [0-9]' "$work/server.log" 2>/dev/null && break; sleep 0.2; done
        grep -q 'port [0-9]' "$work/server.log" && kill -0 "$server_pid" 2>/dev/null \
            || fail "the local index server did not start on 127.0.0.1:$port (port taken? set VERIFY_INDEX_PORT): $(cat "$work/server.log")"
        server=http://127.0.0.1:$port
    fi
    subst() { local out=() word; for word in "$@"; do out+=("${word//@SERVER@/$server}"); done; echo "${out[*]}"; }
    index_url=$(subst "$index_url")
    build_args=(--build-arg "BASE_IMAGE=$BASE_IMAGE" --build-arg "SOURCE_COMMIT=$commit"
                --build-arg "INDEX_URL=$index_url"
                --build-arg "EXTRA_INDEX_URLS=$(subst "${build_extra_indexes[@]}")"
                --build-arg "FIND_LINKS=$(subst "${build_find_links[@]}")")
    if [[ -f $ca_bundle ]]; then
        cp "$ca_bundle" "$src/docker/build-ca/ca.crt"
        build_args+=(--build-arg PIP_CA_BUNDLE=docker/build-ca/ca.crt)
    fi
    log "pip inside the build: index $index_url; extra indexes: $(subst "${build_extra_indexes[@]}"); find-links: $(subst "${build_find_links[@]}"); CA bundle: ${ca_bundle} (copied into docker/build-ca/)"

    t=$(now); log "docker build ${no_cache[*]} ${build_extra[*]} -> $IMAGE"
    if ! docker build --network host "${no_cache[@]}" "${build_extra[@]}" -f "$src/docker/Dockerfile" \
            "${build_args[@]}" -t "$IMAGE" "$src" > "$VERIFY_OUT/build.log" 2>&1; then
        tail -n 30 "$VERIFY_OUT/build.log" >&2; fail "docker build (log: $VERIFY_OUT/build.log)"
    fi
    build_s=$(secs "$t")
    cached=$(grep -c 'Using cache' "$VERIFY_OUT/build.log" || true)
    size=$(docker image inspect --format '{{.Size}}' "$IMAGE")
    log "built in $build_s s ($cached steps from the cache); image size $size bytes ($((size / 1000000)) MB, uncompressed, base included)"
    [[ -n $server_pid ]] && { kill "$server_pid" 2>/dev/null || true; server_pid=""; }

    config=$(docker image inspect --format '{{.Config.User}}|{{json .Config.Cmd}}|{{.Config.WorkingDir}}|{{index .Config.Labels "org.opencontainers.image.revision"}}' "$IMAGE")
    expected="pruner|[\"python\",\"-m\",\"benchmarks.run\",\"--preset\",\"smoke\",\"--out-dir\",\"/results\"]|/app|$commit"
    [[ $config == "$expected" ]] || fail "image config is '$config', expected '$expected'"
    # nothing of this machine's pip settings in the image: no CA copy, no index URL in its history
    docker_run "$IMAGE" sh -c 'test ! -e /app/docker/build-ca && test -z "$(python -m pip config list)"' \
        || fail "the image holds docker/build-ca or a pip configuration"
    if [[ $server != none ]] && docker history --no-trunc "$IMAGE" | grep -q "$server"; then
        fail "the image's history names the build's local index server $server"
    fi
    passed "build: $build_s s, $size bytes, config $config"
fi
image_present "$IMAGE" || fail "image $IMAGE not found: run the build step (--steps build,...)"

check_outputs() {  # check_outputs DIR EXPECTED_STATUS : report, results.json, plots, records on the host
    local dir=$1 want_status=$2
    for file in report.md results.json benchmark.log recovery.png accuracy_vs_flops.png; do
        [[ -s $dir/$file ]] || fail "$dir/$file missing or empty"
    done
    python3 - "$dir" "$want_status" <<'PY' || fail "results.json in $1 is not what a finished smoke run writes"
import json, pathlib, sys
out, want = pathlib.Path(sys.argv[1]), sys.argv[2]
results = json.loads((out / "results.json").read_text())
records = results["runs"]
runs = sorted(out.glob("runs/*.json"))
failed = [r for r in records if r.get("status") != "ok"]
print(f"  results.json: status {results['status']}, {results['finished_runs']} of {results['expected_runs']} "
      f"runs ok, {len(failed)} not ok, {len(runs)} runs/*.json; data sha256 "
      f"{str(results['data'].get('file_sha256'))[:16]}...; torch {results['packages'].get('torch')}")
assert results["status"] == want, (results["status"], want)
assert len(runs) == len(records) == results["expected_runs"] == results["finished_runs"] and not failed
assert b"PNG" in (out / "recovery.png").read_bytes()[:8]
PY
}

# --- smoke: the default command, outputs on the host -------------------------------------------
if want smoke; then
    out=$VERIFY_OUT/smoke; mkdir -p "$out"; chown 1000:1000 "$out"  # the image's user writes it
    t=$(now); log "smoke benchmark: docker run -v $out:/results -v $DATA_DIR:/data:ro $IMAGE (the default command)"
    status=0
    docker_run -v "$out:/results" -v "$DATA_DIR:/data:ro" "$IMAGE" > "$VERIFY_OUT/smoke.log" 2>&1 || status=$?
    smoke_s=$(secs "$t")
    [[ $status -eq 0 ]] || { tail -n 20 "$VERIFY_OUT/smoke.log" >&2; fail "smoke run exit $status"; }
    check_outputs "$out" complete
    owner=$(stat -c %u:%g "$out/results.json")
    [[ $owner == 1000:1000 ]] || fail "results.json owned by $owner, expected 1000:1000 (the image's user)"
    passed "smoke: $smoke_s s, exit 0, outputs on the host owned by $owner: $(cd "$out" && ls | tr '\n' ' ')"
fi

# --- full: the whole CIFAR-10 mounted; committed baseline restored, committed results re-rendered --
if want full; then
    out=$VERIFY_OUT/full-baseline; mkdir -p "$out"; chmod 1777 "$out"
    baselines=(-v "$src/benchmarks/baselines:/app/benchmarks/baselines:ro")
    t=$(now); log "full preset: which baseline the container's data and recipe select"
    docker_run -v "$out:/results" -v "$DATA_DIR:/data:ro" "${baselines[@]}" "$IMAGE" \
        python -m benchmarks.core.baseline_store status --preset full > "$out/status.json" 2> "$out/status.log" \
        || { cat "$out/status.log" >&2; fail "baseline_store status"; }
    store_finished=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["store_finished"])' "$out/status.json")
    key=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["store"].rsplit("baseline-", 1)[1])' "$out/status.json")
    log "baseline key $key; committed finished weights for it: $store_finished"
    if [[ $store_finished == True ]]; then
        # restores the committed weights into the container's (unmounted) /cache; trains nothing.
        # The timeout is a guard only: a restore takes a minute, a training hours.
        status=0
        docker_run -v "$out:/results" -v "$DATA_DIR:/data:ro" "${baselines[@]}" "$IMAGE" \
            timeout 1200 python -m benchmarks.run --preset full --baseline-only --out-dir /results --no-progress \
            > "$out/baseline-only.log" 2>&1 || status=$?
        [[ $status -eq 0 ]] || { tail -n 20 "$out/baseline-only.log" >&2; fail "--baseline-only exit $status"; }
        grep -q "restored the committed weights" "$out/baseline-only.log" || fail "--baseline-only did not restore the committed weights"
        grep -q "50000 train / 10000 test images" "$out/baseline-only.log" \
            || fail "--baseline-only did not read the whole CIFAR-10 from /data"
        line=$(grep '^baseline ' "$out/baseline-only.log" | tail -n 1)
        passed "full --baseline-only: $(secs "$t") s, $line"
    else
        log "no committed finished baseline for key $key: --baseline-only would train (hours), skipped"
        results+=("SKIP  full --baseline-only: the committed baseline does not match key $key")
    fi
    committed=$src/benchmarks/results/vgg16_cifar10_full_bn
    if [[ -f $committed/results.json ]]; then
        out=$VERIFY_OUT/full-report; cp -r "$committed" "$out"; chmod -R a+rwX "$out"
        mapfile -t stored < <(python3 -c 'import json,sys; c = json.load(open(sys.argv[1]))["command_line"]; i = c.index("--out-dir"); print("\n".join(c[3:i] + c[i + 2:]))' "$out/results.json")
        t=$(now); log "full preset --report-only on a copy of the committed results: benchmarks.run ${stored[*]} --out-dir /results --report-only"
        status=0
        docker_run -v "$out:/results" -v "$DATA_DIR:/data:ro" "$IMAGE" \
            python -m benchmarks.run "${stored[@]}" --out-dir /results --report-only > "$out/report-only.log" 2>&1 || status=$?
        [[ $status -eq 0 ]] || { tail -n 20 "$out/report-only.log" >&2; fail "--report-only exit $status"; }
        rendered=$(grep -o 'report only: [0-9]* records rendered' "$out/report-only.log" | tail -n 1)
        [[ -n $rendered && -s $out/report.md ]] || fail "--report-only rendered nothing"
        passed "full --report-only: $(secs "$t") s, $rendered"
    fi
fi

# --- perms: another uid's folder, --user, read-only /data, no /cache mount ----------------------
if want perms; then
    cut=(python -m benchmarks.run --preset smoke --pruners l1 --sparsities 0.5 --seeds 0 --out-dir /results --no-progress)
    other=$VERIFY_OUT/perms-other-uid; mkdir -p "$other"; chown 4242:4242 "$other"; chmod 755 "$other"
    status=0
    docker_run -v "$other:/results" -v "$DATA_DIR:/data:ro" "$IMAGE" "${cut[@]}" > "$VERIFY_OUT/perms-refused.log" 2>&1 || status=$?
    [[ $status -eq 2 ]] && grep -q "cannot write there" "$VERIFY_OUT/perms-refused.log" \
        || { cat "$VERIFY_OUT/perms-refused.log" >&2; fail "a folder of uid 4242 mounted for uid 1000: expected exit 2 and 'cannot write there', got exit $status"; }
    [[ -z $(ls -A "$other") ]] || fail "the refused run left files in $other"
    log "uid 4242's folder, default user 1000: refused with exit 2: $(grep -m1 'cannot write there' "$VERIFY_OUT/perms-refused.log")"
    # the same folder with --user 4242:4242 (its owner), a uid the image does not know; no /cache
    # mount (the image's /cache, mode 1777, takes the baseline); /data read-only
    t=$(now); status=0
    docker_run --user 4242:4242 -v "$other:/results" -v "$DATA_DIR:/data:ro" "$IMAGE" \
        sh -c 'echo "user: $(id)"; if touch /data/probe 2>/dev/null; then echo "data: WRITABLE"; else echo "data: read-only"; fi; exec "$@"' sh "${cut[@]}" \
        > "$VERIFY_OUT/perms-user.log" 2>&1 || status=$?
    [[ $status -eq 0 ]] || { tail -n 20 "$VERIFY_OUT/perms-user.log" >&2; fail "--user 4242:4242 run exit $status"; }
    grep -q '^data: read-only' "$VERIFY_OUT/perms-user.log" || fail "/data was writable in the container"
    [[ $(stat -c %u:%g "$other/results.json") == 4242:4242 ]] || fail "results.json not owned by 4242:4242"
    grep -q "cache_path.*/app/benchmarks/cache\|cached in /app/benchmarks/cache\|/app/benchmarks/cache/baseline-" "$VERIFY_OUT/perms-user.log" "$other/benchmark.log" \
        || log "note: the log does not name the cache folder"
    log "--user 4242:4242 on its own folder: exit 0 in $(secs "$t") s, files owned by 4242:4242, /data read-only"
    # --user "$(id -u):$(id -g)", as documented, on a folder of the invoking user
    mine=$VERIFY_OUT/perms-mine; mkdir -p "$mine"; chmod 700 "$mine"
    status=0
    docker_run --user "$(id -u):$(id -g)" -v "$mine:/results" -v "$DATA_DIR:/data:ro" "$IMAGE" "${cut[@]}" \
        > "$VERIFY_OUT/perms-mine.log" 2>&1 || status=$?
    [[ $status -eq 0 && $(stat -c %u:%g "$mine/results.json") == "$(id -u):$(id -g)" ]] \
        || { tail -n 20 "$VERIFY_OUT/perms-mine.log" >&2; fail "--user $(id -u):$(id -g) run: exit $status"; }
    passed "perms: uid 4242's folder refused for uid 1000 (exit 2, clear message); --user 4242:4242 and --user $(id -u):$(id -g) write their own folders (mode 755 / 700), /data read-only, no /cache mount"
fi

# --- sigterm: docker stop during a smoke run, then resume --------------------------------------
if want sigterm; then
    out=$VERIFY_OUT/sigterm; mkdir -p "$out"; chown 1000:1000 "$out"
    name=nni-topo-pruner-verify-sigterm-$$
    containers+=("$name")
    docker run -d --name "$name" "${run_extra[@]}" -e "OMP_NUM_THREADS=$VERIFY_THREADS" \
        -v "$out:/results" -v "$DATA_DIR:/data:ro" "$IMAGE" >/dev/null
    log "smoke run started in container $name; waiting for its first finished record"
    for _ in $(seq 1800); do
        compgen -G "$out/runs/*.json" >/dev/null && break
        [[ $(docker inspect -f '{{.State.Running}}' "$name") == true ]] || break
        sleep 1
    done
    n_before=$(find "$out/runs" -name '*.json' 2>/dev/null | wc -l)
    [[ $n_before -ge 1 && $n_before -lt 10 ]] || fail "expected the run mid-way, found $n_before records"
    t=$(now); docker stop -t 120 "$name" >/dev/null
    code=$(docker inspect -f '{{.State.ExitCode}}' "$name")
    docker logs "$name" > "$out/stopped.log" 2>&1
    docker rm "$name" >/dev/null
    log "docker stop: exit $code after $(secs "$t") s; $(grep -a -m1 '^interrupted' "$out/stopped.log" || echo 'no interrupted line')"
    [[ $code -eq 143 ]] || fail "container exit code $code after docker stop, expected 143 (SIGTERM handled)"
    grep -aq '^interrupted (SIGTERM)' "$out/stopped.log" || fail "the log does not say 'interrupted (SIGTERM)'"
    python3 -c 'import json,sys; s = json.load(open(sys.argv[1]))["status"]; print("  results.json status:", s); assert s == "interrupted"' "$out/results.json" \
        || fail "results.json status is not 'interrupted'"
    n_kept=$(find "$out/runs" -name '*.json' | wc -l)
    # resume: the same command again
    t=$(now); status=0
    docker_run -v "$out:/results" -v "$DATA_DIR:/data:ro" "$IMAGE" > "$out/resumed.log" 2>&1 || status=$?
    [[ $status -eq 0 ]] || { tail -n 20 "$out/resumed.log" >&2; fail "resumed run exit $status"; }
    reused=$(grep -ao '[0-9]* of [0-9]* records already finished' "$out/resumed.log" | head -n 1)
    [[ -n $reused ]] || fail "the resumed run reused no records"
    check_outputs "$out" complete
    passed "sigterm: docker stop after $n_before of 10 records -> exit 143, 'interrupted (SIGTERM)', status interrupted, $n_kept records kept; rerun resumed ($reused) and completed in $(secs "$t") s"
fi

# --- cuda: the GPU variant, as far as a machine without a GPU can check it ---------------------
if want cuda; then
    torch_cuda=$(docker_run "$IMAGE" python -c 'import torch; print(f"torch {torch.__version__}, built with CUDA {torch.version.cuda}, cuda available: {torch.cuda.is_available()}")')
    log "$torch_cuda"
    [[ $torch_cuda == *"built with CUDA 1"* ]] || fail "the image's torch is not a CUDA build: $torch_cuda"
    status=0
    docker_run -v "$DATA_DIR:/data:ro" "$IMAGE" python -m benchmarks.run --preset smoke --set device=cuda \
        --out-dir /tmp/cuda-check --no-progress > "$VERIFY_OUT/cuda.log" 2>&1 || status=$?
    if [[ $torch_cuda == *"available: False"* ]]; then
        [[ $status -eq 2 ]] && grep -q "torch sees no CUDA device" "$VERIFY_OUT/cuda.log" \
            || { tail -n 20 "$VERIFY_OUT/cuda.log" >&2; fail "--set device=cuda without a GPU: expected exit 2 and 'torch sees no CUDA device', got exit $status"; }
        passed "cuda (no GPU here): $torch_cuda; --set device=cuda stops with exit 2: $(grep -m1 -o 'device=.cuda. but torch sees no CUDA device' "$VERIFY_OUT/cuda.log")"
    else
        [[ $status -eq 0 ]] || fail "--set device=cuda with a GPU visible: exit $status (log $VERIFY_OUT/cuda.log)"
        passed "cuda: $torch_cuda; the smoke preset ran on the GPU"
    fi
fi

# --- tests: the CI suite inside the container, as the image's user -----------------------------
if want tests; then
    t=$(now); log "test suite: docker run ... $IMAGE python -m pytest -q (CI=true: data-dependent tests must run)"
    status=0
    docker_run -e CI=true -v "$DATA_DIR:/data:ro" "$IMAGE" \
        sh -c 'echo "user: $(id)"; exec python -m pytest -q -rfEs' > "$VERIFY_OUT/pytest.log" 2>&1 || status=$?
    tests_s=$(secs "$t")
    summary=$(grep -E '(passed|failed|error)' "$VERIFY_OUT/pytest.log" | tail -n 1)
    user=$(head -n 1 "$VERIFY_OUT/pytest.log")
    log "pytest exit $status in $tests_s s: $summary ($user)"
    [[ $status -eq 0 && $summary == *passed* && $summary != *failed* && $summary != *error* ]] \
        || { tail -n 30 "$VERIFY_OUT/pytest.log" >&2; fail "test suite (log: $VERIFY_OUT/pytest.log)"; }
    [[ $user == "user: uid=1000(pruner)"* ]] || fail "tests did not run as the image's user: $user"
    passed "tests: $summary, $tests_s s, as $user"
fi

log "all requested steps done ($steps):"
printf '  %s\n' "${results[@]}"
