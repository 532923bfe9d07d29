"""Plots people expect from stored activations (matplotlib, Agg; no display needed).

* ``histogram``: activation histogram per unit (shared bins, exact ``numpy.histogram`` counts from
  ``ds.query.stats(histogram_bins=...)``), log-scaled counts;
* ``density``: distribution over units of the fraction of rows > threshold (log10 x axis; units
  that never fire are counted in the title), the SAE "feature density" plot;
* ``kurtosis``: per hook (layer) the distribution over units of the excess kurtosis (box plot),
  the outlier-dimension / privileged-basis diagnostic.

Each function returns a ``matplotlib.figure.Figure`` and the numbers it drew (``fig.actlake_data``)."""
from __future__ import annotations

from typing import Any

import numpy as np

KINDS = ("histogram", "density", "kurtosis")


def _figure(w: float = 6.4, h: float = 4.0) -> Any:
    from matplotlib.figure import Figure

    return Figure(figsize=(w, h), dpi=100, layout="constrained")


def histogram(ds: Any, hook: str, units: Any = None, bins: int = 50, **kw: Any) -> Any:
    """Activation histograms of ``units`` (default: the first 8) of ``hook``, one line per unit.
    Data: ``{"hist": int64 [C, bins], "edges": float64 [bins + 1], "units": [C]}``."""
    if units is None:
        units = list(range(min(8, int(np.prod(ds.hooks[hook]["shape"])))))
    units = [int(u) for u in np.atleast_1d(units)]
    st = ds.query.stats(hook, unit=units, histogram_bins=bins, **kw)
    fig = _figure()
    ax = fig.add_subplot()
    edges = st["hist_edges"]
    for u, h in zip(units, st["hist"], strict=True):
        ax.stairs(np.maximum(h, 0), edges, label=f"unit {u}")
    ax.set_yscale("symlog", linthresh=1)
    ax.set_xlabel("activation")
    ax.set_ylabel("rows")
    ax.set_title(f"{hook}: activation histogram")
    if len(units) <= 12:
        ax.legend(fontsize="small")
    fig.actlake_data = {"hist": st["hist"], "edges": edges, "units": units}
    return fig


def density(ds: Any, hook: str, threshold: float = 0.0, bins: int = 40, **kw: Any) -> Any:
    """Distribution over units of their density (fraction of rows > ``threshold``), log10 x axis.
    Data: ``{"density": float64 [d], "dead": int}``."""
    st = ds.query.stats(hook, threshold=threshold, rows=False, **kw)
    dens = np.asarray(st["density"], dtype=np.float64)
    live = dens[dens > 0]
    fig = _figure()
    ax = fig.add_subplot()
    if live.size:
        lo = np.log10(live.min())
        ax.hist(np.log10(live), bins=np.linspace(min(lo, -0.0) - 1e-9 if lo >= 0 else lo, 0, bins))
    ax.set_xlabel(f"log10 density (fraction of rows > {threshold:g})")
    ax.set_ylabel("units")
    dead = int((dens == 0).sum())
    ax.set_title(f"{hook}: density over {len(dens)} units ({dead} never above)")
    fig.actlake_data = {"density": dens, "dead": dead}
    return fig


def kurtosis(ds: Any, hooks: Any = None, **kw: Any) -> Any:
    """Per hook (layer, in manifest order) a box plot of the per-unit excess kurtosis.
    Data: ``{"hooks": [names], "kurtosis": [float64 [d] per hook]}``."""
    names = list(ds.hooks) if hooks is None else [hooks] if isinstance(hooks, str) else list(hooks)
    res = ds.query.stats(names, rows=False, **kw)
    ks = [np.asarray(res[h]["kurtosis"], dtype=np.float64) for h in names]
    fig = _figure(max(6.4, 0.6 * len(names) + 2), 4.0)
    ax = fig.add_subplot()
    ax.boxplot([k[np.isfinite(k)] for k in ks], showfliers=True)
    ax.set_xticks(range(1, len(names) + 1), [n if len(n) < 24 else "…" + n[-22:] for n in names],
                  rotation=30, ha="right", fontsize="small")
    ax.set_yscale("symlog", linthresh=1)
    ax.set_ylabel("excess kurtosis per unit")
    ax.set_title("kurtosis by layer")
    fig.actlake_data = {"hooks": names, "kurtosis": ks}
    return fig


def plot(ds: Any, kind: str, hook: Any, path: str | None = None, **kw: Any) -> Any:
    """Dispatch to ``histogram`` / ``density`` / ``kurtosis``; save to ``path`` (.png/.svg/.pdf) when
    given.  Raises: QueryError on an unknown kind, a path suffix other than those, or a folder that
    does not exist or cannot be written."""
    from actlake.schemas.errors import QueryError

    if kind not in KINDS:
        raise QueryError(f"kind: must be one of {', '.join(KINDS)}, got {kind!r}")
    if path is not None:
        from actlake.client.outputs import check_output_file

        check_output_file("out", path, (".png", ".svg", ".pdf"))
    fig = {"histogram": histogram, "density": density, "kurtosis": kurtosis}[kind](ds, hook, **kw)
    if path is not None:
        from actlake.client.outputs import write_atomically

        write_atomically(path, fig.savefig)
    return fig
