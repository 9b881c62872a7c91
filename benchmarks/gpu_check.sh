#!/usr/bin/env bash
# The GPU check (README, Benchmarks: "GPU check"). On a machine without registry access, first install the
# wheels benchmarks/fetch_gpu_wheels.sh left in .whl/ (only the packages its Python lacks; never torch), then
# run clipbench from this checkout on that machine's own torch. --cpu: the same steps on CPU at a tiny size.
#
#   bash benchmarks/gpu_check.sh [--cpu]      # PYTHON=/path/to/python to choose the interpreter
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
WHEELS=${GPU_CHECK_WHEELS:-.whl}  # the folder fetch_gpu_wheels.sh fills
if compgen -G "$WHEELS/*.whl" >/dev/null; then
  SITE=$(mktemp -d /tmp/site.XXXXXX)
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" "$WHEELS"/*.whl
  export PYTHONPATH="$SITE:$PWD"
else
  export PYTHONPATH="$PWD"  # no wheels: the interpreter has the packages already (e.g. the project's .venv)
fi
export PYTHONWARNINGS=ignore HF_HUB_OFFLINE=1 WANDB_MODE=offline
exec "$PYTHON" benchmarks/gpu_check.py "$@"
