#!/usr/bin/env bash
# Create .venv and install seminar with everything it needs; a no-op when nothing changed.
# torch is pinned and installed first so pip never resolves a bare `torch` (a multi-GB CUDA
# build on Linux). Set SEMINAR_TORCH to choose another build, e.g. SEMINAR_TORCH="torch==2.9.1".
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${PYTHON:-python3}"
venv="$root/.venv"
torch_spec="${SEMINAR_TORCH:-torch==2.13.0}"
stamp="$venv/.seminar-installed"
want="$(cat "$root/pyproject.toml" "$root/scripts/bootstrap.sh" | sha256sum | cut -c1-16)-$torch_spec"

if [ ! -x "$venv/bin/python" ]; then
  echo "creating $venv" >&2
  "$python" -m venv "$venv"
fi
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "installing seminar and its dependencies into $venv (first run takes a few minutes)" >&2
  "$venv/bin/python" -m pip install --quiet --upgrade pip
  "$venv/bin/python" -m pip install --quiet "$torch_spec"
  "$venv/bin/python" -m pip install --quiet -e "$root[dev]"
  # MovieLens-100k, the embedded default dataset, ships inside this wheel; its code is not used.
  "$venv/bin/python" -m pip install --quiet --no-deps "recbole==1.2.1"
  echo "$want" > "$stamp"
fi
