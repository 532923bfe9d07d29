"""Query–key modes: SVD of every head's W_Q·W_Kᵀ and the images that drive each mode.

    python examples/qk_modes.py --out runs/qk --quick          # ~1 min on 2 CPU cores
    python examples/qk_modes.py --out runs/qk --model /models/vit-base-patch16-224 --images /data/val --layer 6

Steps:
1. ``actlake extract`` a ViT (config-built tiny one unless ``--model``) over real photos (scikit-image
   samples, crops and flips; ImageFolder labels person / animal / object / texture), storing the
   attention input of one layer (``blocks.L.ln1.hook_normalized``) and the weights
   ``blocks.L.attn.W_Q`` / ``W_K`` next to it (``--weights``, read back with ``ds.weights(name)``,
   TransformerLens layout (heads, d_model, d_head)).
2. Per head h: ``B_h = W_Q[h] · W_K[h]ᵀ`` (d_model × d_model; the attention score of tokens x, y is
   x·B_h·yᵀ up to biases and 1/√d_head), its SVD ``U S Vᵀ`` (singular value spectrum plot).
3. Projections of the layer inputs on the top ``--modes`` left (query-side) singular vectors of each
   head, written once as a derived hook (``ds.query.project(hook, U[:, :r].T, name="qk_modes_L<L>_r<r>")``,
   float32 [H·r] per row, stored next to the activations): ``ds.query.topk(derived, unit=...,
   dedup="context")`` → the top-8 images per mode (one row per image: its best patch; grid of
   thumbnails), and ``ds.query.stats(derived, by="label")`` → the mean projection per image label and
   per token type (object classes vs texture/background images, CLS vs patches).

Full scale: ``actlake extract --model /models/vit-base-patch16-224 --data /data/imagenet-val
--hooks 'blocks.*.ln1.hook_normalized' --weights 'blocks.*.attn.W_Q,blocks.*.attn.W_K'
--out s3://bucket/vit-qk --address ray://head:10001``, then ``python examples/qk_modes.py --store
s3://bucket/vit-qk --layer 6 --images /data/imagenet-val --out runs/qk`` (the direction queries are
streaming passes; pass ``address=`` to ``ds.query`` calls to run them on Ray).
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


def qk_svd(w_q: np.ndarray, w_k: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per head SVD of ``W_Q[h] @ W_K[h].T``.

    Args: w_q, w_k float [H, d_model, d_head] (TransformerLens layout).
    Returns: U [H, d, d_head], S [H, d_head], Vt [H, d_head, d] (the rank is at most d_head), so that
    ``U[h] * S[h] @ Vt[h] == W_Q[h] @ W_K[h].T``."""
    b = np.einsum("hdk,hek->hde", w_q.astype(np.float64), w_k.astype(np.float64))
    u, s, vt = np.linalg.svd(b, full_matrices=False)
    r = w_q.shape[2]
    return u[:, :, :r], s[:, :r], vt[:, :r, :]


def build_parser() -> argparse.ArgumentParser:
    """The command line (every option with its default in --help)."""
    p = C.parser(__doc__, quick="tiny ViT (4 layers, 4 heads, 14×14 patches), 26 images")
    p.add_argument("--model", help="ViT folder / HF id (default: config-built tiny ViT)")
    p.add_argument("--images", help="ImageFolder (default: scikit-image photos)")
    p.add_argument("--store", help="analyse this existing store (with the hook and weights below)")
    p.add_argument("--layer", type=int, default=2)
    p.add_argument("--modes", type=int, default=3, help="top singular vectors per head")
    p.add_argument("--top", type=int, default=8, help="images per mode")
    return p


def main(argv: list[str] | None = None) -> dict:
    a = build_parser().parse_args(argv)
    out = Path(a.out)
    rep = C.Report(out, "query-key modes")
    hook = f"blocks.{a.layer}.ln1.hook_normalized"
    wq, wk = f"blocks.{a.layer}.attn.W_Q", f"blocks.{a.layer}.attn.W_K"
    images = a.images or str(C.image_folder(out, 24))
    uri = a.store or C.extract_images(a.model or str(C.tiny_vit(out)), [hook], images, out / "store",
                                      weights=[wq, wk])
    rep.lap("extract")
    ds = actlake.open_dataset(uri)
    w_q, w_k = ds.weights(wq).numpy(), ds.weights(wk).numpy()
    u, s, vt = qk_svd(w_q, w_k)
    n_heads = w_q.shape[0]
    np.savez(out / "qk_svd.npz", U=u, S=s, Vt=vt)
    rep.add("heads", n_heads)
    rep.add("d_model", int(w_q.shape[1]))
    rep.add("top_singular_value", [float(x) for x in s[:, 0]])
    rep.add("top_mode_energy", [float(x) for x in (s[:, 0] ** 2 / (s ** 2).sum(1))])
    fig, ax = plt.subplots(figsize=(5, 3.2))
    for h in range(n_heads):
        ax.semilogy(s[h], "o-", label=f"head {h}")
    ax.set(xlabel="mode", ylabel="singular value", title=f"SVD of W_Q·W_Kᵀ, layer {a.layer}")
    ax.legend(fontsize=7)
    rep.savefig(fig, "singular_values.png", "singular values of every head's W_Q·W_Kᵀ")
    r = min(a.modes, u.shape[2])
    dirs = np.concatenate([u[h, :, :r].T for h in range(n_heads)]).astype(np.float32)  # [H·r, d]
    np.save(out / "mode_directions.npy", dirs)
    derived = f"qk_modes_L{a.layer}_r{r}"
    if derived not in ds.hooks:  # a re-run into the same --out reuses the store and its derived hook
        ds.query.project(hook, dirs, name=derived)
    units = list(range(len(dirs)))
    top = ds.query.topk(derived, unit=units, k=a.top, context=0, dedup="context")  # one row per image
    rep.add("derived_hook", derived)
    rep.lap("svd_project_topk")
    paths = {i: str(q) for i, q in enumerate(C.folder_images(images))}
    u_col = top.column("unit").to_numpy()
    top_images = {f"h{j // r}m{j % r}": [int(i) for i in top.filter(u_col == j).column("image_id").to_numpy()]
                  for j in units}
    rep.add("top_images", top_images)
    rep.add("top_value_per_mode", [float(top.filter(u_col == j).column("value").to_numpy()[0]) for j in units])
    if paths:
        from PIL import Image

        n_show = min(len(dirs), 6)
        fig, axs = plt.subplots(n_show, a.top, figsize=(1.2 * a.top, 1.3 * n_show), squeeze=False)
        for j in range(n_show):
            for c in range(a.top):
                axs[j, c].axis("off")
                ims = top_images[f"h{j // r}m{j % r}"]
                if c < len(ims):
                    axs[j, c].imshow(Image.open(paths[ims[c]]).convert("RGB").resize((64, 64)))
            axs[j, 0].set_title(f"head {j // r} mode {j % r}", fontsize=7, loc="left")
        rep.savefig(fig, "top_images.png", f"top-{a.top} images per mode (first {n_show} modes)")
    by_label = ds.query.stats(derived, by="label") if "label" in ds.manifest.provenance_columns else {}
    by_type = ds.query.stats(derived, by="token_type")
    rep.lap("stats_by_label")
    rep.add("mean_projection_by_label", {str(k): [round(float(x), 4) for x in v["mean"]] for k, v in by_label.items()})
    rep.add("mean_projection_by_token_type", {str(k): [round(float(x), 4) for x in v["mean"]]
                                              for k, v in by_type.items()})
    if by_label:
        labels = sorted(by_label, key=str)
        mat = np.stack([by_label[k]["mean"] for k in labels])
        fig, ax = plt.subplots(figsize=(0.35 * len(dirs) + 2, 0.4 * len(labels) + 1.5))
        im = ax.imshow(mat, cmap="RdBu_r", vmin=-np.abs(mat).max(), vmax=np.abs(mat).max(), aspect="auto")
        fig.colorbar(im)
        ax.set(yticks=range(len(labels)), yticklabels=[str(x) for x in labels], xlabel="head·mode",
               title="mean projection per image label")
        rep.savefig(fig, "projection_by_label.png", "mean projection on each mode per label (objects vs textures)")
    return rep.finish()


if __name__ == "__main__":
    main()
