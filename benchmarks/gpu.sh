#!/usr/bin/env bash
# Every CUDA path on one GPU in under 10 minutes: build (2 and 1 mm), one 1 mm T = 300 d simulation,
# STU-Net-B/-L inference and a training step, peak GPU memory. Ends with one line BENCH {json}.
#   benchmarks/gpu.sh [--quick]
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python}"
if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
    echo "benchmarks/gpu.sh: no CUDA device is visible to torch ($("$PY" -c 'import torch; print(torch.__version__)' 2>/dev/null || echo 'torch missing')); nothing measured" >&2
    exit 2
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader >&2 || true
exec timeout 590 "$PY" benchmarks/gpu.py "$@"
