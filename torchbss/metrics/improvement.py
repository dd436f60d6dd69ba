"""Improvements over the unprocessed mixture: SDRi, SI-SDRi, BSS-Eval SDRi.

The baseline of every source is the mixture as heard at the reference microphone
(:func:`mixture_baseline`): ``improvement = metric(reference, estimate) - metric(reference,
mixture[..., ref_mic, :])``. This module sits above :mod:`~torchbss.metrics.sdr` and
:mod:`~torchbss.metrics.bss_eval` (it uses both), so neither has to import the other.
"""

from __future__ import annotations

import torch

from torchbss._validation import check_choice, check_signal, check_signal_pair
from torchbss.metrics.bss_eval import bss_eval_sdr
from torchbss.metrics.sdr import sdr, si_sdr

__all__ = ["mixture_baseline", "sdr_improvement", "si_sdr_improvement"]

_SOURCES_LAYOUT = "(..., sources, samples)"
_IMPROVEMENT_METRICS = ("sdr", "si_sdr", "bss_eval_sdr")


def mixture_baseline(
    reference: torch.Tensor, mixture: torch.Tensor, ref_mic: int = 0
) -> torch.Tensor:
    """The mixture at ``ref_mic``, repeated for every reference: the "no processing" estimate.

    Args:
        reference: reference source images, ``(..., sources, samples)``.
        mixture: the mixture, ``(..., mics, samples)`` with the leading dimensions and samples
            of ``reference``.
        ref_mic: index of the reference microphone in ``mixture`` (negative indices are not
            accepted, so that a wrong channel count is caught).

    Returns:
        ``mixture[..., ref_mic, :]`` expanded (a view) to the shape of ``reference``, in its
        dtype.
    """
    reference = check_signal(reference, "reference", _SOURCES_LAYOUT, 2)
    mixture = check_signal(mixture, "mixture", "(..., mics, samples)", 2)
    if mixture.shape[:-2] != reference.shape[:-2] or mixture.shape[-1] != reference.shape[-1]:
        raise ValueError(
            "mixture (..., mics, samples) must share the leading dimensions and samples of "
            f"reference {tuple(reference.shape)}, got {tuple(mixture.shape)}"
        )
    n_mics = mixture.shape[-2]
    if isinstance(ref_mic, bool) or not isinstance(ref_mic, int) or not 0 <= ref_mic < n_mics:
        raise ValueError(f"ref_mic must be an integer in [0, {n_mics}), got {ref_mic!r}")
    return mixture.select(-2, ref_mic).unsqueeze(-2).expand_as(reference).to(reference.dtype)


def sdr_improvement(
    reference: torch.Tensor,
    estimate: torch.Tensor,
    mixture: torch.Tensor,
    ref_mic: int = 0,
    metric: str = "sdr",
    **metric_kwargs: object,
) -> torch.Tensor:
    """Improvement of a metric over the unprocessed mixture at the reference microphone.

    ``metric(reference, estimate) - metric(reference, mixture[..., ref_mic, :])`` for every
    source. The estimates must already be aligned with the references (e.g. with the
    permutation of :func:`torchbss.metrics.bss_eval_sdr`, see
    :func:`torchbss.metrics.apply_permutation`); no permutation is searched here.

    Args:
        reference: reference source images at the reference mic, ``(..., sources, samples)``.
        estimate: aligned estimates, same shape.
        mixture: the mixture, ``(..., mics, samples)`` with the same leading dimensions.
        ref_mic: index of the reference microphone in ``mixture``.
        metric: ``"sdr"``, ``"si_sdr"`` or ``"bss_eval_sdr"`` (BSS-Eval SDR without
            permutation search).
        **metric_kwargs: passed to the metric (e.g. ``filter_length``, ``zero_mean``).

    Returns:
        Improvement in dB, shape ``(..., sources)``.
    """
    check_choice(metric, "metric", _IMPROVEMENT_METRICS)
    reference, estimate = check_signal_pair(reference, estimate, _SOURCES_LAYOUT, 2)
    baseline = mixture_baseline(reference, mixture, ref_mic)
    if metric == "bss_eval_sdr":

        def fn(ref: torch.Tensor, est: torch.Tensor) -> torch.Tensor:
            return bss_eval_sdr(
                ref, est, return_permutation=False, compute_sir_sar=False, **metric_kwargs
            ).sdr

    else:
        base_fn = sdr if metric == "sdr" else si_sdr

        def fn(ref: torch.Tensor, est: torch.Tensor) -> torch.Tensor:
            return base_fn(ref, est, **metric_kwargs)

    return fn(reference, estimate) - fn(reference, baseline)


def si_sdr_improvement(
    reference: torch.Tensor,
    estimate: torch.Tensor,
    mixture: torch.Tensor,
    ref_mic: int = 0,
    **metric_kwargs: object,
) -> torch.Tensor:
    """SI-SDR improvement over the mixture at ``ref_mic``: :func:`sdr_improvement` with SI-SDR.

    Args:
        reference: reference source images, ``(..., sources, samples)``.
        estimate: aligned estimates, same shape.
        mixture: the mixture, ``(..., mics, samples)``.
        ref_mic: index of the reference microphone.
        **metric_kwargs: passed to :func:`torchbss.metrics.si_sdr` (``zero_mean``, ``eps``).

    Returns:
        SI-SDR improvement in dB, shape ``(..., sources)``.
    """
    return sdr_improvement(reference, estimate, mixture, ref_mic, "si_sdr", **metric_kwargs)
