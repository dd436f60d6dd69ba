"""Spatial covariances of the mixture and their diagonal loading.

Notation (shared by every module of :mod:`torchbss.updates`):

* ``X``: mixture STFT ``(..., mics, freq, frames)`` complex.
* ``weights``: auxiliary weights ``phi`` ``(..., sources, freq or 1, frames)``, real positive.
* ``V_k = 1/T sum_t phi_kt x_t x_t^H``: weighted covariance of source ``k``,
  ``(..., sources, freq, mics, mics)`` complex Hermitian.

The batch updates work on *packed* outer products (:func:`packed_outer_products`): per frame
and frequency the ``M^2`` real numbers of the Hermitian ``x x^H`` (real diagonal, real and
imaginary parts of the strict upper triangle), stored as ``(..., M^2, freq, frames)``. With
weights that do not depend on frequency (Laplace, Gauss) the covariances of all sources are
then one real GEMM ``(sources, frames) @ (frames, M^2 freq)``
(:func:`packed_weighted_covariance`), and the output power of every source per frame is
another (:func:`packed_output_power`), so an iteration reads the outer products twice and
never forms ``Y = W X``. Frequency-dependent weights (NMF) use one batched matmul over
frequencies on the same layout.

Both GEMMs read the outer products in the order they are stored, in either of two storage
orders: frequency-contiguous ``(..., M^2, F, T)`` (covariances as ``(XX @ w^T)^T``, the rows of
``XX`` streamed against the few weight columns; powers as ``c @ XX``) or frames-major
(:func:`frames_major`: ``(..., T, M^2, F)`` in memory, viewed as ``(..., M^2, F, T)``;
covariances as ``w @ XX^T``, powers as ``c @ XX`` with ``XX`` read as the transposed view).
With MKL on the AMD EPYC machine of BENCHMARKS.md these orders stream 2-4x faster than the
others; once the outer products no longer fit in cache the frames-major one is the faster for
the powers (3x3 8 s, float64: 4.9 -> 2.5 ms; 0.92 ms as ``c @ XX``), and the batch separators
store them so. The result is the same sum.

Diagonal loading has one meaning everywhere (batch and online separators, IP1, IP2, OverIVA):
``V + load * max(mean(diag V), floor) * I`` — relative to the mean diagonal, with an absolute
``floor`` so that an all-zero covariance (silent input, the zero initial state of an online
separator) still gets a positive definite system with finite solves and finite gradients.
"""

from __future__ import annotations

import math

import torch
from einops import einsum

from torchbss.updates.hermitian import upper_pairs

__all__ = [
    "DEFAULT_LOAD",
    "default_floor",
    "diagonal_loading",
    "weighted_covariance",
    "mixture_covariance",
    "outer_products",
    "weighted_covariance_from_outer",
    "packed_outer_products",
    "frames_major",
    "packed_weighted_covariance",
    "packed_output_power",
    "valid_frames",
]

#: relative diagonal loading of the weighted covariances of the batch updates (IP1, IP2)
DEFAULT_LOAD = 1e-6


def default_floor(dtype: torch.dtype) -> float:
    """Absolute floor of the mean diagonal used by :func:`diagonal_loading`: ``sqrt(tiny)``."""
    real = dtype.to_real() if dtype.is_complex else dtype
    return torch.finfo(real).tiny ** 0.5


def check_load(load: object) -> float:
    """A relative diagonal loading given as a number: finite and ``>= 0`` (a negative one would
    subtract from the diagonal, or, before this check, be silently taken as ``0``)."""
    if isinstance(load, bool) or not isinstance(load, (int, float)) or not 0 <= load < math.inf:
        raise ValueError(f"load must be a finite float >= 0, got {load!r}")
    return float(load)


def diagonal_loading(
    V: torch.Tensor, load: float | torch.Tensor, floor: float | None = None
) -> torch.Tensor:
    """``V + load * max(mean(diag V), floor) * I`` for Hermitian PSD ``V``.

    Args:
        V: ``(..., M, M)`` Hermitian positive semi-definite matrices.
        load: relative loading, a float ``>= 0`` or a tensor broadcastable to ``V.shape[:-2]``
            (e.g. a trainable scalar). ``0`` (the float) returns ``V`` unchanged.
        floor: absolute floor of the mean diagonal (default :func:`default_floor`).

    Returns:
        ``(..., M, M)`` loaded matrices.
    """
    if not isinstance(load, torch.Tensor):
        check_load(load)
        if load == 0:
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
    # denom divides V (..., sources, freq, 2 M^2): three trailing dims
    weights, denom = _frame_weights(weights, frame_mask, n_frames, 3)
    XXr = torch.view_as_real(XX).flatten(-3)  # (..., f, t, 2 M^2)
    w = weights.expand(weights.shape[:-2] + (n_freq, n_frames)).to(XXr.dtype)  # (.., k, f, t)
    # one (freq, 1, frames) @ (freq, frames, 2 M^2) matmul per source: reads each source's
    # weights in place (no transposed copy of the full weights)
    V = torch.stack([w[..., k, :, None, :] @ XXr for k in range(w.shape[-3])], -4)[..., 0, :]
    V = V / denom
    return torch.view_as_complex(V.unflatten(-1, (M, M, 2)).contiguous())


def valid_frames(
    frame_mask: torch.Tensor | None, n_frames: int, dtype: torch.dtype
) -> torch.Tensor | int:
    """Number of valid frames ``(...)`` (``n_frames`` without a mask), floored at 1."""
    if frame_mask is None:
        return n_frames
    return frame_mask.to(dtype).sum(-1).clamp_min(1.0)


def packed_outer_products(
    X: torch.Tensor,
    frame_mask: torch.Tensor | None = None,
    dtype: torch.dtype | None = None,
    store_frames_major: bool = False,
) -> torch.Tensor:
    """Packed real outer products ``x_ft x_ft^H`` for the GEMM covariances, once per separation.

    Rows ``c`` of the result: the ``M`` diagonal entries ``|x_m|^2``, then the real parts and
    then the imaginary parts of ``x_i conj(x_j)`` for the pairs ``i < j`` of
    :func:`~torchbss.updates.hermitian.upper_pairs` (the packed layout of
    :mod:`~torchbss.updates.hermitian`). Frames outside ``frame_mask`` are zero, so that
    covariances and powers computed from it ignore them.

    Args:
        X: ``(..., mics, freq, frames)`` complex mixture STFT.
        frame_mask: optional ``(..., frames)`` {0, 1} mask of valid frames.
        dtype: real dtype of the result (default: that of ``X``). ``float64`` for ``complex64``
            input keeps the products exact (a product of two float32 numbers is exact in
            float64), which :func:`packed_output_power` needs.
        store_frames_major: store the result as :func:`frames_major` does, written there
            directly (no full-size copy of the products).

    Returns:
        ``(..., M^2, freq, frames)`` real: contiguous, or a view of a contiguous
        ``(..., frames, M^2, freq)`` tensor with ``store_frames_major``.
    """
    M = X.shape[-3]
    rows, cols = upper_pairs(M)
    real = X.real.dtype if dtype is None else dtype
    R = torch.view_as_real(X)
    if torch.is_grad_enabled() and X.requires_grad:
        re, im = R[..., 0].to(real), R[..., 1].to(real)  # planar (..., M, F, T)
        parts = [re.square() + im.square()]
        if rows:
            ri, rj, ii, ij = (
                re[..., rows, :, :],
                re[..., cols, :, :],
                im[..., rows, :, :],
                im[..., cols, :, :],
            )
            parts += [ri * rj + ii * ij, ii * rj - ri * ij]
        XX = torch.cat(parts, dim=-3)
        if frame_mask is not None:
            XX = XX * frame_mask.to(real)[..., None, None, :]
        return frames_major(XX) if store_frames_major else XX
    # no graph: write every plane in place into one buffer (no temporaries); frames-major, the
    # planes are (..., T, M, F) and the buffer (..., T, C, F), so every write is in order
    P = len(rows)
    axis = -2 if store_frames_major else -3
    planes = (R[..., 0], R[..., 1])  # (..., M, F, T)
    if store_frames_major:
        planes = tuple(part.movedim(-1, -3) for part in planes)  # (..., T, M, F)
    re, im = (part.to(real, memory_format=torch.contiguous_format) for part in planes)
    shape = list(re.shape)
    shape[axis] = M + 2 * P
    XX = torch.empty(shape, dtype=real, device=X.device)
    plane = lambda t, i: t.select(axis, i)  # noqa: E731
    torch.mul(re, re, out=XX.narrow(axis, 0, M)).addcmul_(im, im)
    for p, (i, j) in enumerate(zip(rows, cols)):
        ri, rj, ii, ij = plane(re, i), plane(re, j), plane(im, i), plane(im, j)
        torch.mul(ri, rj, out=plane(XX, M + p)).addcmul_(ii, ij)
        torch.mul(ii, rj, out=plane(XX, M + P + p)).addcmul_(ri, ij, value=-1)
    if store_frames_major:
        XX = XX.movedim(-3, -1)  # (..., C, F, T) view of the (..., T, C, F) buffer
    if frame_mask is not None:
        XX.mul_(frame_mask.to(real)[..., None, None, :])
    return XX


def frames_major(XX: torch.Tensor) -> torch.Tensor:
    """The packed outer products stored frames-major, as both packed GEMMs read them fastest
    once they exceed the cache (:func:`packed_weighted_covariance`, :func:`packed_output_power`).

    Args:
        XX: ``(..., M^2, F, T)`` from :func:`packed_outer_products`.

    Returns:
        The same values, shape ``(..., M^2, F, T)``, as a view of a contiguous
        ``(..., T, M^2, F)`` tensor: the GEMMs then read one frame's products at a time (see
        the module notes).
    """
    return XX.movedim(-1, -3).contiguous().movedim(-3, -1)


def _is_frames_major(XX: torch.Tensor) -> bool:
    """Whether ``XX`` ``(..., C, F, T)`` is a view of a contiguous ``(..., T, C, F)`` tensor."""
    return XX.shape[-1] > 1 and XX.movedim(-1, -3).is_contiguous() and XX.stride(-1) != 1


def packed_weighted_covariance(
    XX: torch.Tensor, weights: torch.Tensor, n_valid: torch.Tensor | int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Packed weighted covariances ``V_k = sum_t phi_kt x_t x_t^H / T`` of all sources.

    Frequency-independent weights ``(..., K, 1, T)``: one real GEMM
    ``(K, T) @ (T, M^2 F)`` per mixture; frequency-dependent ``(..., K, F, T)``: one batched
    matmul over frequencies ``(F, K, T) @ (F, T, M^2)``. Either way the result comes out packed
    and frequency-last, as :func:`~torchbss.updates.hermitian.hermitian_inverse` takes it.

    Args:
        XX: ``(..., M^2, F, T)`` from :func:`packed_outer_products` (invalid frames zeroed).
        weights: ``(..., K, 1 or F, T)`` real weights ``phi``.
        n_valid: number of valid frames ``T``, an int or a ``(...)`` tensor.

    Returns:
        ``(d, o)``: ``d`` ``(..., K, M, F)`` real diagonals and ``o`` ``(..., K, M (M-1)/2, F)``
        complex strict upper triangles, in the precision of ``weights`` (float64 outer products
        with float32 weights: the products are summed in float64 and the result rounded).
    """
    C, F, T = XX.shape[-3:]
    M = round(C**0.5)
    w = weights.to(XX.dtype)
    if w.shape[-2] == 1 and _is_frames_major(XX):
        # (..., K, T) @ (..., T, C F): the frames are the reduction dim of one GEMM
        V = (w[..., 0, :] @ XX.movedim(-1, -3).flatten(-2, -1)).unflatten(-1, (C, F))
    elif w.shape[-2] == 1:
        # the same GEMM as ((..., C F, T) @ (..., T, K))^T: it streams the rows of XX
        V = XX.flatten(-3, -2) @ w[..., 0, :].mT  # (..., C F, K)
        V = V.unflatten(-2, (C, F)).movedim(-1, -3).contiguous()
    else:
        V = einsum(w, XX, "... k f t, ... c f t -> ... k c f")
    if isinstance(n_valid, torch.Tensor):
        n_valid = n_valid[..., None, None, None]
    V = (V / n_valid).to(weights.dtype)
    P = (C - M) // 2
    d = V[..., :M, :]
    o = torch.complex(V[..., M : M + P, :], V[..., M + P :, :])
    return d, o


def packed_output_power(
    W: torch.Tensor, XX: torch.Tensor, n_src: int, per_frequency: bool = False
) -> torch.Tensor:
    """Output powers ``|y_kft|^2`` of ``Y = W X`` from the packed outer products.

    ``|w^H x|^2 = sum_ij W_ki conj(W_kj) x_i conj(x_j)`` is linear in the outer products, so the
    power of every source per frame, summed over frequencies (what the spherical source
    models need), is one real GEMM ``(K, M^2 F) @ (M^2 F, T)`` and ``Y`` is never formed.

    Accuracy: the sum cancels where a source is well separated, so its rounding error is
    ``~ eps sum_f ||w||^2 ||x||^2`` rather than ``eps |y|^2``. The ratio of the two reaches
    ``1e4`` on real mixtures and ``1e12`` on synthetic instantaneous ones, so float32
    outer products are not enough: the batch separators pass float64 ones for complex64 input
    (the coefficients are then formed in float64 too), and compute the powers from ``Y`` for
    complex128 input.

    Args:
        W: ``(..., M, M, F)`` demixing matrices, frequency last (row ``k`` gives source ``k``).
        XX: ``(..., M^2, F, T)`` from :func:`packed_outer_products`, best stored
            :func:`frames_major` (then read frame by frame).
        n_src: number of sources (the first rows of ``W``).
        per_frequency: return ``(..., K, F, T)`` instead of the sum over frequencies.

    Returns:
        ``(..., K, 1, T)`` real: ``sum_f |y_kft|^2`` (``(..., K, F, T)`` with
        ``per_frequency``). Mathematically non-negative; rounding can leave tiny negative
        values where a source is cancelled, which the source models' floors absorb.
    """
    M = W.shape[-2]
    rows, cols = upper_pairs(M)
    Wk = W[..., :n_src, :, :].to(XX.dtype.to_complex())  # (..., K, M, F)
    coef = [Wk.real.square() + Wk.imag.square()]
    if rows:
        q = 2.0 * Wk[..., list(rows), :] * Wk[..., list(cols), :].conj()  # (..., K, P, F)
        coef += [q.real, -q.imag]
    coef = torch.cat(coef, dim=-2)  # (..., K, C, F)
    if per_frequency:
        return einsum(coef, XX, "... k c f, ... c f t -> ... k f t")
    # (..., K, C F) @ (..., C F, T), XX a view in either storage order (frames-major: MKL
    # streams each frame's products against the K rows of coef, 1.42 -> 0.92 ms at 3x3 8 s
    # against the product written (XX^T @ coef^T)^T, which reads coef across its inner loop)
    return (coef.flatten(-2) @ XX.flatten(-3, -2)).unsqueeze(-2)
