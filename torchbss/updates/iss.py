"""Iterative source steering (ISS): rank-1 updates of the estimates and demixing matrices.

One ISS step for source ``k`` replaces ``Y <- Y - v y_k`` and ``W <- W - v w_k^H`` with
``v_s = sum_t phi_s y_s y_k^* / sum_t phi_s |y_k|^2`` for ``s != k`` and
``v_k = 1 - (1/T sum_t phi_k |y_k|^2)^{-1/2}``. Every sum is an entry of the weighted
covariance of the *estimates* ``U_s = 1/T sum_t phi_st y_t y_t^H`` (``K x K`` per frequency):
``v_s = U_s[s, k] / U_s[k, k]``. A sweep therefore computes the ``U_s`` once (one GEMM over
the packed outer products of ``Y``, :func:`~torchbss.updates.base.demix_outer_products`) and
then only transforms them: the step ``Y <- T Y`` with ``T = I - v e_k^T`` maps
``U_s <- T U_s T^H``, a few elementwise operations over whole frequency vectors
(:func:`iss_sweep_packed`). The covariances of ``Y`` (not ``W V W^H`` from those of ``X``) keep
the correlations of well separated sources accurate: they are sums of products of the
estimates, as in the direct form.

References:
    R. Scheibler and N. Ono, "Fast and stable blind source separation with rank-1 updates",
    ICASSP 2020.
"""

from __future__ import annotations

from typing import Any

import torch

from torchbss.updates.base import PackedUpdate
from torchbss.updates.covariance import (
    packed_outer_products,
    packed_weighted_covariance,
    valid_frames,
)
from torchbss.updates.hermitian import unpack_hermitian

__all__ = ["ISS", "iss_update", "iss_sweep_packed", "iss_coefficients"]


def iss_coefficients(
    U: torch.Tensor, k: int, n_valid: torch.Tensor | int, eps: float = 1e-12
) -> torch.Tensor:
    """The ISS step ``v`` of source ``k`` from the weighted covariances of the estimates.

    Args:
        U: ``(..., K, K, K, F)`` complex: ``U[..., s, :, :, f]`` is ``U_s`` at frequency ``f``,
            ``1/T sum_t phi_st y_t y_t^H`` (frequency last).
        k: the source to steer.
        n_valid: number of valid frames ``T`` (int or ``(...)`` tensor).
        eps: floor of the denominators (sums over frames, as in the direct form).

    Returns:
        ``(..., K, F)`` complex ``v``.
    """
    K = U.shape[-4]
    n = n_valid[..., None, None] if isinstance(n_valid, torch.Tensor) else n_valid
    col = U[..., :, :, k, :]  # U_s[:, k]: (..., s, i, F)
    num = torch.diagonal(col, 0, -3, -2).movedim(-1, -2) * n  # U_s[s, k]: (..., s, F)
    den = col[..., k, :].real * n  # U_s[k, k]: (..., s, F)
    v = num / den.clamp_min(eps)
    # a silent source (zero power) keeps its row instead of being rescaled by eps^{-1/2}
    pow_kk = den[..., k, :] / (n_valid[..., None] if isinstance(n_valid, torch.Tensor) else n)
    v_kk = torch.where(pow_kk > eps, 1.0 - pow_kk.clamp_min(eps).rsqrt(), torch.zeros_like(pow_kk))
    onehot = torch.zeros(K, 1, dtype=torch.bool, device=U.device)
    onehot[k] = True
    return torch.where(onehot, v_kk.unsqueeze(-2).to(v.dtype), v)


def iss_sweep_packed(
    W: torch.Tensor,
    Ud: torch.Tensor,
    Uo: torch.Tensor,
    n_valid: torch.Tensor | int,
    eps: float = 1e-12,
) -> torch.Tensor:
    """One ISS sweep over all sources, frequency last, from the covariances of the estimates.

    Args:
        W: ``(..., K, K, F)`` square demixing matrices (row ``k`` gives source ``k``).
        Ud: ``(..., K, K, F)`` real diagonals of ``U_s`` (``s`` first), the weighted
            covariances of ``Y = W X`` (:func:`~torchbss.updates.covariance
            .packed_weighted_covariance` of :func:`~torchbss.updates.base
            .demix_outer_products`).
        Uo: ``(..., K, K (K-1)/2, F)`` their complex strict upper triangles.
        n_valid: number of valid frames ``T`` (int or ``(...)`` tensor).
        eps: floor of the denominators.

    Returns:
        ``(..., K, K, F)`` new demixing matrices.
    """
    U = unpack_hermitian(Ud, Uo).movedim(-3, -1)  # (..., s, K, K, F)
    for k in range(W.shape[-3]):
        v = iss_coefficients(U, k, n_valid, eps)  # (..., K, F)
        W = W - v.unsqueeze(-2) * W[..., k : k + 1, :, :]
        # Y <- (I - v e_k^T) Y:  U_s <- U_s - v U_s[k, :] - U_s[:, k] v^H + v U_s[k, k] v^H
        vc = v.conj()
        row = U[..., :, k : k + 1, :, :]  # (..., s, 1, j, F)
        col = U[..., :, :, k : k + 1, :]  # (..., s, i, 1, F)
        ukk = U[..., :, k : k + 1, k : k + 1, :]  # (..., s, 1, 1, F)
        vi, vj = v.unsqueeze(-2).unsqueeze(-4), vc.unsqueeze(-3).unsqueeze(-4)
        U = U - vi * row - col * vj + (vi * vj) * ukk
    return W


def iss_update(
    Y: torch.Tensor,
    W: torch.Tensor,
    weights: torch.Tensor,
    source: int,
    frame_mask: torch.Tensor | None = None,
    eps: float = 1e-12,
) -> tuple[torch.Tensor, torch.Tensor]:
    """ISS rank-1 update for one source (the step of :func:`iss_sweep_packed`, on ``Y``).

    ``Y <- Y - v y_k`` and ``W <- W - v w_k^H`` with
    ``v_s = sum_t phi_s y_s y_k^* / sum_t phi_s |y_k|^2`` for ``s != k`` and
    ``v_k = 1 - (1/T sum_t phi_k |y_k|^2)^{-1/2}`` (:func:`iss_coefficients`).

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
    n_valid = valid_frames(frame_mask, Y.shape[-1], Y.real.dtype)
    Ud, Uo = packed_weighted_covariance(packed_outer_products(Y, frame_mask), weights, n_valid)
    U = unpack_hermitian(Ud, Uo).movedim(-3, -1)
    v = iss_coefficients(U, source, n_valid, eps)  # (..., s, f)
    Y = Y - v[..., None] * Y[..., source : source + 1, :, :]
    W = W - v.transpose(-1, -2)[..., None] * W[..., source : source + 1, :]
    return Y, W


class ISS(PackedUpdate):
    """Iterative source steering: one rank-1 update per source (Scheibler & Ono 2020).

    Args:
        eps: floor of the denominators.
    """

    name = "iss"
    domain = "estimates"

    def __init__(self, eps: float = 1e-12) -> None:
        if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not eps > 0:
            raise ValueError(f"eps must be a float > 0, got {eps!r}")
        self.eps = float(eps)

    def _config(self) -> dict[str, Any]:
        return {"eps": self.eps}

    def update_packed(self, W, Vd, Vo, n_valid):
        return iss_sweep_packed(W, Vd, Vo, n_valid, self.eps)
