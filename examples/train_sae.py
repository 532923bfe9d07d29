"""Train a sparse autoencoder (TopK, or ReLU + L1) on one hook of an actlake dataset.

    python examples/train_sae.py ./actlake-data/demo --hook model.layers.9 --steps 2000 \
        --checkpoint runs/sae.pt          # re-running the same command resumes from runs/sae.pt

(``./actlake-data/demo`` is what ``actlake extract`` with no arguments writes; its hooks are
``model.layers.9`` and ``model.layers.6.mlp.down_proj:input``.)

It prints reconstruction MSE, normalized MSE (fraction of variance unexplained), L0 and the
fraction of dead latents (never fired in the last --dead-window tokens).  The data stream's
``state_dict()`` is saved with the SAE, so a resumed run continues with exactly the batches an
uninterrupted run would have seen.  Dead latents are resampled from ``ds.sample`` (side samples
drawn outside the training stream) when the dataset offers it.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import time
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn

import actlake


@dataclasses.dataclass
class TrainConfig:
    uri: str
    hook: str | None = None          # default: the dataset's only hook
    arch: str = "topk"               # "topk" or "relu" (ReLU + L1 penalty)
    expansion: int = 8               # latents = expansion * input width
    k: int = 32                      # active latents per row (topk)
    l1: float = 2e-2                 # L1 coefficient (relu), on the variance-normalized loss
    lr: float = 1e-3
    batch_size: int = 4096
    steps: int = 1000
    seed: int = 0
    device: str = "cpu"
    log_every: int = 100
    dead_window: int = 1_000_000     # tokens without firing after which a latent counts as dead
    resample_every: int = 0          # steps between dead-latent resamplings (0: never)
    resample_rows: int = 16384       # side-sample size for resampling
    checkpoint: str | None = None
    checkpoint_every: int = 500


class SAE(nn.Module):
    """x ≈ W_dec·f(W_enc·(x − b_dec) + b_enc) + b_dec, with unit-norm decoder rows.

    Unit rows keep the L1 penalty meaningful (it cannot be dodged by shrinking codes)."""

    def __init__(self, d_in: int, d_sae: int, arch: str, k: int):
        super().__init__()
        if arch not in ("topk", "relu"):
            raise ValueError(f"arch must be 'topk' or 'relu', got {arch!r}")
        self.arch, self.k = arch, k
        w = torch.randn(d_sae, d_in)
        w /= w.norm(dim=1, keepdim=True)
        self.W_dec = nn.Parameter(w)
        # tied init starts near a sensible solution; ReLU codes start small, else the first
        # reconstructions sum half of all latents and overshoot badly
        self.W_enc = nn.Parameter(w.t().clone() * (1.0 if arch == "topk" else 0.1))
        self.b_enc = nn.Parameter(torch.zeros(d_sae))
        self.b_dec = nn.Parameter(torch.zeros(d_in))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        pre = (x - self.b_dec) @ self.W_enc + self.b_enc
        if self.arch == "relu":
            return torch.relu(pre)
        vals, idx = pre.topk(self.k, dim=-1)
        return torch.zeros_like(pre).scatter_(-1, idx, torch.relu(vals))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.encode(x)
        return f @ self.W_dec + self.b_dec, f

    @torch.no_grad()
    def normalize_decoder(self) -> None:
        self.W_dec /= self.W_dec.norm(dim=1, keepdim=True).clamp_min(1e-8)


def _rows(batch: dict[str, torch.Tensor], hook: str, device: str) -> torch.Tensor:
    """One hook's batch as float32 [B, d] (per-row shapes such as heads × d_head are flattened)."""
    x = batch[hook]
    return x.reshape(x.shape[0], -1).to(device=device, dtype=torch.float32)


@torch.no_grad()
def fit_scale(sae: SAE, x: torch.Tensor) -> float:
    """From a fresh run's first batch ``x`` [B, d]: the scale s with E‖x/s‖² = d (the SAE always sees
    x / s), and ``b_dec`` started at the batch mean / s.  Returns s."""
    scale = float(x.pow(2).sum(1).mean().div(x.shape[1]).sqrt().clamp_min(1e-8))
    sae.b_dec.copy_(x.mean(0) / scale)
    return scale


@torch.no_grad()
def resample_dead(sae: SAE, opt: torch.optim.Adam, dead: torch.Tensor, x: torch.Tensor, scale: float) -> int:
    """Point dead latents at inputs the SAE reconstructs worst (sampled ∝ squared error)."""
    idx = dead.nonzero().squeeze(1)
    if len(idx) == 0:
        return 0
    x = x / scale
    err = (sae(x)[0] - x).pow(2).sum(1)
    pick = torch.multinomial(err + 1e-12, len(idx), replacement=len(idx) > len(x))
    d = x[pick] - sae.b_dec
    d /= d.norm(dim=1, keepdim=True).clamp_min(1e-8)
    alive = ~dead
    enc_norm = sae.W_enc[:, alive].norm(dim=0).mean() if alive.any() else torch.tensor(1.0)
    sae.W_dec[idx] = d
    sae.W_enc[:, idx] = d.t() * enc_norm * 0.2
    sae.b_enc[idx] = 0.0
    for p in (sae.W_dec, sae.W_enc, sae.b_enc):  # forget Adam moments of the reset latents
        for m in ("exp_avg", "exp_avg_sq"):
            if m in opt.state.get(p, {}):
                if p is sae.W_enc:
                    opt.state[p][m][:, idx] = 0.0
                else:
                    opt.state[p][m][idx] = 0.0
    return len(idx)


def train(cfg: TrainConfig, log: Callable[[str], None] = print) -> list[dict[str, float]]:
    """Train (or resume) and return the logged metrics, one dict per logging step."""
    torch.manual_seed(cfg.seed)
    ds = actlake.open_dataset(cfg.uri)
    hook = cfg.hook or (next(iter(ds.hooks)) if len(ds.hooks) == 1 else None)
    if hook is None:
        raise SystemExit(f"--hook is required; this dataset has {list(ds.hooks)}")
    d_in = 1
    for n in ds.hooks[hook]["shape"]:
        d_in *= int(n)
    sae = SAE(d_in, cfg.expansion * d_in, cfg.arch, cfg.k).to(cfg.device)
    opt = torch.optim.Adam(sae.parameters(), lr=cfg.lr)
    state: dict[str, Any] | None = None
    if cfg.checkpoint and os.path.exists(cfg.checkpoint):
        state = torch.load(cfg.checkpoint, map_location=cfg.device, weights_only=False)
        sae.load_state_dict(state["sae"])
        opt.load_state_dict(state["opt"])
        log(f"resumed {cfg.checkpoint} at step {state['step']}")
    step = state["step"] if state else 0
    epoch = state["epoch"] if state else 0
    since_fired = state["since_fired"] if state else torch.zeros(sae.W_dec.shape[0], dtype=torch.long)
    since_fired = since_fired.to(cfg.device)
    scale: float | None = state["scale"] if state else None  # fixed input scale: E‖x/scale‖² = d_in
    if state:
        torch.set_rng_state(state["rng"])  # CPU resampling draws continue as if never interrupted
    holder: dict[str, Any] = {}  # the live stream, whose state_dict goes into checkpoints

    def stream(ep: int, resume: dict[str, Any] | None = None) -> Iterator[dict[str, torch.Tensor]]:
        s = ds.batches(cfg.batch_size, hooks=[hook], shuffle=True, seed=cfg.seed, epoch=ep, device=cfg.device)
        if len(s) == 0:
            raise SystemExit(f"dataset has {ds.num_rows} rows, fewer than one batch of {cfg.batch_size}")
        if resume is not None:
            s.load_state_dict(resume)
        holder["stream"] = s
        return iter(s)

    it = stream(epoch, state["stream"] if state else None)

    def save() -> None:
        tmp = f"{cfg.checkpoint}.tmp"
        os.makedirs(os.path.dirname(os.path.abspath(cfg.checkpoint)), exist_ok=True)
        torch.save({"sae": sae.state_dict(), "opt": opt.state_dict(), "step": step, "epoch": epoch,
                    "stream": holder["stream"].state_dict(), "since_fired": since_fired.cpu(), "scale": scale,
                    "rng": torch.get_rng_state(), "config": dataclasses.asdict(cfg)}, tmp)
        os.replace(tmp, cfg.checkpoint)  # atomic: a crash mid-save leaves the previous checkpoint

    history: list[dict[str, float]] = []
    acc, n_acc = dict.fromkeys(("mse", "fvu", "l0"), 0.0), 0  # sums over the current logging window
    t0 = time.perf_counter()
    while step < cfg.steps:
        batch = next(it, None)
        if batch is None:  # epoch done: the next one is a fresh permutation
            epoch += 1
            it = stream(epoch)
            continue
        x = _rows(batch, hook, cfg.device)
        if scale is None:  # first batch of a fresh run: fix the scale, start b_dec at the mean
            scale = fit_scale(sae, x)
        x = x / scale
        x_hat, f = sae(x)
        mse = (x_hat - x).pow(2).sum(1).mean()
        var = (x - x.mean(0)).pow(2).sum(1).mean()
        loss = mse / var if cfg.arch == "topk" else mse / var + cfg.l1 * f.abs().sum(1).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sae.normalize_decoder()
        step += 1
        with torch.no_grad():
            fired = (f > 0).any(0)
            since_fired += x.shape[0]
            since_fired[fired] = 0
            acc["mse"] += float(mse) * scale ** 2 / d_in  # per-element MSE in the data's own units
            acc["fvu"] += float(mse / var)
            acc["l0"] += float((f > 0).sum(1).float().mean())
            n_acc += 1
        seen = step * cfg.batch_size
        dead = since_fired >= min(cfg.dead_window, seen)
        if cfg.resample_every and step % cfg.resample_every == 0 and step < cfg.steps:
            if hasattr(ds, "sample"):  # side rows, drawn without disturbing the training stream
                n_side = min(cfg.resample_rows, ds.num_rows)
                side = _rows(ds.sample(n_side, seed=cfg.seed + step, hooks=[hook]), hook, cfg.device)
                n = resample_dead(sae, opt, dead, side, scale)
                since_fired[dead] = 0
                log(f"step {step}: resampled {n} dead latents")
            elif step == cfg.resample_every:
                log("this actlake version has no ds.sample(); dead-latent resampling is skipped")
        if step % cfg.log_every == 0 or step == cfg.steps:
            row = {"step": step, **{k: v / n_acc for k, v in acc.items()}, "dead": float(dead.float().mean()),
                   "rows_per_s": n_acc * cfg.batch_size / (time.perf_counter() - t0)}
            history.append(row)
            log(f"step {step:>7}  mse {row['mse']:.4g}  nmse {row['fvu']:.4f}  L0 {row['l0']:.1f}  "
                f"dead {row['dead']:.3f}  {row['rows_per_s']:,.0f} rows/s")
            acc, n_acc = dict.fromkeys(acc, 0.0), 0
            t0 = time.perf_counter()
        if cfg.checkpoint and (step % cfg.checkpoint_every == 0 or step == cfg.steps):
            save()
    return history


def parse_args(argv: list[str] | None = None) -> TrainConfig:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("uri", help="dataset path or URL (s3://, gs://)")
    p.add_argument("--hook", help="hook to train on (default: the only one)")
    p.add_argument("--arch", choices=["topk", "relu"], default="topk")
    p.add_argument("--expansion", type=int, default=8, help="latents per input dimension")
    p.add_argument("--k", type=int, default=32, help="active latents per row (topk)")
    p.add_argument("--l1", type=float, default=2e-2, help="L1 coefficient (relu)")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--batch-size", type=int, default=4096)
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--log-every", type=int, default=100)
    p.add_argument("--dead-window", type=int, default=1_000_000, help="tokens; unfired this long = dead")
    p.add_argument("--resample-every", type=int, default=0, help="steps between resamplings (0: off)")
    p.add_argument("--resample-rows", type=int, default=16384)
    p.add_argument("--checkpoint", help="SAE + optimizer + stream state; resumed from if it exists")
    p.add_argument("--checkpoint-every", type=int, default=500)
    a = p.parse_args(argv)
    return TrainConfig(**{f.name: getattr(a, f.name) for f in dataclasses.fields(TrainConfig)})


def main(argv: list[str] | None = None) -> None:
    train(parse_args(argv))


if __name__ == "__main__":
    main()
