#!/usr/bin/env bash
# The GPU check, in one command, on the GPU machine (H200, CUDA 13), from the repo root:
#
#     bash tests/gpu/run_gpu.sh
#
# Installs the carried wheels (.whl/: xdsl and its deps, pycuda built for this machine)
# and dsc itself into /tmp/site, then runs `python -m dsc.tools.gpu_check`: the GPU tests
# (tests/test_cuda_gpu.py), the full-size zoo against onnxruntime, and the benchmark
# against PyTorch. Results: $OUT/gpu_results.md, gpu_results.json, pytest_gpu.txt,
# gpu_check.log. Finishes within 9 minutes (GPU_CHECK_BUDGET seconds for the check).
set -u
cd "$(dirname "$0")/../.." || exit 1
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/dsc-gpu-out}
mkdir -p "$OUT"
SITE=/tmp/site
start=$(date +%s)
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" .whl/*.whl 2>&1 | tail -5
fi
# dsc itself (setuptools maps compiler/ -> dsc, dialects/ -> dsc.dialects, ...)
if ! python3 -m pip install -q --no-index --no-deps --no-build-isolation --no-compile --no-cache-dir --upgrade --target "$SITE" . 2>&1 | tail -5; then
  echo "note: pip could not install dsc; using a link tree"
fi
if ! PYTHONPATH="$SITE" python3 -c "import dsc.backends.cuda.codegen" 2>/dev/null; then
  echo "note: dsc not importable from $SITE; building a link tree in /tmp/dsclink"
  rm -rf /tmp/dsclink && mkdir -p /tmp/dsclink/dsc
  for f in compiler/*; do ln -s "$PWD/$f" /tmp/dsclink/dsc/; done
  for d in dialects passes backends runtime tools; do ln -s "$PWD/$d" "/tmp/dsclink/dsc/$d"; done
  export PYTHONPATH="$SITE:/tmp/dsclink"
else
  export PYTHONPATH="$SITE"
fi
echo "setup took $(( $(date +%s) - start )) s"
python3 -m dsc.tools.gpu_check --out "$OUT" --budget "${GPU_CHECK_BUDGET:-500}" "$@" 2>&1 | tee "$OUT/gpu_check.log"
exit "${PIPESTATUS[0]}"
