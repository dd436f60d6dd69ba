"""Benchmark summaries: metric spread per method, and quality against speed."""

from __future__ import annotations

import numbers
import os
from collections.abc import Mapping, Sequence

import numpy as np

from torchbss.plot._common import ArrayLike, finish, new_figure, to_tensor

__all__ = ["benchmark_summary", "quality_vs_speed", "collect_results", "METRIC_LABELS"]

#: Axis labels of the metric names torchbss writes (others are shown as they are).
METRIC_LABELS = {
    "sdr": "SDR (dB)",
    "si_sdr": "SI-SDR (dB)",
    "sir": "SIR (dB)",
    "sar": "SAR (dB)",
    "sdr_improvement": "SDR improvement (dB)",
    "si_sdr_improvement": "SI-SDR improvement (dB)",
    "real_time_factor": "real-time factor",
    "time_s": "time (s)",
}

Results = Mapping[str, Mapping[str, ArrayLike]] | Sequence[Mapping[str, object]]


def collect_results(
    results: Results, method_key: str = "method"
) -> dict[str, dict[str, np.ndarray]]:
    """Normalise benchmark results to ``{method: {metric: 1-D float array}}``.

    Args:
        results: either ``{method: {metric: values}}`` with ``values`` a number or a 1-D
            tensor/array (one value per file or source), or a sequence of flat records (rows
            of a result table) such as ``{"method": "AuxIVA", "file": "2x2_00",
            "si_sdr_improvement": 4.5, "real_time_factor": 0.02}``; every numeric field of a
            record is a metric, other fields are ignored.
        method_key: the field naming the method in a record.

    Returns:
        ``{method: {metric: values}}`` in order of first appearance.

    Raises:
        ValueError: no results, a record without ``method_key``, NaN/inf values (the message
            names method and metric).
    """
    out: dict[str, dict[str, list]] = {}
    if isinstance(results, Mapping):
        for method, metrics in results.items():
            if not isinstance(metrics, Mapping):
                raise TypeError(
                    f"results[{method!r}] must map metric names to values, "
                    f"got {type(metrics).__name__}"
                )
            for metric, values in metrics.items():
                v = to_tensor(
                    values, f"results[{method!r}][{metric!r}]", ndims=(0, 1), layout="(values,)"
                )
                out.setdefault(str(method), {})[str(metric)] = v.reshape(-1).numpy()
    elif isinstance(results, Sequence) and not isinstance(results, str):
        for i, record in enumerate(results):
            if not isinstance(record, Mapping) or method_key not in record:
                raise ValueError(
                    f"results[{i}] must be a mapping with a {method_key!r} field, "
                    f"got {record!r:.80}"
                )
            method = str(record[method_key])
            for metric, value in record.items():
                if metric == method_key or isinstance(value, bool):
                    continue
                if not isinstance(value, numbers.Real):
                    continue
                if not np.isfinite(float(value)):
                    raise ValueError(
                        f"results[{i}][{metric!r}] (method {method!r}) is {value}; expected a "
                        "finite number (drop failed runs before plotting)"
                    )
                out.setdefault(method, {}).setdefault(str(metric), []).append(float(value))
        out = {m: {k: np.asarray(v, dtype=float) for k, v in d.items()} for m, d in out.items()}
    else:
        raise TypeError(
            "results must be a mapping {method: {metric: values}} or a sequence of records, "
            f"got {type(results).__name__}"
        )
    if not out:
        raise ValueError("no benchmark results to plot (empty results)")
    return out


def _metric_values(
    data: dict[str, dict[str, np.ndarray]], metric: str
) -> list[tuple[str, np.ndarray]]:
    known = sorted({m for d in data.values() for m in d})
    if metric not in known:
        raise ValueError(f"unknown metric {metric!r}; the results have {known}")
    return [(method, d[metric]) for method, d in data.items() if metric in d]


def benchmark_summary(
    results: Results,
    *,
    metrics: Sequence[str] | None = None,
    kind: str = "box",
    labels: Mapping[str, str] | None = None,
    title: str | None = None,
    panel_size: tuple[float, float] = (4.0, 3.4),
    dpi: float = 100,
    save: str | os.PathLike | None = None,
):
    """One panel per metric: the spread of every method's values.

    Args:
        results: see :func:`collect_results`.
        metrics: metrics to draw, one panel each (default: every metric, in order).
        kind: ``"box"`` (median, quartiles, whiskers at 1.5 IQR, and the mean as a white
            diamond) or ``"mean_std"`` (mean with a +- one standard deviation error bar).
        labels: axis labels per metric, e.g. ``{"si_sdri": "SI-SDRi (dB)"}`` (merged over
            :data:`METRIC_LABELS`).
        title: figure title.
        panel_size: ``(width, height)`` of one panel in inches.
        dpi: resolution; the figure is ``metrics * width`` by ``height`` inches (``+ 0.3`` with
            a title).
        save: optional ``.png`` path.

    Returns:
        The ``matplotlib.figure.Figure``.

    Raises:
        ValueError: unknown metric (the message lists the known ones), unknown ``kind``,
            NaN/inf values (the message names method and metric).
    """
    if kind not in ("box", "mean_std"):
        raise ValueError(f"unknown kind {kind!r}; valid options are ['box', 'mean_std']")
    data = collect_results(results)
    if metrics is None:
        metrics = list(dict.fromkeys(m for d in data.values() for m in d))
    elif isinstance(metrics, str):
        metrics = [metrics]
    if not metrics:
        raise ValueError("metrics must name at least one metric to draw (or None: every one)")
    panels = [(metric, _metric_values(data, metric)) for metric in metrics]
    labels = {**METRIC_LABELS, **(labels or {})}
    width, height = panel_size
    fig = new_figure(len(panels) * width, height + (0.3 if title else 0.0), dpi)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    colors = [f"C{i % 10}" for i in range(len(data))]
    color_of = dict(zip(data, colors))
    for ax, (metric, series) in zip(axes, panels):
        names = [method for method, _ in series]
        values = [v for _, v in series]
        pos = np.arange(1, len(series) + 1)
        if kind == "box":
            parts = ax.boxplot(values, positions=pos, widths=0.6, patch_artist=True)
            for box, name in zip(parts["boxes"], names):
                box.set_facecolor(color_of[name])
                box.set_alpha(0.75)
            for median in parts["medians"]:
                median.set_color("black")
            means = [v.mean() for v in values]
            ax.scatter(pos, means, marker="D", s=22, color="white", edgecolor="black", zorder=3)
        else:
            means = np.array([v.mean() for v in values])
            stds = np.array([v.std() for v in values])
            ax.bar(pos, means, color=[color_of[n] for n in names], alpha=0.8, width=0.6)
            ax.errorbar(pos, means, yerr=stds, fmt="none", ecolor="black", capsize=4)
        ax.set_xticks(pos)
        # rotate the method names when they would not fit side by side (about 6.5 pt a character)
        rotate = max(len(n) for n in names) * len(names) * 6.5 > 0.85 * width * 72
        ax.set_xticklabels(names, rotation=30 if rotate else 0, ha="right" if rotate else "center")
        ax.set_ylabel(labels.get(metric, metric))
        ax.grid(True, axis="y", alpha=0.3)
    if title:
        fig.suptitle(title)
    return finish(fig, save)


def quality_vs_speed(
    results: Results,
    *,
    quality: str = "si_sdr_improvement",
    speed: str = "real_time_factor",
    quality_label: str = "SI-SDR improvement (dB)",
    speed_label: str = "real-time factor (processing time / audio duration)",
    log_speed: bool = True,
    title: str | None = None,
    figsize: tuple[float, float] = (6.4, 4.4),
    dpi: float = 100,
    save: str | os.PathLike | None = None,
):
    """Scatter of mean quality against mean real-time factor, one point per method.

    Error bars span +- one standard deviation on both axes; a dashed line marks real time
    (factor 1: methods to its left run faster than real time).

    Args:
        results: see :func:`collect_results`; every method needs both ``quality`` and
            ``speed``.
        quality: metric on the vertical axis.
        speed: metric on the horizontal axis (real-time factor, lower is faster).
        quality_label: label of the vertical axis.
        speed_label: label of the horizontal axis.
        log_speed: logarithmic horizontal axis (real-time factors span decades).
        title: axes title.
        figsize: ``(width, height)`` in inches.
        dpi: resolution (the PNG is ``figsize * dpi`` pixels).
        save: optional ``.png`` path.

    Returns:
        The ``matplotlib.figure.Figure``.

    Raises:
        ValueError: unknown metric (the message lists the known ones), a method without both
            metrics, non-positive speeds on a log axis.
    """
    data = collect_results(results)
    q = dict(_metric_values(data, quality))
    s = dict(_metric_values(data, speed))
    for method, metrics in data.items():
        absent = [k for k in (quality, speed) if k not in metrics]
        if absent:
            raise ValueError(f"method {method!r} lacks {absent}; it has {sorted(metrics)}")
    if log_speed and any((v <= 0).any() for v in s.values()):
        raise ValueError(f"{speed!r} must be positive on a log axis (pass log_speed=False)")
    fig = new_figure(*figsize, dpi)
    ax = fig.subplots()
    for i, method in enumerate(data):
        x, y = s[method], q[method]
        ax.errorbar(
            x.mean(),
            y.mean(),
            xerr=x.std(),
            yerr=y.std(),
            fmt="o",
            ms=8,
            capsize=3,
            color=f"C{i % 10}",
            label=method,
        )
        ax.annotate(
            method, (x.mean(), y.mean()), xytext=(6, 6), textcoords="offset points", fontsize=9
        )
    if log_speed:
        ax.set_xscale("log")
    ax.axvline(1.0, color="0.5", ls="--", lw=1.0)
    lo, hi = ax.get_xlim()
    if lo < 1.0 < hi:
        ax.text(
            1.0,
            0.98,
            "real time ",
            transform=ax.get_xaxis_transform(),
            va="top",
            ha="right",
            color="0.4",
            fontsize=8,
        )
    ax.set_xlabel(speed_label)
    ax.set_ylabel(quality_label)
    ax.grid(True, alpha=0.3)
    if title:
        ax.set_title(title)
    return finish(fig, save)
