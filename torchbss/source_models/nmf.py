"""Low-rank (IS-NMF) source model: ``lambda_kft = sum_b T_kfb H_kbt``, batch and online.

Each source has its own Itakura-Saito NMF of its power spectrogram ``P = |y|^2``. The
multiplicative updates are majorisation-minimisation steps of the IS divergence (Nakano et
al. 2010; exponent 1/2), so they never increase the cost
``sum_{k,f} mean_t (P / lambda + log lambda)``; the weights of the spatial update are
``phi = 1 / lambda``.

The two updates are written once and serve both paths:

* activations: ``H <- H * (T^T (P / R^2) / T^T (1 / R)) ** exponent`` with ``R = T H``
  (:func:`nmf_activation_update`; batch ILRMA: all frames, exponent 1/2; online: the current
  frame only, Lefevre et al. 2011 use exponent 1);
* bases: the auxiliary function of the IS divergence majorised at ``T`` is
  ``sum A / T' + B T'`` with the sufficient statistics ``A = ((P / R^2) H^T) * T^2`` and
  ``B = (1 / R) H^T`` (:func:`nmf_basis_statistics`), minimised by ``T' = sqrt(A / B)``
  (:func:`basis_from_statistics`). The batch update uses the statistics of all frames; the
  online update decays and accumulates them over frames (Lefevre et al. 2011).

References:
    D. Kitamura, N. Ono, H. Sawada, H. Kameoka and H. Saruwatari, "Determined blind source
    separation unifying independent vector analysis and nonnegative matrix factorization",
    IEEE/ACM TASLP 24(9), 2016 (ILRMA).
    M. Nakano, H. Kameoka, J. Le Roux, Y. Kitano, N. Ono and S. Sagayama, "Convergence-guaranteed
    multiplicative algorithms for nonnegative matrix factorization with beta-divergence",
    MLSP 2010.
    A. Lefevre, F. Bach and C. Fevotte, "Online algorithms for nonnegative matrix factorization
    with the Itakura-Saito divergence", WASPAA 2011.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from torchbss._compile import CompiledKernels
from torchbss._validation import check_bool
from torchbss.source_models.base import SourceModel, masked_frame_mean, power

__all__ = [
    "NMF",
    "NMFState",
    "nmf_init",
    "nmf_activation_update",
    "nmf_basis_statistics",
    "basis_from_statistics",
    "nmf_update",
    "needs_graph",
]


@dataclass
class NMFState:
    """Explicit state of the NMF source model.

    Attributes:
        basis: ``(..., sources, freq, n_basis)`` non-negative spectral bases ``T``.
        activations: ``(..., sources, n_basis, frames)`` non-negative activations ``H``.
    """

    basis: torch.Tensor
    activations: torch.Tensor

    def variance(self, eps: float = 0.0) -> torch.Tensor:
        """Model variance ``lambda = T H`` ``(..., sources, freq, frames)``, floored at ``eps``."""
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
    """Random NMF factors, uniform in ``[0.1, 1)`` (as in Kitamura's reference code).

    The numbers are drawn in float64 on the CPU for the shape of one mixture
    ``(sources, ...)`` and then cast and broadcast over the leading batch dims, so a mixture
    gets the same initial factors alone or inside a batch, in float32 or float64.

    Args:
        shape: leading shape ``(..., sources)``.
        n_freq, n_frames, n_basis: sizes of the factors.
        dtype: real dtype of the factors.
        device: device of the factors.
        generator: a CPU random generator (``None``: a fresh, randomly seeded one, so the global
            RNG is never touched).

    Returns:
        An :class:`NMFState` with ``basis (..., sources, freq, n_basis)`` and
        ``activations (..., sources, n_basis, frames)`` (contiguous).
    """
    if generator is None:
        generator = torch.Generator()
        generator.seed()
    n_src = shape[-1]
    draw = {"generator": generator, "dtype": torch.float64, "device": generator.device}
    basis = 0.1 + 0.9 * torch.rand(n_src, n_freq, n_basis, **draw)
    act = 0.1 + 0.9 * torch.rand(n_src, n_frames, n_basis, **draw)
    basis = basis.to(device=device, dtype=dtype).expand(*shape, n_freq, n_basis)
    act = act.transpose(-1, -2).to(device=device, dtype=dtype).expand(*shape, n_basis, n_frames)
    return NMFState(basis=basis.contiguous(), activations=act.contiguous())


def needs_graph(*tensors: torch.Tensor | float | None) -> bool:
    """Whether autograd records operations on any of ``tensors`` (then no in-place updates)."""
    return torch.is_grad_enabled() and any(
        isinstance(t, torch.Tensor) and t.requires_grad for t in tensors
    )


#: two ``(..., freq, frames)`` buffers that the batch update reuses for ``1 / R`` and ``P / R^2``
Workspace = tuple[torch.Tensor, torch.Tensor]


def broadcast_matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a @ b`` as a broadcast product and a sum over the inner dim.

    Slower than ``torch.matmul`` eagerly, but pointwise-plus-reduction, which TorchInductor
    fuses with the surrounding elementwise passes (a GEMM is an opaque library call). Used by
    the compiled NMF update (``NMF(compile=True)``), where the inner dim is the few bases or
    the frames of one mixture.
    """
    return (a.unsqueeze(-1) * b.unsqueeze(-3)).sum(-2)


def _ratio_terms(
    P: torch.Tensor,
    T: torch.Tensor,
    H: torch.Tensor,
    eps: float,
    inplace: bool,
    workspace: Workspace | None = None,
    mm=torch.matmul,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(P / R^2, 1 / R)`` with ``R = max(T H, eps)``; fresh buffers reused in place if allowed.

    With ``inplace`` and a ``workspace``, the two results are written into its buffers (no new
    full-size tensors: on CPU every fresh one costs its page faults).
    """
    if inplace:
        r_out, a_out = workspace if workspace is not None else (None, None)
        R = torch.matmul(T, H, out=r_out)
        # the batch update (workspace given) skips the floor's pass where it cannot act
        if workspace is None or not _above_floor(T, H, eps):
            R.clamp_min_(eps)
        inv_r = R.reciprocal_()
        return torch.mul(P, inv_r, out=a_out).mul_(inv_r), inv_r
    inv_r = 1.0 / mm(T, H).clamp_min(eps)
    return P * inv_r * inv_r, inv_r


def _above_floor(T: torch.Tensor, H: torch.Tensor, eps: float) -> bool:
    """Whether ``T H >= eps`` everywhere, by two lower bounds from the small factors alone:
    ``T (min_t H)`` and ``(min_f T) H`` (non-negative factors)."""
    low = torch.maximum(
        (T @ H.amin(-1, keepdim=True)).amin((-1, -2)),
        (T.amin(-2, keepdim=True) @ H).amin((-1, -2)),
    )
    return bool((low >= eps).all())


def _ratio_power(ratio: torch.Tensor, exponent: float | torch.Tensor) -> torch.Tensor:
    """``max(ratio, tiny) ** exponent`` (a plain square root for the MM exponent 1/2)."""
    ratio = ratio.clamp_min(torch.finfo(ratio.dtype).tiny)
    if isinstance(exponent, float) and exponent == 0.5:
        return ratio.sqrt()
    return ratio.pow(exponent)


def _frame_mask_like(frame_mask: torch.Tensor | None, P: torch.Tensor) -> torch.Tensor | None:
    if frame_mask is None:
        return None
    m = frame_mask.to(P.dtype)
    return m.reshape(m.shape[:-1] + (1,) * (P.ndim - m.ndim) + m.shape[-1:])


def nmf_activation_update(
    P: torch.Tensor,
    T: torch.Tensor,
    H: torch.Tensor,
    exponent: float | torch.Tensor = 0.5,
    eps: float = 1e-15,
) -> torch.Tensor:
    """One multiplicative IS-NMF update of the activations, bases fixed.

    ``H <- max(H * (T^T (P / R^2) / T^T (1 / R)) ** exponent, eps)``, ``R = max(T H, eps)``.

    Args:
        P: ``(..., freq, frames)`` observed power.
        T: ``(..., freq, n_basis)`` bases.
        H: ``(..., n_basis, frames)`` activations.
        exponent: ``1/2`` (majorisation-minimisation) or another float / tensor.
        eps: floor of ``R`` and of the new activations.

    Returns:
        ``(..., n_basis, frames)`` new activations.
    """
    return _activation_update(P, T, H, exponent, eps)


def _activation_update(
    P: torch.Tensor,
    T: torch.Tensor,
    H: torch.Tensor,
    exponent: float | torch.Tensor,
    eps: float,
    workspace: Workspace | None = None,
    mm=torch.matmul,
) -> torch.Tensor:
    """:func:`nmf_activation_update`, optionally writing its temporaries into ``workspace``;
    ``mm`` computes the products with the factors (``torch.matmul`` or
    :func:`broadcast_matmul`, then without in-place updates)."""
    inplace = mm is torch.matmul and not needs_graph(P, T, H)
    a, inv_r = _ratio_terms(P, T, H, eps, inplace, workspace, mm)
    Tt = T.transpose(-1, -2)
    if H.shape[-1] == 1 and mm is torch.matmul:  # one frame (online): both in one matmul
        num, den = (Tt @ torch.cat([a, inv_r], -1)).unbind(-1)
        num, den = num.unsqueeze(-1), den.unsqueeze(-1)
    else:
        num, den = mm(Tt, a), mm(Tt, inv_r)
    return (H * _ratio_power(num / den.clamp_min(eps), exponent)).clamp_min(eps)


def nmf_basis_statistics(
    P: torch.Tensor,
    T: torch.Tensor,
    H: torch.Tensor,
    eps: float = 1e-15,
    frame_mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sufficient statistics ``A = ((P / R^2) H^T) * T^2``, ``B = (1 / R) H^T`` of the bases.

    Args:
        P: ``(..., freq, frames)`` observed power.
        T: ``(..., freq, n_basis)`` bases at which the IS divergence is majorised.
        H: ``(..., n_basis, frames)`` activations.
        eps: floor of ``R = T H``.
        frame_mask: optional ``(batch..., frames)`` mask; invalid frames do not count.

    Returns:
        ``(A, B)``, each ``(..., freq, n_basis)``.
    """
    return _basis_statistics(P, T, H, eps, frame_mask)


def _basis_statistics(
    P: torch.Tensor,
    T: torch.Tensor,
    H: torch.Tensor,
    eps: float,
    frame_mask: torch.Tensor | None,
    workspace: Workspace | None = None,
    mm=torch.matmul,
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`nmf_basis_statistics`, optionally writing its temporaries into ``workspace``;
    ``mm`` as in :func:`_activation_update`."""
    m = _frame_mask_like(frame_mask, P)
    inplace = mm is torch.matmul and not needs_graph(P, T, H)
    a, inv_r = _ratio_terms(P, T, H, eps, inplace, workspace, mm)
    if m is not None:
        a, inv_r = (a.mul_(m), inv_r.mul_(m)) if inplace else (a * m, inv_r * m)
    # (H a^T)^T: the long frames axis as the GEMM's reduction over contiguous rows of both
    # operands (measurably faster than a @ H^T for a handful of bases)
    return mm(H, a.mT).mT * (T * T), mm(H, inv_r.mT).mT


def basis_from_statistics(A: torch.Tensor, B: torch.Tensor, eps: float = 1e-15) -> torch.Tensor:
    """Minimiser ``T = max(sqrt(A / B), eps)`` of the auxiliary function ``sum A / T + B T``.

    Args:
        A, B: ``(..., freq, n_basis)`` statistics from :func:`nmf_basis_statistics` (summed or
            decayed over frames).
        eps: floor of ``B`` and of the bases.

    Returns:
        ``(..., freq, n_basis)`` bases.
    """
    return _ratio_power(A / B.clamp_min(eps), 0.5).clamp_min(eps)


def nmf_update(
    P: torch.Tensor,
    state: NMFState,
    frame_mask: torch.Tensor | None = None,
    eps: float = 1e-15,
) -> NMFState:
    """One batch IS-NMF iteration: the bases from all frames' statistics, then the activations,
    then each basis rescaled to unit mean (its activations take the scale; ``lambda`` unchanged).

    Args:
        P: ``(..., sources, freq, frames)`` power spectrogram ``|y|^2`` of the estimates.
        state: current factors.
        frame_mask: optional ``(batch..., frames)`` mask; invalid frames are ignored in the
            basis update (their activations are updated but never used).
        eps: floor of the factors and of the variance.

    Returns:
        The updated :class:`NMFState`.
    """
    return _nmf_update(P, state, frame_mask, eps)


def _nmf_update(
    P: torch.Tensor,
    state: NMFState,
    frame_mask: torch.Tensor | None,
    eps: float,
    workspace: Workspace | None = None,
    mm=torch.matmul,
) -> NMFState:
    """:func:`nmf_update`; both halves write their temporaries into the same ``workspace``;
    ``mm`` as in :func:`_activation_update`."""
    A, B = _basis_statistics(P, state.basis, state.activations, eps, frame_mask, workspace, mm)
    T = basis_from_statistics(A, B, eps)
    H = _activation_update(P, T, state.activations, 0.5, eps, workspace, mm)
    # the split of lambda = T H between T and H is free (both updates are equivariant to
    # T -> T c, H -> H / c): keep each basis at unit mean so the split cannot drift to overflow
    # (it does where a source is nulled, e.g. a duplicated mic in float32)
    c = T.mean(-2, keepdim=True)  # (..., 1, n_basis)
    return NMFState(basis=T / c, activations=H * c.transpose(-1, -2))


def _fused_weights(
    P: torch.Tensor,
    basis: torch.Tensor,
    activations: torch.Tensor,
    frame_mask: torch.Tensor | None,
    eps: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One NMF update and the new weights with :func:`broadcast_matmul` (what
    ``NMF(compile=True)`` compiles): ``(weights, basis, activations)``."""
    state = _nmf_update(P, NMFState(basis, activations), frame_mask, eps, None, broadcast_matmul)
    weights = 1.0 / broadcast_matmul(state.basis, state.activations).clamp_min(eps)
    return weights, state.basis, state.activations


class NMF(CompiledKernels, SourceModel):
    """ILRMA's low-rank source model with multiplicative updates and explicit state.

    ``forward`` updates the factors from the current estimates and returns
    ``phi = 1 / max(T H, eps)``.

    Args:
        n_basis: number of NMF bases per source.
        eps: floor of the factors and of the variance.
        seed: seed of the random initialisation (a fresh ``torch.Generator`` is seeded on every
            call, so separating the same input twice gives the same result; ``None`` draws a
            random seed). Pass a separator state to warm start instead.
        compile: without autograd, run each update (and the weights) as one ``torch.compile``
            graph in which the products with the small factors are fused with the elementwise
            passes (:func:`broadcast_matmul`): the same result to rounding, fewer passes over
            the ``(sources, freq, frames)`` arrays. The first call per input shape compiles
            (seconds; a C++ compiler is needed on CPU).

    Example:
        >>> import torch
        >>> Y = torch.randn(2, 4, 6, dtype=torch.complex128)
        >>> model = NMF(n_basis=3)
        >>> state = model.init_state(Y)
        >>> weights, state = model(Y, state)
        >>> weights.shape, state.basis.shape
        (torch.Size([2, 4, 6]), torch.Size([2, 4, 3]))
    """

    def __init__(
        self, n_basis: int = 2, eps: float = 1e-15, seed: int | None = 0, compile: bool = False
    ) -> None:
        super().__init__()
        self.compile = check_bool(compile, "compile")
        if isinstance(n_basis, bool) or not isinstance(n_basis, int) or n_basis < 1:
            raise ValueError(f"n_basis must be an integer >= 1, got {n_basis!r}")
        if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not eps > 0:
            raise ValueError(f"eps must be a float > 0, got {eps!r}")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise ValueError(f"seed must be an integer or None, got {seed!r}")
        self.n_basis = n_basis
        self.eps = float(eps)
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

    def check_state(self, state: object, Y: torch.Tensor) -> NMFState:
        """Validate a state passed in by the user against estimates ``Y``."""
        if not isinstance(state, NMFState):
            raise TypeError(f"the NMF source state must be an NMFState, got {type(state).__name__}")
        expected_b = Y.shape[:-1] + (self.n_basis,)
        expected_h = Y.shape[:-2] + (self.n_basis, Y.shape[-1])
        if state.basis.shape != expected_b or state.activations.shape != expected_h:
            raise ValueError(
                f"NMFState has basis {tuple(state.basis.shape)} and activations "
                f"{tuple(state.activations.shape)}; for estimates of shape {tuple(Y.shape)} and "
                f"n_basis={self.n_basis} expected {expected_b} and {expected_h}"
            )
        return state

    def forward(
        self, Y: torch.Tensor, state: NMFState | None = None, frame_mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, NMFState]:
        """Update the factors on ``|Y|^2``; weights ``(..., sources, freq, frames)``."""
        return self.weights_from_power(power(Y), state, frame_mask)

    def weights_from_power(
        self,
        P: torch.Tensor,
        state: NMFState | None = None,
        frame_mask: torch.Tensor | None = None,
        workspace: Workspace | None = None,
    ) -> tuple[torch.Tensor, NMFState]:
        """:meth:`forward` from the power ``P = |Y|^2`` ``(..., sources, freq, frames)``.

        Args:
            P: observed power.
            state: current factors (``None``: :meth:`init_state`).
            frame_mask: optional ``(batch..., frames)`` valid-frame mask.
            workspace: optional two buffers shaped like ``P`` for the temporaries (without
                autograd); the returned weights are written into the second one.
        """
        if state is None:
            state = self.init_state(P, frame_mask)
        if needs_graph(P, state.basis, state.activations):
            state = nmf_update(P, state, frame_mask, self.eps)
            return 1.0 / state.variance().clamp_min(self.eps), state
        if self.compile:
            weights, basis, act = self.kernel(_fused_weights)(
                P, state.basis, state.activations, frame_mask, self.eps
            )
            return weights, NMFState(basis=basis, activations=act)
        # no graph: the update's temporaries live in two buffers, the second of which (free
        # again afterwards) receives the weights
        if workspace is None:
            workspace = (torch.empty_like(P), torch.empty_like(P))
        state = _nmf_update(P, state, frame_mask, self.eps, workspace)
        lam = torch.matmul(state.basis, state.activations, out=workspace[1])
        if not _above_floor(state.basis, state.activations, self.eps):
            lam.clamp_min_(self.eps)
        return lam.reciprocal_(), state

    def cost(
        self, Y: torch.Tensor, state: NMFState | None = None, frame_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``sum_{k,f} mean_t (|y|^2 / lambda + log lambda)``, shape ``(...)``."""
        return self.cost_from_power(power(Y), state, frame_mask)

    def cost_from_power(
        self,
        P: torch.Tensor,
        state: NMFState | None,
        frame_mask: torch.Tensor | None = None,
        workspace: Workspace | None = None,
    ) -> torch.Tensor:
        """:meth:`cost` from ``P = |Y|^2``; ``workspace`` as in :meth:`weights_from_power`."""
        if state is None:
            raise ValueError("NMF.cost needs the NMF state (basis and activations), got None")
        if needs_graph(P, state.basis, state.activations):
            lam = state.variance(self.eps)
            nll = P / lam + torch.log(lam)
        else:  # the same, in two buffers
            r_out, a_out = workspace if workspace is not None else (None, None)
            lam = torch.matmul(state.basis, state.activations, out=r_out).clamp_min_(self.eps)
            nll = torch.div(P, lam, out=a_out).add_(lam.log_())
        return masked_frame_mean(nll, frame_mask).sum((-1, -2))

    def cost_from_weights(
        self, P: torch.Tensor, weights: torch.Tensor, frame_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """:meth:`cost` of the state whose weights ``1 / max(lambda, eps)`` are ``weights``.

        ``sum_{k,f} mean_t (P w - log w)``: the same number as :meth:`cost_from_power` without
        forming ``lambda`` again. Without autograd the weights' buffer is consumed (its
        logarithm is taken in place).

        Args:
            P: ``(..., sources, freq, frames)`` power ``|y|^2``.
            weights: ``(..., sources, freq, frames)`` weights of the state (from
                :meth:`weights_from_power`).
            frame_mask: optional ``(batch..., frames)`` valid-frame mask.
        """
        if needs_graph(P, weights):
            return masked_frame_mean(P * weights - torch.log(weights), frame_mask).sum((-1, -2))
        m = _frame_mask_like(frame_mask, P)
        if m is None:
            fit = torch.linalg.vecdot(P, weights)  # sum_t P w: (..., sources, freq)
            logs = weights.log_().sum(-1)
            n = P.shape[-1]
        else:
            fit = torch.linalg.vecdot(P, weights * m)
            logs = torch.linalg.vecdot(weights.log_(), m.expand_as(weights))
            n = m.sum(-1).clamp_min(1.0)
        return ((fit - logs) / n).sum((-1, -2))

    def uses_power_only(self) -> bool:
        """Whether ``forward`` and ``cost`` are the power-based ones (not overridden)."""
        cls = type(self)
        return cls.forward is NMF.forward and cls.cost is NMF.cost

    def rescale(self, state: NMFState, scale: torch.Tensor) -> NMFState:
        """Multiply each source's variance by ``scale**2`` (through its bases)."""
        s2 = (scale.abs() ** 2)[..., None, None]
        return NMFState(basis=state.basis * s2, activations=state.activations)

    def extra_repr(self) -> str:
        extra = ", compile=True" if self.compile else ""
        return f"n_basis={self.n_basis}, eps={self.eps}, seed={self.seed}{extra}"
