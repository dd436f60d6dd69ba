"""Spectrogram grid: mixture channels, references and estimates on one colour scale."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import torch

from torchbss._validation import check_positive_int
from torchbss.plot._common import (
    ArrayLike,
    check_positive,
    check_sample_rate,
    db,
    finish,
    names_for,
    new_figure,
    to_tensor,
)
from torchbss.signal.stft import stft

__all__ = ["spectrogram_grid", "power_spectrogram_db"]


def power_spectrogram_db(x: torch.Tensor, n_fft: int = 1024, hop_length: int = 256) -> torch.Tensor:
    """Power spectrogram in dB, ``10 log10 |STFT|^2`` (floored at -200 dB).

    Args:
        x: real signal ``(channels, samples)``.
        n_fft: FFT size of :func:`torchbss.signal.stft` (periodic Hann window).
        hop_length: hop between frames.

    Returns:
        ``(channels, n_fft // 2 + 1, frames)`` float64 tensor, frame ``t`` centred on sample
        ``t * hop_length``.
    """
    spec = stft(x.to(torch.float64), n_fft=n_fft, hop_length=hop_length)
    return db(spec.abs().square())


def spectrogram_grid(
    mixture: ArrayLike | None = None,
    *,
    references: ArrayLike | None = None,
    estimates: ArrayLike | None = None,
    sample_rate: float,
    n_fft: int = 1024,
    hop_length: int = 256,
    dynamic_range_db: float = 80.0,
    max_freq_hz: float | None = None,
    source_names: Sequence[str] | None = None,
    title: str | None = None,
    cmap: str | Any = "magma",
    panel_size: tuple[float, float] = (3.6, 2.3),
    dpi: float = 100,
    save: str | os.PathLike | None = None,
):
    """Grid of power spectrograms: a row of mixture channels, of references, of estimates.

    All panels share one colour range, ``[peak - dynamic_range_db, peak]`` dB with ``peak`` the
    loudest time-frequency bin of all the signals, and one colour bar; time is in seconds and
    frequency in Hz. The STFT is :func:`torchbss.signal.stft` (periodic Hann window).

    Args:
        mixture: ``(mics, samples)`` or ``(samples,)`` mixture; one panel per channel.
        references: ``(sources, samples)`` or ``(samples,)`` reference signals.
        estimates: ``(sources, samples)`` or ``(samples,)`` estimates (aligned with the
            references, if any, so that columns compare).
        sample_rate: sampling rate in Hz.
        n_fft: FFT size.
        hop_length: hop between frames.
        dynamic_range_db: span of the colour scale below the peak, in dB.
        max_freq_hz: upper limit of the frequency axis (default: ``sample_rate / 2``).
        source_names: names of the sources (titles of the reference and estimate panels).
        title: figure title.
        cmap: matplotlib colour map or its name (a perceptually uniform one keeps
            "brighter = louder").
        panel_size: ``(width, height)`` of one panel in inches.
        dpi: resolution; the figure is ``columns * width + 1`` by ``rows * height + 0.4``
            inches (``+ 0.3`` with a title), times ``dpi`` pixels.
        save: optional ``.png`` path.

    Returns:
        The ``matplotlib.figure.Figure``.

    Raises:
        ValueError: no signal given, NaN/inf values (the message names the input), wrong shapes.

    Example:
        >>> import torch
        >>> t = torch.arange(16000) / 16000
        >>> fig = spectrogram_grid(torch.sin(2 * torch.pi * 1000 * t)[None], sample_rate=16000)
        >>> len(fig.axes)  # one panel and the colour bar
        2
    """
    sample_rate = check_sample_rate(sample_rate)
    check_positive_int(n_fft, "n_fft")
    check_positive_int(hop_length, "hop_length")
    dynamic_range_db = check_positive(dynamic_range_db, "dynamic_range_db")
    layout = "(channels, samples) or (samples,)"
    rows: list[tuple[str, torch.Tensor]] = []
    for label, value in (
        ("mixture", mixture),
        ("references", references),
        ("estimates", estimates),
    ):
        if value is not None:
            signal = to_tensor(value, label, ndims=(1, 2), layout=layout)
            rows.append((label, signal.reshape(-1, signal.shape[-1])))
    if not rows:
        raise ValueError("spectrogram_grid needs at least one of mixture, references, estimates")
    n_sources = max((s.shape[0] for label, s in rows if label != "mixture"), default=0)
    names = names_for(source_names, n_sources, "source", "source_names") if n_sources else []

    specs = [(label, power_spectrogram_db(s, n_fft, hop_length)) for label, s in rows]
    peak = max(float(spec.max()) for _, spec in specs)
    vmin, vmax = peak - dynamic_range_db, peak
    n_freq = n_fft // 2 + 1
    df = sample_rate / n_fft
    dt = hop_length / sample_rate

    n_cols = max(spec.shape[0] for _, spec in specs)
    width, height = panel_size
    fig = new_figure(n_cols * width + 1.0, len(specs) * height + 0.4 + (0.3 if title else 0.0), dpi)
    axes = fig.subplots(len(specs), n_cols, squeeze=False, sharex=True, sharey=True)
    image = None
    for r, (label, spec) in enumerate(specs):
        for c in range(n_cols):
            ax = axes[r, c]
            if c >= spec.shape[0]:
                ax.set_visible(False)
                continue
            n_frames = spec.shape[-1]
            extent = (-dt / 2, (n_frames - 0.5) * dt, -df / 2, (n_freq - 0.5) * df)
            image = ax.imshow(
                spec[c].numpy(),
                origin="lower",
                aspect="auto",
                extent=extent,
                cmap=cmap,
                vmin=vmin,
                vmax=vmax,
                interpolation="nearest",
            )
            if label == "mixture":
                panel = f"mixture, mic {c}" if spec.shape[0] > 1 else "mixture"
            else:
                panel = f"{label[:-1]}: {names[c]}"
            ax.set_title(panel, fontsize=10)
            if c == 0:
                ax.set_ylabel("frequency (Hz)")
    for c in range(n_cols):
        visible = [axes[r, c] for r in range(len(specs)) if axes[r, c].get_visible()]
        for ax in visible[:-1]:
            ax.tick_params(labelbottom=False)
        visible[-1].tick_params(labelbottom=True)
        visible[-1].set_xlabel("time (s)")
    if max_freq_hz is not None:
        axes[0, 0].set_ylim(
            -df / 2, min(check_positive(max_freq_hz, "max_freq_hz"), sample_rate / 2)
        )
    visible_axes = [ax for ax in axes.ravel() if ax.get_visible()]
    fig.colorbar(image, ax=visible_axes, label="power (dB)", fraction=0.04, pad=0.01, aspect=30)
    if title:
        fig.suptitle(title)
    return finish(fig, save)
