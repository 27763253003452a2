#!/usr/bin/env sh
# The prepared GPU check (about 5 minutes on one H100/H200): CUDA-only tests, then the speed and loss benchmarks
# (speed: scoring, training, and the dataset case: 1 reference x 8 distorted, reference side reused).
#   sh benchmarks/gpu_check.sh            (writes benchmarks/gpu_check.log, or $OUT/gpu_check.log on the device tool)
set -u
cd "$(dirname "$0")/.."
LOG=${OUT:-benchmarks}/gpu_check.log
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  python3 -c "import torch, torchvision, timm; print('torch', torch.__version__, 'torchvision', torchvision.__version__, 'timm', timm.__version__)"
  python3 -m pytest -q tests/test_cuda.py tests/test_models.py tests/test_scoring.py
  python3 -m pytest -q tests/test_loss.py -k cuda
  python3 benchmarks/speed.py --device cuda
  python3 benchmarks/speed.py --device cuda --compile --cases score,train --train_batches 32 --train_steps 3
  python3 benchmarks/loss_memory.py --device cuda --repeats 5
} 2>&1 | tee "$LOG"
