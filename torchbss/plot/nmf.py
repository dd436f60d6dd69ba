"""NMF factors of ILRMA / online ILRMA / online IS-NMF: bases, activations, model spectrogram."""

from __future__ import annotations

import os
from collections.abc import Sequence

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

__all__ = ["nmf_factors"]


def _relative_db(x: torch.Tensor, dim: int, dynamic_range_db: float) -> torch.Tensor:
    """dB re the maximum along ``dim`` (each basis / activation row to 0 dB at its peak)."""
    peak = x.amax(dim=dim, keepdim=True).clamp_min(1e-300)
    return db(x / peak, floor=10.0 ** (-dynamic_range_db / 10.0) / 10.0)


def nmf_factors(
    basis: ArrayLike,
    activations: ArrayLike,
    *,
    sample_rate: float | None = None,
    hop_length: int | None = None,
    dynamic_range_db: float = 60.0,
    source_names: Sequence[str] | None = None,
    title: str | None = None,
    cmap: str = "magma",
    row_height: float = 2.2,
    width: float = 11.0,
    dpi: float = 100,
    save: str | os.PathLike | None = None,
):
    """Plot each source's NMF bases ``T``, activations ``V`` and model spectrogram ``T V``.

    One row per source, three panels: the bases (each column in dB re its own peak; the NMF
    leaves the scale between ``T`` and ``V`` free, so only shapes are meaningful), the
    activations (each row in dB re its own peak), and the model power spectrogram
    ``lambda = T V`` in dB on one colour range for all sources
    (``[peak - dynamic_range_db, peak]``). Layout of the factors as in
    :class:`torchbss.source_models.nmf.NMFState` (ILRMA, online ILRMA).

    Args:
        basis: ``(sources, freq, n_basis)`` (or ``(freq, n_basis)``) non-negative bases.
        activations: ``(sources, n_basis, frames)`` (or ``(n_basis, frames)``) non-negative
            activations.
        sample_rate: sampling rate in Hz; with it the frequency axis is in Hz
            (``freq = n_fft // 2 + 1`` bins), else in bins.
        hop_length: STFT hop; with ``sample_rate`` the time axis is in seconds, else in frames.
        dynamic_range_db: span of every colour scale below its peak, in dB.
        source_names: one name per source (row titles).
        title: figure title.
        cmap: matplotlib colour map.
        row_height: height of one source row in inches.
        width: figure width in inches.
        dpi: resolution; the figure is ``width x (sources * row_height + 0.9)`` inches
            (``+ 0.3`` with a title).
        save: optional ``.png`` path.

    Returns:
        The ``matplotlib.figure.Figure``.

    Raises:
        ValueError: NaN/inf or negative values (the message names the input), inconsistent
            shapes.
    """
    T = to_tensor(basis, "basis", ndims=(2, 3), layout="(sources, freq, n_basis)")
    V = to_tensor(activations, "activations", ndims=(2, 3), layout="(sources, n_basis, frames)")
    if T.ndim == 2:
        T = T.unsqueeze(0)
    if V.ndim == 2:
        V = V.unsqueeze(0)
    if T.shape[0] != V.shape[0] or T.shape[2] != V.shape[1]:
        raise ValueError(
            "basis (sources, freq, n_basis) and activations (sources, n_basis, frames) must "
            f"agree on sources and n_basis, got shapes {tuple(T.shape)} and {tuple(V.shape)}"
        )
    for name, x in (("basis", T), ("activations", V)):
        if bool((x < 0).any()):
            raise ValueError(f"{name} must be non-negative (NMF factors), got min {float(x.min())}")
    dynamic_range_db = check_positive(dynamic_range_db, "dynamic_range_db")
    n_src, n_freq, n_basis = T.shape
    n_frames = V.shape[-1]
    names = names_for(source_names, n_src, "source", "source_names")

    if sample_rate is not None:
        sample_rate = check_sample_rate(sample_rate)
        df = sample_rate / (2 * max(n_freq - 1, 1))
        freq_label = "frequency (Hz)"
    else:
        df, freq_label = 1.0, "frequency bin"
    if sample_rate is not None and hop_length is not None:
        dt = check_positive_int(hop_length, "hop_length") / sample_rate
        time_label = "time (s)"
    else:
        dt, time_label = 1.0, "frame"
    f_extent = (-df / 2, (n_freq - 0.5) * df)
    t_extent = (-dt / 2, (n_frames - 0.5) * dt)

    model = db(T @ V)
    peak = float(model.max())
    style = dict(origin="lower", aspect="auto", cmap=cmap, interpolation="nearest")
    fig = new_figure(width, n_src * row_height + 0.9 + (0.3 if title else 0.0), dpi)
    axes = fig.subplots(n_src, 3, squeeze=False, width_ratios=(1.0, 2.4, 2.4))
    for k in range(n_src):  # one frequency axis (bases, model), one time axis (activations, model)
        axes[k, 2].sharey(axes[0, 0])
        axes[k, 1].sharex(axes[0, 2])
        if k > 0:
            axes[k, 0].sharey(axes[0, 0])
            axes[k, 2].sharex(axes[0, 2])
    for k in range(n_src):
        ax_t, ax_v, ax_m = axes[k]
        im_rel = ax_t.imshow(
            _relative_db(T[k], 0, dynamic_range_db).numpy(),
            extent=(0.5, n_basis + 0.5, *f_extent),
            vmin=-dynamic_range_db,
            vmax=0.0,
            **style,
        )
        ax_v.imshow(
            _relative_db(V[k], 1, dynamic_range_db).numpy(),
            extent=(*t_extent, 0.5, n_basis + 0.5),
            vmin=-dynamic_range_db,
            vmax=0.0,
            **style,
        )
        im_model = ax_m.imshow(
            model[k].numpy(),
            extent=(*t_extent, *f_extent),
            vmin=peak - dynamic_range_db,
            vmax=peak,
            **style,
        )
        ax_t.set_title(f"{names[k]}: bases", fontsize=10)
        ax_v.set_title(f"{names[k]}: activations", fontsize=10)
        ax_m.set_title(f"{names[k]}: model spectrogram", fontsize=10)
        ax_t.set_ylabel(freq_label)
        ax_v.set_ylabel("basis")
        if n_basis <= 12:
            ticks = list(range(1, n_basis + 1))
            ax_t.set_xticks(ticks)
            ax_v.set_yticks(ticks)
        if k < n_src - 1:
            for ax in (ax_t, ax_v, ax_m):
                ax.tick_params(labelbottom=False)
        else:
            ax_t.set_xlabel("basis")
            ax_v.set_xlabel(time_label)
            ax_m.set_xlabel(time_label)
    fig.colorbar(
        im_rel,
        ax=axes[:, :2].ravel().tolist(),
        location="bottom",
        shrink=0.6,
        aspect=40,
        label="factor (dB re its peak)",
    )
    fig.colorbar(
        im_model,
        ax=axes[:, 2].tolist(),
        location="bottom",
        shrink=0.8,
        aspect=30,
        label="model power (dB)",
    )
    if title:
        fig.suptitle(title)
    return finish(fig, save)
