"""Iterative projection: IP1 (one row at a time) and IP2 (pairs of rows), batched and
differentiable; pure functions with their strategy classes beside them.

IP1 has exactly one implementation, :func:`ip1_sweep`, shared by the batch separators (one
sweep per iteration) and the online separators (one sweep per frame). It works in a
frequency-last layout (``(..., M, M, freq)``) on the inverses of the loaded covariances and
keeps ``A = W^{-1}`` in sync by Sherman-Morrison updates, so that a row costs a few elementwise
operations over whole frequency vectors instead of a batched LAPACK solve of tiny matrices.

References:
    N. Ono, "Stable and fast update rules for independent vector analysis based on auxiliary
    function technique", WASPAA 2011 (IP1).
    N. Ono, "Fast stereo independent vector analysis and its implementation on mobile phone",
    IWAENC 2012 (IP2).
    R. Scheibler and N. Ono, "Independent vector analysis with more microphones than sources",
    WASPAA 2019 (OverIVA: background rows after each source row).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from einops import einsum

from torchbss.updates.base import SpatialUpdate, UpdateCache, demix
from torchbss.updates.covariance import (
    DEFAULT_LOAD,
    default_floor,
    diagonal_loading,
    mixture_covariance,
    outer_products,
    weighted_covariance_from_outer,
)
from torchbss.updates.hermitian import (
    from_freq_last,
    hermitian_inverse,
    pack_hermitian,
    to_freq_last,
)
from torchbss.updates.overiva import background_update

__all__ = [
    "IP1",
    "IP2",
    "IPCache",
    "loaded_inverse",
    "ip1_sweep",
    "ip1_update",
    "ip2_update",
    "IP2_DEGENERATE_GAP",
]


def loaded_inverse(
    Vd: torch.Tensor, Vo: torch.Tensor, load: float | torch.Tensor, floor: float
) -> torch.Tensor:
    """Inverses of diagonally loaded packed Hermitian matrices (see ``diagonal_loading``).

    Args:
        Vd: ``(..., M, freq)`` real diagonal (packed, frequency last).
        Vo: ``(..., M (M - 1) / 2, freq)`` complex strict upper triangle.
        load: relative loading (float or tensor broadcastable to ``(...,)``).
        floor: absolute floor of the mean diagonal.

    Returns:
        ``(..., M, M, freq)`` complex inverses of ``V + load max(mean diag V, floor) I``.
    """
    if isinstance(load, torch.Tensor) and load.ndim > 0:
        load = load.reshape(load.shape + (1,))
    if isinstance(load, torch.Tensor) or load > 0:
        Vd = Vd + (load * Vd.mean(-2).clamp_min(floor)).unsqueeze(-2)
    return hermitian_inverse(Vd, Vo)


def ip1_sweep(
    W: torch.Tensor,
    A: torch.Tensor,
    V_inv: torch.Tensor,
    eps: float,
    rows: Sequence[int] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """IP1 on the given rows, one after the other, with ``A = W^{-1}`` kept in sync.

    IP1 sets ``w_k = (W V_k)^{-1} e_k`` and ``w_k /= sqrt(w_k^H V_k w_k)``. Since
    ``(W V_k)^{-1} e_k = V_k^{-1} a_k`` with ``a_k`` column ``k`` of ``A = W^{-1}``, and the
    normaliser is ``a_k^H V_k^{-1} a_k``, each row needs one matrix-vector product with
    ``V_k^{-1}``. Replacing row ``k`` of ``W`` by ``w^H`` changes the inverse by the
    Sherman-Morrison formula ``A <- A - a_k (w^H A - e_k^T) / (w^H a_k)``; after it, row ``k`` of
    ``W A - I`` is exactly zero whatever the error of the old ``A``, so a full sweep restores
    ``A = W^{-1}`` to rounding and no error accumulates (online: over frames).

    Args:
        W: ``(..., M, M, freq)`` demixing matrices, frequency last.
        A: ``(..., M, M, freq)`` their inverses.
        V_inv: ``(..., R, M, M, freq)`` inverses of the (loaded) weighted covariances of the
            ``R`` rows to update, in the order of ``rows``.
        eps: floor of the normaliser ``a^H V^{-1} a``.
        rows: rows to update (default ``range(R)``).

    Returns:
        ``(W, A)`` updated (new tensors).
    """
    M = W.shape[-2]
    if rows is None:
        rows = range(V_inv.shape[-4])
    eye = torch.eye(M, dtype=W.dtype, device=W.device)
    updated = list(W.unbind(-3))
    for i, k in enumerate(rows):
        a = A[..., :, k, :]  # (..., M, F)
        u = (V_inv[..., i, :, :, :] * a.unsqueeze(-3)).sum(-2)  # V_k^{-1} a_k
        norm = (a.conj() * u).sum(-2).real.clamp_min(eps)  # a^H V_k^{-1} a_k
        w_h = (u * norm.rsqrt().unsqueeze(-2)).conj()  # new row k of W
        g = (w_h.unsqueeze(-2) * A).sum(-3)  # w^H A, (..., M, F)
        coef = (g - eye[k, :, None]) / g[..., k : k + 1, :]
        A = torch.addcmul(A, a.unsqueeze(-2), coef.unsqueeze(-3), value=-1)
        updated[k] = w_h
    return torch.stack(updated, dim=-3), A


def ip1_update(
    W: torch.Tensor,
    V: torch.Tensor,
    rows: Sequence[int] | None = None,
    *,
    load: float | torch.Tensor = DEFAULT_LOAD,
    eps: float = 1e-12,
    background: torch.Tensor | None = None,
) -> torch.Tensor:
    """IP1 on rows of square demixing matrices, in the public ``(..., freq, M, M)`` layout.

    Args:
        W: ``(..., freq, M, M)`` current demixing matrices.
        V: ``(..., R, freq, M, M)`` weighted covariances of the ``R`` rows to update.
        rows: rows to update, in the order of ``V`` (default ``range(R)``).
        load: relative diagonal loading of ``V`` (see ``diagonal_loading``).
        eps: floor of the normaliser.
        background: ``(..., freq, M, M)`` mixture covariance when the last ``M - n_src`` rows
            span the OverIVA background (``n_src = R``): they are recomputed after each row.

    Returns:
        New ``W`` ``(..., freq, M, M)``.
    """
    rows = list(range(V.shape[-4])) if rows is None else list(rows)
    Vd, Vo = pack_hermitian(V)
    V_inv = loaded_inverse(Vd, Vo, load, default_floor(V.dtype))
    if background is None:
        Wf, _ = ip1_sweep(to_freq_last(W), to_freq_last(torch.linalg.inv(W)), V_inv, eps, rows)
        return from_freq_last(Wf)
    for i, k in enumerate(rows):
        Wf, _ = ip1_sweep(
            to_freq_last(W), to_freq_last(torch.linalg.inv(W)), V_inv[..., i : i + 1, :, :, :],
            eps, [k],
        )  # fmt: skip
        W = background_update(from_freq_last(Wf), background, len(rows), load=load)
    return W


# Relative eigenvalue gap of the IP2 pencil below which IP2 falls back to two IP1 steps.
IP2_DEGENERATE_GAP = 1e-6


def ip2_update(
    W: torch.Tensor,
    V_k: torch.Tensor,
    V_l: torch.Tensor,
    k: int,
    l: int,
    load: float = DEFAULT_LOAD,
    eps: float = 1e-12,
) -> torch.Tensor:
    """Pairwise iterative projection (IP2) update of rows ``k`` and ``l`` (Ono 2012).

    Both rows are updated jointly and exactly: with ``A = W^{-1}`` and
    ``G_s = [(W V_s W^H)^{-1}]_{(k,l),(k,l)}`` (2x2), the new rows are
    ``w_s = (W V_s)^{-1} E c_s`` where ``c_k, c_l`` are the generalized eigenvectors of
    ``G_k c = mu G_l c`` (largest ``mu`` for ``k``), normalised to ``c_s^H G_s c_s = 1``. The 2x2
    eigenproblem is solved in closed form so gradients stay finite. Where the pencil is
    (nearly) degenerate or ill-conditioned (e.g. a silent, near-silent or duplicated mic) the
    closed form is unreliable: there the update falls back to two IP1 steps, which also never
    increase the cost.

    Args:
        W: ``(..., freq, mics, mics)`` current demixing matrices.
        V_k, V_l: ``(..., freq, mics, mics)`` weighted covariances of sources ``k`` and ``l``.
        k, l: the two rows to update (``k != l``).
        load: relative diagonal loading of ``V``.
        eps: floor used in the square roots and normalisations.

    Returns:
        New ``W``.
    """
    V_k = diagonal_loading(V_k, load)
    V_l = diagonal_loading(V_l, load)
    M = W.shape[-1]
    E = torch.zeros(M, 2, dtype=W.dtype, device=W.device)
    E[k, 0] = 1.0
    E[l, 1] = 1.0
    E = E.expand(W.shape[:-2] + (M, 2))
    # P_s = (W V_s)^{-1} E, (..., freq, M, 2); G_s = E^H (W V_s W^H)^{-1} E = (W^{-1} E)^H P_s
    P_k = torch.linalg.solve(W @ V_k, E)
    P_l = torch.linalg.solve(W @ V_l, E)
    A_kl = torch.linalg.solve(W, E)  # columns k, l of W^{-1}
    G_k = _hermitian_part(A_kl.mH @ P_k)
    G_l = _hermitian_part(A_kl.mH @ P_l)
    degenerate = _ip2_degenerate(G_k, G_l)
    any_degenerate = bool(degenerate.any())
    if any_degenerate:
        # give the degenerate bins a harmless pencil, so that the IP2 branch (discarded there)
        # has finite values and gradients: torch.where passes 0 * NaN = NaN otherwise
        dummy_k = torch.diag(torch.tensor([2.0, 1.0], dtype=G_k.dtype, device=G_k.device))
        dummy_l = torch.eye(2, dtype=G_l.dtype, device=G_l.device)
        G_k = torch.where(degenerate[..., None, None], dummy_k, G_k)
        G_l = torch.where(degenerate[..., None, None], dummy_l, G_l)
    c_max, c_min = _gen_eig_2x2(G_k, G_l, eps)
    c_k = c_max / _quad(G_k, c_max).clamp_min(eps).sqrt()[..., None]
    c_l = c_min / _quad(G_l, c_min).clamp_min(eps).sqrt()[..., None]
    w_k = (P_k @ c_k[..., None])[..., 0]
    w_l = (P_l @ c_l[..., None])[..., 0]
    W_ip2 = _replace_row(_replace_row(W, k, w_k.conj()), l, w_l.conj())
    if not any_degenerate:
        return W_ip2
    W_ip1 = ip1_update(W, torch.stack([V_k, V_l], -4), [k, l], load=0.0, eps=eps)
    return torch.where(degenerate[..., None, None], W_ip1, W_ip2)


def _hermitian_part(G: torch.Tensor) -> torch.Tensor:
    return 0.5 * (G + G.mH)


def _replace_row(W: torch.Tensor, index: int, row: torch.Tensor) -> torch.Tensor:
    """Out-of-place ``W[..., index, :] = row`` (keeps autograd happy)."""
    mask = torch.zeros(W.shape[-2], 1, dtype=torch.bool, device=W.device)
    mask[index] = True
    return torch.where(mask, row.unsqueeze(-2), W)


def _trace(A: torch.Tensor) -> torch.Tensor:
    return A.diagonal(dim1=-2, dim2=-1).real.sum(-1)


def _unit_trace(A: torch.Tensor) -> torch.Tensor:
    """``A / trace(A)``: the pencil's eigenvectors do not change, nothing can overflow."""
    return A / _trace(A).clamp_min(torch.finfo(A.real.dtype).tiny)[..., None, None]


def _pencil_coefficients(
    H: torch.Tensor, L: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``det(H - mu L) = a mu^2 - b mu + c`` for 2x2 Hermitian ``H``, ``L``."""
    h11, h22, h12 = H[..., 0, 0].real, H[..., 1, 1].real, H[..., 0, 1]
    l11, l22, l12 = L[..., 0, 0].real, L[..., 1, 1].real, L[..., 0, 1]
    a = l11 * l22 - l12.abs() ** 2
    b = h11 * l22 + h22 * l11 - 2.0 * (h12 * l12.conj()).real
    c = h11 * h22 - h12.abs() ** 2
    return a, b, c


def _ip2_degenerate(H: torch.Tensor, L: torch.Tensor) -> torch.Tensor:
    """Bins where the 2x2 pencil ``H c = mu L c`` is too degenerate for a stable IP2 step.

    That is where its relative eigenvalue gap ``(mu_max - mu_min) / (mu_max + mu_min)`` is
    below :data:`IP2_DEGENERATE_GAP` (proportional ``H``, ``L``: the eigenvectors are
    ill-defined), or where ``H`` or ``L`` is ill-conditioned beyond the square root of the
    precision (a near-silent or duplicated mic), where the closed form loses its accuracy and
    its gradient overflows. No gradient flows through this decision.
    """
    with torch.no_grad():
        Hn, Ln = _unit_trace(H), _unit_trace(L)
        a, b, c = _pencil_coefficients(Hn, Ln)
        disc = (b * b - 4.0 * a * c).clamp_min(0.0)
        gap = disc.sqrt() / b.abs().clamp_min(torch.finfo(b.dtype).tiny)
        gap = torch.where(torch.isfinite(gap), gap, torch.zeros_like(gap))
        # det of a unit-trace 2x2 PSD matrix ~ its smallest eigenvalue: 1 / condition number
        conditioning = torch.finfo(a.dtype).eps * 10
        return (gap < IP2_DEGENERATE_GAP) | (a < conditioning) | (c < conditioning)


def _quad(G: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """``c^H G c`` (real) for ``G`` (..., 2, 2) and ``c`` (..., 2)."""
    return einsum(c.conj(), G, c, "... i, ... i j, ... j -> ...").real


def _gen_eig_2x2(H: torch.Tensor, L: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalized eigenvectors of the 2x2 Hermitian pencil ``H c = mu L c`` (``L`` PD).

    Solves ``det(H - mu L) = 0`` in closed form. Returns the (unnormalised) eigenvectors of the
    largest and of the smallest eigenvalue, each ``(..., 2)``; the latter is taken L-orthogonal
    to the former. The discriminant's square root is floored at ``eps`` (relative) so the
    gradient stays finite at repeated eigenvalues.
    """
    H, L = _unit_trace(H), _unit_trace(L)
    a, b, c = _pencil_coefficients(H, L)
    scale = b.abs().clamp_min(torch.finfo(b.dtype).tiny)
    disc = (b * b - 4.0 * a * c).clamp_min(0.0)
    root = (disc + (eps * scale) ** 2).sqrt()
    mu_max = (b + root) / (2.0 * a.clamp_min(torch.finfo(a.dtype).tiny))
    c_max = _null_vector_2x2(H, L, mu_max)
    # the other eigenvector is L-orthogonal to c_max: this keeps the two rows independent even
    # at repeated eigenvalues (e.g. silent input)
    u = (L @ c_max[..., None])[..., 0]
    c_min = torch.stack([u[..., 1].conj(), -u[..., 0].conj()], dim=-1)
    return c_max, c_min


def _null_vector_2x2(H: torch.Tensor, L: torch.Tensor, mu: torch.Tensor) -> torch.Tensor:
    """A null vector of ``H - mu L`` (2x2), taking the better conditioned of its two rows."""
    B = H - mu[..., None, None].to(H.dtype) * L
    v1 = torch.stack([-B[..., 0, 1], B[..., 0, 0]], dim=-1)  # orthogonal to row 0
    v2 = torch.stack([B[..., 1, 1], -B[..., 1, 0]], dim=-1)  # orthogonal to row 1
    n1 = (v1.abs() ** 2).sum(-1, keepdim=True)
    n2 = (v2.abs() ** 2).sum(-1, keepdim=True)
    v = torch.where(n1 >= n2, v1, v2)
    # degenerate pencil (B == 0, e.g. a silent bin): fall back to e1 so nothing is 0/0
    e1 = torch.zeros_like(v)
    e1[..., 0] = 1.0
    return torch.where(torch.maximum(n1, n2) > torch.finfo(n1.dtype).tiny, v, e1)


@dataclass(frozen=True)
class IPCache(UpdateCache):
    """Per-separation cache of the IP updates.

    Attributes:
        outer: ``(..., freq, frames, mics, mics)`` outer products ``x x^H`` (see
            ``outer_products``), so the weighted covariances cost one real matmul each.
        covariance: ``(..., freq, mics, mics)`` mixture covariance when ``n_src < mics``
            (OverIVA background), else ``None``.
    """

    outer: torch.Tensor | None = None
    covariance: torch.Tensor | None = None


class _IterativeProjection(SpatialUpdate):
    """Shared configuration and cache of IP1 and IP2."""

    def __init__(self, load: float = DEFAULT_LOAD, eps: float = 1e-12) -> None:
        if isinstance(load, bool) or not isinstance(load, (int, float)) or not load >= 0:
            raise ValueError(f"load must be a float >= 0, got {load!r}")
        if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not eps > 0:
            raise ValueError(f"eps must be a float > 0, got {eps!r}")
        self.load = float(load)
        self.eps = float(eps)

    def _config(self) -> dict[str, Any]:
        return {"load": self.load, "eps": self.eps}

    def prepare(
        self, X: torch.Tensor, n_src: int, frame_mask: torch.Tensor | None = None
    ) -> IPCache:
        cov = mixture_covariance(X, frame_mask) if n_src < X.shape[-3] else None
        return IPCache(
            X=X, n_src=n_src, frame_mask=frame_mask, outer=outer_products(X), covariance=cov
        )

    def covariances(self, weights: torch.Tensor, cache: IPCache) -> torch.Tensor:
        """Weighted covariances ``(..., sources, freq, mics, mics)`` from the cache."""
        return weighted_covariance_from_outer(cache.outer, weights, cache.frame_mask)


class IP1(_IterativeProjection):
    """Iterative projection, one row at a time (Ono 2011); OverIVA background rows when
    ``n_src < mics`` (Scheibler & Ono 2019).

    Args:
        load: relative diagonal loading of the weighted covariances (``0`` for exact parity
            with unloaded references).
        eps: floor of the normaliser ``w^H V w``.
    """

    name = "ip1"
    square_only = False

    def __call__(self, W, Y, weights, cache: IPCache):
        V = self.covariances(weights, cache)
        W = ip1_update(W, V, load=self.load, eps=self.eps, background=cache.covariance)
        return W, demix(W, cache.X, cache.n_src)


class IP2(_IterativeProjection):
    """Pairwise iterative projection (Ono 2012); pairs ``(0,1), (2,3), ...`` (cyclic if odd).

    Args:
        load: relative diagonal loading of the weighted covariances.
        eps: floor used in square roots and normalisations.
    """

    name = "ip2"

    def __call__(self, W, Y, weights, cache: IPCache):
        V = self.covariances(weights, cache)
        n_src = cache.n_src
        if n_src == 1:  # no pair to update: IP2 of a single row is IP1
            W = ip1_update(W, V, load=self.load, eps=self.eps)
            return W, demix(W, cache.X, n_src)
        for i in range(math.ceil(n_src / 2)):
            k, l = 2 * i, (2 * i + 1) % n_src
            W = ip2_update(W, V[..., k, :, :, :], V[..., l, :, :, :], k, l, self.load, self.eps)
        return W, demix(W, cache.X, n_src)
