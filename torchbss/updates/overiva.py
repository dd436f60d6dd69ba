"""More microphones than sources: the OverIVA background rows and the PCA reduction.

References:
    R. Scheibler and N. Ono, "Independent vector analysis with more microphones than sources",
    WASPAA 2019 (OverIVA).
"""

from __future__ import annotations

import torch

from torchbss.updates.covariance import DEFAULT_LOAD, diagonal_loading, mixture_covariance

__all__ = ["background_update", "principal_basis", "embed_reduced_demixing"]


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
        load: relative diagonal loading of the ``K x K`` system (``0`` for exact parity).

    Returns:
        New ``W`` with the background rows replaced.
    """
    M = W.shape[-1]
    if n_src >= M:
        return W
    WsC = W[..., :n_src, :] @ C  # (..., f, K, M)
    Jh = torch.linalg.solve(diagonal_loading(WsC[..., :n_src], load), WsC[..., n_src:])
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
