#!/usr/bin/env bash
# The checks that need an NVIDIA GPU, in one run (none of them runs in CI):
# the CUDA agreement tests of the references, the conformance suite on both
# CUDA references, and their speed on the GPU.  Written for the lent GPU
# machines of this project's workplace, which reach no package registry:
#
#   here:  bash scripts/gpu_check.sh --prepare     # wheels for that machine into .whl/
#   there: bash scripts/gpu_check.sh               # with .whl carried; results in $OUT or ./gpu-out
#
# That machine's python3 (3.12) has torch, jax, flax, numpy, scipy, hypothesis,
# pytest and pytest-xdist; what it lacks travels in .whl/ (this project's
# wheel, jsonschema and its dependencies).
set -uo pipefail
cd "$(dirname "$0")/.."
OUTDIR="${OUT:-gpu-out}"
mkdir -p "$OUTDIR"

if [ "${1:-}" = "--prepare" ]; then
    rm -rf .whl && mkdir -p .whl
    grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
    .venv/bin/python -m pip wheel -q --no-deps -w .whl . || exit 1
    for req in jsonschema==4.26.0 jsonschema-specifications referencing rpds-py attrs; do
        python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
            --implementation cp --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
            -d .whl "$req" || exit 1
    done
    ls -l .whl
    exit 0
fi

python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUTDIR/gpu.txt"
python3 -c "import torch, jax; print('torch', torch.__version__, torch.cuda.is_available()); print('jax', jax.__version__, jax.devices())" | tee -a "$OUTDIR/gpu.txt"

rc=0
# The references against the oracle on the GPU (reference/tests: test_cuda_*).
python3 -m pytest reference/tests/test_reference.py -k cuda -q -p no:cacheprovider 2>&1 \
    | tee "$OUTDIR/cuda-tests.txt" || rc=1
# The conformance suite on both CUDA references (ci profile).
python3 -m pytest conformance -q -p no:cacheprovider -n 8 --profile ci \
    --adapters oracle,ref-torch-cuda,ref-jax-cuda --results-dir /tmp/gpu-suite 2>&1 \
    | tail -n 40 | tee "$OUTDIR/suite.txt" || rc=1
cp /tmp/gpu-suite/report.html "$OUTDIR/suite-report.html" 2>/dev/null
# Speed on the GPU, against Flax there.
python3 benchmarks/cuda_speed.py --json "$OUTDIR/cuda-speed.json" 2>&1 \
    | tee "$OUTDIR/cuda-speed.txt" || rc=1
exit "$rc"
