#!/usr/bin/env bash
# Runs the Python example client against the local cluster of `scripts/cluster up`: installs
# its Python packages (a venv under ~/.cache/hongbao), mints the users' tokens with
# `hongbao login` (saved in .cluster/tokens, where the example reads them), then runs it
# through the first router of the cluster's topology.
#
#   examples/python/run.sh [--router HOST:PORT] [--users SENDER,GRABBER1,GRABBER2]
#
# HONGBAO_HOME: the cluster folder (default .cluster in the repo), as for scripts/cluster.
set -euo pipefail
. "$(dirname "$0")/../../scripts/env.sh"
HOME_DIR="${HONGBAO_HOME:-$HONGBAO_ROOT/.cluster}"
SEC="$HOME_DIR/security"
[ -f "$SEC/ca.crt" ] || { echo "no cluster security folder at $SEC: run scripts/cluster up first" >&2; exit 1; }
ROUTER="$(sed -nE 's/^\s*\{ region = .*[{ ,]addr = "([^"]+)".*/\1/p' "$HOME_DIR/topology.toml" | head -1)"
USERS=5001,5040,5070
while [ $# -gt 0 ]; do
  case "$1" in
    --router) ROUTER="$2"; shift 2 ;;
    --users) USERS="$2"; shift 2 ;;
    *) echo "usage: $0 [--router HOST:PORT] [--users SENDER,GRABBER1,GRABBER2]" >&2; exit 2 ;;
  esac
done
ensure_python_deps
for u in ${USERS//,/ }; do
  "$HONGBAO_BIN/hongbao" --security-dir "$SEC" login "$u" --device "py-$u" >/dev/null
done
exec "$HONGBAO_PYTHON" "$HONGBAO_ROOT/examples/python/hongbao_example.py" \
  --security-dir "$SEC" --router "$ROUTER" --users "$USERS"
