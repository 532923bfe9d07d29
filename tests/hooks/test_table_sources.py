"""Parquet/Arrow files of encoded images and HF ``datasets`` folders (``save_to_disk``) of text or
images give the same rows as the equivalent image folder / text files; a missing column and an
undecodable image are one clear SourceError."""
from __future__ import annotations


import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

import actlake
from actlake.schemas.errors import SourceError
from actlake.schemas.sources import SourceSpec
from actlake.workers.sources import iter_docs, list_images


def _images(image_folder):
    paths = sorted(image_folder.rglob("*.png"), key=lambda p: str(p.relative_to(image_folder)))
    return [(p.read_bytes(), p.parent.name) for p in paths]


def test_image_parquet_and_hf_folder_equal_image_folder(ray_local, tmp_path, tiny_vit, image_folder):
    import datasets

    imgs = _images(image_folder)
    pq.write_table(pa.table({"img": [b for b, _ in imgs], "label": [lab for _, lab in imgs]}), tmp_path / "imgs.parquet")
    hf = datasets.Dataset.from_dict({"image": [{"bytes": b, "path": None} for b, _ in imgs],
                                     "label": [lab for _, lab in imgs]},
                                    features=datasets.Features({"image": datasets.Image(), "label": datasets.Value("string")}))
    hf.save_to_disk(str(tmp_path / "hfimgs"))
    base = {"model": str(tiny_vit), "hooks": ["layers.1"], "dtype": "float32", "progress": False,
            "fragment_tokens": 400, "chunk_rows": 16, "shuffle_rows": False}
    ref = actlake.open_dataset(actlake.extract({**base, "data": str(image_folder), "out": str(tmp_path / "a")}))
    for name, data in [("b", {"type": "parquet", "path": str(tmp_path / "imgs.parquet"), "image_field": "img",
                              "label_field": "label"}),
                       ("c", {"type": "hf-dataset", "path": str(tmp_path / "hfimgs"), "image_field": "image",
                              "label_field": "label"})]:
        ds = actlake.open_dataset(actlake.extract({**base, "data": data, "out": str(tmp_path / name)}))
        assert ds.num_rows == ref.num_rows == 5 * 17
        rows = np.arange(ds.num_rows)
        assert torch.equal(ds.take(rows)["layers.1"], ref.take(rows)["layers.1"])
        p, q = ds.provenance(rows), ref.provenance(rows)
        for col in ("image_id", "patch_row", "patch_col", "token_type", "label"):
            assert p.column(col).to_pylist() == q.column(col).to_pylist(), col


def test_text_arrow_and_hf_folder(tmp_path, text_corpus):
    import datasets

    docs = [p.read_text() for p in sorted(text_corpus.iterdir())]
    t = pa.table({"body": docs, "n": list(range(len(docs)))})
    with pa.OSFile(str(tmp_path / "docs.arrow"), "wb") as f, pa.ipc.new_file(f, t.schema) as w:
        w.write_table(t)
    datasets.Dataset.from_dict({"body": docs}).save_to_disk(str(tmp_path / "hfdocs"))
    for spec in (SourceSpec(type="arrow", path=str(tmp_path / "docs.arrow"), text_field="body"),
                 SourceSpec.from_string(str(tmp_path / "hfdocs")).model_copy(update={"text_field": "body"})):
        assert [d.text for d in iter_docs(spec)] == docs
    assert SourceSpec.from_string(str(tmp_path / "hfdocs")).type == "hf-dataset"
    with pytest.raises(SourceError, match="no text column 'text'"):
        list(iter_docs(SourceSpec(type="arrow", path=str(tmp_path / "docs.arrow"))))
    with pytest.raises(SourceError, match="not strings"):
        list(iter_docs(SourceSpec(type="arrow", path=str(tmp_path / "docs.arrow"), text_field="n")))


def test_undecodable_image_is_a_clear_error(tmp_path, tiny_vit, image_folder):
    from actlake.workers.capture_vision import load_images
    from actlake.workers.models import load_model

    imgs = _images(image_folder)
    pq.write_table(pa.table({"img": [imgs[0][0], b"not an image"]}), tmp_path / "bad.parquet")
    items = list_images(SourceSpec(type="parquet", path=str(tmp_path / "bad.parquet"), image_field="img"))
    assert len(items) == 2
    lm = load_model(str(tiny_vit), None, "float32", "cpu", vision=True)
    assert load_images(lm, [items[0].path]).shape == (1, 3, 32, 32)
    with pytest.raises(SourceError, match="cannot decode image"):
        load_images(lm, [items[1].path])
