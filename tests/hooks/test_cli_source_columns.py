"""``actlake extract --text-field/--label-field`` choose the columns of a Parquet source from the
command line (no job file); a column that does not exist is one ``error:`` line and nothing written."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

import actlake


def test_text_and_label_columns_from_flags(ray_local, tmp_path, tiny_gpt2, text_corpus):
    docs = [p.read_text()[:400] for p in sorted(text_corpus.iterdir())][:3]
    pq.write_table(pa.table({"body": docs, "topic": ["a", "b", "c"]}), tmp_path / "d.parquet")
    base = [sys.executable, "-m", "actlake.cli", "extract", "--model", str(tiny_gpt2), "--hooks", "transformer.h.0",
            "--data", str(tmp_path / "d.parquet"), "--max-tokens", "48", "--context-len", "16", "--no-progress"]
    r = subprocess.run(base + ["--out", str(tmp_path / "bad"), "--text-field", "nope"], capture_output=True,
                       text=True, timeout=300)
    assert r.returncode != 0 and "nope" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "bad" / "fragments").exists()
    r = subprocess.run(base + ["--out", str(tmp_path / "ds"), "--text-field", "body", "--label-field", "topic"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    ds = actlake.open_dataset(str(tmp_path / "ds"))
    assert ds.manifest.job.data.text_field == "body" and ds.manifest.job.data.label_field == "topic"
    prov = ds.provenance(np.arange(ds.num_rows))
    assert set(prov.column("label").to_pylist()) <= {"a", "b", "c"} and prov.column("label").to_pylist()[0]
