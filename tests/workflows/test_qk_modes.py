"""examples/qk_modes.py on --quick: the SVD reconstructs W_Q·W_Kᵀ of the stored weights, the projections
are stored as a derived hook equal to numpy's, and the top images per mode and the label means match numpy
on the loaded activations."""
from __future__ import annotations

import numpy as np
import pytest
from wfutil import check_report, load

import actlake

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("qk")
    q = load("qk_modes")
    return q, out, q.main(["--out", str(out), "--quick"])


def test_svd_and_projections(run):
    q, out, fig = run
    s = check_report(out, fig)
    ds = actlake.open_dataset(str(out / "store"))
    w_q, w_k = ds.weights("blocks.2.attn.W_Q").numpy(), ds.weights("blocks.2.attn.W_K").numpy()
    assert w_q.shape == (4, 64, 16) == w_k.shape
    f = np.load(out / "qk_svd.npz")
    for h in range(4):
        np.testing.assert_allclose((f["U"][h] * f["S"][h]) @ f["Vt"][h], w_q[h] @ w_k[h].T, atol=1e-6)
        assert np.all(np.diff(f["S"][h]) <= 1e-12)
    np.testing.assert_allclose(s["top_singular_value"], f["S"][:, 0], rtol=1e-5)
    hook = "blocks.2.ln1.hook_normalized"
    x = ds.take(np.arange(ds.num_rows), hooks=[hook])[hook].float().numpy().reshape(ds.num_rows, -1)
    dirs = np.load(out / "mode_directions.npy")
    proj = x @ dirs.T
    img = ds.provenance(np.arange(ds.num_rows)).column("image_id").to_numpy()
    for j, key in enumerate(s["top_images"]):
        best_per_image = {i: proj[img == i, j].max() for i in np.unique(img)}
        expect = sorted(best_per_image, key=lambda i: -best_per_image[i])[:8]
        assert s["top_images"][key] == expect
        assert s["top_value_per_mode"][j] == pytest.approx(proj[:, j].max(), rel=1e-4)
    der = s["derived_hook"]  # the projections, stored as a derived hook of the same store
    stored = actlake.open_dataset(str(out / "store"))
    assert der in stored.hooks
    v = stored.take(np.arange(ds.num_rows), hooks=[der])[der].float().numpy()
    np.testing.assert_allclose(v, x.astype(np.float64) @ dirs.astype(np.float64).T, rtol=1e-5, atol=1e-5)
    lab = np.asarray(ds.provenance(np.arange(ds.num_rows)).column("label").to_pylist())
    for g, means in s["mean_projection_by_label"].items():
        np.testing.assert_allclose(means, v[lab == g].mean(0), atol=1e-4)
    labels = set(s["mean_projection_by_label"])
    assert {"animal", "object", "person", "texture"} <= labels
    assert set(s["mean_projection_by_token_type"]) == {"cls", "patch"}
