#!/usr/bin/env bash
# Downloads into .whl/ the wheels benchmarks/gpu_check.sh installs on a GPU machine without registry access:
# the packages clipbench needs on that path that its Python 3.12 lacks (the versions the tests run with).
# torch, torchvision, timm, transformers, numpy, pandas, scipy, h5py, opencv... are already there.
#
#   bash benchmarks/fetch_gpu_wheels.sh        # here, with registry access; then ship .whl/ with the checkout
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
WHEELS=(
  open_clip_torch==3.3.0 ftfy==6.3.1 wcwidth==0.9.4     # the models
  hydra-core==1.3.8 omegaconf==2.3.1                     # the command line
  clip-benchmark==1.6.2 webdataset==1.0.2 braceexpand==0.1.7  # the zero-shot suite and wds datasets
)
PLATFORMS=(manylinux_2_28_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64)
rm -rf .whl && mkdir -p .whl
"$PYTHON" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  "${PLATFORMS[@]/#/--platform=}" -d .whl "${WHEELS[@]}"
# antlr4-python3-runtime 4.9.3 (what omegaconf 2.3 pins) is published only as source: build its pure-Python wheel
"$PYTHON" -m pip wheel -q --no-deps -w .whl antlr4-python3-runtime==4.9.3
du -ch .whl/*.whl | tail -1
