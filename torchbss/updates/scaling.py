"""Fix the scale of separated sources: projection back and the minimal distortion principle.

References:
    N. Murata, S. Ikeda and A. Ziehe, "An approach to blind source separation based on temporal
    structure of speech signals", Neurocomputing 41, 2001 (projection back).
    K. Matsuoka, "Minimal distortion principle for blind source separation", SICE 2002.
"""

from __future__ import annotations

import torch

from torchbss._validation import check_positive_int
from torchbss.updates.covariance import check_load

__all__ = ["projection_back", "minimum_distortion"]


def projection_back(
    Y: torch.Tensor,
    X: torch.Tensor,
    ref_mic: int = 0,
    frame_mask: torch.Tensor | None = None,
    eps: float = 1e-12,
) -> torch.Tensor:
    """Scale each separated source by least squares onto a reference mic.

    ``Y_k <- c_k Y_k`` with ``c_k = sum_t x_ref y_k^* / sum_t |y_k|^2`` per frequency: the image
    of each source at ``ref_mic`` that best explains the mixture there. Works for any number of
    mics and sources; a silent output keeps ``c = 0`` (finite).

    Args:
        Y: ``(..., sources, freq, frames)`` separated STFT.
        X: ``(..., mics, freq, frames)`` mixture STFT.
        ref_mic: index of the reference microphone, in ``[0, mics)``.
        frame_mask: optional ``(..., frames)`` valid-frame mask.
        eps: floor of the denominator.

    Returns:
        ``(..., sources, freq, frames)`` rescaled sources.
    """
    _check_ref_mic(ref_mic, X.shape[-3], "mics of X")
    if Y.shape[:-3] != X.shape[:-3] or Y.shape[-2:] != X.shape[-2:]:
        raise ValueError(
            f"Y (..., sources, freq, frames) and X (..., mics, freq, frames) must share their "
            f"batch, freq and frames dims, got Y {tuple(Y.shape)} and X {tuple(X.shape)}"
        )
    if frame_mask is not None and frame_mask.shape != X.shape[:-3] + X.shape[-1:]:
        raise ValueError(
            f"frame_mask must have shape {tuple(X.shape[:-3] + X.shape[-1:])} (..., frames) "
            f"for X of shape {tuple(X.shape)}, got {tuple(frame_mask.shape)}"
        )
    x_ref = X[..., ref_mic : ref_mic + 1, :, :]
    prod = x_ref * Y.conj()
    power = Y.real**2 + Y.imag**2
    if frame_mask is not None:
        m = frame_mask.to(power.dtype)[..., None, None, :]
        prod, power = prod * m, power * m
    c = prod.sum(-1) / power.sum(-1).clamp_min(eps)
    return Y * c[..., None]


def minimum_distortion(
    Y: torch.Tensor, W: torch.Tensor, ref_mic: int = 0, load: float = 0.0
) -> torch.Tensor:
    """Minimal distortion principle: ``Y_k <- (W^{-1})[ref_mic, k] Y_k`` (Matsuoka 2002).

    Args:
        Y: ``(..., sources, freq, frames)`` with ``Y = W[:, :sources] X``.
        W: ``(..., freq, mics, mics)`` square demixing matrices.
        ref_mic: reference microphone.
        load: optional absolute diagonal loading of ``W`` before inversion.

    Returns:
        ``(..., sources, freq, frames)`` rescaled sources.
    """
    M = W.shape[-1]
    _check_ref_mic(ref_mic, M, "mics of W")
    load = check_load(load)
    if W.shape[-2] != M or Y.shape[-3] > M or Y.shape[-2] != W.shape[-3]:
        raise ValueError(
            f"W must be (..., freq, mics, mics) with freq = that of Y (..., sources <= mics, "
            f"freq, frames), got W {tuple(W.shape)} and Y {tuple(Y.shape)}"
        )
    e = torch.zeros(M, 1, dtype=W.dtype, device=W.device)
    e[ref_mic, 0] = 1.0
    if load > 0:
        W = W + load * torch.eye(M, dtype=W.dtype, device=W.device)
    # row ref of A = W^{-1}: solve W^T a = e
    a = torch.linalg.solve(W.transpose(-1, -2), e.expand(W.shape[:-2] + (M, 1)))[..., 0]
    scale = a[..., : Y.shape[-3]].transpose(-1, -2)  # (..., sources, freq)
    return Y * scale[..., None]


def _check_ref_mic(ref_mic: object, n_mics: int, what: str) -> None:
    check_positive_int(ref_mic, "ref_mic", minimum=0)
    if ref_mic >= n_mics:
        raise ValueError(f"ref_mic must be in [0, {n_mics}) for the {n_mics} {what}, got {ref_mic}")
