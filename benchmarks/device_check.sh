#!/usr/bin/env bash
# The GPU figures and CUDA checks in one command (see docs/gpu.md and benchmarks/device_check.py).
#   bash benchmarks/device_check.sh             # CUDA machine, full sizes (a few minutes on one H200)
#   bash benchmarks/device_check.sh --dry-run   # CPU, toy sizes, the same steps and files
# Writes device_check.json, device_check.md and device_check.log under $OUT (default
# ./device-check-out). PYTHON picks the interpreter (default python3). Wheels found in .whl/
# (faiss-cpu, polars: what the test steps need beyond the device's packages) are installed into a
# temporary folder first; without them the test steps are recorded as skipped.
set -u
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
python=${PYTHON:-python3}
export PYTHONPATH="$root/src${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
if compgen -G "$root/.whl/*.whl" >/dev/null; then
  site=$(mktemp -d)
  if "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$site" "$root"/.whl/*.whl; then
    export PYTHONPATH="$PYTHONPATH:$site"
  else
    echo "device_check: installing the wheels in .whl/ failed; steps that need them will be skipped" >&2
  fi
fi
exec "$python" "$root/benchmarks/device_check.py" run --out "${OUT:-./device-check-out}" "$@"
