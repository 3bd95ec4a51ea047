#!/usr/bin/env bash
# The CUDA checks of the native DNABERT-2 model, for a machine with an NVIDIA GPU (CI has none): the gpu-marked tests
# (CUDA bf16 vs CPU fp32, byte-identical reruns, compiled layers) and the encoder benchmark on CUDA (tokens/s, MFU
# against the GPU's own bf16 GEMM throughput measured in the same run). About 5 minutes on an H100/H200; each step
# has its own time limit, 8 minutes in all.
#
#   bash kb_assets/benchmarks/gpu_check.sh prepare     # where pip reaches PyPI: wheels (CPython 3.12, manylinux) of
#                                                      # the packages kb_assets.encoders imports that a stock CUDA
#                                                      # PyTorch image lacks, into .whl/ (git-ignored)
#   bash kb_assets/benchmarks/gpu_check.sh [UPSTREAM]  # on the GPU machine, from a copy of the repo with .whl/;
#                                                      # UPSTREAM: a folder with DNABERT-2's bert_layers.py, to
#                                                      # compare against (optional)
# Logs go to $OUT (or /tmp/kb-gpu-check): tests.log, bench.log.
set -uo pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON:-python3}
WHEELS=(pyranges==0.1.4 ncls sorted_nearest natsort pyfaidx pysam cyvcf2 coloredlogs humanfriendly)

if [ "${1:-}" = prepare ]; then
  exclude=$(git rev-parse --git-path info/exclude)
  mkdir -p "$(dirname "$exclude")" .whl
  grep -qx '/.whl/' "$exclude" 2>/dev/null || echo '/.whl/' >>"$exclude"
  for wheel in "${WHEELS[@]}"; do
    "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
      --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
      --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl "$wheel" || exit 1
  done
  ls -la .whl
  exit 0
fi

out=${OUT:-/tmp/kb-gpu-check}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
if compgen -G ".whl/*.whl" >/dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/kb-site .whl/*.whl \
    || exit 1
  export PYTHONPATH=/tmp/kb-site:${PYTHONPATH:-}
fi
export PYTHONPATH=$PWD:${PYTHONPATH:-}
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
"$PY" -c "import torch, kb_assets.encoders; print('torch', torch.__version__, 'cuda', torch.version.cuda)" || exit 1

# The repo's pytest settings (setup.cfg) and root conftest import Dagster, which the GPU image need not have: the
# encoder tests need neither.
ini=$(mktemp --suffix=.ini)
printf '[pytest]\nmarkers =\n    gpu: needs a CUDA device\n    slow: takes more than a few seconds\n' >"$ini"
timeout 270 "$PY" -m pytest -c "$ini" --rootdir . --confcutdir kb_assets_tests/encoders -p no:cacheprovider -q -rs \
  kb_assets_tests/encoders/test_attention_cuda.py kb_assets_tests/encoders/test_attention.py 2>&1 | tee "$out/tests.log"
tests=${PIPESTATUS[0]}

upstream=()
[ -n "${1:-}" ] && upstream=(--upstream "$1")
timeout 210 "$PY" -m kb_assets.benchmarks.encoder --device cuda "${upstream[@]}" 2>&1 | tee "$out/bench.log"
bench=${PIPESTATUS[0]}
echo "tests exit $tests, benchmark exit $bench"
[ "$tests" -eq 0 ] && [ "$bench" -eq 0 ]
