"""Energy-ratio separation metrics: SDR, SI-SDR, BSS-Eval SDR/SIR/SAR and framewise SI-SDR.

Every metric takes ``(reference, estimate)`` (the BSS-Eval order), returns decibels, is batched
over leading dimensions, differentiable, and works in float32 and float64 on any device.

Divisions are guarded with ``eps`` (default: ``torch.finfo(dtype).eps``) placed so that every
value is finite: a silent reference gives a very negative finite value, never NaN.

This module also holds the permutation solvers shared by BSS-Eval and permutation invariant
training: :func:`solve_permutation` (exhaustive search for few sources, a batched pure-torch
Hungarian algorithm beyond) and :func:`linear_sum_assignment`.
"""

from __future__ import annotations

import itertools
import math
from functools import lru_cache
from typing import NamedTuple

import torch
from einops import rearrange
from torch import nn

from torchbss._validation import (
    check_choice,
    check_finite,
    check_positive_int,
    check_real_float,
    check_same_shape,
    check_tensor,
)

__all__ = [
    "sdr",
    "si_sdr",
    "bss_eval_sdr",
    "BSSEvalResult",
    "framewise_si_sdr",
    "FramewiseResult",
    "sdr_improvement",
    "si_sdr_improvement",
    "solve_permutation",
    "linear_sum_assignment",
    "SDR",
    "SISDR",
    "BSSEvalSDR",
]

_SIGNAL_LAYOUT = "(..., samples)"
_SOURCES_LAYOUT = "(..., sources, samples)"


# --------------------------------------------------------------------------------------------
# Input handling
# --------------------------------------------------------------------------------------------


def _check_signal(x: object, name: str, layout: str, min_ndim: int = 1) -> torch.Tensor:
    x = check_tensor(x, name, min_ndim=min_ndim, layout=layout, min_last=1)
    check_real_float(x, name)
    check_finite(x, name)
    return x


def _check_pair(
    reference: object, estimate: object, layout: str = _SIGNAL_LAYOUT, min_ndim: int = 1
) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate a (reference, estimate) pair of the same shape; promote to a common dtype."""
    reference = _check_signal(reference, "reference", layout, min_ndim)
    estimate = _check_signal(estimate, "estimate", layout, min_ndim)
    check_same_shape(reference, estimate)
    dtype = torch.promote_types(reference.dtype, estimate.dtype)
    return reference.to(dtype), estimate.to(dtype)


def _check_sample_rate(sample_rate: object) -> float:
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, float)):
        raise TypeError(f"sample_rate must be a positive number in Hz, got {sample_rate!r}")
    if not sample_rate > 0 or not math.isfinite(sample_rate):
        raise ValueError(f"sample_rate must be a positive number in Hz, got {sample_rate}")
    return float(sample_rate)


def _resolve_eps(eps: float | None, dtype: torch.dtype) -> float:
    if eps is None:
        return float(torch.finfo(dtype).eps)
    if not isinstance(eps, (int, float)) or isinstance(eps, bool) or not eps > 0:
        raise ValueError(f"eps must be a positive float (or None for the dtype's eps), got {eps!r}")
    return float(eps)


def _ratio_db(numerator: torch.Tensor, denominator: torch.Tensor, eps: float) -> torch.Tensor:
    """``10 log10((num + eps) / (den + eps))`` with both energies clamped at zero."""
    return 10.0 * torch.log10((numerator.clamp_min(0.0) + eps) / (denominator.clamp_min(0.0) + eps))


# --------------------------------------------------------------------------------------------
# SDR and SI-SDR
# --------------------------------------------------------------------------------------------


def sdr(reference: torch.Tensor, estimate: torch.Tensor, eps: float | None = None) -> torch.Tensor:
    """Signal-to-distortion ratio in its plain SNR form, in dB.

    ``SDR = 10 log10((|s|^2 + eps) / (|s - ŝ|^2 + eps))``. This is not scale invariant (a
    rescaled estimate is penalised); see :func:`si_sdr` and :func:`bss_eval_sdr` for the
    invariant variants.

    Args:
        reference: target signals ``s``, shape ``(..., samples)``.
        estimate: estimated signals ``ŝ``, same shape as ``reference``.
        eps: energy floor added to numerator and denominator (default: the dtype's machine
            epsilon). A silent reference with a non-silent estimate gives about
            ``10 log10(eps / |ŝ|^2)`` (very negative, finite); two silent signals give 0 dB.

    Returns:
        SDR in dB, shape ``(...)``.

    Example:
        >>> s = torch.randn(2, 16000)
        >>> sdr(s, s + 0.1 * torch.randn_like(s)).shape
        torch.Size([2])
    """
    reference, estimate = _check_pair(reference, estimate)
    eps = _resolve_eps(eps, reference.dtype)
    signal = reference.square().sum(-1)
    noise = (reference - estimate).square().sum(-1)
    return _ratio_db(signal, noise, eps)


def si_sdr(
    reference: torch.Tensor,
    estimate: torch.Tensor,
    zero_mean: bool = False,
    eps: float | None = None,
) -> torch.Tensor:
    """Scale-invariant signal-to-distortion ratio (SI-SDR), in dB.

    Le Roux, Wisdom, Erdogan, Hershey, "SDR - half-baked or well done?", ICASSP 2019: the
    reference is rescaled by ``alpha = <ŝ, s> / |s|^2`` and
    ``SI-SDR = 10 log10(|alpha s|^2 / |alpha s - ŝ|^2)``.

    With ``eps`` the guarded form is ``alpha = (<ŝ, s> + eps) / (|s|^2 + eps)`` and
    ``10 log10((|alpha s|^2 + eps) / (|alpha s - ŝ|^2 + eps))`` (the same placement as
    torchmetrics, so results agree with it to rounding). Consequences: a silent (all-zero)
    reference gives ``10 log10(eps / (|ŝ|^2 + eps))``, e.g. about -156.5 dB for a unit-energy
    float64 estimate and -69.2 dB in float32: finite and very negative, never NaN; a silent
    reference *and* a silent estimate give 0 dB.

    Args:
        reference: target signals ``s``, shape ``(..., samples)``.
        estimate: estimated signals ``ŝ``, same shape as ``reference``.
        zero_mean: subtract the mean of each signal first.
        eps: guard of the divisions (default: the dtype's machine epsilon).

    Returns:
        SI-SDR in dB, shape ``(...)``.

    Example:
        >>> s = torch.randn(3, 8000, dtype=torch.float64)
        >>> si_sdr(s, 0.5 * s).min() > 100  # scale invariant
        tensor(True)
    """
    reference, estimate = _check_pair(reference, estimate)
    eps = _resolve_eps(eps, reference.dtype)
    if zero_mean:
        reference = reference - reference.mean(-1, keepdim=True)
        estimate = estimate - estimate.mean(-1, keepdim=True)
    alpha = ((estimate * reference).sum(-1, keepdim=True) + eps) / (
        reference.square().sum(-1, keepdim=True) + eps
    )
    target = alpha * reference
    return _ratio_db(target.square().sum(-1), (target - estimate).square().sum(-1), eps)


# --------------------------------------------------------------------------------------------
# Permutation solvers (shared with torchbss.losses.pit)
# --------------------------------------------------------------------------------------------


_MAX_PERMUTATIONS = 40320


@lru_cache(maxsize=32)
def _permutation_table(n_cols: int, n_rows: int) -> tuple[tuple[int, ...], ...]:
    return tuple(itertools.permutations(range(n_cols), n_rows))


def _exhaustive_assignment(cost: torch.Tensor) -> torch.Tensor:
    """Minimum-cost assignment of rows to distinct columns by trying every permutation."""
    n_rows, n_cols = cost.shape[-2:]
    perms = torch.tensor(_permutation_table(n_cols, n_rows), device=cost.device)  # (P, rows)
    rows = torch.arange(n_rows, device=cost.device)
    total = cost[..., rows, perms].sum(-1)  # (..., P)
    return perms[total.argmin(-1)]


def linear_sum_assignment(cost: torch.Tensor) -> torch.Tensor:
    """Batched minimum-cost assignment (Hungarian algorithm), pure torch, no gradient.

    Kuhn, "The Hungarian method for the assignment problem", 1955, in the shortest augmenting
    path form with row/column potentials (O(n^2 m) per problem). The batch is processed in
    lock-step: the Python loops run over rows and augmenting steps only, each step a few
    tensor operations over the whole batch, so it runs on any device.

    Args:
        cost: cost matrices, shape ``(..., rows, cols)`` with ``rows <= cols``; must be finite.

    Returns:
        Column assigned to each row (all distinct), shape ``(..., rows)``, dtype int64.
    """
    check_tensor(cost, "cost", min_ndim=2, layout="(..., rows, cols)")
    n_rows, n_cols = cost.shape[-2:]
    if n_rows > n_cols:
        raise ValueError(
            f"cost must have rows <= cols (each row gets a distinct column), got shape "
            f"{tuple(cost.shape)}"
        )
    lead = cost.shape[:-2]
    work = cost.detach().to(torch.float64).reshape(-1, n_rows, n_cols)
    check_finite(work, "cost")
    batch, device = work.shape[0], work.device
    if batch == 0 or n_rows == 0:
        return torch.zeros(*lead, n_rows, dtype=torch.int64, device=device)
    # 1-based indexing: row 0 / column 0 are the virtual start of every augmenting path.
    a = torch.zeros(batch, n_rows + 1, n_cols + 1, dtype=torch.float64, device=device)
    a[:, 1:, 1:] = work
    u = torch.zeros(batch, n_rows + 1, dtype=torch.float64, device=device)
    v = torch.zeros(batch, n_cols + 1, dtype=torch.float64, device=device)
    owner = torch.zeros(batch, n_cols + 1, dtype=torch.int64, device=device)  # row of column
    way = torch.zeros(batch, n_cols + 1, dtype=torch.int64, device=device)
    inf = torch.tensor(math.inf, dtype=torch.float64, device=device)
    zero = torch.zeros((), dtype=torch.float64, device=device)
    for row in range(1, n_rows + 1):
        owner[:, 0] = row
        j0 = torch.zeros(batch, 1, dtype=torch.int64, device=device)
        minv = torch.full((batch, n_cols + 1), math.inf, dtype=torch.float64, device=device)
        used = torch.zeros(batch, n_cols + 1, dtype=torch.bool, device=device)
        active = torch.ones(batch, 1, dtype=torch.bool, device=device)
        for _ in range(n_cols + 1):  # Dijkstra-like search for a free column
            used = used | (torch.zeros_like(used).scatter_(1, j0, True) & active)
            i0 = owner.gather(1, j0)  # (batch, 1)
            cur = a.gather(1, i0[..., None].expand(-1, 1, n_cols + 1))[:, 0]
            cur = cur - u.gather(1, i0) - v
            free = ~used
            better = free & (cur < minv) & active
            minv = torch.where(better, cur, minv)
            way = torch.where(better, j0, way)
            delta, j1 = torch.where(free, minv, inf).min(1, keepdim=True)
            delta = torch.where(active, delta, zero)
            u = u.scatter_add(1, owner, torch.where(used, delta, zero))
            v = v - torch.where(used, delta, zero)
            minv = torch.where(free, minv - delta, minv)
            j0 = torch.where(active, j1, j0)
            active = active & (owner.gather(1, j0) != 0)
            if not bool(active.any()):
                break
        going = torch.ones(batch, 1, dtype=torch.bool, device=device)
        for _ in range(n_cols + 1):  # augment along the alternating path
            j1 = way.gather(1, j0)
            new_owner = torch.where(going, owner.gather(1, j1), owner.gather(1, j0))
            owner = owner.scatter(1, j0, new_owner)
            j0 = torch.where(going, j1, j0)
            going = going & (j0 != 0)
            if not bool(going.any()):
                break
    # invert the column -> row map into row -> column
    assignment = torch.zeros(batch, n_rows + 1, dtype=torch.int64, device=device)
    cols = torch.arange(n_cols + 1, device=device).expand(batch, -1)
    assignment = assignment.scatter(1, owner, cols)  # owner 0 (unassigned) lands in slot 0
    return (assignment[:, 1:] - 1).reshape(*lead, n_rows)


def solve_permutation(
    score: torch.Tensor, maximize: bool = True, max_exhaustive: int = 4
) -> torch.Tensor:
    """Best one-to-one matching of references (rows) to estimates (columns).

    Exhaustive search over all permutations (batched, exact) when there are at most
    ``max_exhaustive`` references (and at most 40320 candidate assignments), otherwise
    :func:`linear_sum_assignment` (also exact).
    No gradient flows through the assignment.

    Args:
        score: pairwise scores, shape ``(..., n_ref, n_est)`` with ``n_ref <= n_est``;
            ``score[..., j, k]`` rates estimate ``k`` against reference ``j``.
        maximize: maximise the summed score (metrics) or minimise it (losses).
        max_exhaustive: largest number of references solved by exhaustive search.

    Returns:
        ``permutation`` of shape ``(..., n_ref)``: ``permutation[..., j]`` is the estimate
        matched to reference ``j``, so ``estimate[..., permutation, :]`` is aligned with the
        references (see :func:`torchbss.losses.apply_permutation`).
    """
    check_tensor(score, "score", min_ndim=2, layout="(..., n_ref, n_est)")
    cost = -score.detach() if maximize else score.detach()
    n_ref, n_est = cost.shape[-2:]
    if n_ref > n_est:
        raise ValueError(f"score must have n_ref <= n_est, got shape {tuple(score.shape)}")
    if n_ref <= max_exhaustive and math.perm(n_est, n_ref) <= _MAX_PERMUTATIONS:
        return _exhaustive_assignment(cost)
    return linear_sum_assignment(cost)


# --------------------------------------------------------------------------------------------
# BSS-Eval
# --------------------------------------------------------------------------------------------


class BSSEvalResult(NamedTuple):
    """Output of :func:`bss_eval_sdr`; metrics are ordered by reference.

    Attributes:
        sdr: signal-to-distortion ratio in dB, shape ``(..., n_ref)``.
        sir: signal-to-interference ratio in dB, ``(..., n_ref)`` (None if not computed).
        sar: signal-to-artifacts ratio in dB, ``(..., n_ref)`` (None if not computed).
        permutation: estimate matched to each reference, ``(..., n_ref)`` int64 (None when
            the estimates were evaluated in the given order).
    """

    sdr: torch.Tensor
    sir: torch.Tensor | None
    sar: torch.Tensor | None
    permutation: torch.Tensor | None


def _next_fast_len(n: int) -> int:
    """Smallest 5-smooth integer ``>= n`` (fast FFT size)."""
    best = 1 << max(0, (n - 1).bit_length())
    p5 = 1
    while p5 < best:
        p35 = p5
        while p35 < best:
            m = p35
            while m < n:
                m *= 2
            best = min(best, m)
            p35 *= 3
        p5 *= 5
    return best


def _unit_norm(x: torch.Tensor) -> torch.Tensor:
    norm = torch.linalg.vector_norm(x, dim=-1, keepdim=True)
    return x / norm.clamp_min(torch.finfo(x.dtype).tiny ** 0.5)


def _spd_solve(matrix: torch.Tensor, rhs: torch.Tensor, fallback_load: float) -> torch.Tensor:
    """Solve symmetric positive (semi-)definite systems by Cholesky.

    Matrices whose factorisation fails (singular: silent or linearly dependent references)
    get ``fallback_load`` added to their diagonal, so the result is always finite.
    """
    factor, info = torch.linalg.cholesky_ex(matrix)
    failed = info != 0
    if bool(failed.any()):
        eye = torch.eye(matrix.shape[-1], dtype=matrix.dtype, device=matrix.device)
        load = torch.where(failed, fallback_load, 0.0).to(matrix.dtype)[..., None, None]
        factor, _ = torch.linalg.cholesky_ex(matrix + load * eye)
    return torch.cholesky_solve(rhs, factor)


@lru_cache(maxsize=16)
def _gram_index_cache(
    n_ref: int, taps: int, all_references: bool
) -> tuple[torch.Tensor, torch.Tensor | None]:
    k = torch.arange(taps)
    lag = (k[:, None] - k[None, :]) + taps - 1  # position of lag k - l in the lag window
    width = 2 * taps - 1
    refs = torch.arange(n_ref)
    if not all_references:  # correlations stored as (j, 1, lags)
        return refs[:, None, None] * width + lag, None
    pair = refs[:, None] * n_ref + refs[None, :]  # (i, j) -> flat pair index
    toeplitz = (refs * (n_ref + 1))[:, None, None] * width + lag
    gram = pair[:, None, :, None] * width + lag[None, :, None, :]  # (i, k, j, l)
    return toeplitz, gram.reshape(n_ref * taps, n_ref * taps)


def _gram_indices(
    n_ref: int, taps: int, all_references: bool, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Flat indices into the lag window that build the Toeplitz and block-Toeplitz matrices."""
    toeplitz, gram = _gram_index_cache(n_ref, taps, all_references)
    return toeplitz.to(device), None if gram is None else gram.to(device)


def _bss_eval_square_cosines(
    reference: torch.Tensor,
    estimate: torch.Tensor,
    filter_length: int,
    load_diag: float | None,
    all_references: bool,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Squared cosines between each estimate and the filtered-reference subspaces.

    Returns ``coh_target (..., n_ref, n_est)``: energy fraction of unit-norm estimate ``k``
    explained by ``filter_length``-tap filtering of reference ``j``, and (if
    ``all_references``) ``coh_all (..., n_est)``: the fraction explained by filtering all
    references jointly.
    """
    n_samples = reference.shape[-1]
    n_ref = reference.shape[-2]
    taps = filter_length
    reference = _unit_norm(reference)
    estimate = _unit_norm(estimate)
    n_fft = _next_fast_len(n_samples + taps - 1)
    ref_f = torch.fft.rfft(reference, n=n_fft)
    est_f = torch.fft.rfft(estimate, n=n_fft)
    # cross[..., j, k, m] = sum_t s_j(t) ŝ_k(t + m): correlation of the delayed references with
    # the estimates, lags m = 0 .. taps-1 (the right-hand sides of the normal equations).
    cross = torch.fft.irfft(ref_f.conj()[..., :, None, :] * est_f[..., None, :, :], n=n_fft)
    cross = cross[..., :taps]
    # Gram matrix of the delayed references: G[(i,k),(j,l)] = r_ij(k - l) with
    # r_ij(m) = sum_t s_i(t) s_j(t + m) (exact for |m| < taps thanks to zero padding). Both G
    # and its diagonal blocks (the per-reference Toeplitz matrices) are gathered in one
    # indexing operation from the lags -(taps-1) .. taps-1 of the correlations.
    loading = 0.0 if load_diag is None else float(load_diag)
    fallback = max(loading, 1e3 * float(torch.finfo(reference.dtype).eps))
    if all_references:
        auto = torch.fft.irfft(ref_f.conj()[..., :, None, :] * ref_f[..., None, :, :], n=n_fft)
    else:
        auto = torch.fft.irfft(ref_f.abs().square(), n=n_fft)[..., None, :]  # (..., j, 1, n_fft)
    lags = torch.cat([auto[..., n_fft - taps + 1 :], auto[..., :taps]], dim=-1)
    lags = lags.flatten(-3)  # (..., pairs * (2 taps - 1))
    toeplitz_index, gram_index = _gram_indices(n_ref, taps, all_references, reference.device)
    toeplitz = lags[..., toeplitz_index]  # (..., j, k, l)
    if loading:
        toeplitz = toeplitz + loading * torch.eye(taps, dtype=lags.dtype, device=lags.device)
    if all_references:
        gram = lags[..., gram_index]  # (..., (i k), (j l))
        if loading:
            gram = gram + loading * torch.eye(n_ref * taps, dtype=gram.dtype, device=gram.device)
    # per-reference projections: coh_target[j, k] = b_jk^T T_j^{-1} b_jk
    rhs = rearrange(cross, "... j k m -> ... j m k")
    filters = _spd_solve(toeplitz, rhs, fallback)
    coh_target = (rhs * filters).sum(-2)  # (..., j, k)
    if not all_references:
        return coh_target, None
    rhs_all = rearrange(cross, "... j k m -> ... (j m) k")
    filters_all = _spd_solve(gram, rhs_all, fallback)
    coh_all = (rhs_all * filters_all).sum(-2)  # (..., k)
    return coh_target, coh_all


def bss_eval_sdr(
    reference: torch.Tensor,
    estimate: torch.Tensor,
    filter_length: int = 512,
    return_permutation: bool = True,
    compute_sir_sar: bool = True,
    zero_mean: bool = False,
    clamp_db: float | None = None,
    load_diag: float | None = None,
    max_exhaustive: int = 4,
    eps: float | None = None,
) -> BSSEvalResult:
    """BSS-Eval SDR, SIR and SAR with time-invariant distortion filters (BSS-Eval v4).

    Vincent, Gribonval, Févotte, "Performance measurement in blind audio source separation",
    IEEE TASLP 2006, with the fast formulation of Scheibler, "SDR - Medium rare with fast
    computations", ICASSP 2022 (the ``fast_bss_eval`` package). Each estimate ``ŝ`` is
    decomposed as ``s_target = P_j ŝ`` (projection on the span of ``filter_length`` delayed
    copies of reference ``j``), ``e_interf = P_all ŝ - P_j ŝ`` (on all references) and
    ``e_artif = ŝ - P_all ŝ``. With all signals normalised to unit energy the projections
    reduce to squared cosines ``c_j = b_j^T R_j^{-1} b_j`` and ``c_all = b^T R^{-1} b``, where
    ``R_j``/``R`` are the (block-)Toeplitz auto-correlation matrices of the references and
    ``b`` the cross-correlations with the estimate, all computed with one batched FFT; the
    systems are solved by Cholesky factorisation. Then::

        SDR = 10 log10(c_j / (1 - c_j))
        SIR = 10 log10(c_j / (c_all - c_j))
        SAR = 10 log10(c_all / (1 - c_all))

    The permutation maximises the mean SIR when SIR is computed (as BSS-Eval and
    ``fast_bss_eval.bss_eval_sources`` do), the mean SDR otherwise (as ``fast_bss_eval.sdr``).
    Results match ``fast_bss_eval`` 0.1.4 to about 1e-6 dB in float64; the same argument
    names mean the same things, and the outputs are ordered by reference with
    ``permutation[..., j]`` the estimate matched to reference ``j`` (its ``perm``).

    Differences from ``fast_bss_eval``: every ratio is guarded as
    ``10 log10((num + eps) / (den + eps))`` with ``num``/``den`` clamped at zero, so a perfect
    estimate gives about ``-10 log10(eps)`` (+156 dB in float64) and a silent reference or
    estimate about ``10 log10(eps)`` instead of inf/NaN; a singular system (silent or
    linearly dependent references) is solved with a diagonal loading of
    ``max(load_diag, 1e3 * finfo.eps)`` (relative to unit-energy signals) instead of failing.
    ``use_cg_iter`` (iterative solver) is not provided: the direct solve is exact and faster
    on CPU for the usual ``filter_length``.

    Args:
        reference: reference signals, shape ``(..., n_ref, samples)``.
        estimate: estimated signals, shape ``(..., n_est, samples)`` with the same leading
            dimensions and samples, and ``n_est >= n_ref`` (``n_est == n_ref`` when
            ``return_permutation`` is False).
        filter_length: taps of the allowed distortion filter (512 as in BSS-Eval); must not
            exceed the number of samples.
        return_permutation: search the best matching of estimates to references and return it;
            if False, estimate ``j`` is scored against reference ``j``.
        compute_sir_sar: also compute SIR and SAR (one block system of size
            ``n_ref * filter_length`` per item); False gives a faster SDR-only path.
        zero_mean: subtract the mean of every signal first.
        clamp_db: if given, clamp every metric to ``[-clamp_db, clamp_db]`` dB.
        load_diag: diagonal loading added to the normalised correlation matrices (None: none).
        max_exhaustive: largest number of references solved by exhaustive permutation search;
            more use the Hungarian algorithm (:func:`linear_sum_assignment`).
        eps: guard of the ratios (default: the dtype's machine epsilon).

    Returns:
        :class:`BSSEvalResult` ``(sdr, sir, sar, permutation)``, each ``(..., n_ref)``;
        ``sir``/``sar`` are None when ``compute_sir_sar`` is False and ``permutation`` is None
        when ``return_permutation`` is False.

    Example:
        >>> ref = torch.randn(2, 16000, dtype=torch.float64)
        >>> est = ref.flip(0) + 0.1 * torch.randn_like(ref)
        >>> bss_eval_sdr(ref, est, filter_length=256).permutation
        tensor([1, 0])
    """
    reference = _check_signal(reference, "reference", _SOURCES_LAYOUT, 2)
    estimate = _check_signal(estimate, "estimate", _SOURCES_LAYOUT, 2)
    if reference.shape[:-2] != estimate.shape[:-2] or reference.shape[-1] != estimate.shape[-1]:
        raise ValueError(
            "reference (..., n_ref, samples) and estimate (..., n_est, samples) must share their "
            f"leading dimensions and samples, got {tuple(reference.shape)} and "
            f"{tuple(estimate.shape)}"
        )
    n_ref, n_est, n_samples = reference.shape[-2], estimate.shape[-2], reference.shape[-1]
    if return_permutation and n_est < n_ref:
        raise ValueError(
            f"need at least as many estimates as references, got n_ref={n_ref} and n_est={n_est}"
        )
    if not return_permutation and n_est != n_ref:
        raise ValueError(
            "without permutation search estimate j is scored against reference j, so n_est "
            f"must equal n_ref, got n_ref={n_ref} and n_est={n_est}"
        )
    check_positive_int(filter_length, "filter_length")
    if filter_length > n_samples:
        raise ValueError(
            f"filter_length must not exceed the number of samples ({n_samples}), got "
            f"{filter_length}"
        )
    if clamp_db is not None and not clamp_db > 0:
        raise ValueError(f"clamp_db must be positive or None, got {clamp_db!r}")
    if load_diag is not None and not load_diag >= 0:
        raise ValueError(f"load_diag must be non-negative or None, got {load_diag!r}")
    dtype = torch.promote_types(reference.dtype, estimate.dtype)
    reference, estimate = reference.to(dtype), estimate.to(dtype)
    eps = _resolve_eps(eps, dtype)
    if zero_mean:
        reference = reference - reference.mean(-1, keepdim=True)
        estimate = estimate - estimate.mean(-1, keepdim=True)

    coh, coh_all = _bss_eval_square_cosines(
        reference, estimate, filter_length, load_diag, compute_sir_sar
    )
    sdr_pairs = _ratio_db(coh, 1.0 - coh, eps)  # (..., n_ref, n_est)
    sir_pairs = sar = None
    if coh_all is not None:
        sir_pairs = _ratio_db(coh, coh_all[..., None, :] - coh, eps)
        sar = _ratio_db(coh_all, 1.0 - coh_all, eps)  # (..., n_est)

    permutation = None
    if return_permutation:
        criterion = sir_pairs if sir_pairs is not None else sdr_pairs
        permutation = solve_permutation(criterion, maximize=True, max_exhaustive=max_exhaustive)
        index = permutation[..., :, None]
        sdr_out = sdr_pairs.gather(-1, index)[..., 0]
        sir_out = None if sir_pairs is None else sir_pairs.gather(-1, index)[..., 0]
        sar_out = None if sar is None else sar.gather(-1, permutation)
    else:
        sdr_out = torch.diagonal(sdr_pairs, dim1=-2, dim2=-1)
        sir_out = None if sir_pairs is None else torch.diagonal(sir_pairs, dim1=-2, dim2=-1)
        sar_out = sar
    if clamp_db is not None:
        sdr_out = sdr_out.clamp(-clamp_db, clamp_db)
        sir_out = None if sir_out is None else sir_out.clamp(-clamp_db, clamp_db)
        sar_out = None if sar_out is None else sar_out.clamp(-clamp_db, clamp_db)
    return BSSEvalResult(sdr_out, sir_out, sar_out, permutation)


# --------------------------------------------------------------------------------------------
# Framewise SI-SDR and improvements
# --------------------------------------------------------------------------------------------


class FramewiseResult(NamedTuple):
    """Output of :func:`framewise_si_sdr`.

    Attributes:
        values: SI-SDR per frame in dB, shape ``(..., frames)``; ``fill_value`` where the
            reference frame is silent.
        valid: True where the reference frame is not silent, shape ``(..., frames)``.
    """

    values: torch.Tensor
    valid: torch.Tensor


def framewise_si_sdr(
    reference: torch.Tensor,
    estimate: torch.Tensor,
    sample_rate: float,
    window_s: float = 1.0,
    hop_s: float = 1.0,
    zero_mean: bool = False,
    silence_threshold: float = 1e-10,
    fill_value: float = 0.0,
    eps: float | None = None,
) -> FramewiseResult:
    """SI-SDR over successive frames (as BSS-Eval v4 / museval report 1 s windows).

    Frames of ``round(window_s * sample_rate)`` samples start every ``round(hop_s *
    sample_rate)`` samples; trailing samples that do not fill a whole frame are ignored (as in
    museval), and a signal shorter than one window gives a single frame over all of it.
    A frame whose reference mean square is ``<= silence_threshold`` is *silent*: SI-SDR is
    undefined there (museval reports NaN), so its value is replaced by ``fill_value`` and it is
    marked invalid. Aggregate with e.g. ``values[valid].median()``.

    Args:
        reference: reference signals, shape ``(..., samples)``.
        estimate: estimated signals, same shape.
        sample_rate: sampling rate in Hz (> 0).
        window_s: frame length in seconds (> 0).
        hop_s: frame hop in seconds (> 0).
        zero_mean: subtract each frame's mean first.
        silence_threshold: mean-square level at or below which a reference frame is silent.
        fill_value: value reported for silent frames.
        eps: guard of :func:`si_sdr`.

    Returns:
        :class:`FramewiseResult` ``(values, valid)``, each of shape ``(..., frames)``.
    """
    reference, estimate = _check_pair(reference, estimate)
    sample_rate = _check_sample_rate(sample_rate)
    for value, name in ((window_s, "window_s"), (hop_s, "hop_s")):
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not value > 0:
            raise ValueError(f"{name} must be a positive number of seconds, got {value!r}")
    n_samples = reference.shape[-1]
    window = max(1, round(window_s * sample_rate))
    hop = max(1, round(hop_s * sample_rate))
    window = min(window, n_samples)
    ref_frames = reference.unfold(-1, window, hop)  # (..., frames, window)
    est_frames = estimate.unfold(-1, window, hop)
    values = si_sdr(ref_frames, est_frames, zero_mean=zero_mean, eps=eps)
    valid = ref_frames.square().mean(-1) > silence_threshold
    values = torch.where(valid, values, torch.full_like(values, fill_value))
    return FramewiseResult(values, valid)


_IMPROVEMENT_METRICS = ("sdr", "si_sdr", "bss_eval_sdr")


def sdr_improvement(
    reference: torch.Tensor,
    estimate: torch.Tensor,
    mixture: torch.Tensor,
    ref_mic: int = 0,
    metric: str = "sdr",
    **metric_kwargs: object,
) -> torch.Tensor:
    """Improvement of a metric over the unprocessed mixture at the reference microphone.

    ``metric(reference, estimate) - metric(reference, mixture[..., ref_mic, :])`` for every
    source. The estimates must already be aligned with the references (e.g. with the
    permutation of :func:`bss_eval_sdr` or :func:`torchbss.losses.pit`); no permutation is
    searched here.

    Args:
        reference: reference source images at the reference mic, ``(..., sources, samples)``.
        estimate: aligned estimates, same shape.
        mixture: the mixture, ``(..., mics, samples)`` with the same leading dimensions.
        ref_mic: index of the reference microphone in ``mixture``.
        metric: ``"sdr"``, ``"si_sdr"`` or ``"bss_eval_sdr"`` (BSS-Eval SDR without
            permutation search).
        **metric_kwargs: passed to the metric (e.g. ``filter_length``, ``zero_mean``).

    Returns:
        Improvement in dB, shape ``(..., sources)``.
    """
    check_choice(metric, "metric", _IMPROVEMENT_METRICS)
    reference, estimate = _check_pair(reference, estimate, _SOURCES_LAYOUT, 2)
    mixture = _check_signal(mixture, "mixture", "(..., mics, samples)", 2)
    if mixture.shape[:-2] != reference.shape[:-2] or mixture.shape[-1] != reference.shape[-1]:
        raise ValueError(
            "mixture (..., mics, samples) must share the leading dimensions and samples of "
            f"reference {tuple(reference.shape)}, got {tuple(mixture.shape)}"
        )
    n_mics = mixture.shape[-2]
    if isinstance(ref_mic, bool) or not isinstance(ref_mic, int) or not 0 <= ref_mic < n_mics:
        raise ValueError(f"ref_mic must be an integer in [0, {n_mics}), got {ref_mic!r}")
    baseline = mixture.select(-2, ref_mic).unsqueeze(-2).expand_as(reference).to(reference.dtype)
    if metric == "bss_eval_sdr":

        def fn(ref: torch.Tensor, est: torch.Tensor) -> torch.Tensor:
            return bss_eval_sdr(
                ref, est, return_permutation=False, compute_sir_sar=False, **metric_kwargs
            ).sdr

    else:
        base_fn = sdr if metric == "sdr" else si_sdr

        def fn(ref: torch.Tensor, est: torch.Tensor) -> torch.Tensor:
            return base_fn(ref, est, **metric_kwargs)

    return fn(reference, estimate) - fn(reference, baseline)


def si_sdr_improvement(
    reference: torch.Tensor,
    estimate: torch.Tensor,
    mixture: torch.Tensor,
    ref_mic: int = 0,
    **metric_kwargs: object,
) -> torch.Tensor:
    """SI-SDR improvement over the mixture at ``ref_mic``: :func:`sdr_improvement` with SI-SDR.

    Args:
        reference: reference source images, ``(..., sources, samples)``.
        estimate: aligned estimates, same shape.
        mixture: the mixture, ``(..., mics, samples)``.
        ref_mic: index of the reference microphone.
        **metric_kwargs: passed to :func:`si_sdr` (``zero_mean``, ``eps``).

    Returns:
        SI-SDR improvement in dB, shape ``(..., sources)``.
    """
    return sdr_improvement(reference, estimate, mixture, ref_mic, "si_sdr", **metric_kwargs)


# --------------------------------------------------------------------------------------------
# Modules
# --------------------------------------------------------------------------------------------


class SDR(nn.Module):
    """Module form of :func:`sdr`: ``SDR()(reference, estimate) -> (...)`` in dB."""

    def __init__(self, eps: float | None = None) -> None:
        super().__init__()
        self.eps = eps

    def forward(self, reference: torch.Tensor, estimate: torch.Tensor) -> torch.Tensor:
        return sdr(reference, estimate, eps=self.eps)


class SISDR(nn.Module):
    """Module form of :func:`si_sdr`: ``SISDR()(reference, estimate) -> (...)`` in dB."""

    def __init__(self, zero_mean: bool = False, eps: float | None = None) -> None:
        super().__init__()
        self.zero_mean = zero_mean
        self.eps = eps

    def forward(self, reference: torch.Tensor, estimate: torch.Tensor) -> torch.Tensor:
        return si_sdr(reference, estimate, zero_mean=self.zero_mean, eps=self.eps)


class BSSEvalSDR(nn.Module):
    """Module form of :func:`bss_eval_sdr`; keyword arguments are stored and forwarded."""

    def __init__(self, filter_length: int = 512, **kwargs: object) -> None:
        super().__init__()
        self.filter_length = filter_length
        self.kwargs = dict(kwargs)

    def forward(self, reference: torch.Tensor, estimate: torch.Tensor) -> BSSEvalResult:
        return bss_eval_sdr(reference, estimate, filter_length=self.filter_length, **self.kwargs)
