"""Model weights stored next to activations: ``weights/<name>.npy`` (one ``.npy`` per exported
parameter, float32, C order) and ``weights/index.json`` written last, so a reader sees either no
weights or all of them.  The index holds the model id, revision and weight/config digests (the same
ones the manifest's ``model`` records), and per name its shape, source parameter and layout."""
from __future__ import annotations

import io
import json
from typing import Any

import numpy as np

from actlake.schemas.errors import StoreDamagedError
from actlake.store.fs import StoreFS

WEIGHTS = "weights"
INDEX = f"{WEIGHTS}/index.json"


def weight_file(name: str) -> str:
    """Object name of one weight: path-safe (``/`` and ``:`` are not portable)."""
    return f"{WEIGHTS}/{name.replace('/', '_').replace(':', '@')}.npy"


def write_weights(store: StoreFS, arrays: dict[str, np.ndarray], meta: dict[str, dict[str, Any]],
                  model: dict[str, Any]) -> None:
    """Write every array, then the index.  ``meta[name]`` describes one array (``source``, ``layout``);
    ``model`` is the manifest's model record (id, revision, digests)."""
    entries = {}
    for name, arr in arrays.items():
        buf = io.BytesIO()
        np.save(buf, np.ascontiguousarray(arr), allow_pickle=False)
        store.write_bytes(weight_file(name), buf.getvalue())
        entries[name] = {"file": weight_file(name), "shape": list(arr.shape), "dtype": str(arr.dtype),
                         **meta.get(name, {})}
    index = {"model": model, "weights": entries}
    store.write_bytes(INDEX, json.dumps(index, indent=1, sort_keys=True).encode())


def read_index(store: StoreFS) -> dict[str, Any] | None:
    """The weights index, or None when the dataset holds no weights."""
    if not store.exists(INDEX):
        return None
    return store.read_json(INDEX)


def read_weight(store: StoreFS, name: str) -> np.ndarray:
    """One stored weight as a numpy array; StoreDamagedError when its file is missing or unreadable."""
    index = read_index(store) or {"weights": {}}
    entry = index["weights"][name]
    try:
        arr = np.load(io.BytesIO(store.read_bytes(entry["file"])), allow_pickle=False)
    except Exception as e:
        raise StoreDamagedError(store.path(entry["file"]), f"weight {name} unreadable: {e}") from None
    if list(arr.shape) != entry["shape"]:
        raise StoreDamagedError(store.path(entry["file"]),
                                f"weight {name} has shape {arr.shape}, index says {entry['shape']}")
    return arr
