"""Frame-wise SI-SDR and its summaries (watch a separation, e.g. an online one, over time).

:func:`framewise_si_sdr` scores successive windows of the signals (as BSS-Eval v4 / museval
report 1 s windows); :func:`framewise_summary` reduces the frames of each signal to its mean,
median, minimum and second-half mean over the valid (non-silent) frames. Online methods adapt
during the first seconds, so they are usually judged on the second half.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from torchbss._validation import check_sample_rate, check_signal_pair, check_tensor
from torchbss.metrics.sdr import si_sdr

__all__ = ["framewise_si_sdr", "FramewiseResult", "framewise_summary", "FramewiseSummary"]


class FramewiseResult(NamedTuple):
    """Output of :func:`framewise_si_sdr`.

    Attributes:
        values: SI-SDR per frame in dB, shape ``(..., frames)``; ``fill_value`` where the
            reference frame is silent.
        valid: True where the reference frame is not silent, shape ``(..., frames)``.
    """

    values: torch.Tensor
    valid: torch.Tensor


def framewise_si_sdr(
    reference: torch.Tensor,
    estimate: torch.Tensor,
    sample_rate: float,
    window_s: float = 1.0,
    hop_s: float = 1.0,
    zero_mean: bool = False,
    silence_threshold: float = 1e-10,
    fill_value: float = 0.0,
    eps: float | None = None,
) -> FramewiseResult:
    """SI-SDR over successive frames (as BSS-Eval v4 / museval report 1 s windows).

    Frames of ``round(window_s * sample_rate)`` samples start every ``round(hop_s *
    sample_rate)`` samples; trailing samples that do not fill a whole frame are ignored (as in
    museval), and a signal shorter than one window gives a single frame over all of it.
    A frame whose reference mean square is ``<= silence_threshold`` is *silent*: SI-SDR is
    undefined there (museval reports NaN), so its value is replaced by ``fill_value`` and it is
    marked invalid. Aggregate with :func:`framewise_summary` or e.g.
    ``values[valid].median()``.

    Args:
        reference: reference signals, shape ``(..., samples)``.
        estimate: estimated signals, same shape.
        sample_rate: sampling rate in Hz (> 0).
        window_s: frame length in seconds (> 0).
        hop_s: frame hop in seconds (> 0).
        zero_mean: subtract each frame's mean first.
        silence_threshold: mean-square level at or below which a reference frame is silent.
        fill_value: value reported for silent frames.
        eps: guard of :func:`torchbss.metrics.si_sdr`.

    Returns:
        :class:`FramewiseResult` ``(values, valid)``, each of shape ``(..., frames)``.
    """
    reference, estimate = check_signal_pair(reference, estimate)
    sample_rate = check_sample_rate(sample_rate)
    for value, name in ((window_s, "window_s"), (hop_s, "hop_s")):
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not value > 0:
            raise ValueError(f"{name} must be a positive number of seconds, got {value!r}")
    n_samples = reference.shape[-1]
    window = max(1, round(window_s * sample_rate))
    hop = max(1, round(hop_s * sample_rate))
    window = min(window, n_samples)
    ref_frames = reference.unfold(-1, window, hop)  # (..., frames, window)
    est_frames = estimate.unfold(-1, window, hop)
    values = si_sdr(ref_frames, est_frames, zero_mean=zero_mean, eps=eps)
    valid = ref_frames.square().mean(-1) > silence_threshold
    values = torch.where(valid, values, torch.full_like(values, fill_value))
    return FramewiseResult(values, valid)


class FramewiseSummary(NamedTuple):
    """Output of :func:`framewise_summary`: one value per signal, in dB.

    Attributes:
        mean: mean over the valid frames, shape ``(...)``.
        median: median over the valid frames (the mean of the two middle values for an even
            count, as ``numpy.median``), shape ``(...)``.
        min: worst valid frame, shape ``(...)``.
        second_half_mean: mean over the valid frames of the second half (frames
            ``frames // 2`` onwards), shape ``(...)``.
    """

    mean: torch.Tensor
    median: torch.Tensor
    min: torch.Tensor
    second_half_mean: torch.Tensor


def _masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    count = mask.sum(-1)
    total = torch.where(mask, values, torch.zeros_like(values)).sum(-1)
    nan = torch.full_like(total, float("nan"))
    return torch.where(count > 0, total / count.clamp_min(1), nan)


def framewise_summary(values: torch.Tensor, valid: torch.Tensor) -> FramewiseSummary:
    """Mean, median, minimum and second-half mean of frame-wise values over the valid frames.

    Convention: a summary over no valid frame (a reference silent in every frame, or in the
    whole second half) is undefined and reported as NaN (it is ``None`` in
    :meth:`torchbss.metrics.MetricBundle.to_dict`); every other value is finite.

    Args:
        values: frame values, shape ``(..., frames)`` (e.g. :func:`framewise_si_sdr`'s).
        valid: True for the frames to include, same shape.

    Returns:
        :class:`FramewiseSummary` ``(mean, median, min, second_half_mean)``, each ``(...)``,
        the dtype of ``values``; differentiable in ``values``.
    """
    check_tensor(values, "values", min_ndim=1, layout="(..., frames)", min_last=1)
    check_tensor(valid, "valid", min_ndim=1, layout="(..., frames)")
    if valid.shape != values.shape or valid.dtype != torch.bool:
        raise ValueError(
            f"valid must be a bool tensor of the shape of values {tuple(values.shape)}, got "
            f"{valid.dtype} of shape {tuple(valid.shape)}"
        )
    n_frames = values.shape[-1]
    count = valid.sum(-1)
    nan = torch.full(values.shape[:-1], float("nan"), dtype=values.dtype, device=values.device)
    # invalid frames sort to the end; the median averages the two middle valid values
    inf = torch.full_like(values, float("inf"))
    ordered = torch.where(valid, values, inf).sort(-1).values
    lower = ((count - 1).clamp_min(0) // 2)[..., None]
    upper = (count // 2).clamp_max(n_frames - 1)[..., None]
    median = 0.5 * (ordered.gather(-1, lower) + ordered.gather(-1, upper))[..., 0]
    median = torch.where(count > 0, median, nan)
    minimum = torch.where(count > 0, ordered[..., 0], nan)
    second_half = valid.clone()
    second_half[..., : n_frames // 2] = False
    return FramewiseSummary(
        mean=_masked_mean(values, valid),
        median=median,
        min=minimum,
        second_half_mean=_masked_mean(values, second_half),
    )
