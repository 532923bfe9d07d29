"""Null codes in vision models: the sparsest (highest-kurtosis) patch token of every image, their
shared direction ("the code"), and how every token relates to it, layer by layer.

    python examples/null_codes.py --out runs/null-codes --quick          # ~1 min on 2 CPU cores
    python examples/null_codes.py --out runs/null-codes \\
        --vit /models/vit-base-patch16-224 --convnext /models/convnext-tiny-224 --images /data/imagenet-val

Steps (for a ViT and a ConvNeXt; config-built tiny ones unless you point at real weights):
1. ``actlake extract`` every layer's tokens over real photos (scikit-image's samples with crops and
   flips, ≥ 24 images; or ``--images``, an ImageFolder).  ViT: ``blocks.*.hook_resid_post``
   (CLS excluded through the provenance column ``token_type``); ConvNeXt: ``encoder.stages.1.layers.*``
   (H·W rows per image).
2. Per layer: excess kurtosis of every patch token over its d channels (checked against
   ``ds.query.stats(hook)["row_kurtosis"]``), its distribution (``kurtosis_layers.png``).
3. Per layer: the sparsest token of every image; their pairwise Pearson correlations; their mean
   (of the standardized vectors) is the code; the code's correlation with each of them.
4. Cosine of every token with the code, binned by kurtosis (``cos_vs_kurtosis.png``); token norm vs
   kurtosis (``norm_vs_kurtosis.png``).
5. ``ds.query.pca(hook, 8).cosine(code)``: cosine of the code with PC1 per layer.
6. Maps (14×14 with the defaults) of kurtosis and cosine-with-code per image for the last layer
   (``maps/<model>_<image>.png``).

Full scale: extract on a cluster into S3 and point this script's analysis at it — e.g.
``actlake extract --model /models/vit-base-patch16-224 --data /data/imagenet-val --hooks
'blocks.*.hook_resid_post' --out s3://bucket/vit-null --address ray://head:10001 --dtype bf16``, then
``python examples/null_codes.py --out runs/nc --store-vit s3://bucket/vit-null``; the per-layer
statistics and PCA run as streaming ``ds.query`` passes (add ``address=`` to run them on Ray); the
token-level steps read one layer at a time (``--max-rows`` caps them).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402
from _common import plt  # noqa: E402

import actlake  # noqa: E402


def standardize(v: np.ndarray) -> np.ndarray:
    """Rows centred and scaled to unit L2 norm: dot products of such rows are Pearson correlations."""
    v = v - v.mean(axis=-1, keepdims=True)
    return v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-30)


def sparsest_code(x: np.ndarray, kurt: np.ndarray, image_id: np.ndarray) -> dict[str, np.ndarray]:
    """Sparsest token per image and the code they share.

    Args: x float [n, d] tokens; kurt [n] their excess kurtosis; image_id [n].
    Returns: ``rows`` [m] (index of each image's max-kurtosis token), ``images`` [m], ``pairwise``
    [m, m] Pearson correlations of those tokens, ``code`` [d] (mean of the standardized tokens),
    ``code_corr`` [m] Pearson correlation of the code with each.  Since the standardized tokens are unit
    vectors, mean(code_corr) = sqrt(1/m + (m−1)/m · mean off-diagonal pairwise)."""
    images = np.unique(image_id)
    rows = np.array([np.flatnonzero(image_id == i)[np.argmax(kurt[image_id == i])] for i in images])
    z = standardize(x[rows].astype(np.float64))
    pairwise = z @ z.T
    code = z.mean(0)
    code_corr = standardize(code[None])[0] @ z.T
    return {"rows": rows, "images": images, "pairwise": pairwise, "code": code, "code_corr": code_corr}


def analyse_model(name: str, uri: str, rep: C.Report, max_rows: int, n_maps: int) -> dict:
    ds = actlake.open_dataset(uri)
    n = min(ds.num_rows, max_rows)
    prov = ds.provenance(np.arange(n))
    ttype = np.asarray(prov.column("token_type").to_pylist()) if "token_type" in prov.column_names else None
    keep = np.ones(n, bool) if ttype is None else ttype == "patch"
    img = prov.column("image_id").to_numpy()[keep]
    pr, pc = prov.column("patch_row").to_numpy()[keep], prov.column("patch_col").to_numpy()[keep]
    hooks = list(ds.hooks)
    out: dict = {"layers": hooks, "images": int(len(np.unique(img))), "tokens_per_layer": int(keep.sum())}
    kurts, coscode, pc1, mean_pair, code_corr, agree = [], [], [], [], [], []
    fig_n, ax_n = plt.subplots(1, len(hooks), figsize=(3.2 * len(hooks), 3), squeeze=False)
    fig_c, ax_c = plt.subplots(1, len(hooks), figsize=(3.2 * len(hooks), 3), squeeze=False)
    last = None
    for li, h in enumerate(hooks):
        xall = ds.take(np.arange(n), hooks=[h])[h].float().reshape(n, -1).numpy()
        kall = C.excess_kurtosis(xall)
        x, k = xall[keep], kall[keep]
        st = ds.query.stats(h)["row_kurtosis"]  # streaming, all rows (CLS included)
        agree.append(abs(float(st["mean"]) - float(kall.mean())) if n == ds.num_rows else None)
        s = sparsest_code(x, k, img)
        cos = C.cosine(x, s["code"])
        pca = ds.query.pca(h, min(8, x.shape[1]))
        kurts.append(k)
        coscode.append(cos)
        pc1.append(float(abs(pca.cosine(s["code"])[0])))
        m = len(s["rows"])
        mean_pair.append(float((s["pairwise"].sum() - m) / (m * (m - 1))))
        code_corr.append(float(s["code_corr"].mean()))
        norm = np.linalg.norm(x, axis=1)
        ax_n[0, li].scatter(k, norm, s=2, alpha=0.3)
        ax_n[0, li].set(title=h, xlabel="kurtosis", ylabel="‖x‖" if li == 0 else "")
        edges = np.quantile(k, np.linspace(0, 1, 11))
        b = np.clip(np.searchsorted(edges, k, side="right") - 1, 0, 9)
        ax_c[0, li].plot([k[b == j].mean() for j in range(10)], [cos[b == j].mean() for j in range(10)], "o-")
        ax_c[0, li].set(title=h, xlabel="kurtosis (decile mean)", ylabel="cos(token, code)" if li == 0 else "")
        last = (h, k, cos, s)
    rep.savefig(fig_n, f"{name}_norm_vs_kurtosis.png", f"{name}: token norm vs kurtosis per layer")
    rep.savefig(fig_c, f"{name}_cos_vs_kurtosis.png", f"{name}: cosine with the code, by kurtosis decile")
    fig, ax = plt.subplots(figsize=(1.2 * len(hooks) + 3, 3.5))
    ax.violinplot([np.log10(np.maximum(kk + 3, 1e-3)) for kk in kurts], showmedians=True)
    ax.set(xticks=range(1, len(hooks) + 1), xticklabels=[h.split(".")[1] if "." in h else h for h in hooks],
           xlabel="layer", ylabel="log10 kurtosis (raw, = excess + 3)", title=f"{name}: per-token kurtosis")
    rep.savefig(fig, f"{name}_kurtosis_layers.png", f"{name}: per-token kurtosis distribution per layer")
    h, k, cos, s = last
    fig, ax = plt.subplots(figsize=(4, 3.5))
    im = ax.imshow(s["pairwise"], vmin=-1, vmax=1, cmap="RdBu_r")
    fig.colorbar(im)
    ax.set(title=f"{name} {h}: sparsest tokens' correlations", xlabel="image", ylabel="image")
    rep.savefig(fig, f"{name}_sparsest_corr.png", f"{name}: pairwise correlation of the sparsest tokens (last layer)")
    gh, gw = int(pr.max()) + 1, int(pc.max()) + 1
    for i in np.unique(img)[:n_maps]:
        sel = img == i
        km, cm = np.full((gh, gw), np.nan), np.full((gh, gw), np.nan)
        km[pr[sel], pc[sel]], cm[pr[sel], pc[sel]] = k[sel], cos[sel]
        fig, axs = plt.subplots(1, 2, figsize=(6, 2.8))
        a0 = axs[0].imshow(km, cmap="magma")
        a1 = axs[1].imshow(cm, cmap="RdBu_r", vmin=-1, vmax=1)
        fig.colorbar(a0, ax=axs[0]), fig.colorbar(a1, ax=axs[1])
        axs[0].set_title("kurtosis"), axs[1].set_title("cos(token, code)")
        fig.suptitle(f"{name} image {int(i)} ({gh}×{gw}), {h}")
        rep.savefig(fig, f"maps/{name}_image{int(i)}.png", f"{name}: maps of image {int(i)}")
    out.update({"grid": [gh, gw], "kurtosis_median": [float(np.median(kk)) for kk in kurts],
                "kurtosis_p99": [float(np.quantile(kk, 0.99)) for kk in kurts],
                "sparsest_mean_pairwise_corr": mean_pair, "code_corr_with_sparsest": code_corr,
                "code_cos_pc1": pc1, "row_kurtosis_vs_query_stats_absdiff": agree,
                "cos_code_top_decile": float(cos[k >= np.quantile(k, 0.9)].mean()),
                "cos_code_bottom_decile": float(cos[k <= np.quantile(k, 0.1)].mean())})
    np.save(rep.out / f"{name}_code.npy", s["code"])
    np.save(rep.out / f"{name}_sparsest_rows.npy", np.flatnonzero(keep)[s["rows"]])
    return out


def build_parser() -> argparse.ArgumentParser:
    """The command line (every option with its default in --help)."""
    p = C.parser(__doc__, quick="smallest setting: tiny models, 24+ images")
    p.add_argument("--vit", help="ViT model folder / HF id (default: a config-built tiny ViT, 14×14 patches)")
    p.add_argument("--convnext", help="ConvNeXt model folder / HF id (default: a config-built tiny one)")
    p.add_argument("--images", help="ImageFolder of images (default: scikit-image photos, crops and flips)")
    p.add_argument("--store-vit", help="analyse this existing ViT store instead of extracting")
    p.add_argument("--store-convnext", help="analyse this existing ConvNeXt store instead of extracting")
    p.add_argument("--max-images", type=int, default=None)
    p.add_argument("--max-rows", type=int, default=2_000_000, help="rows read per layer for token-level steps")
    p.add_argument("--maps", type=int, default=None, help="images with maps (default: all; --quick 6)")
    return p


def main(argv: list[str] | None = None) -> dict:
    a = build_parser().parse_args(argv)
    out = Path(a.out)
    rep = C.Report(out, "null codes")
    images = a.images or str(C.image_folder(out, 24))
    maps = a.maps if a.maps is not None else (6 if a.quick else 10_000)
    res = {}
    for name, model, store, hooks in (("vit", a.vit, a.store_vit, ["blocks.*.hook_resid_post"]),
                                      ("convnext", a.convnext, a.store_convnext, ["encoder.stages.1.layers.*"])):
        if store is None:
            model = model or str(C.tiny_vit(out) if name == "vit" else C.tiny_convnext(out))
            store = C.extract_images(model, hooks, images, out / f"store-{name}", max_images=a.max_images)
        rep.lap(f"{name}_extract")
        res[name] = analyse_model(name, store, rep, a.max_rows, maps)
        rep.lap(f"{name}_analysis")
        rep.add(name, res[name])
    return rep.finish()


if __name__ == "__main__":
    main()
