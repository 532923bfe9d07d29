#!/usr/bin/env bash
# Create .venv-bench: the benchmark peers (SAELens, MosaicML streaming, litdata) in their own venv, so their
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
SAELENS=${SAELENS-sae-lens}  # pin e.g. SAELENS=sae-lens==6.54.12 to repeat docs/performance.md
STREAMING=${STREAMING-mosaicml-streaming}
LITDATA=${LITDATA-litdata}  # bench/s3.py: litdata StreamingDataset over s3:// (set LITDATA= to skip)

if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
  "$VENV/bin/pip" install -q --upgrade pip setuptools wheel
fi
constraints=$(mktemp)
trap 'rm -f "$constraints"' EXIT
echo "$TORCH_PIN" > "$constraints"
"$VENV/bin/python" -c "import torch" 2>/dev/null || "$VENV/bin/pip" install -q -c "$constraints" "$TORCH_PIN"
# One resolve for both peers, torch held by the constraints file; if that fails, each alone, so one
# peer that cannot be installed does not take the other with it (loader.py reports it unavailable).
# (an empty SAELENS=, STREAMING= or LITDATA= leaves that peer out)
peers=()
for p in "$SAELENS" "$STREAMING" "$LITDATA"; do [ -n "$p" ] && peers+=("$p"); done
if ! "$VENV/bin/pip" install -q -c "$constraints" "${peers[@]}"; then
  echo "setup_peers: joint install failed; trying each peer alone" >&2
  for p in "${peers[@]}"; do
    "$VENV/bin/pip" install -q -c "$constraints" "$p" || echo "setup_peers: $p not installed" >&2
  done
fi
"$VENV/bin/pip" uninstall -q -y torchvision 2>/dev/null || true
# py-spy (a standalone sampling profiler) for `bench/loader.py --profile`; optional
"$VENV/bin/pip" install -q py-spy || echo "setup_peers: py-spy not installed (--profile unavailable)" >&2
export HF_HUB_OFFLINE=1
"$VENV/bin/python" - <<'PY'
import importlib.metadata as md, importlib.util, sys, types

def version(p):
    try:
        return md.version(p)
    except md.PackageNotFoundError:
        return None

ok = True
try:
    import litdata  # noqa: F401
except Exception as e:  # noqa: BLE001
    print("litdata unusable:", repr(e), file=sys.stderr)  # optional: bench/s3.py reports it unavailable
try:
    from sae_lens.training.activations_store import ActivationsStore  # noqa: F401
except Exception as e:  # noqa: BLE001
    ok = False
    print("sae-lens unusable:", repr(e), file=sys.stderr)
try:  # streaming/__init__ imports torchvision; bench/peers/mosaic_read.py imports streaming.base alone
    spec = importlib.util.find_spec("streaming")
    pkg = types.ModuleType("streaming")
    pkg.__path__ = list(spec.submodule_search_locations)
    sys.modules["streaming"] = pkg
    from streaming.base import MDSWriter, StreamingDataset  # noqa: F401
except Exception as e:  # noqa: BLE001
    ok = False
    print("mosaicml-streaming unusable:", repr(e), file=sys.stderr)
print("peers venv:", {p: version(p) for p in ("sae-lens", "mosaicml-streaming", "litdata", "torch", "transformers",
                                              "datasets", "numpy")})
sys.exit(0 if ok else 1)
PY
touch "$VENV/.installed"
