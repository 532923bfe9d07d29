"""Whole-number arguments of the read API (``batch_size``, ``seed``, ``epoch``, ``rank``, ``n`` …).

A fraction where an integer is meant was once truncated silently (``take([1.5])`` returned row 1;
``rank=0.5`` gave fractional row ids, ``seed=1.5`` the order of seed 1): every such argument goes
through :func:`whole_number`, which accepts Python, numpy and 0-d torch integers and integral
floats (``2.0``, as ``take`` does for row ids) and refuses everything else by name."""
from __future__ import annotations

import numbers
import sys
from typing import Any

from actlake.schemas.errors import ArgumentError


def whole_number(name: str, value: Any, minimum: int | None = None) -> int:
    """``value`` as a Python int.

    Args:
        name: the argument's name, used in the error message.
        value: an int (Python, numpy, 0-d tensor) or an integral float (``2.0``).
        minimum: the smallest value allowed (None: any).

    Raises:
        ArgumentError (a ValueError): a bool, a fraction, inf/NaN, a non-number, or a value below
            ``minimum``."""
    tmod = sys.modules.get("torch")  # a tensor argument means torch is loaded: never load it for this
    if tmod is not None and isinstance(value, tmod.Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ArgumentError(f"{name} must be a whole number, got {value!r}")
    if not isinstance(value, numbers.Integral):
        f = float(value)
        if not f.is_integer():  # also False for inf and NaN
            raise ArgumentError(f"{name} must be a whole number, got {value!r}")
        value = int(f)
    out = int(value)
    if minimum is not None and out < minimum:
        raise ArgumentError(f"{name} must be >= {minimum}, got {out}")
    return out


def seed_words(key: int) -> int:
    """One element of a ``np.random.SeedSequence`` key for an integer seed: non-negative ints as
    they are (no two seeds share an order; 0 <= seed < 2**32 as before), negative ints as their
    low 32 bits (SeedSequence takes no negatives; -1 and 2**32 - 1 give the same order)."""
    k = int(key)
    return k if k >= 0 else k & 0xFFFFFFFF
