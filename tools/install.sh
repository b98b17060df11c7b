#!/usr/bin/env bash
# Install bids_mdpp into a virtual environment: the one recipe used by the README, CI and the containers.
#
#   tools/install.sh [--test]          # venv in ./.venv (or $BIDS_MDPP_VENV)
#
# Environment:
#   BIDS_MDPP_VENV     where the virtual environment lives (default: .venv beside this checkout)
#   TORCH_INDEX_URL    a PyTorch wheel index to take torch from (e.g. a CUDA build in a GPU container);
#                      unset: torch==2.13.0 from the default index (CPU build where one is provided)
#   PYTHON             the interpreter that creates the venv (default: python3)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${BIDS_MDPP_VENV:-$here/.venv}"
extras=""
for arg in "$@"; do
  case "$arg" in
    --test) extras="[test]" ;;
    *) echo "tools/install.sh: unknown option $arg" >&2; exit 64 ;;
  esac
done
if [ ! -x "$venv/bin/python" ]; then
  "${PYTHON:-python3}" -m venv "$venv"
fi
pip=("$venv/bin/python" -m pip install --disable-pip-version-check --no-input --quiet)
if [ -n "${TORCH_INDEX_URL:-}" ]; then
  "${pip[@]}" --index-url "$TORCH_INDEX_URL" "torch==2.13.0"
else
  "${pip[@]}" "torch==2.13.0"
fi
"${pip[@]}" -e "$here$extras"
