"""Spherical IVA source models: Laplace and time-varying Gauss.

Both couple all frequencies of a source through the norm ``r_kt = ||y_kt||_2`` (over ``freq``).
With the cost ``J = sum_k mean_t G(r_kt) - 2 sum_f log|det W_f|`` the auxiliary weights are
``phi = G'(r) / (2 r)`` (see :mod:`torchbss.updates`).

References:
    T. Kim, H. T. Attias, S.-Y. Lee and T.-W. Lee, "Blind source separation exploiting
    higher-order frequency dependencies", IEEE TASLP 2007 (IVA).
    N. Ono, "Stable and fast update rules for independent vector analysis based on auxiliary
    function technique", WASPAA 2011 (AuxIVA, Laplace and Gauss contrasts).
"""

from __future__ import annotations

from typing import Any

import torch

from torchbss.source_models.base import SourceModel, masked_frame_mean, power

__all__ = ["Laplace", "Gauss", "laplace_weights", "gauss_weights"]


def laplace_weights(Y: torch.Tensor, eps: float = 1e-15) -> torch.Tensor:
    """Spherical Laplace weights ``phi_kt = 1 / (2 max(r_kt, eps / 2))``, ``G(r) = r``.

    Args:
        Y: ``(..., sources, freq, frames)`` complex estimates.
        eps: floor of ``2 r`` (pyroomacoustics clamps ``2 r`` at ``1e-15`` too).

    Returns:
        ``(..., sources, 1, frames)`` real weights (broadcast over ``freq``).
    """
    r2 = 2.0 * power(Y).sum(-2, keepdim=True).clamp_min(eps**2 / 4).sqrt()
    return 1.0 / r2.clamp_min(eps)


def gauss_weights(Y: torch.Tensor, eps: float = 1e-15) -> torch.Tensor:
    """Time-varying Gauss weights ``phi_kt = 1 / max(lambda_kt, eps)``, ``lambda = r^2 / F``.

    Args:
        Y: ``(..., sources, freq, frames)`` complex estimates.
        eps: floor of the variance ``lambda``.

    Returns:
        ``(..., sources, 1, frames)`` real weights (broadcast over ``freq``).
    """
    lam = power(Y).mean(-2, keepdim=True)
    return 1.0 / lam.clamp_min(eps)


class _SphericalModel(SourceModel):
    """Shared body of the IVA models: weights from a pure function of ``(Y, eps)``."""

    _weights: Any

    def __init__(self, eps: float = 1e-15) -> None:
        super().__init__()
        self.eps = eps

    def forward(
        self, Y: torch.Tensor, state: Any = None, frame_mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, Any]:
        """Weights ``(..., sources, 1, frames)`` from estimates ``(..., sources, freq, frames)``."""
        return self._weights(Y, self.eps), state

    def extra_repr(self) -> str:
        return f"eps={self.eps}"


class Laplace(_SphericalModel):
    """Spherical Laplace prior ``p(y_k) ~ exp(-||y_k||_2)``: ``G(r) = r``, ``phi = 1 / (2 r)``.

    Args:
        eps: floor of ``2 r`` in the weights (keeps silent frames finite).

    Example:
        >>> import torch
        >>> Y = torch.randn(2, 3, 5, dtype=torch.complex64)
        >>> weights, state = Laplace()(Y)
        >>> weights.shape
        torch.Size([2, 1, 5])
    """

    _weights = staticmethod(laplace_weights)

    def cost(
        self, Y: torch.Tensor, state: Any = None, frame_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``sum_k mean_t ||y_kt||_2``, shape ``(...)``."""
        r = power(Y).sum(-2).sqrt()
        return masked_frame_mean(r, frame_mask).sum(-1)


class Gauss(_SphericalModel):
    """Time-varying Gaussian prior ``y_kft ~ CN(0, lambda_kt)``, ``lambda_kt = ||y_kt||^2 / F``.

    The variance is re-estimated from ``Y`` on every call (maximum likelihood), so the cost is
    ``G(r) = F log(r^2 / F) + F`` and ``phi = G'(r) / (2 r) = 1 / lambda``.

    Args:
        eps: floor of the variance ``lambda``.
    """

    _weights = staticmethod(gauss_weights)

    def cost(
        self, Y: torch.Tensor, state: Any = None, frame_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``sum_k mean_t F (log lambda_kt + 1)``, shape ``(...)``."""
        n_freq = Y.shape[-2]
        lam = power(Y).mean(-2).clamp_min(self.eps)
        return n_freq * masked_frame_mean(torch.log(lam) + 1.0, frame_mask).sum(-1)
