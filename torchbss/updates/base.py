"""The spatial-update contract and the demixing product shared by every separator.

Notation (used by every module of :mod:`torchbss.updates`):

* ``X``: mixture STFT, ``(..., mics, freq, frames)`` complex.
* ``W``: demixing matrices, ``(..., freq, mics, mics)`` complex; row ``k`` is ``w_k^H`` so that
  ``Y = W X`` per frequency. With more mics than sources (``n_src < mics``) the first
  ``n_src`` rows demix the sources and the last ``mics - n_src`` rows span the background
  (OverIVA, Scheibler & Ono 2019).
* ``Y``: separated STFT, ``(..., sources, freq, frames)``.
* ``weights``: auxiliary weights ``phi`` of the source model, ``(..., sources, freq or 1,
  frames)`` real positive. With the cost (negative log-likelihood per frame)
  ``J(W) = sum_k mean_t G(r_kt) - 2 sum_f log|det W_f|`` the majorisation
  ``G(r) <= G'(r0) / (2 r0) r^2 + const`` gives ``phi = G'(r) / (2 r)``; Gaussian models with
  variance ``lambda`` (time-varying Gauss, NMF) have ``phi = 1 / lambda``.

A spatial update is a strategy object with two methods:

* ``prepare(X, n_src, frame_mask) -> cache``: whatever this update precomputes once per
  separation (the packed outer products for IP and ISS). The cache is immutable and private
  to the update that made it.
* ``__call__(W, Y, weights, cache) -> (W, Y)``: one sweep over all sources, returning the new
  demixing matrices and the matching estimates ``Y = W[:n_src] X``.

The built-in updates (IP1, IP2, ISS) are :class:`PackedUpdate` s: their sweep only needs the
weighted covariances, packed and frequency-last
(:func:`~torchbss.updates.covariance.packed_weighted_covariance`), and works on ``W`` in the
frequency-last layout ``(..., M, M, freq)``: ``update_packed(W, Vd, Vo, n_valid) -> W``. The
batch separators call it directly and keep ``W`` in that layout across iterations;
``__call__`` wraps it for the contract above.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from einops import einsum

from torchbss.updates.covariance import (
    mixture_covariance,
    packed_outer_products,
    packed_weighted_covariance,
    valid_frames,
)
from torchbss.updates.hermitian import from_freq_last, to_freq_last, upper_pairs

__all__ = [
    "SpatialUpdate",
    "PackedUpdate",
    "UpdateCache",
    "PackedCache",
    "demix",
    "planar_mixture",
    "demix_power",
    "demix_outer_products",
]


def demix(W: torch.Tensor, X: torch.Tensor, n_src: int | None = None) -> torch.Tensor:
    """Apply demixing matrices: ``Y[k, f, t] = sum_m W[f, k, m] X[m, f, t]``.

    Args:
        W: ``(..., freq, rows, mics)`` complex.
        X: ``(..., mics, freq, frames)`` complex.
        n_src: keep only the first ``n_src`` rows (default: all).

    Returns:
        ``(..., n_src, freq, frames)`` complex.
    """
    if W.shape[-3] != X.shape[-2] or W.shape[-1] != X.shape[-3]:
        raise ValueError(
            f"W (..., freq, rows, mics) must match X (..., mics, freq, frames) in freq and mics, "
            f"got W {tuple(W.shape)} and X {tuple(X.shape)}"
        )
    if n_src is not None:
        if isinstance(n_src, bool) or not isinstance(n_src, int) or not 1 <= n_src <= W.shape[-2]:
            raise ValueError(
                f"n_src must be an int in [1, {W.shape[-2]}] (rows of W), got {n_src!r}"
            )
        W = W[..., :n_src, :]
    return einsum(W, X, "... f k m, ... m f t -> ... k f t")


def planar_mixture(X: torch.Tensor) -> torch.Tensor:
    """The mixture as real and imaginary rows per frequency, for :func:`demix_power`.

    Args:
        X: ``(..., mics, freq, frames)`` complex.

    Returns:
        ``(..., freq, 2 mics, frames)`` real, contiguous: rows ``[Re x; Im x]``.
    """
    R = torch.view_as_real(X)  # (..., M, F, T, 2)
    return torch.cat([R[..., 0], R[..., 1]], dim=-3).transpose(-3, -2).contiguous()


def demix_power(
    W: torch.Tensor,
    Xp: torch.Tensor,
    n_src: int,
    out: torch.Tensor | None = None,
    work: torch.Tensor | None = None,
) -> torch.Tensor:
    """Output powers ``|y_kft|^2`` of ``Y = W X``, without forming the complex ``Y``.

    Per frequency one real matmul of the block matrix ``[[Re W, -Im W], [Im W, Re W]]``
    ``(2 K, 2 M)`` with the planar mixture ``(2 M, frames)``, then ``Re^2 + Im^2``: complex
    tensors cost a strided pass for every access on CPU, real planes do not.

    Args:
        W: ``(..., M, M, F)`` demixing matrices, frequency last.
        Xp: ``(..., F, 2 M, T)`` from :func:`planar_mixture`.
        n_src: number of sources ``K`` (the first rows of ``W``).
        out: optional ``(..., K, F, T)`` real buffer for the result (no graph).
        work: optional ``(..., F, 2 K, T)`` real buffer for the real and imaginary parts.

    Returns:
        ``(..., K, F, T)`` real.
    """
    YY = _block_demix(W, Xp, n_src, work)  # (..., F, 2K, T)
    if out is None or torch.is_grad_enabled() and (W.requires_grad or Xp.requires_grad):
        P = YY[..., :n_src, :].square() + YY[..., n_src:, :].square()
        return P.movedim(-3, -2)
    P = out.movedim(-2, -3)  # (..., F, K, T) view of the (..., K, F, T) buffer
    torch.mul(YY[..., :n_src, :], YY[..., :n_src, :], out=P)
    P.addcmul_(YY[..., n_src:, :], YY[..., n_src:, :])
    return out


def _block_demix(W: torch.Tensor, Xp: torch.Tensor, n_src: int, work: torch.Tensor | None):
    """Real and imaginary parts of ``Y = W X``: ``(..., F, 2 K, T)`` by one real matmul."""
    Wk = W[..., :n_src, :, :].movedim(-1, -3)  # (..., F, K, M)
    Wr, Wi = Wk.real, Wk.imag
    block = torch.cat([torch.cat([Wr, -Wi], -1), torch.cat([Wi, Wr], -1)], -2)
    # contiguous: cat keeps the frequency-innermost strides of W, and a batched matmul over
    # such a layout falls back to one small GEMM per matrix (~10x slower)
    block = block.to(Xp.dtype, memory_format=torch.contiguous_format)
    if work is None or torch.is_grad_enabled() and (W.requires_grad or Xp.requires_grad):
        return block @ Xp
    return torch.matmul(block, Xp, out=work)


def demix_outer_products(
    W: torch.Tensor,
    Xp: torch.Tensor,
    n_src: int,
    out: torch.Tensor | None = None,
    work: torch.Tensor | None = None,
) -> torch.Tensor:
    """Packed outer products ``y y^H`` of ``Y = W X`` (the layout of
    :func:`~torchbss.updates.covariance.packed_outer_products`), without the complex ``Y``.

    Args:
        W: ``(..., M, M, F)`` demixing matrices, frequency last.
        Xp: ``(..., F, 2 M, T)`` from :func:`planar_mixture`.
        n_src: number of sources ``K`` (the first rows of ``W``).
        out: optional ``(..., K^2, F, T)`` buffer for the result (no graph).
        work: optional ``(..., F, 2 K, T)`` buffer for the real and imaginary parts.

    Returns:
        ``(..., K^2, F, T)`` real: ``|y_k|^2`` for every ``k``, then ``Re`` and then ``Im`` of
        ``y_i conj(y_j)`` for ``i < j``; its first ``K`` planes are :func:`demix_power`.
    """
    K = n_src
    rows, cols = upper_pairs(K)
    YY = _block_demix(W, Xp, K, work)
    re, im = YY[..., :K, :], YY[..., K:, :]  # (..., F, K, T)
    if out is None or torch.is_grad_enabled() and (W.requires_grad or Xp.requires_grad):
        parts = [re.square() + im.square()]
        if rows:
            ri, rj, ii, ij = re[..., rows, :], re[..., cols, :], im[..., rows, :], im[..., cols, :]
            parts += [ri * rj + ii * ij, ii * rj - ri * ij]
        return torch.cat(parts, -2).movedim(-3, -2)
    P = len(rows)
    view = out.movedim(-2, -3)  # (..., F, K^2, T) view of the (..., K^2, F, T) buffer
    torch.mul(re, re, out=view[..., :K, :]).addcmul_(im, im)
    for p, (i, j) in enumerate(zip(rows, cols)):
        ri, rj, ii, ij = re[..., i, :], re[..., j, :], im[..., i, :], im[..., j, :]
        torch.mul(ri, rj, out=view[..., K + p, :]).addcmul_(ii, ij)
        torch.mul(ii, rj, out=view[..., K + P + p, :]).addcmul_(ri, ij, value=-1)
    return out


@dataclass(frozen=True)
class UpdateCache:
    """What every update needs of the mixture; updates subclass it to add their own caches.

    Attributes:
        X: ``(..., mics, freq, frames)`` the (possibly PCA-reduced) mixture.
        n_src: number of sources (rows of ``W`` that demix sources).
        frame_mask: optional ``(..., frames)`` {0, 1} mask of valid frames.
    """

    X: torch.Tensor
    n_src: int
    frame_mask: torch.Tensor | None


class SpatialUpdate:
    """Base class of the spatial updates (IP1, IP2, ISS): one sweep over all sources.

    Subclasses set ``name`` and ``square_only`` (whether they need ``n_src == mics``; the
    separators reduce an overdetermined mixture by PCA for those) and implement
    :meth:`__call__`; :meth:`prepare` defaults to the plain :class:`UpdateCache`.
    """

    name: ClassVar[str] = "custom"
    square_only: ClassVar[bool] = True

    def prepare(
        self, X: torch.Tensor, n_src: int, frame_mask: torch.Tensor | None = None
    ) -> UpdateCache:
        """Per-separation cache for the mixture ``X`` ``(..., mics, freq, frames)``."""
        return UpdateCache(X=X, n_src=n_src, frame_mask=frame_mask)

    def __call__(
        self, W: torch.Tensor, Y: torch.Tensor, weights: torch.Tensor, cache: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One sweep: ``(W, Y, weights, cache) -> (W, Y)``."""
        raise NotImplementedError

    def _config(self) -> dict[str, Any]:
        return {}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self._config().items())
        return f"{type(self).__name__}({args})"

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and self._config() == other._config()  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash((type(self), tuple(sorted(self._config().items()))))


@dataclass(frozen=True)
class PackedCache(UpdateCache):
    """Cache of the packed updates (IP1, IP2, ISS).

    Attributes:
        outer: ``(..., M^2, freq, frames)`` packed outer products (see
            :func:`~torchbss.updates.covariance.packed_outer_products`; invalid frames zero;
            possibly stored :func:`~torchbss.updates.covariance.frames_major`).
        n_valid: number of valid frames, an int or a ``(...)`` tensor.
        outer_power: optional float64 packed outer products for
            :func:`~torchbss.updates.covariance.packed_output_power` (complex64 input; set by
            the batch separators when they use it).
        planar: optional ``(..., freq, 2 mics, frames)`` planar mixture for
            :func:`demix_power` (set by the batch separators when they use it).
        covariance: ``(..., freq, mics, mics)`` mixture covariance when ``n_src < mics``
            (OverIVA background rows), else ``None``.
    """

    outer: torch.Tensor | None = None
    n_valid: torch.Tensor | int = 1
    outer_power: torch.Tensor | None = None
    planar: torch.Tensor | None = None
    covariance: torch.Tensor | None = None


class PackedUpdate(SpatialUpdate):
    """A spatial update computed from packed weighted covariances, frequency last.

    Subclasses implement :meth:`update_packed`; :meth:`__call__` (the generic contract) computes
    the covariances from the cache, converts ``W`` to the frequency-last layout and back, and
    demixes. ``domain`` says which covariances :meth:`update_packed` takes: ``"mixture"``
    (``V_k`` of ``X``, IP) or ``"estimates"`` (``U_k`` of ``Y = W X``, ISS).
    """

    domain: ClassVar[str] = "mixture"

    def prepare(
        self,
        X: torch.Tensor,
        n_src: int,
        frame_mask: torch.Tensor | None = None,
        *,
        outer: torch.Tensor | None = None,
    ) -> PackedCache:
        """Packed outer products of ``X`` ``(..., mics, freq, frames)`` and the frame count
        (``outer``: the packed outer products when the caller has them already)."""
        cov = mixture_covariance(X, frame_mask) if n_src < X.shape[-3] else None
        if outer is None and self.domain == "mixture":
            outer = packed_outer_products(X, frame_mask)
        return PackedCache(
            X=X,
            n_src=n_src,
            frame_mask=frame_mask,
            outer=outer,
            n_valid=valid_frames(frame_mask, X.shape[-1], X.real.dtype),
            covariance=cov,
        )

    def covariances(
        self, weights: torch.Tensor, cache: PackedCache
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Packed weighted covariances ``(Vd (..., K, M, F), Vo (..., K, P, F))``."""
        return packed_weighted_covariance(cache.outer, weights, cache.n_valid)

    def update_packed(
        self, W: torch.Tensor, Vd: torch.Tensor, Vo: torch.Tensor, n_valid: torch.Tensor | int
    ) -> torch.Tensor:
        """One sweep in the frequency-last layout.

        Args:
            W: ``(..., M, M, F)`` demixing matrices.
            Vd: ``(..., K, M, F)`` real diagonals of the weighted covariances of the ``K``
                sources (unloaded).
            Vo: ``(..., K, M (M-1)/2, F)`` their complex strict upper triangles.
            n_valid: number of valid frames (int or ``(...)`` tensor).

        Returns:
            ``(..., M, M, F)`` new demixing matrices.
        """
        raise NotImplementedError

    def __call__(self, W, Y, weights, cache: PackedCache):
        if self.domain == "mixture":
            Vd, Vo = self.covariances(weights, cache)
        else:
            YY = packed_outer_products(Y, cache.frame_mask)
            Vd, Vo = packed_weighted_covariance(YY, weights, cache.n_valid)
        Wf = self.update_packed(to_freq_last(W), Vd, Vo, cache.n_valid)
        W = from_freq_last(Wf)
        return W, demix(W, cache.X, cache.n_src)
