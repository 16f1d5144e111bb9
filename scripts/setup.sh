#!/usr/bin/env bash
# Creates ./.venv if needed and installs avstudy with everything it needs (idempotent).
# torch comes first: a CPU build on machines without an NVIDIA GPU (a CUDA build is several GB),
# the default CUDA build from PyPI where `nvidia-smi` sees a GPU. Override with AVSTUDY_TORCH="spec".
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
PIP=(.venv/bin/python -m pip install --disable-pip-version-check -q)

install_torch() {
  if [ -n "${AVSTUDY_TORCH:-}" ]; then
    "${PIP[@]}" "$AVSTUDY_TORCH"
  elif command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    "${PIP[@]}" "torch>=2.4,<2.15"
  else
    # a local or cached CPU wheel when there is one, else PyTorch's CPU index
    "${PIP[@]}" "torch==2.13.0+cpu" 2>/dev/null \
      || "${PIP[@]}" "torch==2.13.0" --index-url https://download.pytorch.org/whl/cpu
  fi
}

.venv/bin/python -c "import torch" 2>/dev/null || install_torch
EXTRAS=${AVSTUDY_EXTRAS:-media,dashboard,test}
"${PIP[@]}" -e ".[$EXTRAS]"
echo "avstudy installed in $(pwd)/.venv (torch $(.venv/bin/python -c 'import torch; print(torch.__version__)'))"
echo "extras installed: [$EXTRAS] (pyproject.toml); not installed: [backbones] (timm for --video" \
     "efficientnet, needs a torchvision matching this torch), [cloud], [tracking];" \
     "add one with: .venv/bin/pip install -e '.[backbones]' (or AVSTUDY_EXTRAS=media,dashboard,test,backbones)"
