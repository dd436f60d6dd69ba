"""Iterative source steering (ISS): rank-1 updates of the estimates and demixing matrices.

References:
    R. Scheibler and N. Ono, "Fast and stable blind source separation with rank-1 updates",
    ICASSP 2020.
"""

from __future__ import annotations

from typing import Any

import torch

from torchbss.updates.base import SpatialUpdate, UpdateCache

__all__ = ["ISS", "iss_update"]


def iss_update(
    Y: torch.Tensor,
    W: torch.Tensor,
    weights: torch.Tensor,
    source: int,
    frame_mask: torch.Tensor | None = None,
    eps: float = 1e-12,
) -> tuple[torch.Tensor, torch.Tensor]:
    """ISS rank-1 update for one source.

    ``Y <- Y - v y_k`` and ``W <- W - v w_k^H`` with
    ``v_s = sum_t phi_s y_s y_k^* / sum_t phi_s |y_k|^2`` for ``s != k`` and
    ``v_k = 1 - (1/T sum_t phi_k |y_k|^2)^{-1/2}``.

    Args:
        Y: ``(..., sources, freq, frames)`` current estimates (``sources == W rows``).
        W: ``(..., freq, sources, mics)`` demixing matrices kept in sync with ``Y``.
        weights: ``(..., sources, freq or 1, frames)`` auxiliary weights ``phi``.
        source: the source ``k`` to steer.
        frame_mask: optional ``(..., frames)`` valid-frame mask.
        eps: floor of the denominators.

    Returns:
        ``(Y, W)`` updated (new tensors).
    """
    weights = weights.expand(Y.shape)
    if frame_mask is not None:
        weights = weights * frame_mask.to(weights.dtype)[..., None, None, :]
        n_frames = frame_mask.to(weights.dtype).sum(-1).clamp_min(1.0)[..., None]  # (..., 1)
    else:
        n_frames = Y.shape[-1]
    y_k = Y[..., source : source + 1, :, :]  # (..., 1, f, t)
    pow_k = y_k.real**2 + y_k.imag**2
    num = (weights * Y * y_k.conj()).sum(-1)  # (..., s, f)
    den = (weights * pow_k).sum(-1)  # (..., s, f)
    v = num / den.clamp_min(eps)
    # a silent source (zero power) keeps its row instead of being rescaled by eps^{-1/2}
    pow_kk = den[..., source, :] / n_frames
    v_kk = torch.where(pow_kk > eps, 1.0 - pow_kk.clamp_min(eps).rsqrt(), torch.zeros_like(pow_kk))
    onehot = torch.zeros(Y.shape[-3], 1, dtype=torch.bool, device=Y.device)
    onehot[source] = True
    v = torch.where(onehot, v_kk.unsqueeze(-2).to(v.dtype), v)  # (..., s, f)
    Y = Y - v[..., None] * y_k
    w_k = W[..., source : source + 1, :]  # (..., f, 1, m)
    W = W - v.transpose(-1, -2)[..., None] * w_k
    return Y, W


class ISS(SpatialUpdate):
    """Iterative source steering: one rank-1 update per source (Scheibler & Ono 2020).

    Args:
        eps: floor of the denominators.
    """

    name = "iss"

    def __init__(self, eps: float = 1e-12) -> None:
        if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not eps > 0:
            raise ValueError(f"eps must be a float > 0, got {eps!r}")
        self.eps = float(eps)

    def _config(self) -> dict[str, Any]:
        return {"eps": self.eps}

    def __call__(self, W, Y, weights, cache: UpdateCache):
        for k in range(cache.n_src):
            Y, W = iss_update(Y, W, weights, k, cache.frame_mask, eps=self.eps)
        return W, Y
