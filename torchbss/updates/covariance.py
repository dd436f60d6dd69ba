"""Spatial covariances of the mixture and their diagonal loading.

Notation (shared by every module of :mod:`torchbss.updates`):

* ``X``: mixture STFT ``(..., mics, freq, frames)`` complex.
* ``weights``: auxiliary weights ``phi`` ``(..., sources, freq or 1, frames)``, real positive.
* ``V_k = 1/T sum_t phi_kt x_t x_t^H``: weighted covariance of source ``k``,
  ``(..., sources, freq, mics, mics)`` complex Hermitian.

Diagonal loading has one meaning everywhere (batch and online separators, IP1, IP2, OverIVA):
``V + load * max(mean(diag V), floor) * I`` — relative to the mean diagonal, with an absolute
``floor`` so that an all-zero covariance (silent input, the zero initial state of an online
separator) still gets a positive definite system with finite solves and finite gradients.
"""

from __future__ import annotations

import torch
from einops import einsum

__all__ = [
    "DEFAULT_LOAD",
    "default_floor",
    "diagonal_loading",
    "weighted_covariance",
    "mixture_covariance",
    "outer_products",
    "weighted_covariance_from_outer",
]

#: relative diagonal loading of the weighted covariances of the batch updates (IP1, IP2)
DEFAULT_LOAD = 1e-6


def default_floor(dtype: torch.dtype) -> float:
    """Absolute floor of the mean diagonal used by :func:`diagonal_loading`: ``sqrt(tiny)``."""
    real = dtype.to_real() if dtype.is_complex else dtype
    return torch.finfo(real).tiny ** 0.5


def diagonal_loading(
    V: torch.Tensor, load: float | torch.Tensor, floor: float | None = None
) -> torch.Tensor:
    """``V + load * max(mean(diag V), floor) * I`` for Hermitian PSD ``V``.

    Args:
        V: ``(..., M, M)`` Hermitian positive semi-definite matrices.
        load: relative loading, a float or a tensor broadcastable to ``V.shape[:-2]`` (e.g. a
            trainable scalar). ``0`` (the float) returns ``V`` unchanged.
        floor: absolute floor of the mean diagonal (default :func:`default_floor`).

    Returns:
        ``(..., M, M)`` loaded matrices.
    """
    if not isinstance(load, torch.Tensor) and load <= 0:
        return V
    if floor is None:
        floor = default_floor(V.dtype)
    scale = V.diagonal(dim1=-2, dim2=-1).real.mean(-1).clamp_min(floor)
    eye = torch.eye(V.shape[-1], dtype=V.dtype, device=V.device)
    return V + (load * scale)[..., None, None] * eye


def _frame_weights(
    weights: torch.Tensor, frame_mask: torch.Tensor | None, n_frames: int, extra_dims: int
) -> tuple[torch.Tensor, torch.Tensor | int]:
    """Mask the weights and return the number of valid frames, shaped to divide the result."""
    if frame_mask is None:
        return weights, n_frames
    m = frame_mask.to(weights.dtype)
    weights = weights * m[..., None, None, :]
    denom = m.sum(-1).clamp_min(1.0)
    return weights, denom.reshape(denom.shape + (1,) * extra_dims)


def weighted_covariance(
    X: torch.Tensor, weights: torch.Tensor, frame_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Weighted spatial covariances ``V_k = sum_t phi_kt x_t x_t^H / T``.

    Args:
        X: ``(..., mics, freq, frames)`` complex mixture STFT.
        weights: ``(..., sources, freq or 1, frames)`` real weights ``phi``.
        frame_mask: optional ``(..., frames)`` {0, 1} mask of valid frames; ``T`` is then the
            number of valid frames (variable-length batches).

    Returns:
        ``(..., sources, freq, mics, mics)`` complex Hermitian.
    """
    weights, denom = _frame_weights(weights, frame_mask, X.shape[-1], 4)
    Xw = einsum(X, weights.to(X.dtype), "... m f t, ... k f t -> ... k f m t")
    return einsum(Xw, X.conj(), "... k f m t, ... n f t -> ... k f m n") / denom


def mixture_covariance(X: torch.Tensor, frame_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Unweighted spatial covariance ``C = 1/T sum_t x_t x_t^H``, ``(..., freq, mics, mics)``."""
    ones = torch.ones(X.shape[:-3] + (1, 1, X.shape[-1]), dtype=X.real.dtype, device=X.device)
    return weighted_covariance(X, ones, frame_mask)[..., 0, :, :, :]


def outer_products(X: torch.Tensor) -> torch.Tensor:
    """Per-frame outer products ``x_ft x_ft^H``, computed once per separation.

    Args:
        X: ``(..., mics, freq, frames)`` complex mixture STFT.

    Returns:
        ``(..., freq, frames, mics, mics)`` complex, contiguous, for
        :func:`weighted_covariance_from_outer`.
    """
    return einsum(X, X.conj(), "... m f t, ... n f t -> ... f t m n").contiguous()


def weighted_covariance_from_outer(
    XX: torch.Tensor, weights: torch.Tensor, frame_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """:func:`weighted_covariance` from precomputed :func:`outer_products`.

    The complex outer products are viewed as real pairs (the weights being real), so each
    source's covariances come from one real matmul over frames, batched over frequencies:
    ``(freq, 1, frames) @ (freq, frames, 2 mics^2)``.

    Args:
        XX: ``(..., freq, frames, mics, mics)`` from :func:`outer_products`.
        weights: ``(..., sources, freq or 1, frames)`` real weights.
        frame_mask: optional ``(..., frames)`` valid-frame mask.

    Returns:
        ``(..., sources, freq, mics, mics)`` complex Hermitian.
    """
    n_freq, n_frames, M = XX.shape[-4], XX.shape[-3], XX.shape[-1]
    weights, denom = _frame_weights(weights, frame_mask, n_frames, 2)
    XXr = torch.view_as_real(XX).flatten(-3)  # (..., f, t, 2 M^2)
    w = weights.expand(weights.shape[:-2] + (n_freq, n_frames)).to(XXr.dtype)  # (.., k, f, t)
    # one (freq, 1, frames) @ (freq, frames, 2 M^2) matmul per source: reads each source's
    # weights in place (no transposed copy of the full weights)
    V = torch.stack([w[..., k, :, None, :] @ XXr for k in range(w.shape[-3])], -4)[..., 0, :]
    V = V / denom
    return torch.view_as_complex(V.unflatten(-1, (M, M, 2)).contiguous())
