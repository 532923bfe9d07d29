"""Received bytes become tensors without a copy and without torch's "not writable" warning (the bytes
belong to that batch alone), bit-equal to what the server sent, for every stored dtype."""
import json
import warnings

import numpy as np
import pyarrow as pa
import pytest
import torch

from actlake.client.remote_stream import column_tensor


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_received_column_is_a_silent_zero_copy_view(dtype):
    t = torch.randn(6, 2, 3).to(getattr(torch, dtype))
    raw = (t.view(torch.int16) if dtype == "bfloat16" else t).numpy().reshape(6, -1).view(np.uint8)
    field = pa.field("h", pa.binary(raw.shape[1]), metadata={"actlake.dtype": dtype, "actlake.shape": json.dumps([2, 3])})
    buf = pa.py_buffer(raw.tobytes())  # immutable, like a Flight receive buffer
    col = pa.Array.from_buffers(field.type, 6, [None, buf])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = column_tensor(col, field)
    assert got.dtype == t.dtype and got.shape == (6, 2, 3)
    assert torch.equal(got.view(torch.int16) if dtype == "bfloat16" else got,
                       t.view(torch.int16) if dtype == "bfloat16" else t)
    assert got.data_ptr() == buf.address  # a view, not a copy
