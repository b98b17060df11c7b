#!/usr/bin/env bash
# The container check: build the image for real, run `participant` and `group` on the bundled
# sample exactly as docs/containers.md tells users, and check the outputs.
#
#   bash tools/check_container.sh                  # or: bash tools/check_if_changed.sh container
#
# Docker is used when its daemon answers, else podman (installed with apt-get when missing, as
# root). With podman and no reachable image registry, the base image is made with debootstrap.
# An image already built from the same inputs (tag bids_mdpp:check-<hash>) is reused.
#
# Environment:
#   BIDS_MDPP_IMAGE      an image to check instead of building one (e.g. bids_mdpp:0.1.0)
#   BIDS_MDPP_REBUILD=1  build again without the engine's layer cache, even if the image exists
#   BIDS_MDPP_ENGINE     docker or podman (default: docker when its daemon answers, else podman)
#   BIDS_MDPP_WHEELS     podman only: a folder of wheels handed to the build (PIP_FIND_LINKS), e.g.
#                        a CPU build of torch; default /opt/wheels when it holds torch 2.13.0,
#                        empty: none (pip then takes torch from the package index)
#   BIDS_MDPP_CHECK_DIR  scratch folder (default /tmp/bids_mdpp-container-check); emptied first
#   BIDS_MDPP_CHECK_UID  the non-root uid:gid the container runs as (default: yours, or 4321:4321 as root)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

TORCH_VERSION=2.13.0
PYTHON_BASE=docker.io/library/python:3.11-slim-bookworm
LOCAL_BASE=localhost/debian:bookworm
TEMPLATEFLOW_PROBE=https://templateflow.s3.amazonaws.com/tpl-MNI152NLin2009cAsym/template_description.json
SAMPLE=bids_mdpp/data/sample
PARTICIPANT=26
# podman: keep the limits the host allows (podman's defaults raise them, which is not always
# permitted); --format docker keeps the Dockerfile's SHELL (pipefail); --network=host: the build
# steps use the host's network. The host's CA bundle is mounted at a path of its own (over
# /etc/ssl/certs it would break the image's own ca-certificates) and named by a pip.conf.
PODMAN_LIMITS=(--ulimit nofile=1024:1024 --ulimit nproc=4096:4096)
PODMAN_BUILD=(--format docker --network=host "${PODMAN_LIMITS[@]}"
              -v /etc/ssl/certs/ca-certificates.crt:/run/host-ca/ca-certificates.crt:ro)
# docs/containers.md: read-only root, /tmp in memory, no network.
RUN_FLAGS=(--rm --read-only --tmpfs /tmp --network=none)

check=${BIDS_MDPP_CHECK_DIR:-/tmp/bids_mdpp-container-check}
version=$(sed -n 's/^__version__ = "\(.*\)"/\1/p' bids_mdpp/__init__.py)
declare -A seconds=()
stages=()

say() { printf '\n== %s\n' "$*"; }
die() { printf '\ncontainer check FAILED: %s\n' "$*" >&2; exit 1; }
show() { printf '+'; printf ' %q' "$@"; printf '\n'; }
# timed STAGE COMMAND…: run a function, record its wall time under STAGE.
timed() {
  local stage=$1 start=$SECONDS
  shift
  say "$stage"
  "$@"
  seconds[$stage]=$((SECONDS - start))
  stages+=("$stage")
  echo "-- $stage: ${seconds[$stage]} s"
}

default_uid() {
  if [ "$(id -u)" != 0 ]; then echo "$(id -u):$(id -g)"; else echo 4321:4321; fi
}

choose_engine() {
  engine=${BIDS_MDPP_ENGINE:-}
  if [ -z "$engine" ]; then
    if command -v docker >/dev/null && docker info >/dev/null 2>&1; then engine=docker; else engine=podman; fi
  fi
  case "$engine" in
    docker) cli=(docker) limits=() ;;
    podman)
      # runc: podman's default runtime (crun) fails where cgroups are in hybrid mode.
      cli=(podman --runtime runc) limits=("${PODMAN_LIMITS[@]}")
      if ! command -v podman >/dev/null || ! command -v runc >/dev/null || ! command -v debootstrap >/dev/null; then
        [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null \
          || die "podman, runc and debootstrap are needed (no Docker daemon answers); install them as root"
        show apt-get install -y podman runc debootstrap
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq podman runc debootstrap >/dev/null
      fi ;;
    *) die "BIDS_MDPP_ENGINE must be docker or podman, not '$engine'" ;;
  esac
  "${cli[@]}" --version
}

# The base image: python:3.11-slim-bookworm from the registry, else a local Debian 12 made with
# debootstrap (the Dockerfile installs Python 3.11 from Debian into it).
choose_base() {
  base_args=()
  if "${cli[@]}" image inspect "$PYTHON_BASE" >/dev/null 2>&1 \
     || timeout 120 "${cli[@]}" pull -q "$PYTHON_BASE" >/dev/null 2>&1; then
    echo "base image: $PYTHON_BASE (the Dockerfile's default)"
    return
  fi
  base_args=(--build-arg "BASE_IMAGE=$LOCAL_BASE")
  if "${cli[@]}" image inspect "$LOCAL_BASE" >/dev/null 2>&1; then
    echo "no registry answers; base image: $LOCAL_BASE (made earlier)"
    return
  fi
  echo "no registry answers; making $LOCAL_BASE with debootstrap"
  command -v debootstrap >/dev/null || die "debootstrap is needed to make a base image (apt-get install debootstrap)"
  local rootfs="$check/rootfs"
  rm -rf "$rootfs"
  show debootstrap --variant=minbase bookworm "$rootfs" http://deb.debian.org/debian
  debootstrap --variant=minbase bookworm "$rootfs" http://deb.debian.org/debian >"$check/debootstrap.log" 2>&1 \
    || die "debootstrap failed; see $check/debootstrap.log"
  echo "+ tar -C $rootfs -c . | ${cli[*]} import - $LOCAL_BASE"
  tar -C "$rootfs" -c . | "${cli[@]}" import - "$LOCAL_BASE" >/dev/null
  rm -rf "$rootfs"
}

# -v and --build-arg that hand the build a local folder of wheels holding torch, if there is one.
wheel_args() {
  local wheels=${BIDS_MDPP_WHEELS-/opt/wheels}
  if [ -n "$wheels" ] && compgen -G "$wheels/torch-$TORCH_VERSION[-+]*.whl" >/dev/null; then
    echo "torch from the local wheel folder $wheels"
    args+=(-v "$wheels:/wheels:ro" --build-arg PIP_FIND_LINKS=/wheels)
  elif [ -n "$wheels" ] && [ -n "${BIDS_MDPP_WHEELS:-}" ]; then
    die "BIDS_MDPP_WHEELS=$wheels holds no torch-$TORCH_VERSION wheel"
  fi
}

build_args() {
  args=(--build-arg "VERSION=$version" "${base_args[@]}")
  if python3 -c "import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=15)" \
       "$TEMPLATEFLOW_PROBE" >/dev/null 2>&1; then
    echo "TemplateFlow answers: its templates go into the image"
  else
    echo "TemplateFlow does not answer: building with TEMPLATEFLOW_TEMPLATES= (nilearn's template)"
    args+=(--build-arg TEMPLATEFLOW_TEMPLATES=)
  fi
  if [ "$engine" = podman ]; then
    printf '[global]\ncert = /run/host-ca/ca-certificates.crt\n' > "$check/pip.conf"
    args+=("${PODMAN_BUILD[@]}" -v "$check/pip.conf:/etc/pip.conf:ro")
    wheel_args
  elif [ -n "${BIDS_MDPP_WHEELS:-}" ]; then
    echo "note: BIDS_MDPP_WHEELS is used with podman only (docker build cannot mount a folder)"
  fi
}

# The tag names what went into the image, so an image built from the same inputs is reused.
inputs_tag() {
  local hash
  hash=$({ git ls-files -z -- Dockerfile .dockerignore setup.py README.md tools/install.sh bids_mdpp \
             | sort -z | xargs -0 sha256sum; printf '%s\n' "${args[@]}"; } | sha256sum | cut -c1-12)
  echo "bids_mdpp:check-$hash"
}

build_image() {
  build_args
  image=$(inputs_tag)
  if [ -z "${BIDS_MDPP_REBUILD:-}" ] && "${cli[@]}" image inspect "$image" >/dev/null 2>&1; then
    echo "reusing $image (built from the same inputs; BIDS_MDPP_REBUILD=1 builds again)"
    return
  fi
  local cache=()
  [ -n "${BIDS_MDPP_REBUILD:-}" ] && cache=(--no-cache)
  local cmd=("${cli[@]}" build "${cache[@]}" "${args[@]}" -t "bids_mdpp:$version" -t "$image" .)
  show "${cmd[@]}"
  "${cmd[@]}" >"$check/build.log" 2>&1 || { tail -n 40 "$check/build.log" >&2; die "the image did not build; see $check/build.log"; }
  echo "built $image (log: $check/build.log)"
}

image_size() {
  "${cli[@]}" image inspect --format '{{.Size}}' "$image" | awk '{printf "%.0f MB\n", $1 / 1e6}'
}

prepare_data() {
  rm -rf "$check/bids" "$check/out" "$check/work"
  cp -r "$SAMPLE" "$check/bids"
  chmod -R a+rX "$check/bids"
  mkdir -p "$check/out" "$check/work"
  # The output and work folders belong to the uid the container runs as.
  chown "$uid" "$check/out" "$check/work"
}

# The commands of docs/containers.md, with the input read-only and a non-root uid.
app() {
  local cmd=("${cli[@]}" run "${RUN_FLAGS[@]}" "${limits[@]}" -u "$uid"
             -v "$check/bids:/data:ro" -v "$check/out:/out" -v "$check/work:/work" "$image" "$@")
  show "${cmd[@]}"
  "${cmd[@]}"
}

fail_run() {
  tail -n 40 "$check/$2.log" >&2
  die "$2 exited $1; see $check/$2.log"
}

participant() {
  app /data /out participant --participant-label "$PARTICIPANT" -w /work --nprocs 2 \
    >"$check/participant.log" 2>&1 || fail_run $? participant
  tail -n 3 "$check/participant.log"
}

group() {
  app /data /out group --labels /data/derivatives/manual \
    >"$check/group.log" 2>&1 || fail_run $? group
  tail -n 3 "$check/group.log"
}

check_outputs() {
  "${cli[@]}" run "${RUN_FLAGS[@]}" "${limits[@]}" -i -u "$uid" --entrypoint python \
    -v "$check/bids:/data:ro" -v "$check/out:/out:ro" "$image" - /out /data \
    --participant "$PARTICIPANT" --uid "${uid%%:*}" --container-tag "bids_mdpp:$version" \
    < tools/check_container_outputs.py || die "the outputs are not as they should be (above)"
}

main() {
  local start=$SECONDS
  uid=${BIDS_MDPP_CHECK_UID:-$(default_uid)}
  [ "${uid%%:*}" != 0 ] || die "BIDS_MDPP_CHECK_UID must not be root"
  mkdir -p "$check"
  timed engine choose_engine
  if [ -n "${BIDS_MDPP_IMAGE:-}" ]; then
    image=$BIDS_MDPP_IMAGE
    echo "checking the given image $image"
  else
    timed "base image" choose_base
    timed build build_image
  fi
  echo "image $image: $(image_size)"
  prepare_data
  timed participant participant
  timed group group
  timed "output checks" check_outputs
  say "container check passed ($engine, $image) in $((SECONDS - start)) s"
  for stage in "${stages[@]}"; do printf '  %-14s %5d s\n' "$stage" "${seconds[$stage]}"; done
}

# Sourced (by the tests), only the functions are defined.
if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  main "$@"
fi
