"""Open one image from a reference: a file path, or ``SOURCE::KEY`` for images stored inside a
parquet/arrow file or a HuggingFace ``datasets`` folder (see ``sources_hf``)."""
from __future__ import annotations

import io


def open_image(ref: str):
    """A PIL image for ``ref``; raises whatever PIL raises for undecodable bytes."""
    from PIL import Image

    if "::" in ref:
        from actlake.workers.sources_hf import image_bytes

        return Image.open(io.BytesIO(image_bytes(ref)))
    return Image.open(ref)
