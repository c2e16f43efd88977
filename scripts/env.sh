# Shared set-up for every script: installs what a fresh machine lacks and picks the build dir.
# Sourced, not run. Idempotent and quiet when everything is already there.

HONGBAO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# Outside the clone, so CI runs and later sessions on this machine reuse one RocksDB build.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/hongbao/target}"
HONGBAO_BIN="$CARGO_TARGET_DIR/release"

ensure_system_deps() {
  # librocksdb-sys compiles RocksDB from source and generates bindings with libclang.
  local missing=()
  command -v clang >/dev/null 2>&1 || missing+=(clang)
  if ! ls /usr/lib/llvm-*/lib/libclang*.so* >/dev/null 2>&1 && ! ls /usr/lib/x86_64-linux-gnu/libclang*.so* >/dev/null 2>&1; then
    missing+=(libclang-dev)
  fi
  command -v g++ >/dev/null 2>&1 || missing+=(g++)
  command -v make >/dev/null 2>&1 || missing+=(make)
  if [ ${#missing[@]} -gt 0 ]; then
    echo "installing system packages: ${missing[*]}" >&2
    local sudo=""
    [ "$(id -u)" = 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
  if ! command -v cargo >/dev/null 2>&1; then
    [ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"
  fi
  command -v cargo >/dev/null 2>&1 || { echo "cargo not found: install Rust (rustup) first" >&2; exit 1; }
}

# One profile everywhere: release with overflow checks (see Cargo.toml).
build_all() {
  ensure_system_deps
  (cd "$HONGBAO_ROOT" && cargo build --release --workspace --bins "$@")
}

# The Python example client (examples/python) and its test: a venv with grpcio, grpcio-tools,
# grpcio-status and protobuf, outside the clone like the build dir. Reinstalled only when
# examples/python/requirements.txt changed. Tests find it through HONGBAO_PYTHON.
HONGBAO_VENV="${HONGBAO_VENV:-$HOME/.cache/hongbao/venv}"
export HONGBAO_PYTHON="$HONGBAO_VENV/bin/python"
ensure_python_deps() {
  local req="$HONGBAO_ROOT/examples/python/requirements.txt" stamp="$HONGBAO_VENV/.requirements.txt"
  [ -x "$HONGBAO_PYTHON" ] && cmp -s "$req" "$stamp" && return 0
  local sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  # Debian's python3 makes venvs only with python3-venv (ensurepip).
  if ! command -v python3 >/dev/null 2>&1 || ! python3 -m venv "$HONGBAO_VENV" >/dev/null 2>&1; then
    echo "installing system packages: python3 python3-venv" >&2
    rm -rf "$HONGBAO_VENV"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq python3 python3-venv >/dev/null
    python3 -m venv "$HONGBAO_VENV"
  fi
  echo "installing Python packages for examples/python into $HONGBAO_VENV" >&2
  "$HONGBAO_PYTHON" -m pip install -q --disable-pip-version-check -r "$req"
  cp "$req" "$stamp"
}

# Headless Chromium for the status page's test (tests/tests/status_page.rs loads the router's
# page with --dump-dom and --screenshot). Debian's `chromium` package; tests find it through
# HONGBAO_CHROMIUM.
ensure_chromium() {
  if ! command -v chromium >/dev/null 2>&1; then
    local sudo=""
    [ "$(id -u)" = 0 ] || sudo="sudo"
    echo "installing system packages: chromium" >&2
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium >/dev/null
  fi
  HONGBAO_CHROMIUM="$(command -v chromium)"
  export HONGBAO_CHROMIUM
}

# Docker for the container image and the compose deployment (scripts/image, scripts/cluster up
# --containers, tests/tests/containers.rs): Debian's docker.io and docker-compose (1.29), and a
# running engine. There is no systemd here, so when `docker info` fails the engine is started in
# the background (niced: containers inherit it and the machine is shared), storage driver vfs
# (overlay mounts are not available everywhere), log in ~/.cache/hongbao/dockerd.log. Returns 1
# with the reason on stderr when the engine cannot run at all.
HONGBAO_DOCKERD_LOG="${HONGBAO_DOCKERD_LOG:-$HOME/.cache/hongbao/dockerd.log}"
ensure_docker() {
  local sudo="" missing=()
  [ "$(id -u)" = 0 ] || sudo="sudo"
  command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
  command -v docker-compose >/dev/null 2>&1 || missing+=(docker-compose)
  if [ ${#missing[@]} -gt 0 ]; then
    echo "installing system packages: ${missing[*]}" >&2
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
  docker info >/dev/null 2>&1 && return 0
  if [ -n "$sudo" ]; then
    echo "docker engine not reachable and not root: start dockerd (or join the docker group)" >&2
    return 1
  fi
  mkdir -p "$(dirname "$HONGBAO_DOCKERD_LOG")"
  echo "starting dockerd (log: $HONGBAO_DOCKERD_LOG)" >&2
  # setsid: the engine outlives this script and is not killed with its process group.
  setsid nice -n 10 dockerd --storage-driver=vfs >>"$HONGBAO_DOCKERD_LOG" 2>&1 </dev/null &
  for _ in $(seq 1 60); do
    docker info >/dev/null 2>&1 && return 0
    sleep 0.5
  done
  echo "docker engine did not start within 30 s; last lines of $HONGBAO_DOCKERD_LOG:" >&2
  tail -n 15 "$HONGBAO_DOCKERD_LOG" >&2
  return 1
}
