"""Spatial response of demixing filters for a linear array (beam patterns).

Far-field model: a plane wave from direction ``theta`` (degrees from broadside, positive towards
increasing mic position) reaches the mic at position ``p_m`` (metres along the array axis)
``p_m sin(theta) / c`` seconds *earlier* than the origin, so its STFT at frequency ``f`` carries
the steering vector ``a_m(theta, f) = exp(+2j pi f p_m sin(theta) / c)`` (STFT sign convention
``X(f) = sum_t x(t) exp(-2j pi f t)`` of :func:`torchbss.signal.stft`). Demixing matrices act as
``y = W x`` (as ``SeparationResult.W``), so output ``k`` responds to that direction with
``|sum_m W[f, k, m] a_m(theta, f)|``, i.e. ``|w_k^H a|`` with ``w_k^H`` the k-th row.

Reference: H. L. Van Trees, "Optimum Array Processing", Wiley 2002, ch. 2 (array manifold,
beam patterns of uniform linear arrays).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import torch

from torchbss._validation import check_finite, check_tensor
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

__all__ = ["linear_array_steering", "demixing_response", "beam_pattern", "SPEED_OF_SOUND"]

#: Speed of sound in air at about 20 degrees C, in m/s.
SPEED_OF_SOUND = 343.0


def _positions(
    mic_positions: float | ArrayLike, n_mics: int | None, dtype: torch.dtype, device
) -> torch.Tensor:
    """Mic positions ``(mics,)`` in metres from a spacing (uniform array) or explicit values."""
    if isinstance(mic_positions, (int, float)) and not isinstance(mic_positions, bool):
        if n_mics is None:
            raise ValueError("a mic spacing needs the number of mics; pass positions instead")
        spacing = check_positive(mic_positions, "mic spacing (mic_positions)")
        return torch.arange(n_mics, dtype=dtype, device=device) * spacing
    p = to_tensor(mic_positions, "mic_positions", ndims=(1,), layout="(mics,) in metres")
    if n_mics is not None and p.shape[0] != n_mics:
        raise ValueError(
            f"mic_positions has {p.shape[0]} entries but W has {n_mics} mics (last dimension)"
        )
    return p.to(dtype=dtype, device=device)


def _angles(angles_deg: ArrayLike | None, dtype: torch.dtype, device) -> torch.Tensor:
    if angles_deg is None:
        return torch.arange(-90.0, 90.5, 1.0, dtype=dtype, device=device)
    return to_tensor(angles_deg, "angles_deg", ndims=(1,), layout="(angles,) in degrees").to(
        dtype=dtype, device=device
    )


def linear_array_steering(
    mic_positions: torch.Tensor,
    freqs_hz: torch.Tensor,
    angles_deg: torch.Tensor,
    speed_of_sound: float = SPEED_OF_SOUND,
) -> torch.Tensor:
    """Far-field steering vectors of a linear array, ``exp(+2j pi f p_m sin(theta) / c)``.

    Args:
        mic_positions: ``(mics,)`` positions along the array axis in metres (real).
        freqs_hz: ``(freq,)`` frequencies in Hz (real).
        angles_deg: ``(angles,)`` directions in degrees from broadside (real).
        speed_of_sound: in m/s.

    Returns:
        ``(freq, mics, angles)`` complex tensor (complex128 for float64 input, else complex64)
        on the device of ``mic_positions``.
    """
    speed_of_sound = check_positive(speed_of_sound, "speed_of_sound")
    sin = torch.sin(torch.deg2rad(angles_deg))
    # (freq, 1, 1) * (1, mics, 1) * (1, 1, angles) -> (freq, mics, angles)
    phase = (2.0 * math.pi / speed_of_sound) * (
        freqs_hz[:, None, None] * mic_positions[None, :, None] * sin[None, None, :]
    )
    return torch.polar(torch.ones_like(phase), phase)


def demixing_response(
    W: torch.Tensor,
    mic_positions: float | ArrayLike,
    sample_rate: float,
    *,
    angles_deg: ArrayLike | None = None,
    speed_of_sound: float = SPEED_OF_SOUND,
) -> torch.Tensor:
    """Magnitude response of every demixing row to far-field directions of a linear array.

    ``R[..., f, k, a] = |sum_m W[..., f, k, m] exp(2j pi f_f p_m sin(theta_a) / c)|`` with
    ``f_f = f * sample_rate / n_fft`` and ``n_fft = 2 (freq - 1)`` (see the module docstring for
    the conventions). Batched over leading dims, on ``W``'s device, differentiable in ``W``.

    Args:
        W: ``(..., freq, rows, mics)`` demixing matrices (``y = W x``; e.g.
            ``SeparationResult.W``), complex (or real), ``freq = n_fft // 2 + 1 >= 2``.
        mic_positions: ``(mics,)`` positions in metres along the array axis, or one number:
            the spacing of a uniform array (positions ``0, d, 2d, ...``).
        sample_rate: sampling rate in Hz.
        angles_deg: ``(angles,)`` directions in degrees from broadside (default: -90 to 90
            in 1 degree steps).
        speed_of_sound: in m/s.

    Returns:
        ``(..., freq, rows, angles)`` real, non-negative response.

    Example:
        >>> import torch
        >>> W = torch.ones(5, 1, 2, dtype=torch.complex128) / 2  # sum of two mics
        >>> R = demixing_response(W, 0.05, 16000)
        >>> R.shape, R[..., 90].flatten().tolist()  # broadside (0 deg) passes unchanged
        (torch.Size([5, 1, 181]), [1.0, 1.0, 1.0, 1.0, 1.0])
    """
    check_tensor(W, "W", min_ndim=3, layout="(..., freq, rows, mics)")
    if not W.is_complex():
        if not W.is_floating_point():
            raise TypeError(f"W must be a complex or real floating point tensor, got {W.dtype}")
        W = W.to(torch.complex128 if W.dtype == torch.float64 else torch.complex64)
    check_finite(W, "W")
    n_freq, n_mics = W.shape[-3], W.shape[-1]
    if n_freq < 2:
        raise ValueError(
            f"W needs at least 2 frequency bins (freq = n_fft // 2 + 1), got shape {tuple(W.shape)}"
        )
    sample_rate = check_sample_rate(sample_rate)
    real = W.real.dtype
    positions = _positions(mic_positions, n_mics, real, W.device)
    angles = _angles(angles_deg, real, W.device)
    freqs = torch.arange(n_freq, dtype=real, device=W.device) * (sample_rate / (2 * (n_freq - 1)))
    steering = linear_array_steering(positions, freqs, angles, speed_of_sound)
    # (..., freq, rows, mics) @ (freq, mics, angles) -> (..., freq, rows, angles)
    return (W @ steering).abs()


def beam_pattern(
    W: ArrayLike,
    mic_positions: float | ArrayLike,
    sample_rate: float,
    *,
    angles_deg: ArrayLike | None = None,
    speed_of_sound: float = SPEED_OF_SOUND,
    rows: Sequence[int] | None = None,
    source_names: Sequence[str] | None = None,
    mark_angles_deg: Sequence[float] | None = None,
    dynamic_range_db: float = 30.0,
    max_freq_hz: float | None = None,
    title: str | None = None,
    cmap: str = "viridis",
    panel_size: tuple[float, float] = (3.6, 3.0),
    dpi: float = 100,
    save: str | os.PathLike | None = None,
):
    """Beam pattern of each demixing row: response (dB) vs direction and frequency.

    Each panel shows ``20 log10 R`` of :func:`demixing_response` for one row, normalised to 0 dB
    at its loudest direction in every frequency bin (the scale of a demixing row per frequency
    is arbitrary in BSS): bright directions pass, dark valleys are the nulls a demixing row
    steers towards the interfering sources.

    Args:
        W: ``(freq, rows, mics)`` demixing matrices (``y = W x``), complex.
        mic_positions: ``(mics,)`` positions in metres, or the spacing of a uniform array.
        sample_rate: sampling rate in Hz.
        angles_deg: ``(angles,)`` directions in degrees (default -90..90, step 1).
        speed_of_sound: in m/s.
        rows: which rows to draw (default: all; e.g. ``range(n_src)`` for the sources of a
            square ``W`` with background rows).
        source_names: one title per drawn row.
        mark_angles_deg: directions to mark with dashed lines (e.g. the true source
            directions).
        dynamic_range_db: span of the colour scale below 0 dB.
        max_freq_hz: upper limit of the frequency axis.
        title: figure title.
        cmap: matplotlib colour map.
        panel_size: ``(width, height)`` of one panel in inches.
        dpi: resolution; the figure is ``rows * width + 1`` by ``height + 0.3`` inches
            (``+ 0.3`` with a title).
        save: optional ``.png`` path.

    Returns:
        The ``matplotlib.figure.Figure``.

    Raises:
        ValueError: NaN/inf in ``W`` (the message names it), inconsistent shapes.
    """
    Wt = to_tensor(W, "W", ndims=(3,), layout="(freq, rows, mics)", allow_complex=True)
    response = demixing_response(
        Wt, mic_positions, sample_rate, angles_deg=angles_deg, speed_of_sound=speed_of_sound
    )
    dynamic_range_db = check_positive(dynamic_range_db, "dynamic_range_db")
    n_freq, n_rows, n_angles = response.shape
    rows = list(range(n_rows)) if rows is None else list(rows)
    if not rows or any(isinstance(r, bool) or not isinstance(r, int) or not 0 <= r < n_rows
                       for r in rows):  # fmt: skip
        raise ValueError(f"rows must be indices in [0, {n_rows}), got {rows}")
    names = names_for(source_names, len(rows), "output", "source_names")
    angles = _angles(angles_deg, torch.float64, "cpu").numpy()
    power = response.square()
    rel = db(power / power.amax(dim=-1, keepdim=True).clamp_min(1e-300))
    df = float(sample_rate) / (2 * (n_freq - 1))
    da = float(angles[1] - angles[0]) if n_angles > 1 else 1.0
    steps = torch.diff(torch.as_tensor(angles))
    if n_angles > 2 and not torch.allclose(steps, torch.full_like(steps, da), rtol=1e-6, atol=1e-9):
        raise ValueError(  # the image's extent places them evenly
            f"angles_deg must be evenly spaced, got {angles.tolist()}"
        )
    extent = (angles[0] - da / 2, angles[-1] + da / 2, -df / 2, (n_freq - 0.5) * df)
    width, height = panel_size
    fig = new_figure(len(rows) * width + 1.0, height + 0.3 + (0.3 if title else 0.0), dpi)
    axes = fig.subplots(1, len(rows), squeeze=False, sharey=True)[0]
    image = None
    for ax, r, name in zip(axes, rows, names):
        image = ax.imshow(
            rel[:, r, :].numpy(),
            origin="lower",
            aspect="auto",
            extent=extent,
            cmap=cmap,
            vmin=-dynamic_range_db,
            vmax=0.0,
            interpolation="nearest",
        )
        for angle in mark_angles_deg or ():
            ax.axvline(float(angle), color="white", ls="--", lw=1.0, alpha=0.9)
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("direction (deg from broadside)")
    axes[0].set_ylabel("frequency (Hz)")
    if max_freq_hz is not None:
        axes[0].set_ylim(-df / 2, min(check_positive(max_freq_hz, "max_freq_hz"), sample_rate / 2))
    fig.colorbar(image, ax=list(axes), label="response (dB re max)", fraction=0.05, pad=0.02)
    if title:
        fig.suptitle(title)
    return finish(fig, save)
