"""Signal-to-distortion ratios without distortion filters: SDR (SNR form) and SI-SDR.

Every metric takes ``(reference, estimate)`` (the BSS-Eval order), returns decibels, is batched
over leading dimensions, differentiable, and works in float32 and float64 on any device.

Conventions (shared by every energy ratio of :mod:`torchbss.metrics`):

* Each ratio is guarded as ``10 log10((num + eps) / (den + eps))`` with both energies clamped
  at zero (:func:`energy_ratio_db`), so every value is finite: never inf, never NaN.
* ``eps`` is **absolute** (an energy, not a fraction of the signal's energy); the default is
  the machine epsilon of the dtype (float32: 1.19e-7, float64: 2.2e-16). The metrics are
  therefore exactly scale invariant only while the signal energies ``sum_t x(t)^2`` are far
  above ``eps``; for signals whose total energy is near ``eps`` (e.g. float32 signals of 1000
  samples of amplitude 1e-5) the guard dominates and the value drifts towards 0 dB. Rescale
  such signals (or pass a smaller ``eps``) before scoring.
* A silent (all-zero) estimate of a non-silent reference scores **0 dB** in :func:`sdr` and
  :func:`si_sdr` (nothing was recovered, nothing was added); a silent reference with a
  non-silent estimate scores ``10 log10(eps / (|ŝ|^2 + eps))`` (very negative: -156.5 dB for a
  unit-energy float64 estimate, -69.2 dB in float32); two silent signals score 0 dB.
"""

from __future__ import annotations

import torch

from torchbss._validation import check_eps, check_signal_pair

__all__ = ["energy_ratio_db", "sdr", "si_sdr"]


def energy_ratio_db(numerator: torch.Tensor, denominator: torch.Tensor, eps: float) -> torch.Tensor:
    """Guarded energy ratio in dB: ``10 log10((max(num, 0) + eps) / (max(den, 0) + eps))``.

    The one place where every dB ratio of :mod:`torchbss.metrics` is formed (see the module
    docstring for the conventions this implies).

    Args:
        numerator: energies of the wanted part, any shape.
        denominator: energies of the unwanted part, broadcastable with ``numerator``.
        eps: absolute guard added to both (> 0).

    Returns:
        Ratio in dB, the broadcast shape of the inputs.
    """
    return 10.0 * torch.log10((numerator.clamp_min(0.0) + eps) / (denominator.clamp_min(0.0) + eps))


def sdr(reference: torch.Tensor, estimate: torch.Tensor, eps: float | None = None) -> torch.Tensor:
    """Signal-to-distortion ratio in its plain SNR form, in dB.

    ``SDR = 10 log10((|s|^2 + eps) / (|s - ŝ|^2 + eps))``. This is not scale invariant (a
    rescaled estimate is penalised); see :func:`si_sdr` and
    :func:`torchbss.metrics.bss_eval_sdr` for the invariant variants. It equals torchmetrics'
    ``signal_noise_ratio(estimate, reference)`` to rounding.

    Args:
        reference: target signals ``s``, shape ``(..., samples)``.
        estimate: estimated signals ``ŝ``, same shape as ``reference``.
        eps: absolute energy floor added to numerator and denominator (default: the dtype's
            machine epsilon). A silent estimate gives 0 dB; a silent reference with a
            non-silent estimate gives ``10 log10(eps / (|ŝ|^2 + eps))`` (very negative,
            finite); two silent signals give 0 dB.

    Returns:
        SDR in dB, shape ``(...)``, the promoted dtype of the inputs.

    Example:
        >>> s = torch.randn(2, 16000)
        >>> sdr(s, s + 0.1 * torch.randn_like(s)).shape
        torch.Size([2])
    """
    reference, estimate = check_signal_pair(reference, estimate)
    eps = check_eps(eps, reference.dtype)
    signal = reference.square().sum(-1)
    noise = (reference - estimate).square().sum(-1)
    return energy_ratio_db(signal, noise, eps)


def si_sdr(
    reference: torch.Tensor,
    estimate: torch.Tensor,
    zero_mean: bool = False,
    eps: float | None = None,
) -> torch.Tensor:
    """Scale-invariant signal-to-distortion ratio (SI-SDR), in dB.

    Le Roux, Wisdom, Erdogan, Hershey, "SDR - half-baked or well done?", ICASSP 2019: the
    reference is rescaled by ``alpha = <ŝ, s> / |s|^2`` and
    ``SI-SDR = 10 log10(|alpha s|^2 / |alpha s - ŝ|^2)``.

    With ``eps`` the guarded form is ``alpha = (<ŝ, s> + eps) / (|s|^2 + eps)`` and
    ``10 log10((|alpha s|^2 + eps) / (|alpha s - ŝ|^2 + eps))`` (the same placement as
    torchmetrics, so results agree with it to rounding). Consequences: a silent (all-zero)
    reference gives ``10 log10(eps / (|ŝ|^2 + eps))``, e.g. about -156.5 dB for a unit-energy
    float64 estimate and -69.2 dB in float32: finite and very negative, never NaN; a silent
    estimate gives 0 dB (``alpha s`` and the error are then both about ``eps / |s|``); a
    silent reference *and* a silent estimate give 0 dB. ``eps`` is absolute, so the value is
    scale invariant only while ``|s|^2`` and ``|ŝ|^2`` are far above ``eps``.

    Args:
        reference: target signals ``s``, shape ``(..., samples)``.
        estimate: estimated signals ``ŝ``, same shape as ``reference``.
        zero_mean: subtract the mean of each signal first.
        eps: absolute guard of the divisions (default: the dtype's machine epsilon).

    Returns:
        SI-SDR in dB, shape ``(...)``, the promoted dtype of the inputs.

    Example:
        >>> s = torch.randn(3, 8000, dtype=torch.float64)
        >>> si_sdr(s, 0.5 * s).min() > 100  # scale invariant
        tensor(True)
    """
    reference, estimate = check_signal_pair(reference, estimate)
    eps = check_eps(eps, reference.dtype)
    if zero_mean:
        reference = reference - reference.mean(-1, keepdim=True)
        estimate = estimate - estimate.mean(-1, keepdim=True)
    alpha = ((estimate * reference).sum(-1, keepdim=True) + eps) / (
        reference.square().sum(-1, keepdim=True) + eps
    )
    target = alpha * reference
    return energy_ratio_db(target.square().sum(-1), (target - estimate).square().sum(-1), eps)
