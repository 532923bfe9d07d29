"""``ds.weights(name)``: model weights exported next to the activations (``--weights``)."""
from __future__ import annotations

import torch

from actlake.schemas.errors import HookError
from actlake.store.fs import StoreFS
from actlake.store.weights import read_index, read_weight


def load_weight(store: StoreFS, name: str | None = None) -> torch.Tensor | list[str]:
    """The stored weight ``name`` as a float32 tensor (shapes follow TransformerLens for aliases:
    ``W_Q`` (H, d_model, d_head), ``W_O`` (H, d_head, d_model), ``W_in`` (d_model, d_mlp),
    ``W_out`` (d_mlp, d_model), ``W_E`` (vocab, d_model), ``W_U`` (d_model, vocab); parameter names
    keep the module's own layout).  ``name=None`` lists the stored names.  Raises HookError (a
    KeyError) for a name the dataset does not hold."""
    index = read_index(store)
    names = sorted(index["weights"]) if index else []
    if name is None:
        return names
    if name not in names:
        have = ", ".join(names[:20]) if names else "none (extract with --weights)"
        raise HookError(f"no weight {name!r} in {store.uri}; stored weights: {have}")
    return torch.from_numpy(read_weight(store, name))
