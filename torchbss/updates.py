"""Spatial updates of the demixing matrices: pure, batched, differentiable functions.

Notation (used by every separator):

* ``X``: mixture STFT, ``(..., mics, freq, frames)`` complex.
* ``W``: demixing matrices, ``(..., freq, mics, mics)`` complex; row ``k`` is ``w_k^H`` so that
  ``Y = W X`` (per frequency). With more mics than sources (``n_src < mics``) the first
  ``n_src`` rows demix the sources and the last ``mics - n_src`` rows span the background
  (OverIVA, Scheibler & Ono 2019).
* ``Y``: separated STFT, ``(..., sources, freq, frames)``.
* ``weights``: per-source, per-bin, per-frame weights ``phi`` of the auxiliary function,
  ``(..., sources, freq, frames)`` real and positive. With the cost (negative log-likelihood
  per frame, averaged over frames)

      ``J(W) = sum_k mean_t G(r_kt) - 2 sum_f log|det W_f|``,  ``r_kt = ||y_kt||_2`` (over freq),

  the majorisation ``G(r) <= G'(r0) / (2 r0) r^2 + const`` gives ``phi_kt = G'(r_kt) / (2 r_kt)``
  (Laplace ``G(r) = r``: ``phi = 1 / (2 r)``), and the IP normalisation is ``w^H V w = 1``. For
  Gaussian models with variance ``lambda`` (time-varying Gauss, NMF/ILRMA) the source term is
  ``sum_{k,f} mean_t (|y|^2 / lambda + log lambda)`` and ``phi = 1 / lambda``.
* ``V``: weighted covariances ``V_k = 1/T sum_t phi_kt x_t x_t^H``, ``(..., sources, freq, mics,
  mics)``.

References:
    N. Ono, "Stable and fast update rules for independent vector analysis based on auxiliary
    function technique", WASPAA 2011 (IP1).
    N. Ono, "Fast stereo independent vector analysis and its implementation on mobile phone",
    IWAENC 2012 (IP2).
    R. Scheibler and N. Ono, "Fast and stable blind source separation with rank-1 updates",
    ICASSP 2020 (ISS).
    R. Scheibler and N. Ono, "Independent vector analysis with more microphones than sources",
    WASPAA 2019 (OverIVA background update).
    K. Matsuoka, "Minimal distortion principle for blind source separation", SICE 2002.
"""

from __future__ import annotations

import torch
from einops import einsum

__all__ = [
    "demix",
    "demix_freq_major",
    "weighted_covariance",
    "outer_products",
    "weighted_covariance_from_outer",
    "ip1_update",
    "ip2_update",
    "iss_update",
    "background_update",
    "projection_back",
    "minimum_distortion",
]

# Diagonal loading added (relative to the mean diagonal) before solving, so that singular
# covariances (silent mic, silent source) keep finite values and finite gradients.
DEFAULT_LOAD = 1e-6


def _eye_like(A: torch.Tensor) -> torch.Tensor:
    return torch.eye(A.shape[-1], dtype=A.dtype, device=A.device)


def _loaded(A: torch.Tensor, load: float) -> torch.Tensor:
    """``A + load * (mean diag(A) + tiny) * I`` for Hermitian PSD ``A`` of shape (..., M, M)."""
    if load <= 0:
        return A
    tiny = torch.finfo(A.real.dtype).tiny ** 0.5
    scale = A.diagonal(dim1=-2, dim2=-1).real.mean(-1, keepdim=True).clamp_min(tiny)
    return A + (load * scale)[..., None] * _eye_like(A)


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


def demix_freq_major(W: torch.Tensor, Xf: torch.Tensor, n_src: int | None = None) -> torch.Tensor:
    """:func:`demix` for a mixture stored frequency-major, one batched matmul.

    Args:
        W: ``(..., freq, rows, mics)`` complex.
        Xf: ``(..., freq, mics, frames)`` complex, contiguous (``X.transpose(-3, -2)``, made once
            per separation; then ``W @ Xf`` needs no copy, unlike the einsum on ``X``).
        n_src: keep only the first ``n_src`` rows (default: all).

    Returns:
        ``(..., n_src, freq, frames)`` complex (a transposed view).
    """
    if n_src is not None:
        W = W[..., :n_src, :]
    return (W @ Xf).transpose(-3, -2)


def weighted_covariance(
    X: torch.Tensor, weights: torch.Tensor, frame_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Weighted spatial covariances ``V_k = sum_t phi_kt x_t x_t^H / T``.

    Args:
        X: ``(..., mics, freq, frames)`` complex mixture STFT.
        weights: ``(..., sources, freq, frames)`` real weights ``phi`` (broadcastable over freq).
        frame_mask: optional ``(..., frames)`` {0, 1} mask of valid frames; ``T`` is then the
            number of valid frames (variable-length batches).

    Returns:
        ``(..., sources, freq, mics, mics)`` complex Hermitian.
    """
    n_frames = X.shape[-1]
    if frame_mask is not None:
        m = frame_mask.to(weights.dtype)
        weights = weights * m[..., None, None, :]
        denom = m.sum(-1).clamp_min(1.0)[..., None, None, None, None]
    else:
        denom = n_frames
    Xw = einsum(X, weights.to(X.dtype), "... m f t, ... k f t -> ... k f m t")
    return einsum(Xw, X.conj(), "... k f m t, ... n f t -> ... k f m n") / denom


def outer_products(X: torch.Tensor) -> torch.Tensor:
    """Per-frame outer products ``x_ft x_ft^H``, computed once per separation.

    Args:
        X: ``(..., mics, freq, frames)`` complex mixture STFT.

    Returns:
        ``(..., freq, frames, mics, mics)`` complex, to pass to
        :func:`weighted_covariance_from_outer` on every iteration.
    """
    # contiguous, so that the real view used on every iteration is a free reshape
    return einsum(X, X.conj(), "... m f t, ... n f t -> ... f t m n").contiguous()


def weighted_covariance_from_outer(
    XX: torch.Tensor, weights: torch.Tensor, frame_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Same as :func:`weighted_covariance`, from precomputed :func:`outer_products`.

    All sources' covariances come from one real batched matmul over frequencies
    ``(freq, sources, frames) @ (freq, frames, 2 mics^2)`` (complex values viewed as real pairs,
    the weights being real), which is much faster than a complex einsum per iteration.

    Args:
        XX: ``(..., freq, frames, mics, mics)`` from :func:`outer_products`.
        weights: ``(..., sources, freq or 1, frames)`` real weights.
        frame_mask: optional ``(..., frames)`` valid-frame mask.

    Returns:
        ``(..., sources, freq, mics, mics)`` complex Hermitian.
    """
    n_freq, n_frames, M = XX.shape[-4], XX.shape[-3], XX.shape[-1]
    if frame_mask is not None:
        m = frame_mask.to(weights.dtype)
        weights = weights * m[..., None, None, :]
        denom = m.sum(-1).clamp_min(1.0)[..., None, None, None]
    else:
        denom = n_frames
    K = weights.shape[-3]
    XXr = torch.view_as_real(XX).flatten(-3)  # (..., f, t, 2 M^2)
    w = weights.expand(weights.shape[:-2] + (n_freq, n_frames)).to(XXr.dtype)  # (.., k, f, t)
    # one (freq, 1, frames) @ (freq, frames, 2 M^2) matmul per source: reads each source's
    # weights in place (no transposed copy of the full weights)
    V = torch.stack([w[..., k, :, None, :] @ XXr for k in range(K)], -4)[..., 0, :]
    V = V / denom  # (..., k, f, 2 M^2)
    return torch.view_as_complex(V.unflatten(-1, (M, M, 2)).contiguous())


def ip1_update(
    W: torch.Tensor,
    V: torch.Tensor,
    source: int,
    load: float = DEFAULT_LOAD,
    eps: float = 1e-12,
) -> torch.Tensor:
    """Iterative projection (IP1) update of one demixing row (Ono 2011).

    ``w_k = (W V_k)^{-1} e_k``, then ``w_k /= sqrt(w_k^H V_k w_k)``.

    Args:
        W: ``(..., freq, mics, mics)`` current demixing matrices (square).
        V: ``(..., freq, mics, mics)`` weighted covariance of this source.
        source: row index ``k`` to update.
        load: relative diagonal loading of ``V`` (keeps the solve finite on singular input).
        eps: floor of the normaliser ``w^H V w``.

    Returns:
        New ``W`` (a new tensor; the input is not modified).
    """
    V = _loaded(V, load)
    WV = W @ V
    e = torch.zeros(W.shape[:-1] + (1,), dtype=W.dtype, device=W.device)
    e[..., source, 0] = 1.0
    w = torch.linalg.solve(WV, e)  # (..., freq, mics, 1)
    norm = (w.conj().transpose(-1, -2) @ V @ w).real.clamp_min(eps).sqrt()
    w = w / norm
    return _replace_row(W, source, w[..., 0].conj())


def _replace_row(W: torch.Tensor, index: int, row: torch.Tensor) -> torch.Tensor:
    """Out-of-place ``W[..., index, :] = row`` (keeps autograd happy)."""
    mask = torch.zeros(W.shape[-2], 1, dtype=torch.bool, device=W.device)
    mask[index] = True
    return torch.where(mask, row.unsqueeze(-2), W)


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

    Both rows are updated jointly and exactly: with the mixing estimate ``A = W^{-1}`` and
    ``G_s = [(W V_s W^H)^{-1}]_{(k,l),(k,l)}`` (2x2), the new rows are
    ``w_s = (W V_s)^{-1} E c_s`` where ``c_k, c_l`` are the generalized eigenvectors of
    ``G_k c = mu G_l c`` (largest ``mu`` for ``k``), normalised to ``c_s^H G_s c_s = 1``. The 2x2
    eigenproblem is solved in closed form (no ``torch.linalg.eigh``) so gradients stay finite.

    Args:
        W: ``(..., freq, mics, mics)`` current demixing matrices.
        V_k, V_l: ``(..., freq, mics, mics)`` weighted covariances of sources ``k`` and ``l``.
        k, l: the two rows to update (``k != l``).
        load: relative diagonal loading of ``V``.
        eps: floor used in the square roots and normalisations.

    Returns:
        New ``W``.
    """
    V_k = _loaded(V_k, load)
    V_l = _loaded(V_l, load)
    M = W.shape[-1]
    E = torch.zeros(M, 2, dtype=W.dtype, device=W.device)
    E[k, 0] = 1.0
    E[l, 1] = 1.0
    # P_s = (W V_s)^{-1} E, (..., freq, M, 2); G_s = E^H (W V_s W^H)^{-1} E (2x2)
    P_k = torch.linalg.solve(W @ V_k, E.expand(W.shape[:-2] + (M, 2)))
    P_l = torch.linalg.solve(W @ V_l, E.expand(W.shape[:-2] + (M, 2)))
    # E^H (W V_s W^H)^{-1} E = E^H (W^H)^{-1} (W V_s)^{-1} E = (W^{-1} E)^H P_s
    A_kl = torch.linalg.solve(W, E.expand(W.shape[:-2] + (M, 2)))  # columns k, l of W^{-1}
    G_k = A_kl.conj().transpose(-1, -2) @ P_k
    G_l = A_kl.conj().transpose(-1, -2) @ P_l
    G_k = 0.5 * (G_k + G_k.conj().transpose(-1, -2))
    G_l = 0.5 * (G_l + G_l.conj().transpose(-1, -2))
    c_max, c_min = _gen_eig_2x2(G_k, G_l, eps)
    # normalise c_s^H G_s c_s = 1
    c_k = c_max / _quad(G_k, c_max).clamp_min(eps).sqrt()[..., None]
    c_l = c_min / _quad(G_l, c_min).clamp_min(eps).sqrt()[..., None]
    w_k = (P_k @ c_k[..., None])[..., 0]
    w_l = (P_l @ c_l[..., None])[..., 0]
    W_ip2 = _replace_row(_replace_row(W, k, w_k.conj()), l, w_l.conj())
    # (nearly) proportional G_k, G_l (e.g. a silent mic): the pencil's eigenvectors are
    # ill-defined and the joint update can make W singular; fall back to two IP1 steps there
    # (which also never increase the cost).
    degenerate = _relative_gap_2x2(G_k, G_l) < IP2_DEGENERATE_GAP
    W_ip1 = ip1_update(ip1_update(W, V_k, k, load=0.0, eps=eps), V_l, l, load=0.0, eps=eps)
    return torch.where(degenerate[..., None, None], W_ip1, W_ip2)


# Relative eigenvalue gap of the IP2 pencil below which IP2 falls back to two IP1 steps.
IP2_DEGENERATE_GAP = 1e-6


def _relative_gap_2x2(H: torch.Tensor, L: torch.Tensor) -> torch.Tensor:
    """``(mu_max - mu_min) / (mu_max + mu_min)`` of the pencil ``H c = mu L c`` (no grad)."""
    with torch.no_grad():
        tiny = torch.finfo(H.real.dtype).tiny
        H = H / _trace(H).clamp_min(tiny)[..., None, None]
        L = L / _trace(L).clamp_min(tiny)[..., None, None]
        a = L[..., 0, 0].real * L[..., 1, 1].real - L[..., 0, 1].abs() ** 2
        b = (
            H[..., 0, 0].real * L[..., 1, 1].real
            + H[..., 1, 1].real * L[..., 0, 0].real
            - 2.0 * (H[..., 0, 1] * L[..., 0, 1].conj()).real
        )
        c = H[..., 0, 0].real * H[..., 1, 1].real - H[..., 0, 1].abs() ** 2
        disc = (b * b - 4.0 * a * c).clamp_min(0.0)
        gap = disc.sqrt() / b.abs().clamp_min(tiny)
        return torch.where(torch.isfinite(gap), gap, torch.zeros_like(gap))


def _quad(G: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """``c^H G c`` (real) for ``G`` (..., 2, 2) and ``c`` (..., 2)."""
    return einsum(c.conj(), G, c, "... i, ... i j, ... j -> ...").real


def _gen_eig_2x2(H: torch.Tensor, L: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalized eigenvectors of the 2x2 Hermitian pencil ``H c = mu L c`` (``L`` PD).

    Solves ``det(H - mu L) = 0`` in closed form. Returns the (unnormalised) eigenvectors of the
    largest and of the smallest eigenvalue, each ``(..., 2)``; the latter is taken L-orthogonal
    to the former. The discriminant's square root is
    floored at ``eps`` (relative) so the gradient stays finite at repeated eigenvalues.
    """
    # the eigenvectors do not change when H and L are scaled: normalise both to unit trace so
    # the quadratic's coefficients cannot overflow on (near) silent input
    tiny = torch.finfo(H.real.dtype).tiny
    H = H / _trace(H).clamp_min(tiny)[..., None, None]
    L = L / _trace(L).clamp_min(tiny)[..., None, None]
    h11, h22, h12 = H[..., 0, 0].real, H[..., 1, 1].real, H[..., 0, 1]
    l11, l22, l12 = L[..., 0, 0].real, L[..., 1, 1].real, L[..., 0, 1]
    a = l11 * l22 - (l12.abs() ** 2)
    b = h11 * l22 + h22 * l11 - 2.0 * (h12 * l12.conj()).real
    c = h11 * h22 - (h12.abs() ** 2)
    scale = b.abs().clamp_min(torch.finfo(b.dtype).tiny)
    disc = (b * b - 4.0 * a * c).clamp_min(0.0)
    root = (disc + (eps * scale) ** 2).sqrt()
    a_safe = a.clamp_min(torch.finfo(a.dtype).tiny)
    mu_max = (b + root) / (2.0 * a_safe)
    c_max = _null_vector_2x2(H, L, mu_max)
    # the other eigenvector is L-orthogonal to c_max: c_min ⟂ L c_max. Taking it this way keeps
    # the two rows independent even at repeated eigenvalues (e.g. silent input).
    u = (L @ c_max[..., None])[..., 0]
    c_min = torch.stack([u[..., 1].conj(), -u[..., 0].conj()], dim=-1)
    return c_max, c_min


def _trace(A: torch.Tensor) -> torch.Tensor:
    return A.diagonal(dim1=-2, dim2=-1).real.sum(-1)


def _null_vector_2x2(H: torch.Tensor, L: torch.Tensor, mu: torch.Tensor) -> torch.Tensor:
    """A null vector of ``H - mu L`` (2x2), taking the better conditioned of its two rows."""
    B = H - mu[..., None, None].to(H.dtype) * L
    v1 = torch.stack([-B[..., 0, 1], B[..., 0, 0]], dim=-1)  # orthogonal to row 0
    v2 = torch.stack([B[..., 1, 1], -B[..., 1, 0]], dim=-1)  # orthogonal to row 1
    n1 = (v1.abs() ** 2).sum(-1, keepdim=True)
    n2 = (v2.abs() ** 2).sum(-1, keepdim=True)
    v = torch.where(n1 >= n2, v1, v2)
    # degenerate pencil (B == 0, e.g. silent bin): fall back to e1 so nothing is 0/0
    tiny = torch.finfo(n1.dtype).tiny
    e1 = torch.zeros_like(v)
    e1[..., 0] = 1.0
    return torch.where(torch.maximum(n1, n2) > tiny, v, e1)


def iss_update(
    Y: torch.Tensor,
    W: torch.Tensor,
    weights: torch.Tensor,
    source: int,
    frame_mask: torch.Tensor | None = None,
    eps: float = 1e-12,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Iterative source steering (ISS) rank-1 update for one source (Scheibler & Ono 2020).

    ``Y <- Y - v y_k`` and ``W <- W - v w_k^H`` with
    ``v_s = sum_t phi_s y_s y_k^* / sum_t phi_s |y_k|^2`` for ``s != k`` and
    ``v_k = 1 - (1/T sum_t phi_k |y_k|^2)^{-1/2}``.

    Args:
        Y: ``(..., sources, freq, frames)`` current estimates (``sources == W rows``).
        W: ``(..., freq, sources, mics)`` demixing matrices kept in sync with ``Y``.
        weights: ``(..., sources, freq, frames)`` auxiliary weights ``phi``.
        source: the source ``k`` to steer.
        frame_mask: optional ``(..., frames)`` valid-frame mask.
        eps: floor of the denominators.

    Returns:
        ``(Y, W)`` updated (new tensors).
    """
    if frame_mask is not None:
        weights = weights * frame_mask.to(weights.dtype)[..., None, None, :]
        n_frames = frame_mask.to(weights.dtype).sum(-1).clamp_min(1.0)[..., None]  # (..., 1)
    else:
        n_frames = Y.shape[-1]
    y_k = Y[..., source : source + 1, :, :]  # (..., 1, f, t)
    pow_k = y_k.real**2 + y_k.imag**2
    num = (weights * Y * y_k.conj()).sum(-1)  # (..., s, f)
    den = (weights * pow_k).sum(-1)  # (..., s, f)
    v = num / den.clamp_min(eps)
    # a silent source (zero power) keeps its row instead of being rescaled by eps^{-1/2}
    pow_kk = den[..., source, :] / n_frames
    v_kk = torch.where(pow_kk > eps, 1.0 - pow_kk.clamp_min(eps).rsqrt(), torch.zeros_like(pow_kk))
    onehot = torch.zeros(Y.shape[-3], 1, dtype=torch.bool, device=Y.device)
    onehot[source] = True
    v = torch.where(onehot, v_kk.unsqueeze(-2).to(v.dtype), v)  # (..., s, f)
    Y = Y - v[..., None] * y_k
    w_k = W[..., source : source + 1, :]  # (..., f, 1, m)
    W = W - v.transpose(-1, -2)[..., None] * w_k
    return Y, W


def background_update(
    W: torch.Tensor, C: torch.Tensor, n_src: int, load: float = DEFAULT_LOAD
) -> torch.Tensor:
    """Recompute the background rows of an overdetermined demixing matrix (OverIVA).

    The last ``M - K`` rows are ``[J, -I]`` with ``J`` chosen so that the background is
    uncorrelated with the separated sources: ``W_s C U^H = 0`` gives
    ``J^H = ((W_s C)[:, :K])^{-1} (W_s C)[:, K:]``.

    Args:
        W: ``(..., freq, mics, mics)`` with the source rows first.
        C: ``(..., freq, mics, mics)`` mixture covariance ``1/T sum_t x x^H``.
        n_src: number of sources ``K`` (``K < M``).
        load: relative diagonal loading of the ``K x K`` system (``0`` for exact parity).

    Returns:
        New ``W`` with the background rows replaced.
    """
    M = W.shape[-1]
    if n_src >= M:
        return W
    WsC = W[..., :n_src, :] @ C  # (..., f, K, M)
    Jh = torch.linalg.solve(_loaded(WsC[..., :n_src], load), WsC[..., n_src:])
    J = Jh.conj().transpose(-1, -2)  # (..., f, M-K, K)
    minus_eye = -torch.eye(M - n_src, dtype=W.dtype, device=W.device).expand(
        J.shape[:-2] + (M - n_src, M - n_src)
    )
    U = torch.cat([J, minus_eye], dim=-1)
    return torch.cat([W[..., :n_src, :], U], dim=-2)


def projection_back(
    Y: torch.Tensor,
    X: torch.Tensor,
    ref_mic: int = 0,
    frame_mask: torch.Tensor | None = None,
    eps: float = 1e-12,
) -> torch.Tensor:
    """Fix the scale of each separated source by least squares onto a reference mic.

    ``Y_k <- c_k Y_k`` with ``c_k = sum_t x_ref y_k^* / sum_t |y_k|^2`` per frequency, i.e. the
    image of each source at ``ref_mic`` that best explains the mixture there. Works for any number
    of mics and sources; a silent output keeps ``c = 0`` (finite).

    Args:
        Y: ``(..., sources, freq, frames)`` separated STFT.
        X: ``(..., mics, freq, frames)`` mixture STFT.
        ref_mic: index of the reference microphone.
        frame_mask: optional ``(..., frames)`` valid-frame mask.
        eps: floor of the denominator.

    Returns:
        ``(..., sources, freq, frames)`` rescaled sources.
    """
    x_ref = X[..., ref_mic : ref_mic + 1, :, :]
    prod = x_ref * Y.conj()
    power = Y.real**2 + Y.imag**2
    if frame_mask is not None:
        m = frame_mask.to(power.dtype)[..., None, None, :]
        prod, power = prod * m, power * m
    c = prod.sum(-1) / power.sum(-1).clamp_min(eps)
    return Y * c[..., None]


def minimum_distortion(
    Y: torch.Tensor, W: torch.Tensor, ref_mic: int = 0, load: float = 0.0
) -> torch.Tensor:
    """Minimal distortion principle scaling (Matsuoka 2002): ``Y_k <- (W^{-1})[ref, k] Y_k``.

    Args:
        Y: ``(..., sources, freq, frames)`` with ``Y = W[:, :sources] X``.
        W: ``(..., freq, mics, mics)`` square demixing matrices.
        ref_mic: reference microphone.
        load: optional relative diagonal loading of ``W`` before inversion.

    Returns:
        ``(..., sources, freq, frames)`` rescaled sources.
    """
    M = W.shape[-1]
    e = torch.zeros(M, 1, dtype=W.dtype, device=W.device)
    e[ref_mic, 0] = 1.0
    # row ref of A = W^{-1}: solve W^T a = e  ->  a = (W^{-1})[ref, :]^T
    Wl = W + load * _eye_like(W) if load > 0 else W
    a = torch.linalg.solve(Wl.transpose(-1, -2), e.expand(W.shape[:-2] + (M, 1)))[..., 0]
    n_src = Y.shape[-3]
    scale = a[..., :n_src].transpose(-1, -2)  # (..., sources, freq)
    return Y * scale[..., None]
