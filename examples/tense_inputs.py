"""Maximally tense inputs: the images that drive pre-activation conv (MLP) values most positive and
most negative, for units and for directions, with spatial maps.

    python examples/tense_inputs.py --out runs/tense --quick        # ~1 min on 2 CPU cores
    python examples/tense_inputs.py --out runs/tense --model /models/convnext-tiny-224 \\
        --hook encoder.stages.2.layers.5:pre --images /data/imagenet-val

Steps:
1. ``actlake extract`` the pre-activation values (``:pre``, the input of the block's activation: the
   inverted-bottleneck MLP of a ConvNeXt block, H·W rows of width 4·C per image) of a ConvNeXt
   (config-built tiny one unless ``--model``) over real photos (scikit-image samples, crops, flips).
2. ``ds.query.stats``: per-unit min/max/mean and the fraction of negative values; the units with the
   most negative minimum.
3. Directions: the top ``--pcs`` principal components (``ds.query.pca``) and ``--random`` random unit
   directions, besides the ``--units`` most negative units.
4. Per unit / direction: ``ds.query.topk`` and ``ds.query.bottomk`` (``direction=``) → top/bottom
   images (one row per image, the best patch), each with its spatial map of the projection
   (``ds.query.fetch(image_id=i)``), and which image labels drive the most negative values.

Full scale: ``actlake extract --model /models/convnext-tiny-224 --data /data/imagenet-val --hooks
'encoder.stages.*.layers.*:pre' --out s3://bucket/convnext-pre --address ray://head:10001`` (one
job per stage, as stages have different H·W), then ``python examples/tense_inputs.py --store
s3://bucket/convnext-pre --hook encoder.stages.2.layers.5:pre --images /data/imagenet-val --out runs/t``;
top/bottom-k and stats are streaming passes (``address=`` runs them on Ray).
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


def per_image(table, n: int) -> list[dict]:
    """The first row of each image in a top/bottom-k table (already sorted best first), up to n
    (the tables come from ``dedup="context"`` queries, which already keep one row per image)."""
    seen, rows = set(), []
    for r in table.to_pylist():
        if r["image_id"] not in seen:
            seen.add(r["image_id"])
            rows.append(r)
        if len(rows) == n:
            break
    return rows


def spatial_map(ds, hook: str, image_id: int, vec: np.ndarray | None, unit: int | None) -> np.ndarray:
    """[H, W] map of one image's values on a unit or a direction (NaN where no row)."""
    t = ds.query.fetch(image_id=image_id, hooks=[hook])
    x = np.asarray(t.column(hook).to_pylist(), dtype=np.float64)
    v = x[:, unit] if unit is not None else x @ vec
    r, c = t.column("patch_row").to_numpy(), t.column("patch_col").to_numpy()
    m = np.full((r.max() + 1, c.max() + 1), np.nan)
    m[r, c] = v
    return m


def build_parser() -> argparse.ArgumentParser:
    """The command line (every option with its default in --help)."""
    p = C.parser(__doc__, quick="tiny ConvNeXt (14×14 maps), 26 images")
    p.add_argument("--model", help="ConvNeXt folder / HF id (default: config-built tiny ConvNeXt)")
    p.add_argument("--hook", default="encoder.stages.1.layers.2:pre")
    p.add_argument("--images", help="ImageFolder (default: scikit-image photos)")
    p.add_argument("--store", help="analyse this existing store")
    p.add_argument("--units", type=int, default=2, help="most negative units to show")
    p.add_argument("--pcs", type=int, default=2, help="principal components as directions")
    p.add_argument("--random", type=int, default=1, help="random unit directions")
    p.add_argument("--top", type=int, default=4, help="images per side (top / bottom)")
    return p


def main(argv: list[str] | None = None) -> dict:
    a = build_parser().parse_args(argv)
    out = Path(a.out)
    rep = C.Report(out, "maximally tense inputs")
    images = a.images or str(C.image_folder(out, 24))
    uri = a.store or C.extract_images(a.model or str(C.tiny_convnext(out)), [a.hook], images, out / "store")
    rep.lap("extract")
    ds = actlake.open_dataset(uri)
    hook = a.hook
    st = ds.query.stats(hook, threshold=0.0)
    d = len(st["min"])
    rep.add("rows", ds.num_rows)
    rep.add("units", d)
    rep.add("frac_negative", float(1 - (st["active"].sum() / st["count"].sum())))
    units = [int(u) for u in np.argsort(st["min"])[: a.units]]
    rep.add("most_negative_units", units)
    rep.add("their_min", [float(st["min"][u]) for u in units])
    pca = ds.query.pca(hook, a.pcs)
    rng = np.random.default_rng(0)
    rnd = rng.standard_normal((a.random, d))
    rnd /= np.linalg.norm(rnd, axis=1, keepdims=True)
    dirs = np.concatenate([pca.components, rnd]).astype(np.float32)
    names = [f"pc{i}" for i in range(a.pcs)] + [f"random{i}" for i in range(a.random)]
    np.save(out / "directions.npy", dirs)
    rep.add("directions", names)
    rep.add("pc_explained_variance_ratio", [float(x) for x in pca.explained_variance_ratio])
    queries = [(f"unit{u}", {"unit": u}) for u in units] + [(n, {"direction": dirs[i]}) for i, n in enumerate(names)]
    files = C.folder_images(images)
    result = {}
    for name, sel in queries:
        top = ds.query.topk(hook, k=a.top, context=0, dedup="context", **sel)  # one row per image (its extreme)
        bot = ds.query.bottomk(hook, k=a.top, context=0, dedup="context", **sel)
        t_rows, b_rows = per_image(top, a.top), per_image(bot, a.top)
        result[name] = {"top_images": [r["image_id"] for r in t_rows], "top_values": [r["value"] for r in t_rows],
                        "bottom_images": [r["image_id"] for r in b_rows],
                        "bottom_values": [r["value"] for r in b_rows],
                        "bottom_labels": [r.get("label") for r in b_rows],
                        "top_labels": [r.get("label") for r in t_rows]}
        fig, axs = plt.subplots(2, 2 * a.top, figsize=(1.5 * 2 * a.top, 3.2), squeeze=False)
        for side, rows in enumerate((t_rows, b_rows)):
            for j, r in enumerate(rows):
                from PIL import Image

                ax_im, ax_map = axs[side, 2 * j], axs[side, 2 * j + 1]
                if r["image_id"] < len(files):
                    ax_im.imshow(Image.open(files[r["image_id"]]).convert("RGB").resize((64, 64)))
                m = spatial_map(ds, hook, r["image_id"], sel.get("direction"), sel.get("unit"))
                ax_map.imshow(m, cmap="RdBu_r", vmin=-np.nanmax(np.abs(m)), vmax=np.nanmax(np.abs(m)))
                ax_map.plot(r["patch_col"], r["patch_row"], "k+")
                ax_im.set_title(f"{'top' if side == 0 else 'bottom'} {r['value']:.2f}", fontsize=7)
                ax_im.axis("off"), ax_map.axis("off")
        fig.suptitle(f"{hook} {name}: top (row 1) / bottom (row 2) images and maps", fontsize=8)
        rep.savefig(fig, f"tense_{name}.png", f"{name}: top and bottom images with spatial maps (+ = the row)")
    rep.add("queries", result)
    rep.lap("topk_bottomk_maps")
    neg = ds.query.stats(hook, unit=units, by="label") if "label" in ds.manifest.provenance_columns else {}
    rep.add("min_by_label", {str(g): [float(x) for x in v["min"]] for g, v in neg.items()})
    if neg:
        labels = sorted(neg, key=str)
        fig, ax = plt.subplots(figsize=(5, 3))
        for i, u in enumerate(units):
            ax.bar(np.arange(len(labels)) + 0.4 * i, [neg[g]["min"][i] for g in labels], 0.4, label=f"unit {u}")
        ax.set(xticks=np.arange(len(labels)) + 0.2, xticklabels=[str(g) for g in labels], ylabel="min pre-activation",
               title="which inputs drive the most negative values")
        ax.legend()
        rep.savefig(fig, "most_negative_by_label.png", "minimum of the most negative units per image label")
    return rep.finish()


if __name__ == "__main__":
    main()
