"""Logical dtypes vs what zarr stores (zarr has no bfloat16: its bits are stored as uint16)."""
from __future__ import annotations

import numpy as np
import torch

STORAGE = {"float32": np.dtype("<f4"), "float16": np.dtype("<f2"), "bfloat16": np.dtype("<u2")}
TORCH = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def storage_dtype_name(dtype: str) -> str:
    return {"float32": "float32", "float16": "float16", "bfloat16": "uint16"}[dtype]


def tensor_to_storage(t: torch.Tensor, dtype: str) -> np.ndarray:
    """Cast a (CPU) tensor to the logical dtype and return the numpy array zarr will store."""
    t = t.detach().to(TORCH[dtype]).contiguous()
    if dtype == "bfloat16":
        return t.view(torch.int16).numpy().view(np.uint16)
    return t.numpy()


def storage_to_tensor(a: np.ndarray, dtype: str) -> torch.Tensor:
    """Wrap stored bytes as a tensor of the logical dtype without copying."""
    if dtype == "bfloat16":
        return torch.from_numpy(a.view(np.int16)).view(torch.bfloat16)
    return torch.from_numpy(a)
