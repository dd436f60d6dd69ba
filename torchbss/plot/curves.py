"""Curves over iterations and time: convergence of the cost, frame-wise SI-SDR."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import numpy as np

from torchbss.plot._common import ArrayLike, finish, names_for, new_figure, to_tensor

__all__ = ["convergence", "si_sdr_over_time"]


def convergence(
    costs: Mapping[str, ArrayLike],
    *,
    xlabel: str = "iteration",
    ylabel: str | None = None,
    relative: bool = False,
    log_x: bool = False,
    title: str | None = None,
    figsize: tuple[float, float] = (6.4, 4.0),
    dpi: float = 100,
    save: str | os.PathLike | None = None,
):
    """Cost per iteration of several methods on one axis.

    Args:
        costs: ``{method name: cost}`` with each cost ``(iterations,)`` (entry 0 is the cost
            before the first iteration, as in ``SeparationResult.cost``) or ``(runs,
            iterations)``, drawn as the mean over runs with a min-max band.
        xlabel: label of the iteration axis.
        ylabel: label of the cost axis (default ``"cost"``, or ``"cost - lowest cost"`` with
            ``relative``).
        relative: plot each method's excess over the lowest (mean) cost it reaches, on a log axis
            (methods whose costs differ by constants or scales, e.g. AuxIVA and ILRMA, become
            comparable in how fast they converge; the minimum itself is left out).
        log_x: logarithmic iteration axis (iteration 0 is then left out).
        title: axes title.
        figsize: ``(width, height)`` in inches.
        dpi: resolution (the PNG is ``figsize * dpi`` pixels).
        save: optional ``.png`` path.

    Returns:
        The ``matplotlib.figure.Figure``.

    Raises:
        ValueError: no methods, or a cost with NaN/inf values (the message names the method).
    """
    if not isinstance(costs, Mapping) or not costs:
        raise ValueError(
            "costs must be a non-empty mapping {method name: (iterations,) cost}, "
            f"got {costs!r:.80}"
        )
    fig = new_figure(*figsize, dpi)
    ax = fig.subplots()
    for name, value in costs.items():
        c = to_tensor(
            value, f"costs[{name!r}]", ndims=(1, 2), layout="(iterations,) or (runs, iterations)"
        ).numpy()
        runs = c.reshape(-1, c.shape[-1])
        mean, low, high = runs.mean(0), runs.min(0), runs.max(0)
        if relative:  # excess over the lowest mean cost; <= 0 becomes a gap on the log axis
            lowest = mean.min()
            mean, low, high = (np.where(v > lowest, v - lowest, np.nan) for v in (mean, low, high))
        it = np.arange(runs.shape[-1])
        keep = it >= 1 if log_x else np.ones_like(it, dtype=bool)
        marker = "o" if runs.shape[-1] <= 30 else None
        (line,) = ax.plot(it[keep], mean[keep], marker=marker, ms=3, label=str(name))
        if runs.shape[0] > 1:
            ax.fill_between(it[keep], low[keep], high[keep], color=line.get_color(), alpha=0.2)
    if log_x:
        ax.set_xscale("log")
    if relative:
        ax.set_yscale("log")
    if ylabel is None:
        ylabel = "cost - lowest cost" if relative else "cost"
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    ax.legend()
    if title:
        ax.set_title(title)
    return finish(fig, save)


def si_sdr_over_time(
    values: ArrayLike,
    times: ArrayLike | None = None,
    *,
    valid: ArrayLike | None = None,
    source_names: Sequence[str] | None = None,
    xlabel: str | None = None,
    ylabel: str = "SI-SDR (dB)",
    title: str | None = None,
    figsize: tuple[float, float] = (7.0, 3.2),
    dpi: float = 100,
    save: str | os.PathLike | None = None,
):
    """Frame-wise SI-SDR of each source over time (e.g. an online method converging).

    Args:
        values: ``(sources, frames)`` (or ``(frames,)``) SI-SDR in dB, e.g.
            ``torchbss.metrics.framewise_si_sdr(ref, est, fs).values``; a
            :class:`~torchbss.metrics.FramewiseResult` is accepted too (its ``valid`` mask
            is then used).
        times: ``(frames,)`` frame times in seconds (e.g. frame centres); ``None`` plots
            against the frame index.
        valid: optional ``(sources, frames)`` boolean mask; invalid (silent) frames are left
            as gaps.
        source_names: one legend entry per source.
        xlabel: label of the time axis (default: ``"time (s)"`` or ``"frame"``).
        ylabel: label of the value axis.
        title: axes title.
        figsize: ``(width, height)`` in inches.
        dpi: resolution (the PNG is ``figsize * dpi`` pixels).
        save: optional ``.png`` path.

    Returns:
        The ``matplotlib.figure.Figure``.

    Raises:
        ValueError: NaN/inf values (the message names the input) or inconsistent shapes.
    """
    if valid is None and hasattr(values, "values") and hasattr(values, "valid"):
        values, valid = values.values, values.valid
    v = to_tensor(values, "values", ndims=(1, 2), layout="(sources, frames)").numpy()
    v = v.reshape(-1, v.shape[-1])
    n_src, n_frames = v.shape
    if times is None:
        t = np.arange(n_frames, dtype=float)
        xlabel = xlabel or "frame"
    else:
        t = to_tensor(times, "times", ndims=(1,), layout="(frames,)").numpy()
        if t.shape[0] != n_frames:
            raise ValueError(
                f"times must have one entry per frame ({n_frames}), got shape {tuple(t.shape)}"
            )
        xlabel = xlabel or "time (s)"
    if valid is not None:
        mask = to_tensor(valid, "valid", ndims=(1, 2), layout="(sources, frames)").numpy() > 0
        mask = mask.reshape(-1, mask.shape[-1])
        if mask.shape != v.shape:
            raise ValueError(f"valid must have the shape of values {v.shape}, got {mask.shape}")
        v = np.where(mask, v, np.nan)
    names = names_for(source_names, n_src, "source", "source_names")
    fig = new_figure(*figsize, dpi)
    ax = fig.subplots()
    ax.axhline(0.0, color="0.6", lw=0.8)
    marker = "o" if n_frames <= 60 else None
    for k in range(n_src):
        ax.plot(t, v[k], marker=marker, ms=3, label=names[k])
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    if n_src > 1 or source_names is not None:  # below the axes: never over the curves
        fig.legend(loc="outside lower center", ncols=min(n_src, 3), frameon=False)
    if title:
        ax.set_title(title)
    return finish(fig, save)
