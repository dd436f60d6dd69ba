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
  separation (outer products for IP, nothing for ISS). The cache is immutable and private to
  the update that made it.
* ``__call__(W, Y, weights, cache) -> (W, Y)``: one sweep over all sources, returning the new
  demixing matrices and the matching estimates ``Y = W[:n_src] X``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from einops import einsum

__all__ = ["SpatialUpdate", "UpdateCache", "demix"]


def demix(W: torch.Tensor, X: torch.Tensor, n_src: int | None = None) -> torch.Tensor:
    """Apply demixing matrices: ``Y[k, f, t] = sum_m W[f, k, m] X[m, f, t]``.

    Args:
        W: ``(..., freq, rows, mics)`` complex.
        X: ``(..., mics, freq, frames)`` complex.
        n_src: keep only the first ``n_src`` rows (default: all).

    Returns:
        ``(..., n_src, freq, frames)`` complex.
    """
    if n_src is not None:
        W = W[..., :n_src, :]
    return einsum(W, X, "... f k m, ... m f t -> ... k f t")


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
