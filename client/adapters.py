"""Thin adapters that feed an actlake batch stream into other SAE trainers' own training loops.

- SAELens (``sae-lens`` ≥ 6): ``SAETrainer(..., data_provider=...)`` takes an iterator of
  activation tensors, ``MultiSAETrainer`` an iterator of ``{hook: tensor}``: ``saelens_data_provider``
  / ``saelens_trainer``.
- dictionary_learning (``dictionary-learning``): ``trainSAE(data, ...)`` takes an iterable of
  activation tensors: ``dictionary_learning_data``.
- EleutherAI sparsify (``eai-sparsify``): ``Trainer(cfg, dataset, model)`` runs a language model and
  trains on the outputs of hooked modules; ``sparsify_trainer`` hands it a stand-in "model" whose
  modules emit the stored activations, so sparsify's unchanged loop trains on the store.

Nothing from a peer package is imported at module import time (only inside the function that needs
it), and nothing here needs Ray.  See docs/trainers.md for usage and limitations.
"""
from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, cast

import torch
from torch import nn

if TYPE_CHECKING:
    from actlake.client.dataset import ActivationDataset


class ActivationIterator:
    """An endless (or ``epochs``-bounded) iterator over shuffled activation batches.

    Peer trainers pull batches with ``next()`` and know nothing of epochs, so a new epoch (a fresh
    permutation) starts when one ends.  One hook (a ``str``) yields ``[B, d]`` tensors, several hooks
    (a list) yield ``{hook: [B, d]}`` dicts; per-row shapes are flattened and cast to ``dtype``
    because SAE trainers expect flat float vectors.  ``state_dict()`` / ``load_state_dict()`` resume
    at the exact batch (O(1), via the stream's own state)."""

    def __init__(self, ds: ActivationDataset, hooks: str | Sequence[str], batch_size: int, *, seed: int = 0,
                 shuffle: bool = True, rank: int = 0, world_size: int = 1, device: str | torch.device | None = None,
                 dtype: torch.dtype | None = torch.float32, epochs: int | None = None, start_epoch: int = 0,
                 **stream_kw: Any):
        self.ds = ds
        self.single = isinstance(hooks, str)
        self.hooks = [hooks] if isinstance(hooks, str) else list(hooks)
        self.batch_size, self.dtype, self.epochs, self.start_epoch = batch_size, dtype, epochs, start_epoch
        self._kw: dict[str, Any] = dict(shuffle=shuffle, seed=seed, rank=rank, world_size=world_size, device=device,
                                        **stream_kw)
        self.epoch = start_epoch
        self._stream: Any = None
        self._it: Iterator[dict[str, torch.Tensor]] | None = None
        self.steps_per_epoch = len(self._new_stream(start_epoch))
        if self.steps_per_epoch == 0:
            raise ValueError(f"{ds.num_rows} rows give no full batch of {batch_size} (per rank)")

    def _new_stream(self, epoch: int) -> Any:
        return self.ds.batches(self.batch_size, hooks=self.hooks, epoch=epoch, drop_last=True, **self._kw)

    def width(self, hook: str) -> int:
        """Flattened per-row width of ``hook`` (the SAE's ``d_in``)."""
        n = 1
        for s in self.ds.hooks[hook]["shape"]:
            n *= int(s)
        return n

    # ---- iteration ----------------------------------------------------------------------------
    def __iter__(self) -> ActivationIterator:
        return self

    def __next__(self) -> torch.Tensor | dict[str, torch.Tensor]:
        while True:
            if self._it is None:
                if self.epochs is not None and self.epoch >= self.start_epoch + self.epochs:
                    raise StopIteration
                if self._stream is None:
                    self._stream = self._new_stream(self.epoch)
                self._it = iter(self._stream)
            batch = next(self._it, None)
            if batch is not None:
                out = {h: self._convert(batch[h]) for h in self.hooks}
                return out[self.hooks[0]] if self.single else out
            self.epoch += 1
            self._it = self._stream = None

    def next_batch(self) -> torch.Tensor | dict[str, torch.Tensor]:
        """Same as ``next(self)``: the method name SAELens' ActivationsStore uses."""
        return next(self)

    def _convert(self, x: torch.Tensor) -> torch.Tensor:
        x = x.reshape(x.shape[0], -1)
        return x if self.dtype is None else x.to(self.dtype)

    # ---- position and resume ------------------------------------------------------------------
    @property
    def position(self) -> tuple[int, int]:
        """(epoch, step within the epoch) of the next batch."""
        step = self._stream.step if self._stream is not None else 0
        return (self.epoch + 1, 0) if step >= self.steps_per_epoch else (self.epoch, step)

    def seek(self, epoch: int, step: int) -> None:
        """Make the next batch the ``step``-th of ``epoch`` (no replay)."""
        self.close()
        self.epoch = epoch
        self._stream = self._new_stream(epoch)
        self._stream.load_state_dict({**self._stream.state_dict(), "step": step})

    def state_dict(self) -> dict[str, Any]:
        epoch, step = self.position
        live = self._stream if epoch == self.epoch else None  # else the next epoch starts fresh
        return {"epoch": epoch, "step": step, "stream": live.state_dict() if live is not None else None}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.close()
        self.epoch = int(state["epoch"])
        if state.get("stream") is not None:
            self._stream = self._new_stream(self.epoch)
            self._stream.load_state_dict(state["stream"])  # also checks it is the same stream

    def close(self) -> None:
        """Stop the background readers of the current epoch (they also stop when garbage-collected)."""
        close = getattr(self._it, "close", None)  # a generator; plain iterators have nothing to stop
        if close is not None:
            close()
        self._it = self._stream = None


# ---- SAELens --------------------------------------------------------------------------------------
def saelens_data_provider(ds: ActivationDataset, hooks: str | Sequence[str], batch_size: int,
                          **kw: Any) -> ActivationIterator:
    """``data_provider`` for SAELens' ``SAETrainer`` (one hook → tensors) or ``MultiSAETrainer``
    (several hooks → ``{hook: tensor}``).  ``batch_size`` must equal the trainer config's
    ``train_batch_size_samples``; ``kw`` goes to :class:`ActivationIterator`."""
    return ActivationIterator(ds, hooks, batch_size, **kw)


def saelens_trainer(ds: ActivationDataset, hook: str, sae: Any, cfg: Any, **kw: Any) -> Any:
    """A ``sae_lens.SAETrainer`` for ``sae`` fed from ``hook``; call ``.fit()`` on it.

    ``cfg`` is a ``sae_lens.config.SAETrainerConfig``; its batch size and device are used for the
    stream.  The provider is ``trainer.data_provider`` (save its ``state_dict()`` with SAELens'
    checkpoints to resume the data where the weights left off).  An unset ``lr_end`` becomes
    ``lr / 10``, the default SAELens' own runner config applies."""
    from sae_lens.training.sae_trainer import SAETrainer  # lazy: sae-lens is optional

    if getattr(cfg, "lr_end", 0) is None:  # SAELens' runner config fills this in; a bare config does not
        cfg = dataclasses.replace(cfg, lr_end=cfg.lr / 10)
    provider = saelens_data_provider(ds, hook, cfg.train_batch_size_samples, device=kw.pop("device", cfg.device),
                                     **kw)
    if provider.width(hook) != sae.cfg.d_in:
        raise ValueError(f"hook {hook!r} has width {provider.width(hook)} but the SAE's d_in is {sae.cfg.d_in}")
    # one hook (a str): the provider yields tensors, the DataProvider SAETrainer types it as
    return SAETrainer(cfg=cfg, sae=sae, data_provider=cast("Iterator[torch.Tensor]", provider))


# ---- dictionary_learning --------------------------------------------------------------------------
def dictionary_learning_data(ds: ActivationDataset, hook: str, batch_size: int, device: str | None = None,
                             **kw: Any) -> ActivationIterator:
    """The ``data`` argument of ``dictionary_learning.training.trainSAE``: an endless iterator of
    ``[batch_size, d]`` float tensors (trainSAE stops after ``steps``).  Pass the same ``device`` as
    to trainSAE: some of its trainers use the first batch before moving it to their device."""
    return ActivationIterator(ds, hook, batch_size, device=device, **kw)


# ---- EleutherAI sparsify --------------------------------------------------------------------------
class _PositionRows(torch.utils.data.Dataset):
    """Item i is ``{"input_ids": [position]}``: sparsify's DataLoader passes stream positions (not
    tokens) to the replay model, and ``select`` (sparsify's resume) becomes a stream seek there."""

    def __init__(self, positions: Sequence[int]):
        self.positions = positions

    def __len__(self) -> int:
        return len(self.positions)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": torch.tensor([self.positions[i]])}

    def __getitems__(self, idx: list[int]) -> list[dict[str, torch.Tensor]]:
        col = torch.tensor([self.positions[i] for i in idx]).view(-1, 1)
        return [{"input_ids": r} for r in col]

    def select(self, indices: Sequence[int]) -> _PositionRows:
        if isinstance(indices, range):  # what sparsify passes; stays O(1) for a range of positions
            return _PositionRows(self.positions[indices.start:indices.stop:indices.step])
        return _PositionRows([self.positions[i] for i in indices])


class ReplayModel(nn.Module):
    """Stands in for the language model in sparsify's Trainer.

    For a batch of positions it takes the matching batch from the actlake stream and passes each hook's
    rows, shaped ``[B, 1, d]``, through an ``nn.Identity`` named after the hook: sparsify's forward hooks
    on those modules see the stored activations as if a model had produced them.  ``hookpoints`` maps
    actlake hook → module name (dots and colons become underscores)."""

    def __init__(self, stream: ActivationIterator, device: str | torch.device):
        super().__init__()
        self.stream = stream
        self._device = torch.device(device)
        self.hookpoints: dict[str, str] = {}
        for h in stream.hooks:
            name = re.sub(r"\W", "_", h)
            while hasattr(self, name) or name in self.hookpoints.values():
                name += "_"
            self.add_module(name, nn.Identity())
            self.hookpoints[h] = name

    @property
    def base_model(self) -> ReplayModel:
        return self

    @property
    def device(self) -> torch.device:
        return self._device

    @property
    def dummy_inputs(self) -> dict[str, torch.Tensor]:
        return {"input_ids": torch.full((1, 1), -1, dtype=torch.long)}  # -1: probe, not a stream position

    def forward(self, input_ids: torch.Tensor, **_: Any) -> None:
        p0, n = int(input_ids.flatten()[0]), input_ids.numel()
        if p0 < 0:  # sparsify's width probe: zeros of the right width, stream untouched
            rows = {h: torch.zeros(n, self.stream.width(h), device=self._device) for h in self.stream.hooks}
        else:
            if n != self.stream.batch_size or p0 % n:
                raise RuntimeError(f"expected {self.stream.batch_size} positions aligned to a batch, got {n} from {p0}")
            want = divmod(p0 // n, self.stream.steps_per_epoch)
            if self.stream.position != want:  # resume (or any jump): O(1) seek, nothing replayed
                self.stream.seek(*want)
            got = next(self.stream)
            rows = got if isinstance(got, dict) else {self.stream.hooks[0]: got}
        for h, name in self.hookpoints.items():
            self.get_submodule(name)(rows[h].to(self._device).unsqueeze(1))


def sparsify_trainer(ds: ActivationDataset, cfg: Any, hooks: str | Sequence[str] | None = None, *,
                     device: str | torch.device = "cpu", epochs: int = 1, seed: int = 0, shuffle: bool = True,
                     rank: int | None = None, world_size: int | None = None, **stream_kw: Any) -> Any:
    """A ``sparsify.Trainer`` that trains on stored activations; call ``.fit()`` on it.

    ``cfg`` is a ``sparsify.TrainConfig`` whose ``batch_size`` counts rows (each "sequence" is one
    row), ``loss_fn`` is ``"fvu"`` and ``hookpoints`` / ``layers`` / ``exclude_tokens`` are empty
    (hooks are chosen here; ``cfg.hookpoints`` is filled with the module names).  Under
    ``torch.distributed`` each rank reads its own shard unless ``rank``/``world_size`` are given."""
    from sparsify import Trainer  # lazy: eai-sparsify is optional

    if cfg.loss_fn != "fvu":
        raise ValueError("only loss_fn='fvu' works from stored activations ('ce'/'kl' need the model)")
    if cfg.sae.transcode:
        raise ValueError("transcoders need input/output pairs; the replay model emits one tensor per hook")
    if cfg.exclude_tokens or cfg.layers or cfg.hookpoints:
        raise ValueError("leave exclude_tokens, layers and hookpoints empty: filter rows and pick hooks in actlake")
    if rank is None or world_size is None:
        dist = torch.distributed
        on = dist.is_available() and dist.is_initialized()
        rank, world_size = (dist.get_rank(), dist.get_world_size()) if on else (0, 1)
    hooks = list(ds.hooks) if hooks is None else hooks
    stream = ActivationIterator(ds, hooks if isinstance(hooks, str) else list(hooks), cfg.batch_size, seed=seed,
                                shuffle=shuffle, rank=rank, world_size=world_size, device=device, **stream_kw)
    model = ReplayModel(stream, device)
    cfg.hookpoints = list(model.hookpoints.values())
    data = _PositionRows(range(epochs * stream.steps_per_epoch * cfg.batch_size))
    # duck-typed stand-ins: sparsify annotates an HF Dataset and a PreTrainedModel but uses only what these provide
    return Trainer(cfg, data, model)  # pyright: ignore[reportArgumentType]


__all__ = ["ActivationIterator", "ReplayModel", "dictionary_learning_data", "saelens_data_provider",
           "saelens_trainer", "sparsify_trainer"]
