#!/usr/bin/env bash
# Create .venv-bench: the benchmark peers (SAELens, MosaicML streaming) in their own venv, so their
# pins (transformers<5, numpy<2.2) never touch the project's .venv.  Idempotent; `make bench-venv`.
#
#   bash bench/setup_peers.sh            # creates/updates ./.venv-bench
#   VENV=/path bash bench/setup_peers.sh
#
# torch is pinned by a constraints file so the resolver can never pull a CUDA build on a CPU box
# (on a GPU machine set TORCH_PIN=torch to keep the default build).  mosaicml-streaming depends on a
# CUDA torchvision that cannot load against the CPU torch; streaming's vision module is unused by the
# benchmark, so torchvision is uninstalled afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv-bench}
TORCH_PIN=${TORCH_PIN:-torch==2.13.0}
SAELENS=${SAELENS:-sae-lens}
STREAMING=${STREAMING:-mosaicml-streaming}

if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
  "$VENV/bin/pip" install -q --upgrade pip setuptools wheel
fi
constraints=$(mktemp)
trap 'rm -f "$constraints"' EXIT
echo "$TORCH_PIN" > "$constraints"
"$VENV/bin/python" -c "import torch" 2>/dev/null || "$VENV/bin/pip" install -q -c "$constraints" "$TORCH_PIN"
# One resolve for both peers, torch held by the constraints file.
"$VENV/bin/pip" install -q -c "$constraints" "$SAELENS" "$STREAMING" py-spy
"$VENV/bin/pip" uninstall -q -y torchvision 2>/dev/null || true
export HF_HUB_OFFLINE=1
"$VENV/bin/python" - <<'PY'
import importlib.metadata as md
import torch
from sae_lens import ActivationsStore  # noqa: F401
from streaming import StreamingDataset  # noqa: F401
print("peers ready:", {p: md.version(p) for p in ("sae-lens", "mosaicml-streaming", "torch", "transformers",
                                                   "datasets", "numpy")})
PY
touch "$VENV/.installed"
