"""Tiny Hermitian linear algebra in a frequency-last layout (used by the IP1 sweep).

The separators solve many independent ``M x M`` problems (one per frequency bin, stream
and source) with ``M <= 4``: every frame (online) or every iteration (batch). Batched LAPACK
calls on ``(..., freq, M, M)`` tensors pay a large per-matrix overhead for such tiny
matrices, so these helpers keep the matrix entries
as leading dims and the frequency bins as the last, contiguous dim, and write the factorisation
out as elementwise ops over whole ``(..., freq)`` vectors.

A Hermitian matrix is *packed* as its real diagonal ``d`` ``(..., M, freq)`` and its strict
upper triangle ``o`` ``(..., M (M - 1) / 2, freq)`` (row-major pairs ``i < j``, see
:func:`upper_pairs`).
"""

from __future__ import annotations

from functools import cache

import torch

__all__ = [
    "upper_pairs",
    "pack_hermitian",
    "unpack_hermitian",
    "packed_outer",
    "hermitian_inverse",
    "packed_matvec",
    "log_abs_det",
    "inverse",
    "to_freq_last",
    "from_freq_last",
]

#: largest size inverted with elementwise block formulas; larger ones use ``torch.linalg.inv``
SWEEP_MAX = 4


@cache
def upper_pairs(M: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Row and column indices of the strict upper triangle, row-major: ``(0,1), (0,2), ...``."""
    rows = tuple(i for i in range(M) for j in range(i + 1, M))
    cols = tuple(j for i in range(M) for j in range(i + 1, M))
    return rows, cols


@cache
def _unpack_index(M: int) -> tuple[int, ...]:
    """Index of each entry ``(i, j)`` (row-major) into ``cat([d, o, conj(o)])``."""
    rows, cols = upper_pairs(M)
    P = len(rows)
    where = {(i, i): i for i in range(M)}
    for p, (i, j) in enumerate(zip(rows, cols)):
        where[(i, j)] = M + p
        where[(j, i)] = M + P + p
    return tuple(where[(i, j)] for i in range(M) for j in range(M))


def pack_hermitian(V: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Pack Hermitian matrices ``(..., freq, M, M)`` into ``(d, o)`` (frequency last).

    Returns:
        ``d`` ``(..., M, freq)`` real (the real part of the diagonal) and ``o``
        ``(..., M (M - 1) / 2, freq)`` complex (the strict upper triangle).
    """
    M = V.shape[-1]
    rows, cols = upper_pairs(M)
    d = V.diagonal(dim1=-2, dim2=-1).real.movedim(-1, -2).contiguous()
    o = V[..., list(rows), list(cols)].movedim(-1, -2).contiguous()
    return d, o


def _assemble(d: torch.Tensor, o: torch.Tensor) -> torch.Tensor:
    """Full ``(..., M, M, freq)`` Hermitian matrices from packed ``(d, o)``."""
    M = d.shape[-2]
    parts = torch.cat([d.to(o.dtype), o, o.conj()], dim=-2)
    index = torch.tensor(_unpack_index(M), device=d.device)
    full = parts.index_select(-2, index)
    return full.unflatten(-2, (M, M))


def unpack_hermitian(d: torch.Tensor, o: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`pack_hermitian`: ``(..., freq, M, M)`` Hermitian matrices."""
    return _assemble(d, o).movedim(-1, -3)


def packed_outer(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Packed ``x x^H`` per frequency: ``x`` ``(..., M, freq)`` -> ``(d, o)``."""
    M = x.shape[-2]
    d = x.real.square() + x.imag.square()
    blocks = [x[..., i : i + 1, :] * x[..., i + 1 :, :].conj() for i in range(M - 1)]
    if not blocks:
        return d, x[..., :0, :]
    return d, blocks[0] if len(blocks) == 1 else torch.cat(blocks, dim=-2)


def hermitian_inverse(d: torch.Tensor, o: torch.Tensor) -> torch.Tensor:
    """Inverse of packed Hermitian positive definite matrices, as full ``(..., M, M, freq)``.

    ``2 <= M <= 4`` with the symmetric sweep operator (Goodnight 1979)
    written out entry by entry: sweeping pivot ``p`` maps ``a_ij -> a_ij - a_ip a_pj / a_pp``,
    ``a_ip -> a_ip / a_pp``, ``a_pp -> -1 / a_pp``; after every pivot the matrix holds
    ``-V^{-1}``. Without pivoting this is Gaussian elimination, stable for positive definite
    input (the callers add diagonal loading). Every step is an elementwise op over whole
    frequency vectors, far cheaper than batched LAPACK calls on tiny matrices. (A closed-form
    ``2 x 2`` inverse through the determinant is slightly faster but its gradient overflows in
    float32 for silent streams, where only the loading ``~1e-12`` is left.) ``M > 4`` falls
    back to ``torch.linalg.inv``.

    Args:
        d: ``(..., M, freq)`` real positive diagonal.
        o: ``(..., M (M - 1) / 2, freq)`` complex strict upper triangle.

    Returns:
        ``(..., M, M, freq)`` complex inverse (Hermitian).

    References:
        J. H. Goodnight, "A tutorial on the SWEEP operator", The American Statistician, 1979.
    """
    M = d.shape[-2]
    if M > SWEEP_MAX:
        full = _assemble(d, o).movedim(-1, -3)
        return torch.linalg.inv(full).movedim(-3, -1)
    if M == 1:
        return d.reciprocal().to(o.dtype).unsqueeze(-2)
    diag = d.unbind(-2)
    rows, cols = upper_pairs(M)
    upper = dict(zip(zip(rows, cols), o.unbind(-2)))
    # symmetric sweep; after sweeping every pivot the entries hold -V^{-1}
    diag, upper = list(diag), dict(upper)

    def entry(i: int, j: int) -> torch.Tensor:
        return upper[(i, j)] if i < j else upper[(j, i)].conj()

    for p in range(M):
        inv = diag[p].reciprocal()
        others = [i for i in range(M) if i != p]
        col = {i: entry(i, p) for i in others}  # a_ip
        scaled = {i: col[i] * inv for i in others}  # a_ip / a_pp
        for i in others:
            diag[i] = diag[i] - (scaled[i] * col[i].conj()).real
            for j in others:
                if j > i:
                    upper[(i, j)] = upper[(i, j)] - scaled[i] * col[j].conj()
        for i in others:
            if i < p:
                upper[(i, p)] = scaled[i]
            else:
                upper[(p, i)] = scaled[i].conj()
        diag[p] = -inv
    entries = []
    for i in range(M):
        for j in range(M):
            if i == j:
                entries.append(diag[i].neg().to(o.dtype))
            elif i < j:
                entries.append(upper[(i, j)].neg().resolve_conj())
            else:
                entries.append(upper[(j, i)].conj_physical().neg_())
    return torch.stack(entries, dim=-2).unflatten(-2, (M, M))


def packed_matvec(d: torch.Tensor, o: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``V x`` for packed Hermitian ``V``, frequency last.

    Args:
        d: ``(..., M, freq)`` real diagonal.
        o: ``(..., M (M - 1) / 2, freq)`` complex strict upper triangle.
        x: ``(..., M, freq)`` complex vectors (broadcast against ``d``'s leading dims).

    Returns:
        ``(..., M, freq)`` complex.
    """
    return (_assemble(d, o) * x.unsqueeze(-3)).sum(-2)


def log_abs_det(A: torch.Tensor) -> torch.Tensor:
    """``log |det A|`` of square matrices in the frequency-last layout.

    ``M <= 3`` by the closed-form (Leibniz) determinant, elementwise over whole frequency
    vectors; larger ``M`` by ``torch.linalg.slogdet``. ``-inf`` where ``A`` is singular.

    Args:
        A: ``(..., M, M, freq)`` real or complex.

    Returns:
        ``(..., freq)`` real.
    """
    M = A.shape[-2]
    if M > 3:
        return torch.linalg.slogdet(A.movedim(-1, -3))[1]
    if M == 1:
        det = A[..., 0, 0, :]
    elif M == 2:
        det = A[..., 0, 0, :] * A[..., 1, 1, :] - A[..., 0, 1, :] * A[..., 1, 0, :]
    else:
        a = [[A[..., i, j, :] for j in range(3)] for i in range(3)]
        det = (
            a[0][0] * (a[1][1] * a[2][2] - a[1][2] * a[2][1])
            - a[0][1] * (a[1][0] * a[2][2] - a[1][2] * a[2][0])
            + a[0][2] * (a[1][0] * a[2][1] - a[1][1] * a[2][0])
        )
    return torch.log(det.abs())  # abs: hypot for complex, no overflow of |det|^2


#: for 3x3: the entries ``a[i+1, j+1], a[i+2, j+2], a[i+1, j+2], a[i+2, j+1]`` (indices mod 3) of
#: every ``(i, j)``, as indices into the flattened matrix: ``(4 x 3 x 3,)``
_CYCLIC_COFACTOR_INDEX = torch.tensor(
    [
        ((i + p) % 3) * 3 + (j + q) % 3
        for p, q in ((1, 1), (2, 2), (1, 2), (2, 1))
        for i in range(3)
        for j in range(3)
    ]
)


def inverse(A: torch.Tensor) -> torch.Tensor:
    """Inverse of general square matrices in the frequency-last layout.

    ``M <= 3`` by the adjugate over the determinant, elementwise over whole frequency vectors,
    after scaling each matrix by its largest real or imaginary part (so neither the cofactors
    nor the determinant can overflow or underflow); larger ``M`` by ``torch.linalg.inv``. For
    ``M = 3`` the cofactors take the cyclic form ``C_ij = a[i+1, j+1] a[i+2, j+2] -
    a[i+1, j+2] a[i+2, j+1]`` (indices mod 3, the sign included), i.e. one gather and three
    elementwise ops for all nine.

    Args:
        A: ``(..., M, M, freq)`` invertible matrices.

    Returns:
        ``(..., M, M, freq)`` inverses.
    """
    M = A.shape[-2]
    if M > 3:
        return torch.linalg.inv(A.movedim(-1, -3)).movedim(-3, -1)
    parts = torch.view_as_real(A) if A.is_complex() else A.unsqueeze(-1)
    # (..., M, M, F, 1 or 2) -> (..., F): a leading-dim reduction first, the fast order
    scale = parts.abs().flatten(-4, -3).amax(-3).amax(-1).clamp_min(torch.finfo(parts.dtype).tiny)
    a = A * scale.reciprocal().unsqueeze(-2).unsqueeze(-2)
    if M == 1:
        adj, det = torch.ones_like(a), a[..., 0, 0, :]
    elif M == 2:
        a00, a01, a10, a11 = a[..., 0, 0, :], a[..., 0, 1, :], a[..., 1, 0, :], a[..., 1, 1, :]
        det = a00 * a11 - a01 * a10
        adj = torch.stack([a11, -a01, -a10, a00], -2).unflatten(-2, (2, 2))
    else:
        # gathered through the real view: index_select of complex tensors is far slower
        flat = torch.view_as_real(a).flatten(-4, -3) if a.is_complex() else a.flatten(-3, -2)
        index = _CYCLIC_COFACTOR_INDEX.to(a.device)
        gathered = flat.index_select(-3 if a.is_complex() else -2, index)
        e = torch.view_as_complex(gathered) if a.is_complex() else gathered
        e = e.unflatten(-2, (4, 3, 3))
        C = e[..., 0, :, :, :] * e[..., 1, :, :, :] - e[..., 2, :, :, :] * e[..., 3, :, :, :]
        det = (a[..., 0, :, :] * C[..., 0, :, :]).sum(-2)
        adj = C.transpose(-3, -2)
    return adj * (det * scale).reciprocal().unsqueeze(-2).unsqueeze(-2)


def to_freq_last(A: torch.Tensor) -> torch.Tensor:
    """``(..., freq, M, N)`` -> contiguous ``(..., M, N, freq)``."""
    return A.movedim(-3, -1).contiguous()


def from_freq_last(A: torch.Tensor) -> torch.Tensor:
    """``(..., M, N, freq)`` -> contiguous ``(..., freq, M, N)``."""
    return A.movedim(-1, -3).contiguous()
