"""Source images at every microphone, and the mixing matrix implied by a demixing matrix.

A determined demixing ``W_f`` (``Y = W X``) implies the mixing ``A_f = W_f^{-1}`` (``X = A Y``):
column ``k`` of ``A`` carries source ``k`` to every microphone, so the *image* of source ``k``
at mic ``m`` is ``A[m, k] Y_k`` and the images of all sources sum to the mixture exactly
(Murata, Ikeda and Ziehe 2001, "projection back"; Matsuoka 2002, minimal distortion principle:
the image at the reference mic is the minimal-distortion output). The image does not depend on
the scale of ``Y_k``: any rescaling of a row of ``W`` cancels in ``A[m, k] Y_k``.

Overdetermined separators (OverIVA background rows, or the PCA route) return a square
``(mics, mics)`` demixing whose first ``n_src`` rows give the sources; the same formulas hold
with the first ``n_src`` columns of ``A``, and the images then sum to the mixture minus the
background (which the remaining columns carry).

For separators without a time-invariant demixing matrix (online separators, whose ``W`` changes
every frame; neural mask models) :func:`projected_images` estimates every image by least
squares per mic (projection back onto each mic in turn).

Every function is batched over leading dimensions, runs on any device and passes gradients
(``torch.linalg.inv`` / ``solve``; guard values are documented where used).

Shapes: mixture ``X`` ``(..., mics, freq, frames)``; demixing ``W`` ``(..., freq, mics, mics)``;
mixing ``A`` ``(..., freq, mics, sources)``; images ``(..., sources, mics, freq, frames)``.
"""

from __future__ import annotations

from typing import Any

import torch
from einops import einsum

from torchbss._validation import check_complex, check_positive_int, check_tensor
from torchbss.updates.scaling import projection_back

__all__ = ["mixing_matrix", "source_images", "projected_images", "result_images"]

MIXTURE_LAYOUT = "(..., mics, freq, frames)"
DEMIXING_LAYOUT = "(..., freq, mics, mics)"


def _check_demixing(demixing: object, n_src: int | None) -> tuple[torch.Tensor, int]:
    check_tensor(demixing, "demixing", min_ndim=3, layout=DEMIXING_LAYOUT)
    check_complex(demixing, "demixing")
    rows, cols = demixing.shape[-2:]
    if rows != cols:
        raise ValueError(
            f"demixing must be square {DEMIXING_LAYOUT} (overdetermined separators return a "
            f"square matrix whose first n_src rows give the sources), got shape "
            f"{tuple(demixing.shape)}"
        )
    if n_src is None:
        n_src = cols
    check_positive_int(n_src, "n_src")
    if n_src > cols:
        raise ValueError(
            f"n_src={n_src} sources cannot exceed the {cols} rows of demixing "
            f"{tuple(demixing.shape)}"
        )
    return demixing, n_src


def mixing_matrix(
    demixing: torch.Tensor,
    n_src: int | None = None,
    *,
    ref_mic: int | None = None,
    eps: float = 1e-12,
) -> torch.Tensor:
    """Mixing matrix implied by a demixing matrix: the first ``n_src`` columns of ``W^{-1}``.

    Args:
        demixing: ``(..., freq, mics, mics)`` square demixing matrices ``W`` (``Y = W X``), e.g.
            ``result.demixing`` of a batch separator.
        n_src: number of sources (the first rows of ``W``; default: all ``mics``).
        ref_mic: normalise every column to 1 at this mic (relative transfer functions:
            ``A[:, k] / A[ref_mic, k]``); ``None`` keeps the scale that goes with ``Y = W X``.
        eps: a reference entry smaller than this in magnitude is replaced by ``eps`` (same
            phase) before dividing, so a silent column stays finite.

    Returns:
        ``(..., freq, mics, n_src)`` complex mixing matrix ``A``.

    Example:
        >>> W = torch.randn(5, 3, 3, dtype=torch.complex128)
        >>> A = mixing_matrix(W)
        >>> torch.allclose(A @ W, torch.eye(3, dtype=W.dtype).expand(5, 3, 3))
        True
    """
    W, n_src = _check_demixing(demixing, n_src)
    A, info = torch.linalg.inv_ex(W)
    if bool((info != 0).any()):
        singular = sorted(set((info != 0).nonzero()[:, -1].tolist()))[:8]
        raise ValueError(
            f"the demixing is singular in frequency bin(s) {singular}: it has no mixing matrix "
            "(its sources cannot be projected back to the mics)"
        )
    A = A[..., :n_src]
    if ref_mic is None:
        return A
    n_mics = W.shape[-1]
    if isinstance(ref_mic, bool) or not isinstance(ref_mic, int) or not 0 <= ref_mic < n_mics:
        raise ValueError(f"ref_mic must be an integer in [0, {n_mics}), got {ref_mic!r}")
    ref = A[..., ref_mic : ref_mic + 1, :]
    magnitude = ref.abs()
    phase = torch.where(magnitude > 0, ref / magnitude.clamp_min(eps), torch.ones_like(ref))
    ref = torch.where(magnitude > eps, ref, eps * phase)
    return A / ref


def source_images(
    mixture: torch.Tensor, demixing: torch.Tensor, n_src: int | None = None
) -> torch.Tensor:
    """Image of every source at every microphone from a time-invariant demixing matrix.

    ``images[..., k, m, f, t] = A[f, m, k] * (W_f x_t)_k`` with ``A = W^{-1}``: what mic ``m``
    records of source ``k``. Summed over sources the images give the mixture back (determined
    case; overdetermined: the mixture minus the background). The image at ``ref_mic`` equals
    the :func:`~torchbss.updates.minimum_distortion` output for that mic.

    Args:
        mixture: ``(..., mics, freq, frames)`` complex mixture STFT ``X``.
        demixing: ``(..., freq, mics, mics)`` demixing ``W`` of that mixture whose first
            ``n_src`` rows give the sources (``result.demixing`` of a batch separator).
        n_src: number of sources (default: ``mics``).

    Returns:
        ``(..., n_src, mics, freq, frames)`` complex images.

    Example:
        >>> from torchbss import AuxIVA
        >>> X = torch.randn(2, 65, 40, dtype=torch.complex128)
        >>> res = AuxIVA(n_iter=3)(X)
        >>> images = source_images(X, res.demixing)
        >>> torch.allclose(images.sum(-4), X)
        True
    """
    check_tensor(mixture, "mixture", min_ndim=3, layout=MIXTURE_LAYOUT)
    check_complex(mixture, "mixture")
    W, n_src = _check_demixing(demixing, n_src)
    n_mics, n_freq = mixture.shape[-3:-1]
    if W.shape[-3:] != (n_freq, n_mics, n_mics):
        raise ValueError(
            f"demixing must have shape (..., {n_freq}, {n_mics}, {n_mics}) (freq, mics, mics) for "
            f"a mixture of shape {tuple(mixture.shape)} {MIXTURE_LAYOUT}, got {tuple(W.shape)}"
        )
    if W.shape[:-3] != mixture.shape[:-3]:
        raise ValueError(
            f"demixing {tuple(W.shape)} (..., freq, mics, mics) and mixture "
            f"{tuple(mixture.shape)} {MIXTURE_LAYOUT} must have the same batch shape"
        )
    W = W.to(mixture.dtype)
    sources = einsum(W[..., :n_src, :], mixture, "... f k m, ... m f t -> ... k f t")
    A = mixing_matrix(W, n_src)  # (..., f, m, k)
    return einsum(A, sources, "... f m k, ... k f t -> ... k m f t")


def projected_images(
    sources: torch.Tensor,
    mixture: torch.Tensor,
    frame_mask: torch.Tensor | None = None,
    eps: float = 1e-12,
) -> torch.Tensor:
    """Image of every source at every mic by least squares: projection back onto each mic.

    For separators without a time-invariant demixing matrix (online separators, mask models):
    ``images[k, m] = c_{k, m, f} Y_k`` with ``c`` the least-squares fit of ``Y_k`` to mic
    ``m`` per frequency (:func:`~torchbss.updates.projection_back` for each mic). The fit is
    made for each source on its own, so the images sum to the mixture only approximately.

    Args:
        sources: ``(..., sources, freq, frames)`` separated STFT (any scale).
        mixture: ``(..., mics, freq, frames)`` mixture STFT.
        frame_mask: optional ``(..., frames)`` valid-frame mask.
        eps: floor of the least-squares denominator (a silent source gets zero images).

    Returns:
        ``(..., sources, mics, freq, frames)`` complex images.
    """
    check_tensor(sources, "sources", min_ndim=3, layout="(..., sources, freq, frames)")
    check_tensor(mixture, "mixture", min_ndim=3, layout=MIXTURE_LAYOUT)
    check_complex(sources, "sources")
    check_complex(mixture, "mixture")
    if sources.shape[-2:] != mixture.shape[-2:]:
        raise ValueError(
            f"sources {tuple(sources.shape)} (..., sources, freq, frames) and mixture "
            f"{tuple(mixture.shape)} {MIXTURE_LAYOUT} must have the same freq and frames"
        )
    n_mics = mixture.shape[-3]
    images = [projection_back(sources, mixture, m, frame_mask, eps) for m in range(n_mics)]
    return torch.stack(images, dim=-3)


def result_images(result: Any, mixture: torch.Tensor, method: str = "auto") -> torch.Tensor:
    """Images of a separator's result at every mic, by the right route for that separator.

    Args:
        result: a :class:`~torchbss.separators.SeparationResult` (or a
            :class:`~torchbss.inference.WaveformResult`, whose ``separation`` is used).
        mixture: the ``(..., mics, freq, frames)`` mixture STFT that was separated.
        method: ``"demixing"`` (:func:`source_images`, exact; needs a time-invariant
            ``result.demixing``), ``"projection"`` (:func:`projected_images` of
            ``result.sources``) or ``"auto"``: demixing for batch separators (their state is an
            :class:`~torchbss.separators.IterativeState`), projection otherwise (online
            separators adapt ``W`` every frame, so their final ``W`` does not hold for the whole
            signal).

    Returns:
        ``(..., sources, mics, freq, frames)`` complex images.
    """
    from torchbss.separators.iterative import IterativeState

    separation = getattr(result, "separation", result)
    if separation is None or not hasattr(separation, "sources"):
        raise TypeError(
            "result must be a SeparationResult (or a WaveformResult of an STFT-domain "
            f"separator), got {type(result).__name__}"
        )
    if method not in ("auto", "demixing", "projection"):
        raise ValueError(f"method must be 'auto', 'demixing' or 'projection', got {method!r}")
    if method == "auto":
        batch = isinstance(separation.state, IterativeState)
        method = "demixing" if batch and separation.demixing is not None else "projection"
    if method == "demixing":
        if separation.demixing is None:
            raise ValueError(
                "method='demixing' needs result.demixing, which this separator does not "
                "return; use method='projection'"
            )
        return source_images(mixture, separation.demixing, separation.sources.shape[-3])
    return projected_images(separation.sources, mixture)
