"""Iterative projection: IP1 (one row at a time) and IP2 (pairs of rows), batched and
differentiable; pure functions with their strategy classes beside them.

IP1 has exactly one implementation, :func:`ip1_sweep`, shared by the batch separators (one
sweep per iteration) and the online separators (one sweep per frame). It works in a
frequency-last layout (``(..., M, M, freq)``) on the inverses of the loaded covariances and
keeps ``A = W^{-1}`` in sync by Sherman-Morrison updates, so that a row costs a few elementwise
operations over whole frequency vectors instead of a batched LAPACK solve of tiny matrices.
IP2 has one implementation too, :func:`ip2_pair_sweep`, in the same layout, with the 2x2
generalized eigenproblem in closed form; for two sources on two mics the pair is the whole
matrix and :func:`ip2_stereo` solves the same pencil from the covariances themselves, without
inverses (the same rows up to a phase). ``A`` is computed afresh (closed form for ``M <= 3``,
:func:`~torchbss.updates.hermitian.inverse`) at the start of every sweep (IP1) or pair (IP2),
as a tracked inverse loses its accuracy when a row's scale jumps.

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
from typing import Any

import torch

from torchbss.updates.base import PackedCache, PackedUpdate, demix
from torchbss.updates.covariance import DEFAULT_LOAD, check_load, default_floor
from torchbss.updates.hermitian import (
    from_freq_last,
    hermitian_inverse,
    inverse,
    pack_hermitian,
    to_freq_last,
    unpack_hermitian,
)
from torchbss.updates.overiva import background_update

__all__ = [
    "IP1",
    "IP2",
    "IPCache",
    "loaded_inverse",
    "ip1_sweep",
    "ip1_update",
    "ip2_pair_sweep",
    "ip2_stereo",
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
    if isinstance(load, torch.Tensor) or check_load(load) > 0:
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
    M = W.shape[-1]
    if (
        len(rows) != V.shape[-4]
        or len(set(rows)) != len(rows)
        or not all(isinstance(k, int) and 0 <= k < M for k in rows)
    ):
        raise ValueError(
            f"rows must be {V.shape[-4]} distinct row indices in [0, {M}), one per covariance "
            f"of V {tuple(V.shape)} (..., R, freq, M, M), got {rows}"
        )
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


def _widen(*tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Single precision promoted to double (``complex64 -> complex128``, ``float32 -> float64``).

    IP2 solves its inverses and 2x2 pencils in double precision: they are ``O(freq M^3)``, small
    next to the covariances (``O(freq frames M^2)``, kept in the input precision), but in
    float32 a weighted covariance with a condition number of ~1e5 (a short or sparse signal,
    a weak source in a bin) turns the generalized eigenvectors into rounding noise. Measured on
    neural AuxIVA at initialisation (2 IP2 iterations, 1 s at n_fft 256): the loss differed
    from float64 by 8 % and by 1e-2 relative between a batch of 4 and two batches of 2 (an
    ill-posed gradient, and DDP != one process); with the widened pencil, 7e-8.
    """
    wide = {torch.complex64: torch.complex128, torch.float32: torch.float64}
    return tuple(t.to(wide.get(t.dtype, t.dtype)) for t in tensors)


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

    The public-layout form of :func:`ip2_pair_sweep` (see there for the algorithm).

    Args:
        W: ``(..., freq, mics, mics)`` current demixing matrices.
        V_k, V_l: ``(..., freq, mics, mics)`` weighted covariances of sources ``k`` and ``l``.
        k, l: the two rows to update (``k != l``).
        load: relative diagonal loading of ``V``.
        eps: floor used in the square roots and normalisations.

    Returns:
        New ``W``.
    """
    M = W.shape[-1]
    if not all(isinstance(i, int) and 0 <= i < M for i in (k, l)) or k == l:
        raise ValueError(f"k and l must be two different rows in [0, {M}), got k={k!r}, l={l!r}")
    Vd, Vo = _widen(*pack_hermitian(torch.stack([V_k, V_l], -4)))
    V_inv = loaded_inverse(Vd, Vo, load, default_floor(V_k.dtype))
    (Wf,) = _widen(to_freq_last(W))
    return from_freq_last(ip2_pair_sweep(Wf, inverse(Wf), V_inv, k, l, eps)).to(W.dtype)


def ip2_pair_sweep(
    W: torch.Tensor,
    A: torch.Tensor,
    V_inv: torch.Tensor,
    k: int,
    l: int,
    eps: float = 1e-12,
) -> torch.Tensor:
    """IP2 on rows ``k`` and ``l`` of demixing matrices in the frequency-last layout.

    Both rows are updated jointly and exactly: with ``A_kl`` the columns ``k, l`` of
    ``A = W^{-1}`` and ``G_s = A_kl^H V_s^{-1} A_kl`` (2x2, ``= [(W V_s W^H)^{-1}]_{(k,l),(k,l)}``),
    the new rows are ``w_s = V_s^{-1} A_kl c_s`` (``= (W V_s)^{-1} E c_s``) where ``c_k, c_l``
    are the generalized eigenvectors of ``G_k c = mu G_l c`` (largest ``mu`` for ``k``),
    normalised to ``c_s^H G_s c_s = 1``. The 2x2 eigenproblem is solved in closed form so
    gradients stay finite. Where the pencil is (nearly) degenerate or ill-conditioned (e.g. a
    silent, near-silent or duplicated mic) the closed form is unreliable: there the update
    falls back to two IP1 steps (:func:`ip1_sweep`), which also never increase the cost.

    Args:
        W: ``(..., M, M, F)`` demixing matrices (row ``k`` is ``w_k^H``).
        A: ``(..., M, M, F)`` their inverses.
        V_inv: ``(..., 2, M, M, F)`` inverses of the (loaded) weighted covariances of rows
            ``k`` and ``l``, in that order.
        k, l: the two rows (``k != l``).
        eps: floor used in the square roots and normalisations.

    Returns:
        ``(..., M, M, F)`` new demixing matrices.
    """
    a_kl = torch.stack([A[..., :, k, :], A[..., :, l, :]], -2)  # (..., M, 2, F)
    # P_s = V_s^{-1} A_kl: (..., 2 s, M, 2, F); G_s = A_kl^H P_s: (..., 2 s, 2, 2, F)
    P = (V_inv.unsqueeze(-2) * a_kl.unsqueeze(-4).unsqueeze(-5)).sum(-3)
    G = (a_kl.conj().unsqueeze(-2).unsqueeze(-5) * P.unsqueeze(-3)).sum(-4)
    # Hermitian parts: diagonals (real) and the (0, 1) entries
    g11, g22 = G[..., 0, 0, :].real, G[..., 1, 1, :].real  # (..., 2 s, F)
    g12 = 0.5 * (G[..., 0, 1, :] + G[..., 1, 0, :].conj())
    degenerate, c = _pencil_rows(g11, g22, g12, eps)
    # new rows w_s = P_s c_s: (..., 2 s, M, F)
    w = (P * c.unsqueeze(-3)).sum(-2).conj()
    W_ip2 = _replace_rows(W, (k, l), w.unbind(-3))
    if degenerate is None:
        return W_ip2
    W_ip1, _ = ip1_sweep(W, A, V_inv, eps, [k, l])
    return torch.where(degenerate[..., None, None, :], W_ip1, W_ip2)


def ip2_stereo(
    W: torch.Tensor,
    Vd: torch.Tensor,
    Vo: torch.Tensor,
    load: float | torch.Tensor,
    floor: float,
    eps: float = 1e-12,
) -> torch.Tensor:
    """IP2 of a two-source, two-mic system from the covariances themselves.

    With ``M = 2`` the pair is the whole matrix and :func:`ip2_pair_sweep`'s answer does not
    depend on ``W``: ``G_s = A^H V_s^{-1} A`` with ``u = A c`` turns ``G_0 c = mu G_1 c`` into
    ``V_1 w = mu V_0 w`` for ``w = V_0^{-1} u``. So row 0 is the eigenvector of the largest
    ``mu`` of the pencil ``(V_1, V_0)``, row 1 the other one (``V_0``-orthogonal to it), each
    normalised to ``w_s^H V_s w_s = 1``: the same rows up to a phase per bin (which no output
    or cost sees), without any inverse. Degenerate or ill-conditioned pencils (now judged on
    ``V_0``, ``V_1``) fall back to two IP1 steps, as in :func:`ip2_pair_sweep`.

    Args:
        W: ``(..., 2, 2, F)`` demixing matrices (frequency last; read only for the fallback).
        Vd: ``(..., 2, 2, F)`` real diagonals of the two (unloaded) weighted covariances.
        Vo: ``(..., 2, 1, F)`` their complex ``(0, 1)`` entries.
        load, floor: the diagonal loading of :func:`loaded_inverse`.
        eps: floor used in the square roots and normalisations.

    Returns:
        ``(..., 2, 2, F)`` new demixing matrices.
    """
    loaded = Vd + (load * Vd.mean(-2).clamp_min(floor)).unsqueeze(-2)
    # pencil entries (..., 2 s, F) with s = 0: H = V_1, s = 1: L = V_0
    g11, g22, g12 = loaded[..., :, 0, :], loaded[..., :, 1, :], Vo[..., :, 0, :]
    degenerate, c = _pencil_rows(g11.flip(-2), g22.flip(-2), g12.flip(-2), eps, swap_norms=True)
    W_ip2 = c.conj()
    if degenerate is None:
        return W_ip2
    W_ip1, _ = ip1_sweep(W, inverse(W), loaded_inverse(Vd, Vo, load, floor), eps)
    return torch.where(degenerate[..., None, None, :], W_ip1, W_ip2)


def _pencil_coefficients(
    d1: torch.Tensor, d2: torch.Tensor, o: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``det(H - mu L) = a mu^2 - b mu + c`` for 2x2 Hermitian ``H``, ``L`` by entries
    ``(..., 2 s, F)`` (``s = 0``: ``H``).

    Returns:
        ``(dets, b, disc)``: ``dets = (c, a)`` ``(..., 2 s, F)`` (the two determinants), ``b``
        ``(..., F)`` and the discriminant ``b^2 - 4 a c`` floored at 0.
    """
    dets = d1 * d2 - (o * o.conj()).real
    h11, l11 = d1.unbind(-2)
    h22, l22 = d2.unbind(-2)
    h12, l12 = o.unbind(-2)
    b = h11 * l22 + h22 * l11 - 2.0 * (h12 * l12.conj()).real
    disc = (b * b - 4.0 * dets[..., 0, :] * dets[..., 1, :]).clamp_min(0.0)
    return dets, b, disc


def _pencil_rows(
    g11: torch.Tensor, g22: torch.Tensor, g12: torch.Tensor, eps: float, swap_norms: bool = False
) -> tuple[torch.Tensor | None, torch.Tensor]:
    """The generalized eigenvectors of the 2x2 Hermitian pencil ``H c = mu L c`` (``L`` PD),
    normalised, and the bins where the pencil is too degenerate to use them.

    ``H``, ``L`` are given by their entries ``(..., 2 s, F)`` (``s = 0``: ``H``, ``s = 1``: ``L``).
    Both are first scaled to unit trace: the eigenvectors do not change and nothing can
    overflow. ``det(H - mu L) = 0`` is solved in closed form; the discriminant's square root is
    floored at ``eps`` (relative) so the gradient stays finite at repeated eigenvalues. The
    eigenvector of the largest ``mu`` is a null vector of ``H - mu L`` (from the better
    conditioned of its two rows); the other one is taken ``L``-orthogonal to it, which keeps
    the two rows independent even at repeated eigenvalues (e.g. silent input).

    Degenerate bins: where the relative eigenvalue gap ``(mu_max - mu_min) / (mu_max + mu_min)``
    is below :data:`IP2_DEGENERATE_GAP` (proportional ``H``, ``L``: the eigenvectors are
    ill-defined), or where ``H`` or ``L`` is ill-conditioned beyond the square root of the
    precision (a near-silent or duplicated mic: the closed form loses its accuracy and its
    gradient overflows). No gradient flows through that decision. There the eigenvectors are
    those of a harmless pencil (``H = diag(2, 1)``, ``L = I``), so that the values the caller
    discards, and their gradients, stay finite (``torch.where`` passes ``0 * NaN = NaN``).

    Each eigenvector ``c_s`` is normalised to ``c_s^H G_s c_s = 1`` (``swap_norms``: by the other
    matrix of the pair), scale-free: ``eps`` floors ``c^H G c / (|c|^2 tr G)``.

    Returns:
        ``(degenerate (..., F) or None, c (..., 2, 2, F))``: ``c[..., 0, :, :]`` the eigenvector
        of the largest ``mu``, ``c[..., 1, :, :]`` the other one.
    """
    tiny = torch.finfo(g11.dtype).tiny
    trace = (g11 + g22).clamp_min(tiny)
    inv_trace = trace.reciprocal()
    d1, d2, o = g11 * inv_trace, g22 * inv_trace, g12 * inv_trace
    dets, b, disc = _pencil_coefficients(d1, d2, o)
    with torch.no_grad():  # b >= 0 for PSD H, L; NaN compares False: degenerate
        conditioning = torch.finfo(b.dtype).eps * 10
        ill = (dets < conditioning).any(-2)
        degenerate = ~(disc > (IP2_DEGENERATE_GAP * b).square()) | ill
    e1, e2, eo = d1, d2, o
    if bool(degenerate.any()):
        m = degenerate.unsqueeze(-2)
        # H = diag(2, 1) and L = I at unit trace: d1 = (2/3, 1/2), d2 = (1/3, 1/2) over s
        harmless = torch.tensor([[2 / 3, 1 / 2], [1 / 3, 1 / 2]], dtype=d1.dtype, device=d1.device)
        e1 = torch.where(m, harmless[0, :, None], d1)
        e2 = torch.where(m, harmless[1, :, None], d2)
        eo = torch.where(m, torch.zeros_like(o), o)
        dets, b, disc = _pencil_coefficients(e1, e2, eo)
    else:
        degenerate = None
    root = (disc + (eps * b.abs().clamp_min(tiny)).square()).sqrt()
    mu = (b + root) * (2.0 * dets[..., 1, :].clamp_min(tiny)).reciprocal()
    h11, l11 = e1.unbind(-2)
    h22, l22 = e2.unbind(-2)
    h12, l12 = eo.unbind(-2)
    # a null vector of B = H - mu L, from the better conditioned of its two rows
    b00, b11, b01 = h11 - mu * l11, h22 - mu * l22, h12 - mu * l12
    b01_sq = (b01 * b01.conj()).real
    n1 = b01_sq + b00.square()  # |v1|^2, v1 = (-b01, b00)
    n2 = b11.square() + b01_sq  # |v2|^2, v2 = (b11, -b10)
    first = n1 >= n2
    v0 = torch.where(first, -b01, b11.to(b01.dtype))
    v1 = torch.where(first, b00.to(b01.dtype), -b01.conj())
    # B == 0 (e.g. a silent bin): e1, so that nothing is 0/0
    ok = torch.maximum(n1, n2) > tiny
    c0 = torch.where(ok, v0, torch.ones_like(v0))
    c1 = torch.where(ok, v1, torch.zeros_like(v1))
    u0 = l11 * c0 + l12 * c1
    u1 = l12.conj() * c0 + l22 * c1
    c = torch.stack([c0, c1, u1.conj(), -u0.conj()], -2).unflatten(-2, (2, 2))
    # normalisation, both rows at once: q = c^H G c, with G of unit trace
    if swap_norms:
        d1, d2, o, trace = d1.flip(-2), d2.flip(-2), o.flip(-2), trace.flip(-2)
    c0, c1 = c.unbind(-2)  # (..., 2 rows, F)
    p0, p1 = (c0 * c0.conj()).real, (c1 * c1.conj()).real
    norm = (p0 + p1).clamp_min(tiny)
    quad = d1 * p0 + d2 * p1 + 2.0 * (c0.conj() * o * c1).real
    scale = ((quad * norm.reciprocal()).clamp_min(eps) * trace * norm).rsqrt()
    return degenerate, c * scale.unsqueeze(-2)


def _replace_rows(
    W: torch.Tensor, index: tuple[int, ...], rows: tuple[torch.Tensor, ...]
) -> torch.Tensor:
    """Out-of-place ``W[..., index, :, :] = rows`` (frequency last; keeps autograd happy)."""
    parts = list(W.unbind(-3))
    for i, row in zip(index, rows):
        parts[i] = row
    return torch.stack(parts, -3)


#: the cache of the IP updates is the packed cache of every :class:`PackedUpdate`
IPCache = PackedCache


class _IterativeProjection(PackedUpdate):
    """Shared configuration of IP1 and IP2."""

    def __init__(self, load: float = DEFAULT_LOAD, eps: float = 1e-12) -> None:
        self.load = check_load(load)
        if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not eps > 0:
            raise ValueError(f"eps must be a float > 0, got {eps!r}")
        self.eps = float(eps)

    def _config(self) -> dict[str, Any]:
        return {"load": self.load, "eps": self.eps}

    def _inverses(
        self, Vd: torch.Tensor, Vo: torch.Tensor, floor_dtype: torch.dtype | None = None
    ) -> torch.Tensor:
        """Loaded inverses; the floor is that of ``floor_dtype`` (default: ``Vd``'s dtype, the
        input precision when ``Vd`` was widened)."""
        return loaded_inverse(Vd, Vo, self.load, default_floor(floor_dtype or Vd.dtype))


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

    def update_packed(self, W, Vd, Vo, n_valid):
        return ip1_sweep(W, inverse(W), self._inverses(Vd, Vo), self.eps)[0]

    def __call__(self, W, Y, weights, cache: PackedCache):
        if cache.covariance is None:
            return super().__call__(W, Y, weights, cache)
        V = unpack_hermitian(*self.covariances(weights, cache))
        W = ip1_update(W, V, load=self.load, eps=self.eps, background=cache.covariance)
        return W, demix(W, cache.X, cache.n_src)


class IP2(_IterativeProjection):
    """Pairwise iterative projection (Ono 2012); pairs ``(0,1), (2,3), ...`` (cyclic if odd).

    Args:
        load: relative diagonal loading of the weighted covariances.
        eps: floor used in square roots and normalisations.
    """

    name = "ip2"

    def update_packed(self, W, Vd, Vo, n_valid):
        dtype, input_real = W.dtype, Vd.dtype
        W, Vd, Vo = _widen(W, Vd, Vo)  # see _widen: the pencils in double precision
        if Vd.shape[-3:-1] == (2, 2):  # two sources, two mics: no inverse needed
            floor = default_floor(input_real)
            return ip2_stereo(W, Vd, Vo, self.load, floor, self.eps).to(dtype)
        V_inv = self._inverses(Vd, Vo, floor_dtype=input_real)
        n_src = V_inv.shape[-4]
        if n_src == 1:  # no pair to update: IP2 of a single row is IP1
            return ip1_sweep(W, inverse(W), V_inv, self.eps)[0].to(dtype)
        for i in range(math.ceil(n_src / 2)):
            k, l = 2 * i, (2 * i + 1) % n_src
            pair = torch.stack([V_inv[..., k, :, :, :], V_inv[..., l, :, :, :]], -4)
            W = ip2_pair_sweep(W, inverse(W), pair, k, l, self.eps)
        return W.to(dtype)
