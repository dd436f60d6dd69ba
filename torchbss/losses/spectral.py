"""Multi-resolution STFT loss: ``loss(estimate, reference)``, minimised."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from torchbss._validation import check_choice, check_eps, check_signal_pair
from torchbss.losses.sdr import REDUCTIONS, reduce_loss
from torchbss.metrics.spectral import stft_magnitude

__all__ = ["multi_resolution_stft_l1", "MultiResolutionSTFTLoss", "DEFAULT_RESOLUTIONS"]

#: ``(n_fft, hop_length)`` pairs used by default (window length = ``n_fft``).
DEFAULT_RESOLUTIONS: tuple[tuple[int, int], ...] = ((512, 128), (1024, 256), (2048, 512))
_MODES = ("sc+logmag", "mag")


def _check_resolutions(resolutions: Sequence[Sequence[int]]) -> tuple[tuple[int, int], ...]:
    pairs = tuple(tuple(r) for r in resolutions)
    if not pairs or any(len(p) != 2 for p in pairs):
        raise ValueError(
            "resolutions must be a non-empty list of (n_fft, hop_length) pairs, "
            f"got {resolutions!r}"
        )
    return pairs  # type: ignore[return-value]


def multi_resolution_stft_l1(
    estimate: torch.Tensor,
    reference: torch.Tensor,
    resolutions: Sequence[Sequence[int]] = DEFAULT_RESOLUTIONS,
    mode: str = "sc+logmag",
    eps: float = 1e-7,
    reduction: str = "mean",
) -> torch.Tensor:
    """Multi-resolution STFT magnitude loss, averaged over resolutions.

    Yamamoto, Song, Kim, "Parallel WaveGAN", ICASSP 2020. For each ``(n_fft, hop_length)``
    (periodic Hann window of ``n_fft`` samples, centred zero-padded frames) with magnitudes
    ``S = |STFT(s)|`` and ``Ŝ = |STFT(ŝ)|``:

    * ``mode="sc+logmag"`` (default): spectral convergence ``||S - Ŝ||_F / (||S||_F + eps)``
      plus log-magnitude L1 ``mean |log max(S, eps) - log max(Ŝ, eps)|``;
    * ``mode="mag"``: magnitude L1 ``mean |S - Ŝ|``.

    Magnitudes are computed as ``sqrt(re^2 + im^2 + tiny)`` so gradients stay finite at zero.

    Args:
        estimate: estimated signals, shape ``(..., samples)``.
        reference: target signals, same shape.
        resolutions: ``(n_fft, hop_length)`` pairs.
        mode: ``"sc+logmag"`` or ``"mag"``.
        eps: floor of the log magnitudes and guard of the spectral convergence denominator.
        reduction: ``"mean"`` (default), ``"sum"`` or ``"none"`` (shape ``(...)``).

    Returns:
        The loss, a scalar or ``(...)`` for ``reduction="none"``.
    """
    reference, estimate = check_signal_pair(reference, estimate)
    check_choice(mode, "mode", _MODES)
    check_choice(reduction, "reduction", REDUCTIONS)
    eps = check_eps(eps, reference.dtype)
    pairs = _check_resolutions(resolutions)
    tiny = float(torch.finfo(reference.dtype).tiny)
    total = reference.new_zeros(reference.shape[:-1])
    for n_fft, hop_length in pairs:
        ref_mag = stft_magnitude(reference, n_fft, hop_length, eps=tiny)
        est_mag = stft_magnitude(estimate, n_fft, hop_length, eps=tiny)
        if mode == "mag":
            total = total + (ref_mag - est_mag).abs().mean((-2, -1))
            continue
        convergence = torch.linalg.vector_norm(ref_mag - est_mag, dim=(-2, -1)) / (
            torch.linalg.vector_norm(ref_mag, dim=(-2, -1)) + eps
        )
        log_l1 = (ref_mag.clamp_min(eps).log() - est_mag.clamp_min(eps).log()).abs()
        total = total + convergence + log_l1.mean((-2, -1))
    return reduce_loss(total / len(pairs), reduction)


class MultiResolutionSTFTLoss(nn.Module):
    """Module form of :func:`multi_resolution_stft_l1`; ``forward(estimate, reference)``."""

    def __init__(
        self,
        resolutions: Sequence[Sequence[int]] = DEFAULT_RESOLUTIONS,
        mode: str = "sc+logmag",
        eps: float = 1e-7,
        reduction: str = "mean",
    ) -> None:
        super().__init__()
        self.resolutions = _check_resolutions(resolutions)
        self.mode = check_choice(mode, "mode", _MODES)
        self.eps = check_eps(eps, torch.float32)
        self.reduction = check_choice(reduction, "reduction", REDUCTIONS)

    def forward(self, estimate: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        return multi_resolution_stft_l1(
            estimate,
            reference,
            resolutions=self.resolutions,
            mode=self.mode,
            eps=self.eps,
            reduction=self.reduction,
        )
