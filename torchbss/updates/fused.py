"""The online frame in real arithmetic, for ``torch.compile``: the IP1 step (loaded inverse + one
IP1 sweep) and the per-frame helpers around it.

:func:`~torchbss.updates.ip1_sweep` and :func:`~torchbss.updates.hermitian.hermitian_inverse`
work on complex tensors: in eager mode one complex operator is cheaper than the four or six
real ones it stands for, but TorchInductor does not generate code for complex tensors (they fall
back to eager kernels, slower than no compilation at all). This module writes the *same* step
(the symmetric sweep operator on the loaded packed covariances, then the IP1 rows with
Sherman-Morrison updates of ``A = W^{-1}``; see those two functions for the algebra) on the real
and imaginary planes, so that a compiled frame fuses it into a few loops over frequencies.
It is only used when an online separator is built with ``compile=True``; a test checks that it
equals the complex implementation to rounding, eager and compiled.

Layout: frequency last, as the complex functions; ``W = Wr + i Wi`` etc. The per-frame helpers
below (demixing, covariance recursion, output scale) take the two planes stacked on one axis
before the matrix dims (``x`` ``(..., 2, M, F)``, ``W`` ``(..., 2, M, M, F)``), the layout of the
compiled online frame loop (:mod:`torchbss.separators.online.spatial`), and mirror
:func:`~torchbss.separators.online.spatial.demix_frame`,
:meth:`~torchbss.separators.online.spatial.OnlineSpatialSeparator.update_covariances` and
:meth:`~torchbss.separators.online.spatial.OnlineSpatialSeparator.output`.
"""

from __future__ import annotations

import torch

from torchbss.updates.hermitian import SWEEP_MAX, upper_pairs

__all__ = [
    "ip1_step_planes",
    "to_planes",
    "from_planes",
    "demix_planes",
    "covariance_update_planes",
    "output_planes",
]

Planes = tuple[torch.Tensor, torch.Tensor]


def _inverse_planes(d: torch.Tensor, o_re: torch.Tensor, o_im: torch.Tensor) -> Planes:
    """``hermitian_inverse`` on planes: packed ``(d, o)`` -> full inverse ``(..., M, M, F)``."""
    M = d.shape[-2]
    rows, cols = upper_pairs.__wrapped__(M)  # uncached: dynamo warns about functools caches
    pairs = list(zip(rows, cols))
    diag = list(d.unbind(-2))
    up_re, up_im = dict(zip(pairs, o_re.unbind(-2))), dict(zip(pairs, o_im.unbind(-2)))

    def entry(i: int, j: int) -> Planes:
        return (up_re[(i, j)], up_im[(i, j)]) if i < j else (up_re[(j, i)], -up_im[(j, i)])

    for p in range(M):  # sweep pivot p; afterwards the entries hold -V^{-1}
        inv = diag[p].reciprocal()
        others = [i for i in range(M) if i != p]
        col = {i: entry(i, p) for i in others}  # a_ip
        scaled = {i: (col[i][0] * inv, col[i][1] * inv) for i in others}  # a_ip / a_pp
        for i in others:
            s_re, s_im = scaled[i]
            diag[i] = diag[i] - (s_re * col[i][0] + s_im * col[i][1])
            for j in others:
                if j > i:  # a_ij -= (a_ip / a_pp) conj(a_jp)
                    c_re, c_im = col[j]
                    up_re[(i, j)] = up_re[(i, j)] - (s_re * c_re + s_im * c_im)
                    up_im[(i, j)] = up_im[(i, j)] - (s_im * c_re - s_re * c_im)
        for i in others:
            if i < p:
                up_re[(i, p)], up_im[(i, p)] = scaled[i]
            else:
                up_re[(p, i)], up_im[(p, i)] = scaled[i][0], -scaled[i][1]
        diag[p] = -inv
    zero = torch.zeros_like(diag[0])
    out_re, out_im = [], []
    for i in range(M):
        for j in range(M):
            re, im = (diag[i], zero) if i == j else entry(i, j)
            out_re.append(-re)
            out_im.append(-im)
    return (
        torch.stack(out_re, -2).unflatten(-2, (M, M)),
        torch.stack(out_im, -2).unflatten(-2, (M, M)),
    )


def ip1_step_planes(
    W_re: torch.Tensor,
    W_im: torch.Tensor,
    A_re: torch.Tensor,
    A_im: torch.Tensor,
    Vd: torch.Tensor,
    Vo_re: torch.Tensor,
    Vo_im: torch.Tensor,
    load: torch.Tensor,
    floor: float,
    eps: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``ip1_sweep(W, A, loaded_inverse(Vd, Vo, load, floor), eps)`` on real planes.

    Args:
        W_re, W_im: ``(..., M, M, F)`` demixing matrices (``M <= 4``), frequency last.
        A_re, A_im: ``(..., M, M, F)`` their inverses.
        Vd: ``(..., K, M, F)`` packed real diagonals of the ``K = M`` weighted covariances.
        Vo_re, Vo_im: ``(..., K, M (M - 1) / 2, F)`` their strict upper triangles.
        load: relative diagonal loading (0-dim tensor).
        floor: floor of the mean diagonal in the loading.
        eps: floor of the IP1 normaliser.

    Returns:
        ``(W_re, W_im, A_re, A_im)`` after one IP1 sweep over all rows.
    """
    M = W_re.shape[-2]
    if M > SWEEP_MAX:
        raise ValueError(f"ip1_step_planes handles up to {SWEEP_MAX} mics, got {M}")
    Vd = Vd + (load * Vd.mean(-2).clamp_min(floor)).unsqueeze(-2)
    V_re, V_im = _inverse_planes(Vd, Vo_re, Vo_im)
    rows_re, rows_im = list(W_re.unbind(-3)), list(W_im.unbind(-3))
    for k in range(Vd.shape[-3]):
        a_re, a_im = A_re[..., :, k, :], A_im[..., :, k, :]  # column k of A
        v_re, v_im = V_re[..., k, :, :, :], V_im[..., k, :, :, :]
        # u = V_k^{-1} a_k
        u_re = (v_re * a_re.unsqueeze(-3) - v_im * a_im.unsqueeze(-3)).sum(-2)
        u_im = (v_re * a_im.unsqueeze(-3) + v_im * a_re.unsqueeze(-3)).sum(-2)
        scale = (a_re * u_re + a_im * u_im).sum(-2).clamp_min(eps).rsqrt().unsqueeze(-2)
        w_re, w_im = u_re * scale, -(u_im * scale)  # new row k of W: conj(u) / sqrt(a^H u)
        # g = w^H A (row vector), coef = (g - e_k) / g_k, A -= a_k coef
        g_re = (w_re.unsqueeze(-2) * A_re - w_im.unsqueeze(-2) * A_im).sum(-3)
        g_im = (w_re.unsqueeze(-2) * A_im + w_im.unsqueeze(-2) * A_re).sum(-3)
        pk_re, pk_im = g_re[..., k : k + 1, :], g_im[..., k : k + 1, :]
        e_k = torch.zeros(M, 1, dtype=g_re.dtype, device=g_re.device)
        e_k[k] = 1.0
        g_re = g_re - e_k
        inv_norm = (pk_re * pk_re + pk_im * pk_im).reciprocal()
        c_re = (g_re * pk_re + g_im * pk_im) * inv_norm
        c_im = (g_im * pk_re - g_re * pk_im) * inv_norm
        a_re, a_im = a_re.unsqueeze(-2), a_im.unsqueeze(-2)  # (..., M, 1, F)
        c_re, c_im = c_re.unsqueeze(-3), c_im.unsqueeze(-3)  # (..., 1, M, F)
        A_re = A_re - (a_re * c_re - a_im * c_im)
        A_im = A_im - (a_re * c_im + a_im * c_re)
        rows_re[k], rows_im[k] = w_re, w_im
    return torch.stack(rows_re, -3), torch.stack(rows_im, -3), A_re, A_im


def to_planes(z: torch.Tensor, dim: int) -> torch.Tensor:
    """Complex ``z`` -> real ``stack([z.real, z.imag], dim)`` (contiguous)."""
    return torch.stack([z.real, z.imag], dim)


def from_planes(z: torch.Tensor, dim: int) -> torch.Tensor:
    """Inverse of :func:`to_planes`."""
    re, im = z.unbind(dim)
    return torch.complex(re, im)


def demix_planes(W: torch.Tensor, x: torch.Tensor, n_src: int) -> Planes:
    """``y = W[:n_src] x`` for one frame: ``W`` ``(..., 2, M, M, F)``, ``x`` ``(..., 2, M, F)``
    -> ``(y_re, y_im)``, each ``(..., n_src, F)``."""
    W_re, W_im = W[..., 0, :n_src, :, :], W[..., 1, :n_src, :, :]
    x_re, x_im = x[..., 0:1, :, :], x[..., 1:2, :, :]  # (..., 1, M, F)
    return (W_re * x_re - W_im * x_im).sum(-2), (W_re * x_im + W_im * x_re).sum(-2)


def covariance_update_planes(
    Vd: torch.Tensor, Vo: torch.Tensor, x: torch.Tensor, beta: torch.Tensor, phi: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """``V_k <- (1 - beta) V_k + beta phi_k x x^H`` on packed covariances.

    Args:
        Vd: ``(..., K, M, F)`` real diagonals; Vo: ``(..., 2, K, M (M - 1) / 2, F)`` planes of
            the strict upper triangles (``x_i conj(x_j)``, ``i < j``).
        x: ``(..., 2, M, F)`` the frame.
        beta: ``(..., F or 1)`` step sizes; phi: ``(..., K, F or 1)`` weights.
    """
    x_re, x_im = x[..., 0, :, :], x[..., 1, :, :]
    M = x_re.shape[-2]
    xd = x_re * x_re + x_im * x_im
    rows, cols = upper_pairs.__wrapped__(M)
    xo_re = torch.stack(
        [x_re[..., i, :] * x_re[..., j, :] + x_im[..., i, :] * x_im[..., j, :]
         for i, j in zip(rows, cols)], -2,
    )  # fmt: skip
    xo_im = torch.stack(
        [x_im[..., i, :] * x_re[..., j, :] - x_re[..., i, :] * x_im[..., j, :]
         for i, j in zip(rows, cols)], -2,
    )  # fmt: skip
    keep = (1.0 - beta).unsqueeze(-2).unsqueeze(-2)  # (..., 1, 1, F)
    c = (beta.unsqueeze(-2) * phi).unsqueeze(-2)  # (..., K, 1, F)
    Vd = keep * Vd + c * xd.unsqueeze(-3)
    xo = torch.stack([xo_re, xo_im], -3).unsqueeze(-3)  # (..., 2, 1, P, F)
    Vo = keep.unsqueeze(-4) * Vo + c.unsqueeze(-4) * xo
    return Vd, Vo


def output_planes(y_re: torch.Tensor, y_im: torch.Tensor, A: torch.Tensor, ref_mic: int):
    """``y_k (W^{-1})[ref, k]`` (minimal distortion scale) -> ``(..., K, F, 2)`` interleaved.

    Args:
        y_re, y_im: ``(..., K, F)`` demixed frame; A: ``(..., 2, M, M, F)`` inverse demixing.
    """
    K = y_re.shape[-2]
    a_re, a_im = A[..., 0, ref_mic, :K, :], A[..., 1, ref_mic, :K, :]
    return torch.stack([y_re * a_re - y_im * a_im, y_re * a_im + y_im * a_re], -1)
