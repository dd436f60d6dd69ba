"""Negative SDR / SI-SDR training losses: ``loss(estimate, reference)``, minimised.

Both reduce to a scalar mean by default (``reduction="mean"``); ``reduction="none"`` keeps one
value per signal, which is what :func:`torchbss.losses.pit` expects from its pairwise loss.
"""

from __future__ import annotations

import torch
from torch import nn

from torchbss._validation import check_choice, check_eps, check_signal_pair
from torchbss.metrics.sdr import sdr, si_sdr

__all__ = ["negative_sdr", "negative_si_sdr", "NegSDR", "NegSISDR", "reduce_loss", "REDUCTIONS"]

REDUCTIONS = ("mean", "sum", "none")


def reduce_loss(loss: torch.Tensor, reduction: str) -> torch.Tensor:
    """Apply ``reduction`` in ``{"mean", "sum", "none"}`` to a per-item loss."""
    check_choice(reduction, "reduction", REDUCTIONS)
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    return loss


def negative_si_sdr(
    estimate: torch.Tensor,
    reference: torch.Tensor,
    zero_mean: bool = False,
    eps: float | None = None,
    reduction: str = "mean",
) -> torch.Tensor:
    """Negative scale-invariant SDR (Le Roux et al., ICASSP 2019), in dB.

    ``-si_sdr(reference, estimate)``; see :func:`torchbss.metrics.si_sdr` for the guarded
    formula (finite for silent signals).

    Args:
        estimate: estimated signals, shape ``(..., samples)``.
        reference: target signals, same shape.
        zero_mean: subtract the mean of each signal first.
        eps: division guard (default: the dtype's machine epsilon).
        reduction: ``"mean"`` (default), ``"sum"`` or ``"none"`` (shape ``(...)``).

    Returns:
        The loss, a scalar or ``(...)`` for ``reduction="none"``.
    """
    return reduce_loss(-si_sdr(reference, estimate, zero_mean=zero_mean, eps=eps), reduction)


def negative_sdr(
    estimate: torch.Tensor,
    reference: torch.Tensor,
    soft_threshold_db: float | None = None,
    eps: float | None = None,
    reduction: str = "mean",
) -> torch.Tensor:
    """Negative SDR (SNR) loss, optionally with a soft threshold (tau-SDR).

    Without threshold: ``-10 log10(|s|^2 / |s - ŝ|^2)`` (guarded as :func:`torchbss.metrics.sdr`).
    With ``soft_threshold_db = thr`` (Wisdom et al., "Unsupervised sound separation using
    mixture invariant training", NeurIPS 2020), ``tau = 10^(-thr / 10)`` and::

        loss = 10 log10(|s - ŝ|^2 + tau |s|^2) - 10 log10(|s|^2)

    The second term (constant w.r.t. the estimate, omitted in the paper) makes the loss
    read as a negative SDR: it is bounded below by ``-thr`` (reached by a perfect estimate),
    so well-separated examples stop dominating the gradient. ``eps`` is added inside both
    logarithms (a silent reference then gives a finite loss).

    Args:
        estimate: estimated signals, shape ``(..., samples)``.
        reference: target signals, same shape.
        soft_threshold_db: SDR in dB at which the loss saturates (e.g. 30), or None.
        eps: guard of the logarithms (default: the dtype's machine epsilon).
        reduction: ``"mean"`` (default), ``"sum"`` or ``"none"`` (shape ``(...)``).

    Returns:
        The loss, a scalar or ``(...)`` for ``reduction="none"``.
    """
    if soft_threshold_db is None:
        return reduce_loss(-sdr(reference, estimate, eps=eps), reduction)
    reference, estimate = check_signal_pair(reference, estimate)
    eps = check_eps(eps, reference.dtype)
    thr = soft_threshold_db
    if isinstance(thr, bool) or not isinstance(thr, (int, float)) or not -300 <= thr <= 300:
        raise ValueError(f"soft_threshold_db must be a number of dB in [-300, 300], got {thr!r}")
    tau = 10.0 ** (-float(soft_threshold_db) / 10.0)
    signal = reference.square().sum(-1)
    error = (reference - estimate).square().sum(-1)
    loss = 10.0 * torch.log10(error + tau * signal + eps) - 10.0 * torch.log10(signal + eps)
    return reduce_loss(loss, reduction)


class NegSISDR(nn.Module):
    """Module form of :func:`negative_si_sdr`: ``NegSISDR()(estimate, reference)``."""

    def __init__(
        self, zero_mean: bool = False, eps: float | None = None, reduction: str = "mean"
    ) -> None:
        super().__init__()
        self.zero_mean = zero_mean
        self.eps = eps
        self.reduction = check_choice(reduction, "reduction", REDUCTIONS)

    def forward(self, estimate: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        return negative_si_sdr(
            estimate, reference, zero_mean=self.zero_mean, eps=self.eps, reduction=self.reduction
        )


class NegSDR(nn.Module):
    """Module form of :func:`negative_sdr`, e.g. ``NegSDR(soft_threshold_db=30)(est, ref)``."""

    def __init__(
        self,
        soft_threshold_db: float | None = None,
        eps: float | None = None,
        reduction: str = "mean",
    ) -> None:
        super().__init__()
        self.soft_threshold_db = soft_threshold_db
        self.eps = eps
        self.reduction = check_choice(reduction, "reduction", REDUCTIONS)

    def forward(self, estimate: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        return negative_sdr(
            estimate,
            reference,
            soft_threshold_db=self.soft_threshold_db,
            eps=self.eps,
            reduction=self.reduction,
        )
