"""Waveform and spectrogram distances: L1, STFT L1, log-mel difference, bleedless, fullness.

Order ``(reference, estimate)``; batched over leading dimensions; differentiable.
Magnitude spectrograms come from the signal core's STFT (:func:`torchbss.signal.stft.stft`:
periodic Hann window, centred frames, zero padding).
"""

from __future__ import annotations

import math
import warnings
from typing import NamedTuple

import torch

from torchbss._validation import (
    check_choice,
    check_positive_int,
    check_sample_rate,
    check_signal,
    check_signal_pair,
)
from torchbss.signal.stft import stft

__all__ = [
    "stft_magnitude",
    "hz_to_mel",
    "mel_to_hz",
    "l1",
    "l1_freq",
    "mel_filterbank",
    "mel_spectrogram_db",
    "mel_db_difference",
    "bleedless",
    "fullness",
    "bleedless_fullness",
    "BleedlessFullness",
]


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def stft_magnitude(x: torch.Tensor, n_fft: int, hop_length: int, eps: float = 0.0) -> torch.Tensor:
    """Magnitude STFT of real signals of any layout: ``(..., samples) -> (..., freq, frames)``.

    Periodic Hann window of ``n_fft`` samples, centred frames with zero padding (so any
    signal length works), computed by the signal core's :func:`torchbss.signal.stft`.

    Args:
        x: real signals, shape ``(..., samples)``.
        n_fft: FFT size (>= 2), also the window length.
        hop_length: hop between frames (``1 <= hop_length <= n_fft``).
        eps: if > 0, return ``sqrt(|X|^2 + eps)``, whose gradient stays finite at zero
            magnitude (use a tiny value such as ``torch.finfo(dtype).tiny``).

    Returns:
        Magnitudes, shape ``(..., n_fft // 2 + 1, frames)``, the real dtype of ``x``.
    """
    check_positive_int(n_fft, "n_fft", minimum=2)
    check_positive_int(hop_length, "hop_length")
    lead = x.shape[:-1]
    spec = stft(x.reshape(-1, x.shape[-1]), n_fft, hop_length)  # (items, freq, frames)
    spec = spec.reshape(*lead, *spec.shape[-2:])
    if eps > 0:
        return (spec.real.square() + spec.imag.square() + eps).sqrt()
    return spec.abs()


def hz_to_mel(freq: torch.Tensor, scale: str = "slaney") -> torch.Tensor:
    """Frequency in Hz to mel (see :func:`mel_filterbank` for the two scales).

    Args:
        freq: frequencies in Hz, any shape.
        scale: ``"slaney"`` (linear below 1 kHz, logarithmic above) or ``"htk"``.

    Returns:
        Mel values, same shape.
    """
    check_choice(scale, "mel scale", ("slaney", "htk"))
    if scale == "htk":
        return 2595.0 * torch.log10(1.0 + freq / 700.0)
    # Slaney (Auditory Toolbox): linear below 1 kHz (200/3 Hz per mel), logarithmic above.
    linear = freq / (200.0 / 3.0)
    log_step = math.log(6.4) / 27.0
    log_part = 15.0 + torch.log(freq.clamp_min(1000.0) / 1000.0) / log_step
    return torch.where(freq >= 1000.0, log_part, linear)


def mel_to_hz(mel: torch.Tensor, scale: str = "slaney") -> torch.Tensor:
    """Mel to frequency in Hz, the inverse of :func:`hz_to_mel`.

    Args:
        mel: mel values, any shape.
        scale: ``"slaney"`` or ``"htk"``.

    Returns:
        Frequencies in Hz, same shape.
    """
    check_choice(scale, "mel scale", ("slaney", "htk"))
    if scale == "htk":
        return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)
    log_step = math.log(6.4) / 27.0
    linear = mel * (200.0 / 3.0)
    log_part = 1000.0 * torch.exp(log_step * (mel.clamp_min(15.0) - 15.0))
    return torch.where(mel >= 15.0, log_part, linear)


def mel_filterbank(
    n_fft: int,
    n_mels: int,
    sample_rate: float,
    f_min: float = 0.0,
    f_max: float | None = None,
    scale: str = "slaney",
    norm: str | None = "slaney",
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Triangular mel filterbank mapping ``n_fft // 2 + 1`` STFT bins to ``n_mels`` bands.

    ``n_mels + 2`` edge frequencies are equally spaced on the mel scale between ``f_min`` and
    ``f_max``; filter ``m`` rises linearly from edge ``m`` to a peak of 1 at edge ``m + 1`` and
    falls to 0 at edge ``m + 2``. ``scale="slaney"`` is Slaney's Auditory Toolbox mel scale
    (linear below 1 kHz, logarithmic above; the librosa default), ``"htk"`` is
    ``2595 log10(1 + f / 700)`` (Young et al., HTK book). ``norm="slaney"`` scales each
    filter by ``2 / (f_{m+2} - f_m)`` (constant energy per Hz); ``None`` keeps peaks at 1.

    Args:
        n_fft: FFT size of the spectrogram the filters apply to.
        n_mels: number of mel bands.
        sample_rate: sampling rate in Hz.
        f_min: lowest edge frequency in Hz.
        f_max: highest edge frequency in Hz (default ``sample_rate / 2``).
        scale: ``"slaney"`` or ``"htk"``.
        norm: ``"slaney"`` or None.
        dtype: dtype of the result.
        device: device of the result.

    Returns:
        Filterbank of shape ``(n_mels, n_fft // 2 + 1)``; apply as ``fb @ magnitude``.
    """
    sample_rate = check_sample_rate(sample_rate)
    check_positive_int(n_fft, "n_fft", minimum=2)
    check_positive_int(n_mels, "n_mels")
    check_choice(scale, "mel scale", ("slaney", "htk"))
    if norm is not None:
        check_choice(norm, "mel norm", ("slaney",))
    f_max = sample_rate / 2 if f_max is None else float(f_max)
    if not 0.0 <= f_min < f_max <= sample_rate / 2:
        raise ValueError(
            f"need 0 <= f_min < f_max <= sample_rate / 2 = {sample_rate / 2}, got f_min={f_min} "
            f"and f_max={f_max}"
        )
    if not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating point dtype, got {dtype}")
    fft_freqs = torch.linspace(0.0, sample_rate / 2, n_fft // 2 + 1, dtype=torch.float64)
    mel_edges = torch.linspace(
        float(hz_to_mel(torch.tensor(f_min, dtype=torch.float64), scale)),
        float(hz_to_mel(torch.tensor(f_max, dtype=torch.float64), scale)),
        n_mels + 2,
        dtype=torch.float64,
    )
    edges = mel_to_hz(mel_edges, scale)  # (n_mels + 2,)
    lower, center, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (fft_freqs - lower) / (center - lower)
    falling = (upper - fft_freqs) / (upper - center)
    weights = torch.minimum(rising, falling).clamp_min(0.0)  # (n_mels, n_freqs)
    if norm == "slaney":
        weights = weights * (2.0 / (upper - lower))
    empty = int((weights.amax(-1) == 0).sum())
    if empty:  # narrower than the bin spacing: too many mels for this n_fft
        warnings.warn(
            f"{empty} of the {n_mels} mel filters are empty (no FFT bin between their edges): "
            f"use fewer mels or a larger n_fft than {n_fft}",
            UserWarning,
            stacklevel=2,
        )
    return weights.to(dtype=dtype, device=device)


def mel_spectrogram_db(
    x: torch.Tensor,
    sample_rate: float,
    n_fft: int = 2048,
    hop_length: int = 512,
    n_mels: int = 128,
    top_db: float | None = 80.0,
    amin: float = 1e-10,
    pool_channels: bool = False,
) -> torch.Tensor:
    """Mel magnitude spectrogram in dB: ``20 log10(max(fb @ |STFT(x)|, amin))``.

    The mel bands use :func:`mel_filterbank` (Slaney scale and norm, as librosa). With
    ``top_db`` every value is floored at ``max - top_db``, the maximum taken over the mel
    bands and frames of each signal (and over its channels when ``pool_channels``); this is
    torchaudio's ``AmplitudeToDB(stype="magnitude", top_db=...)``.

    Args:
        x: signals, shape ``(..., samples)`` (``(..., channels, samples)`` if
            ``pool_channels``).
        sample_rate: sampling rate in Hz.
        n_fft: FFT size (Hann window of the same length).
        hop_length: hop between frames in samples.
        n_mels: number of mel bands.
        top_db: dynamic range kept below the maximum, or None for no floor.
        amin: magnitude floor before the logarithm.
        pool_channels: take the ``top_db`` maximum jointly over dimension -2 (channels).

    Returns:
        dB values, shape ``(..., n_mels, frames)``.
    """
    x = check_signal(x, "x", "(..., samples)", 2 if pool_channels else 1)
    sample_rate = check_sample_rate(sample_rate)
    magnitude = stft_magnitude(x, n_fft, hop_length)
    fb = mel_filterbank(n_fft, n_mels, sample_rate, dtype=x.dtype, device=x.device)
    mel = torch.matmul(fb, magnitude)
    db = 20.0 * torch.log10(mel.clamp_min(amin))
    if top_db is not None:
        dims = (-3, -2, -1) if pool_channels else (-2, -1)
        peak = db.amax(dim=dims, keepdim=True)
        db = torch.maximum(db, peak - top_db)
    return db


# --------------------------------------------------------------------------------------------
# Distances
# --------------------------------------------------------------------------------------------


def l1(reference: torch.Tensor, estimate: torch.Tensor) -> torch.Tensor:
    """Mean absolute waveform error ``mean_t |s(t) - ŝ(t)|``.

    Args:
        reference: reference signals, shape ``(..., samples)``.
        estimate: estimates, same shape.

    Returns:
        Mean absolute error, shape ``(...)`` (lower is better).
    """
    reference, estimate = check_signal_pair(reference, estimate)
    return (reference - estimate).abs().mean(-1)


def l1_freq(
    reference: torch.Tensor,
    estimate: torch.Tensor,
    n_fft: int = 2048,
    hop_length: int = 512,
) -> torch.Tensor:
    """Mean absolute difference of STFT magnitudes ``mean_{f,t} ||S| - |Ŝ||``.

    Args:
        reference: reference signals, shape ``(..., samples)``.
        estimate: estimates, same shape.
        n_fft: FFT size (periodic Hann window of the same length).
        hop_length: hop between frames.

    Returns:
        Mean absolute magnitude error, shape ``(...)`` (lower is better).
    """
    reference, estimate = check_signal_pair(reference, estimate)
    eps = float(torch.finfo(reference.dtype).tiny)
    ref_mag = stft_magnitude(reference, n_fft, hop_length, eps=eps)
    est_mag = stft_magnitude(estimate, n_fft, hop_length, eps=eps)
    return (ref_mag - est_mag).abs().mean((-2, -1))


def mel_db_difference(
    reference: torch.Tensor,
    estimate: torch.Tensor,
    sample_rate: float,
    n_fft: int = 2048,
    hop_length: int = 512,
    n_mels: int = 128,
    top_db: float | None = 80.0,
) -> torch.Tensor:
    """Mean absolute difference of log-mel spectrograms in dB.

    Both spectrograms come from :func:`mel_spectrogram_db` (Slaney mel filterbank, magnitude
    dB floored at ``top_db`` below each signal's maximum).

    Args:
        reference: reference signals, shape ``(..., samples)``.
        estimate: estimates, same shape.
        sample_rate: sampling rate in Hz.
        n_fft: FFT size.
        hop_length: hop between frames.
        n_mels: number of mel bands.
        top_db: dynamic range of each spectrogram (None: unlimited, floor at -200 dB).

    Returns:
        Mean absolute dB difference, shape ``(...)`` (lower is better, 0 for identical input).
    """
    reference, estimate = check_signal_pair(reference, estimate)
    kwargs = dict(n_fft=n_fft, hop_length=hop_length, n_mels=n_mels, top_db=top_db)
    ref_db = mel_spectrogram_db(reference, sample_rate, **kwargs)
    est_db = mel_spectrogram_db(estimate, sample_rate, **kwargs)
    return (est_db - ref_db).abs().mean((-2, -1))


class BleedlessFullness(NamedTuple):
    """Output of :func:`bleedless_fullness`: two scores in ``(0, 100]``, higher is better."""

    bleedless: torch.Tensor
    fullness: torch.Tensor


def bleedless_fullness(
    reference: torch.Tensor,
    estimate: torch.Tensor,
    sample_rate: float,
    n_fft: int = 4096,
    hop_length: int = 1024,
    n_mels: int = 512,
    top_db: float = 80.0,
    pool_channels: bool = False,
) -> BleedlessFullness:
    """Bleedless and fullness scores of the music source separation community (MVSEP).

    As defined for the MVSEP leaderboard and the Music-Source-Separation-Training
    evaluation: with ``D = mel_dB(estimate) - mel_dB(reference)`` (see
    :func:`mel_spectrogram_db`; defaults ``n_fft=4096``, ``hop_length=1024``,
    ``n_mels=512``, ``top_db=80`` as there), positive entries are energy the estimate adds
    (bleed, artefacts) and negative entries energy it misses::

        bleedless = 100 / (1 + mean(D[D > 0]))
        fullness  = 100 / (1 + mean(-D[D < 0]))

    The means run over the entries of the given sign only; with no such entry the score is
    100 (its maximum). Identical signals score 100 on both.

    Args:
        reference: reference signals, shape ``(..., samples)`` (``(..., channels, samples)``
            if ``pool_channels``).
        estimate: estimates, same shape.
        sample_rate: sampling rate in Hz.
        n_fft: FFT size.
        hop_length: hop between frames.
        n_mels: number of mel bands.
        top_db: dynamic range of each spectrogram.
        pool_channels: score the channels (dimension -2) jointly, as the MVSEP definition
            does for stereo; the result then drops that dimension.

    Returns:
        :class:`BleedlessFullness` ``(bleedless, fullness)``, each of shape ``(...)``
        (``(...)`` without the channel dimension if ``pool_channels``).
    """
    reference, estimate = check_signal_pair(reference, estimate, min_ndim=2 if pool_channels else 1)
    kwargs = dict(
        n_fft=n_fft,
        hop_length=hop_length,
        n_mels=n_mels,
        top_db=top_db,
        pool_channels=pool_channels,
    )
    diff = mel_spectrogram_db(estimate, sample_rate, **kwargs) - mel_spectrogram_db(
        reference, sample_rate, **kwargs
    )
    dims = (-3, -2, -1) if pool_channels else (-2, -1)
    positive, negative = diff > 0, diff < 0
    mean_excess = diff.clamp_min(0.0).sum(dims) / positive.sum(dims).clamp_min(1)
    mean_missing = (-diff).clamp_min(0.0).sum(dims) / negative.sum(dims).clamp_min(1)
    return BleedlessFullness(100.0 / (1.0 + mean_excess), 100.0 / (1.0 + mean_missing))


def bleedless(
    reference: torch.Tensor, estimate: torch.Tensor, sample_rate: float, **kwargs: object
) -> torch.Tensor:
    """Bleedless score ``100 / (1 + mean positive mel-dB excess)``; see :func:`bleedless_fullness`.

    Args:
        reference: reference signals, shape ``(..., samples)``.
        estimate: estimates, same shape.
        sample_rate: sampling rate in Hz.
        **kwargs: ``n_fft``, ``hop_length``, ``n_mels``, ``top_db``, ``pool_channels``.

    Returns:
        Score in ``(0, 100]``, shape ``(...)``; lower when the estimate has extra energy.
    """
    return bleedless_fullness(reference, estimate, sample_rate, **kwargs).bleedless


def fullness(
    reference: torch.Tensor, estimate: torch.Tensor, sample_rate: float, **kwargs: object
) -> torch.Tensor:
    """Fullness score ``100 / (1 + mean missing mel-dB)``; see :func:`bleedless_fullness`.

    Args:
        reference: reference signals, shape ``(..., samples)``.
        estimate: estimates, same shape.
        sample_rate: sampling rate in Hz.
        **kwargs: ``n_fft``, ``hop_length``, ``n_mels``, ``top_db``, ``pool_channels``.

    Returns:
        Score in ``(0, 100]``, shape ``(...)``; lower when the estimate misses energy.
    """
    return bleedless_fullness(reference, estimate, sample_rate, **kwargs).fullness
