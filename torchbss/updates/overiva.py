"""More microphones than sources: the OverIVA background rows and the PCA reduction.

References:
    R. Scheibler and N. Ono, "Independent vector analysis with more microphones than sources",
    WASPAA 2019 (OverIVA).
"""

from __future__ import annotations

import torch

from torchbss.updates.covariance import (
    DEFAULT_LOAD,
    default_floor,
    diagonal_loading,
    mixture_covariance,
)

__all__ = ["background_update", "principal_basis", "embed_reduced_demixing"]

#: loading, relative to the norm of the block, of the bins whose ``K x K`` system is singular
SINGULAR_LOAD = 1e-3


def background_update(
    W: torch.Tensor, C: torch.Tensor, n_src: int, load: float | torch.Tensor = DEFAULT_LOAD
) -> torch.Tensor:
    """Recompute the background rows of an overdetermined demixing matrix (OverIVA).

    The last ``M - K`` rows are ``[J, -I]`` with ``J`` chosen so that the background is
    uncorrelated with the separated sources: ``W_s C U^H = 0`` gives
    ``J^H = ((W_s C)[:, :K])^{-1} (W_s C)[:, K:]``.

    Args:
        W: ``(..., freq, mics, mics)`` with the source rows first.
        C: ``(..., freq, mics, mics)`` mixture covariance ``1/T sum_t x x^H``.
        n_src: number of sources ``K`` (``K < M``; ``K == M`` returns ``W``).
        load: relative diagonal loading of the ``K x K`` system (``0`` for exact parity). A bin
            whose system is numerically singular even so is loaded by :data:`SINGULAR_LOAD`
            times its norm instead (and gets ``J = 0`` if that is singular too), so the result
            is always finite.

    Returns:
        New ``W`` with the background rows replaced.
    """
    M = W.shape[-1]
    if n_src >= M:
        return W
    WsC = W[..., :n_src, :] @ C  # (..., f, K, M)
    B, R = WsC[..., :n_src], WsC[..., n_src:]
    loaded = diagonal_loading(B, load)
    Jh, info = torch.linalg.solve_ex(loaded, R)
    bad = info != 0
    if bool(bad.any()):
        # numerically singular bins (e.g. two nearly parallel source rows, as online separators
        # can reach in a low bin): there the loading is taken relative to the block's norm, not
        # to its mean diagonal (which is signed and can vanish), and the solve is done again
        # from scratch, so that the first solve's failed bins pass no gradient
        eye = torch.eye(n_src, dtype=B.dtype, device=B.device)
        norm = torch.linalg.matrix_norm(B.detach()).clamp_min(default_floor(B.real.dtype))
        rescue = B + (SINGULAR_LOAD * norm / n_src)[..., None, None] * eye
        Jh, info = torch.linalg.solve_ex(torch.where(bad[..., None, None], rescue, loaded), R)
        # a bin still singular (a zero block) gets no background coupling: rows [0, -I]
        Jh = torch.where((info != 0)[..., None, None], torch.zeros_like(Jh), Jh)
    J = Jh.mH  # (..., f, M-K, K)
    minus_eye = -torch.eye(M - n_src, dtype=W.dtype, device=W.device).expand(
        J.shape[:-2] + (M - n_src, M - n_src)
    )
    return torch.cat([W[..., :n_src, :], torch.cat([J, minus_eye], dim=-1)], dim=-2)


def principal_basis(X: torch.Tensor, frame_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Per-frequency unitary basis ``Q`` ``(..., freq, mics, mics)``, principal rows first.

    ``Q X`` has its strongest principal components in its first rows; the remaining rows span
    the orthogonal complement, so ``Q`` stays square and invertible.

    Args:
        X: ``(..., mics, freq, frames)`` mixture STFT.
        frame_mask: optional ``(..., frames)`` valid-frame mask.
    """
    _, vecs = torch.linalg.eigh(mixture_covariance(X, frame_mask))  # ascending eigenvalues
    return vecs.flip(-1).mH


def embed_reduced_demixing(W: torch.Tensor, Q: torch.Tensor) -> torch.Tensor:
    """Square demixing of the original mixture from ``W`` acting on ``Q X`` (first rows).

    Args:
        W: ``(..., freq, K, K)`` demixing of the ``K`` principal components.
        Q: ``(..., freq, M, M)`` from :func:`principal_basis`.

    Returns:
        ``(..., freq, M, M)``: ``[[W, 0], [0, I]] Q``; its first ``K`` rows give the sources
        from the original mixture.
    """
    K, M = W.shape[-1], Q.shape[-1]
    full = torch.zeros(W.shape[:-2] + (M, M), dtype=W.dtype, device=W.device)
    full = full + torch.eye(M, dtype=W.dtype, device=W.device)
    mask = torch.zeros(M, M, dtype=torch.bool, device=W.device)
    mask[:K, :K] = True
    padded = torch.nn.functional.pad(W, (0, M - K, 0, M - K))
    return torch.where(mask, padded, full) @ Q
