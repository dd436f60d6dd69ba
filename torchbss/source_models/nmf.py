"""Low-rank (NMF) source model of ILRMA: ``lambda_kft = sum_b T_kfb V_kbt``.

Each source has its own Itakura-Saito NMF of its power spectrogram, updated with the
multiplicative rules of Kitamura et al. (a majorisation-minimisation step, so it never increases
the cost ``sum_{k,f} mean_t (|y|^2 / lambda + log lambda)``). The weights of the spatial update
are ``phi = 1 / lambda``.

References:
    D. Kitamura, N. Ono, H. Sawada, H. Kameoka and H. Saruwatari, "Determined blind source
    separation unifying independent vector analysis and nonnegative matrix factorization",
    IEEE/ACM TASLP 24(9), 2016 (ILRMA).
    M. Nakano, H. Kameoka, J. Le Roux, Y. Kitano, N. Ono and S. Sagayama, "Convergence-guaranteed
    multiplicative algorithms for nonnegative matrix factorization with beta-divergence",
    MLSP 2010.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from torchbss.source_models.base import SourceModel, masked_frame_mean, power

__all__ = ["NMF", "NMFState", "nmf_init", "nmf_update"]


@dataclass
class NMFState:
    """Explicit state of the NMF source model.

    Attributes:
        basis: ``(..., sources, freq, n_basis)`` non-negative spectral bases ``T``.
        activations: ``(..., sources, n_basis, frames)`` non-negative activations ``V``.
        stale_scale: ``(..., sources)`` or ``None``; only set by ILRMA's
            ``normalize="pyroomacoustics"``: pyroomacoustics 0.10.1 rescales the variance but
            not its cached inverse, so its next basis update uses ``stale_scale**2 / (T V)``.
    """

    basis: torch.Tensor
    activations: torch.Tensor
    stale_scale: torch.Tensor | None = None

    def variance(self, eps: float = 0.0) -> torch.Tensor:
        """Model variance ``lambda = T V`` ``(..., sources, freq, frames)``, floored at ``eps``."""
        lam = self.basis @ self.activations
        return lam.clamp_min(eps) if eps > 0 else lam


def nmf_init(
    shape: tuple[int, ...],
    n_freq: int,
    n_frames: int,
    n_basis: int,
    *,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
    generator: torch.Generator | None = None,
) -> NMFState:
    """Random NMF initialisation, uniform in ``[0.1, 1)`` (as in Kitamura's reference code).

    Args:
        shape: leading shape ``(..., sources)``.
        n_freq, n_frames, n_basis: sizes of the factors.
        dtype: real dtype of the factors.
        device: device of the factors (the random numbers are drawn on the generator's device).
        generator: the random generator (``None`` draws from a fresh, randomly seeded one, so the
            global RNG is never touched).

    Returns:
        An :class:`NMFState` with ``basis (..., sources, freq, n_basis)`` and
        ``activations (..., sources, n_basis, frames)``.
    """
    if generator is None:
        generator = torch.Generator()
        generator.seed()
    gen_device = generator.device
    basis = torch.rand(*shape, n_freq, n_basis, generator=generator, dtype=dtype, device=gen_device)
    act = torch.rand(*shape, n_frames, n_basis, generator=generator, dtype=dtype, device=gen_device)
    basis = (0.1 + 0.9 * basis).to(device)
    act = (0.1 + 0.9 * act).to(device).transpose(-1, -2)
    return NMFState(basis=basis, activations=act)


def _safe_sqrt(x: torch.Tensor) -> torch.Tensor:
    """``sqrt(x)`` with a zero (not infinite) gradient at ``x == 0`` (silent bins)."""
    return x.clamp_min(torch.finfo(x.dtype).tiny).sqrt()


def _needs_graph(*tensors: torch.Tensor | None) -> bool:
    """Whether autograd records operations on any of ``tensors`` (then no in-place updates)."""
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def nmf_update(
    P: torch.Tensor,
    state: NMFState,
    frame_mask: torch.Tensor | None = None,
    eps: float = 1e-15,
    return_weights: bool = False,
) -> NMFState | tuple[NMFState, torch.Tensor]:
    """One multiplicative IS-NMF update of the bases, then of the activations.

    ``T <- T sqrt(((P / R^2) V^T) / ((1 / R) V^T))``, then the same for ``V`` with ``R = T V``
    recomputed in between; every factor and ``R`` are floored at ``eps``.

    Every product is a real batched matmul over ``(..., sources)`` on contiguous
    ``(freq, n_basis) x (n_basis, frames)`` factors. When autograd does not record (no input
    requires grad, or grad mode is off) the full-size ``(freq, frames)`` temporaries are reused
    in place (two buffers per call); otherwise the same math runs out of place.

    Args:
        P: ``(..., sources, freq, frames)`` power spectrogram ``|y|^2`` of the estimates.
        state: current factors.
        frame_mask: optional ``(batch..., frames)`` mask; invalid frames are ignored in the
            basis update (their activations are updated but never used).
        eps: floor of the factors and of the variance.
        return_weights: also return ``1 / max(T V, eps)`` of the updated factors (the ILRMA
            weights), computed in the same buffers.

    Returns:
        The updated :class:`NMFState`, and the weights ``(..., sources, freq, frames)`` when
        ``return_weights``.
    """
    T, V = state.basis, state.activations
    if frame_mask is not None:
        m = frame_mask.to(P.dtype)
        m = m.reshape(m.shape[:-1] + (1,) * (P.ndim - m.ndim) + m.shape[-1:])
    else:
        m = None
    inplace = not _needs_graph(P, T, V, state.stale_scale)
    s2 = None if state.stale_scale is None else (state.stale_scale**2)[..., None, None]
    Vt = V.transpose(-1, -2)
    # bases: num = (P / R^2) V^T, den = (1 / R) V^T
    if inplace:
        iR = torch.matmul(T, V).clamp_min_(eps).reciprocal_()
        if s2 is not None:
            iR.mul_(s2)
        a = torch.mul(P, iR).mul_(iR)
        if m is not None:
            a.mul_(m)
            iR.mul_(m)
    else:
        iR = 1.0 / (T @ V).clamp_min(eps)
        if s2 is not None:
            iR = iR * s2
        a = P * iR * iR
        if m is not None:
            a, iR = a * m, iR * m
    num = a @ Vt
    den = iR @ Vt
    T = (T * _safe_sqrt(num / den.clamp_min(eps))).clamp_min(eps)
    Tt = T.transpose(-1, -2)
    # activations: num = T^T (P / R^2), den = T^T (1 / R)
    if inplace:
        torch.matmul(T, V, out=iR).clamp_min_(eps).reciprocal_()
        torch.mul(P, iR, out=a).mul_(iR)
    else:
        iR = 1.0 / (T @ V).clamp_min(eps)
        a = P * iR * iR
    num = Tt @ a
    den = Tt @ iR
    V = (V * _safe_sqrt(num / den.clamp_min(eps))).clamp_min(eps)
    new = NMFState(basis=T, activations=V)
    if not return_weights:
        return new
    if inplace:
        weights = torch.matmul(T, V, out=a).clamp_min_(eps).reciprocal_()
    else:
        weights = 1.0 / (T @ V).clamp_min(eps)
    return new, weights


class NMF(SourceModel):
    """ILRMA's low-rank source model with multiplicative updates and explicit state.

    ``forward`` updates the factors from the current estimates and returns
    ``phi = 1 / max(T V, eps)``.

    Args:
        n_basis: number of NMF bases per source.
        eps: floor of the factors and of the variance (pyroomacoustics uses ``1e-15`` too).
        seed: seed of the random initialisation (a fresh ``torch.Generator`` is seeded on every
            call, so separating the same input twice gives the same result; ``None`` draws a
            random seed). Pass ``source_state=NMFState(...)`` to the separator to warm start.

    Example:
        >>> import torch
        >>> Y = torch.randn(2, 4, 6, dtype=torch.complex128)
        >>> model = NMF(n_basis=3)
        >>> state = model.init_state(Y)
        >>> weights, state = model(Y, state)
        >>> weights.shape, state.basis.shape
        (torch.Size([2, 4, 6]), torch.Size([2, 4, 3]))
    """

    def __init__(self, n_basis: int = 10, eps: float = 1e-15, seed: int | None = 0) -> None:
        super().__init__()
        if isinstance(n_basis, bool) or not isinstance(n_basis, int) or n_basis < 1:
            raise ValueError(f"n_basis must be an integer >= 1, got {n_basis!r}")
        self.n_basis = n_basis
        self.eps = eps
        self.seed = seed

    def init_state(
        self,
        Y: torch.Tensor,
        frame_mask: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> NMFState:
        """Random factors for ``Y`` ``(..., sources, freq, frames)`` (seeded by ``self.seed``)."""
        if generator is None and self.seed is not None:
            generator = torch.Generator().manual_seed(self.seed)
        return nmf_init(
            Y.shape[:-2],
            Y.shape[-2],
            Y.shape[-1],
            self.n_basis,
            dtype=Y.real.dtype,
            device=Y.device,
            generator=generator,
        )

    def forward(
        self, Y: torch.Tensor, state: NMFState | None = None, frame_mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, NMFState]:
        """Update the factors on ``|Y|^2``; weights ``(..., sources, freq, frames)``."""
        if state is None:
            state = self.init_state(Y, frame_mask)
        state, weights = nmf_update(power(Y), state, frame_mask, self.eps, return_weights=True)
        return weights, state

    def cost(
        self, Y: torch.Tensor, state: NMFState | None = None, frame_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``sum_{k,f} mean_t (|y|^2 / lambda + log lambda)``, shape ``(...)``."""
        if state is None:
            raise ValueError("NMF.cost needs the NMF state (basis and activations), got None")
        lam = state.variance(self.eps)
        nll = power(Y) / lam + torch.log(lam)
        return masked_frame_mean(nll, frame_mask).sum((-1, -2))

    def rescale(self, state: NMFState, scale: torch.Tensor) -> NMFState:
        """Multiply each source's variance by ``scale**2`` (through its bases)."""
        s2 = (scale.abs() ** 2)[..., None, None]
        return NMFState(basis=state.basis * s2, activations=state.activations)

    def extra_repr(self) -> str:
        return f"n_basis={self.n_basis}, eps={self.eps}, seed={self.seed}"
