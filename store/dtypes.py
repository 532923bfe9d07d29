"""Logical dtypes vs what zarr stores (zarr has no bfloat16: its bits are stored as uint16).

numpy only at import: torch loads on first use of ``TORCH`` or a tensor conversion, so that readers
that never touch a tensor (``actlake info``, ``actlake verify``, queries) do not pay for it."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch

    TORCH: dict[str, torch.dtype]

STORAGE = {"float32": np.dtype("<f4"), "float16": np.dtype("<f2"), "bfloat16": np.dtype("<u2")}


def _torch_dtypes() -> dict[str, torch.dtype]:
    import torch

    return {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def __getattr__(name: str) -> Any:
    """``TORCH``: logical dtype name → ``torch.dtype``, built on first access (PEP 562)."""
    if name != "TORCH":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()["TORCH"] = table = _torch_dtypes()
    return table


def storage_dtype_name(dtype: str) -> str:
    return {"float32": "float32", "float16": "float16", "bfloat16": "uint16"}[dtype]


def tensor_to_storage(t: torch.Tensor, dtype: str) -> np.ndarray:
    """Cast a (CPU) tensor to the logical dtype and return the numpy array zarr will store."""
    import torch

    t = t.detach().to(_torch_dtypes()[dtype]).contiguous()
    if dtype == "bfloat16":
        return t.view(torch.int16).numpy().view(np.uint16)
    return t.numpy()


def storage_to_tensor(a: np.ndarray, dtype: str) -> torch.Tensor:
    """Wrap stored bytes as a tensor of the logical dtype without copying."""
    import torch

    if dtype == "bfloat16":
        return torch.from_numpy(a.view(np.int16)).view(torch.bfloat16)
    return torch.from_numpy(a)
