"""Spherical IVA source models: Laplace and time-varying Gauss.

Both couple all frequencies of a source through the norm ``r_kt = ||y_kt||_2`` (over ``freq``).
With the cost ``J = sum_k mean_t G(r_kt) - 2 sum_f log|det W_f|`` the auxiliary weights are
``phi = G'(r) / (2 r)`` (see :mod:`torchbss.updates`).

Weights and cost depend on the estimates only through the frame powers
``p_kt = r_kt^2 = sum_f |y_kft|^2``: the ``*_from_power`` functions are the math, and the batch
separators feed them powers computed without forming ``Y``
(:func:`~torchbss.updates.covariance.packed_output_power`).

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

__all__ = [
    "Laplace",
    "Gauss",
    "SphericalModel",
    "laplace_weights",
    "gauss_weights",
    "laplace_weights_from_power",
    "gauss_weights_from_power",
]


def laplace_weights_from_power(p: torch.Tensor, eps: float = 1e-15) -> torch.Tensor:
    """Spherical Laplace weights ``phi = 1 / (2 max(r, eps / 2))`` from ``p = r^2``.

    Args:
        p: ``(...)`` frame powers ``sum_f |y_kft|^2`` (e.g. ``(..., sources, 1, frames)``).
        eps: floor of ``2 r``.

    Returns:
        Real weights, shaped like ``p``.
    """
    r2 = 2.0 * p.clamp_min(eps**2 / 4).sqrt()
    return 1.0 / r2.clamp_min(eps)


def gauss_weights_from_power(p: torch.Tensor, n_freq: int, eps: float = 1e-15) -> torch.Tensor:
    """Time-varying Gauss weights ``phi = 1 / max(p / F, eps)`` from ``p = sum_f |y_kft|^2``.

    Args:
        p: ``(...)`` frame powers.
        n_freq: number of frequencies ``F`` (``lambda = p / F``).
        eps: floor of the variance ``lambda``.

    Returns:
        Real weights, shaped like ``p``.
    """
    return 1.0 / (p / n_freq).clamp_min(eps)


def laplace_weights(Y: torch.Tensor, eps: float = 1e-15) -> torch.Tensor:
    """Spherical Laplace weights ``phi_kt = 1 / (2 max(r_kt, eps / 2))``, ``G(r) = r``.

    Args:
        Y: ``(..., sources, freq, frames)`` complex estimates.
        eps: floor of ``2 r`` (pyroomacoustics clamps ``2 r`` at ``1e-15`` too).

    Returns:
        ``(..., sources, 1, frames)`` real weights (broadcast over ``freq``).
    """
    return laplace_weights_from_power(power(Y).sum(-2, keepdim=True), eps)


def gauss_weights(Y: torch.Tensor, eps: float = 1e-15) -> torch.Tensor:
    """Time-varying Gauss weights ``phi_kt = 1 / max(lambda_kt, eps)``, ``lambda = r^2 / F``.

    Args:
        Y: ``(..., sources, freq, frames)`` complex estimates.
        eps: floor of the variance ``lambda``.

    Returns:
        ``(..., sources, 1, frames)`` real weights (broadcast over ``freq``).
    """
    return gauss_weights_from_power(power(Y).sum(-2, keepdim=True), Y.shape[-2], eps)


class SphericalModel(SourceModel):
    """Shared body of the IVA models: weights and cost are functions of the frame powers.

    Subclasses implement :meth:`weights_from_power` and :meth:`cost_from_power`; ``forward``
    and ``cost`` apply them to ``p = sum_f |y|^2``. The batch separators call the ``*_power``
    methods directly with powers computed from the packed outer products (only for the
    built-in classes, whose ``forward`` and ``cost`` are exactly these).
    """

    def __init__(self, eps: float = 1e-15) -> None:
        super().__init__()
        self.eps = eps

    def weights_from_power(self, p: torch.Tensor, n_freq: int) -> torch.Tensor:
        """Weights shaped like the frame powers ``p`` ``(..., sources, 1, frames)``."""
        raise NotImplementedError

    def cost_from_power(
        self, p: torch.Tensor, n_freq: int, frame_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Source cost ``(...)`` from the frame powers ``p`` ``(..., sources, frames)``."""
        raise NotImplementedError

    def forward(
        self, Y: torch.Tensor, state: Any = None, frame_mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, Any]:
        """Weights ``(..., sources, 1, frames)`` from estimates ``(..., sources, freq, frames)``."""
        return self.weights_from_power(power(Y).sum(-2, keepdim=True), Y.shape[-2]), state

    def cost(
        self, Y: torch.Tensor, state: Any = None, frame_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Source term of the cost, ``(...)``."""
        return self.cost_from_power(power(Y).sum(-2), Y.shape[-2], frame_mask)

    def uses_power_only(self) -> bool:
        """Whether ``forward`` and ``cost`` are the power-based ones (not overridden)."""
        cls = type(self)
        return cls.forward is SphericalModel.forward and cls.cost is SphericalModel.cost

    def extra_repr(self) -> str:
        return f"eps={self.eps}"


class Laplace(SphericalModel):
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

    def weights_from_power(self, p: torch.Tensor, n_freq: int) -> torch.Tensor:
        return laplace_weights_from_power(p, self.eps)

    def cost_from_power(
        self, p: torch.Tensor, n_freq: int, frame_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``sum_k mean_t ||y_kt||_2``, shape ``(...)``."""
        return masked_frame_mean(p.clamp_min(0.0).sqrt(), frame_mask).sum(-1)


class Gauss(SphericalModel):
    """Time-varying Gaussian prior ``y_kft ~ CN(0, lambda_kt)``, ``lambda_kt = ||y_kt||^2 / F``.

    The variance is re-estimated from ``Y`` on every call (maximum likelihood), so the cost is
    ``G(r) = F log(r^2 / F) + F`` and ``phi = G'(r) / (2 r) = 1 / lambda``.

    Args:
        eps: floor of the variance ``lambda``.
    """

    def weights_from_power(self, p: torch.Tensor, n_freq: int) -> torch.Tensor:
        return gauss_weights_from_power(p, n_freq, self.eps)

    def cost_from_power(
        self, p: torch.Tensor, n_freq: int, frame_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``sum_k mean_t F (log lambda_kt + 1)``, shape ``(...)``."""
        lam = (p / n_freq).clamp_min(self.eps)
        return n_freq * masked_frame_mean(torch.log(lam) + 1.0, frame_mask).sum(-1)
