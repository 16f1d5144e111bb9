#!/usr/bin/env bash
# The accelerator check of packed trials (benchmarks/gpu_check.py): packs of K = 1..8 at the paper
# preset (steps/s and peak memory against K separate models), bf16 autocast, torch.compile, DDP
# over NCCL (2 GPUs). Under 8 minutes on one GPU; writes its table into docs/benchmarks.md.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh >/dev/null
timeout 470 .venv/bin/python benchmarks/gpu_check.py --device cuda --write docs/benchmarks.md
