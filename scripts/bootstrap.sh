#!/usr/bin/env bash
# Create or reuse .venv at the repository root and install rgbacli into it (idempotent).
# CPU torch is pinned here; to use a GPU, install your CUDA torch into .venv first
# (e.g. `.venv/bin/pip install torch --index-url https://download.pytorch.org/whl/cu128`)
# and set RGBA_KEEP_TORCH=1 so this script leaves it alone.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv"
stamp="$venv/.rgbacli-installed"
py="${PYTHON:-python3}"
if [ ! -x "$venv/bin/python" ]; then
  "$py" -m venv "$venv"
fi
if [ ! -f "$stamp" ] || [ "$root/pyproject.toml" -nt "$stamp" ]; then
  echo "rgbacli: installing into $venv (first run only)..." >&2
  if [ -z "${RGBA_KEEP_TORCH:-}" ]; then
    "$venv/bin/python" -m pip install -q "torch==2.13.0" >&2
  fi
  "$venv/bin/python" -m pip install -q -e "$root[test]" >&2
  touch "$stamp"
fi
