"""Frequency-permutation alignment of separated sources (post-processing of batch BSS).

IVA couples the frequency bins of a source through its source model, yet an iteration can
settle with whole bands assigned to the wrong source (a *block permutation*): each band is
separated, but the bands of two sources are crossed, and the SI-SDR of the whole signal
collapses. This module detects and undoes such crossings from the outputs alone.

The method (clustering of power-ratio envelopes, after Sawada, Araki and Makino's permutation
alignment for frequency-domain ICA):

1. the *power ratio* of source ``k`` in bin ``f`` and frame ``t``,
   ``r_kft = |y_kft|^2 / sum_j |y_jft|^2`` in ``[0, 1]``: which source dominates the frame; it is
   scale-free per frame and bin, and bins of one source rise and fall together;
2. each bin's ratio is centred and normalised over the (valid) frames: ``z_kf`` (unit norm);
3. a *centroid* per output slot, ``c_k = sum_f w_f z_{pi_f(k) f}`` (normalised), with bin weights
   ``w_f = log(1 + E_f / median_f E_f)`` (``E_f`` the bin's output energy; the ratio at most the
   dtype's largest value), so that the loud bins that carry the signal decide, not the many
   quiet high bins;
4. every bin takes the permutation ``pi_f`` that maximises ``sum_k <c_k, z_{pi_f(k) f}>``
   (exact; :func:`~torchbss.metrics.solve_permutation`), and 3-4 repeat until no bin changes.

It starts from the separator's own assignment (the identity), so the slots of the bins that were
right keep their order. No gradient flows through the (discrete) choice; the permuted outputs
pass gradients as they are. The bin weights were chosen on the validation rooms of
``bench/validation`` (unweighted centroids swap loud low bins to follow the quiet high ones).

References:
    H. Sawada, S. Araki and S. Makino, "Measuring dependence of bin-wise separated signals for
    permutation alignment in frequency-domain BSS", ISCAS 2007.
"""

from __future__ import annotations

import math

import torch

from torchbss._validation import check_complex, check_positive_int, check_range, check_tensor
from torchbss.metrics.permutation import solve_permutation
from torchbss.source_models.base import power

__all__ = [
    "frequency_permutation",
    "permute_along",
    "permute_demixing",
    "permute_sources",
    "cluster_permutation",
    "power_features",
    "power_permutation",
]


def frequency_permutation(
    Y: torch.Tensor,
    frame_mask: torch.Tensor | None = None,
    max_rounds: int = 10,
    silence: float = 0.0,
) -> torch.Tensor:
    """Per-bin permutation that aligns the sources' power-ratio envelopes.

    Args:
        Y: ``(..., sources, freq, frames)`` complex separated STFT (any scale per source and
            bin; e.g. after projection back).
        frame_mask: optional ``(..., frames)`` {0, 1} mask of valid frames.
        max_rounds: most centroid / assignment rounds (it stops earlier when no bin changes).
        silence: frames quieter than this fraction of the median frame power are left out
            (see :func:`power_permutation`).

    Returns:
        ``perm`` ``(..., freq, sources)`` int64: slot ``k`` of bin ``f`` takes source
        ``perm[..., f, k]`` (see :func:`permute_sources`). The identity for one source, and for
        silent input.
    """
    check_tensor(Y, "Y", min_ndim=3, layout="(..., sources, freq, frames)")
    check_complex(Y, "Y")
    check_positive_int(max_rounds, "max_rounds")
    return power_permutation(power(Y.detach()), frame_mask, max_rounds, silence)


def power_permutation(
    P: torch.Tensor,
    frame_mask: torch.Tensor | None = None,
    max_rounds: int = 10,
    silence: float = 0.0,
    overwrite: bool = False,
) -> torch.Tensor:
    """:func:`frequency_permutation` from the output powers ``|y_kft|^2``.

    Args:
        P: ``(..., sources, freq, frames)`` real, non-negative (detached).
        frame_mask: optional ``(..., frames)`` {0, 1} mask of valid frames.
        max_rounds: most centroid / assignment rounds.
        silence: frames whose output power (all sources and bins) is below ``silence`` times
            the median over the valid frames count for nothing (``0``: every valid frame
            counts). Power ratios of near-silent frames (sensor noise, a stream's start) do not
            say which source is active, yet weigh as much as any frame once normalised.
        overwrite: ``P`` is scratch and may be overwritten (no full-size intermediate when it
            is laid out as :func:`~torchbss.updates.base.demix_power` returns it).

    Returns:
        ``perm`` ``(..., freq, sources)`` int64 (see :func:`frequency_permutation`).
    """
    check_positive_int(max_rounds, "max_rounds")
    z, weight = power_features(P, frame_mask, silence, overwrite)
    return cluster_permutation(z, weight, max_rounds)


def power_features(
    P: torch.Tensor,
    frame_mask: torch.Tensor | None = None,
    silence: float = 0.0,
    overwrite: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Steps 1-2 and the bin weights of the alignment (module docstring), from output powers.

    Args:
        P: ``(..., sources, freq, frames)`` real, non-negative; ``frame_mask``, ``silence``,
            ``overwrite``: as for :func:`power_permutation`.

    Returns:
        ``z`` ``(..., freq, sources, frames)`` contiguous: each bin's power ratios, centred and
        of unit norm over the counted frames (0 on the others), and ``weight`` ``(..., freq)``
        the bin weights ``w_f``.
    """
    if not torch.compiler.is_compiling():  # (traced: the caller checked)
        check_tensor(P, "P", min_ndim=3, layout="(..., sources, freq, frames)")
        if not P.is_floating_point():
            raise TypeError(f"P must be real output powers |y|^2, got dtype {P.dtype}")
        check_range(silence, "silence", 0.0, 1.0)
    n_src, n_freq = P.shape[-3], P.shape[-2]
    real = P.dtype
    tiny = torch.finfo(real).tiny
    # in the (..., F, K, T) layout (z then is the (F K, T) matrix below without a copy), one
    # full-size tensor computed in place (P is detached)
    Pf = P.detach().movedim(-3, -2)  # (..., F, K, T)
    total = Pf.sum(-2, keepdim=True)  # (..., F, 1, T)
    if silence > 0.0:
        frame_mask = _audible_frames(total[..., 0, :].sum(-2), frame_mask, silence)
    mask = None
    if frame_mask is not None:  # padded frames count for nothing below
        mask = frame_mask.to(real)[..., None, None, :]  # (..., 1, 1, T)
    energy = (total if mask is None else total * mask).sum((-2, -1))  # (..., F)
    if overwrite and Pf.is_contiguous():
        z = Pf.div_(total.clamp_min_(tiny))
    else:
        z = torch.div(Pf, total.clamp_min_(tiny)).contiguous()
    if mask is None:
        z.sub_(z.mean(-1, keepdim=True))
    else:  # the mean over the valid frames as one matrix-vector product (no masked copy of z)
        m = mask[..., 0, 0, :, None]  # (..., T, 1)
        zf = z.reshape(*z.shape[:-3], n_freq * n_src, z.shape[-1])
        mean = (zf @ m) / m.sum(-2, keepdim=True).clamp_min(1.0)  # (..., F K, 1)
        z.sub_(mean.reshape(*mean.shape[:-2], n_freq, n_src, 1)).mul_(mask)
    z.div_(torch.linalg.vector_norm(z, dim=-1, keepdim=True).clamp_min_(tiny))
    median = energy.median(-1, keepdim=True).values.clamp_min(tiny)
    # the ratio is clamped at the dtype's largest value: with more than half of the bins silent
    # the median sits at ``tiny``, and any bin above ~4 (float32) would overflow to an inf weight
    # (NaN scores, an arbitrary permutation). Below the largest value the clamp changes nothing
    ratio = (energy / median).clamp_max_(torch.finfo(real).max)
    return z, ratio.log1p_()


def cluster_permutation(z: torch.Tensor, weight: torch.Tensor, max_rounds: int) -> torch.Tensor:
    """Steps 3-4 of the alignment (module docstring): the per-bin permutation from the features
    of :func:`power_features`.

    Args:
        z: ``(..., freq, sources, frames)`` contiguous normalised power ratios.
        weight: ``(..., freq)`` bin weights.
        max_rounds: most centroid / assignment rounds (it stops earlier when no bin changes).

    Returns:
        ``perm`` ``(..., freq, sources)`` int64, from the identity.
    """
    if not torch.compiler.is_compiling():  # (traced: the caller checked)
        check_tensor(z, "z", min_ndim=3, layout="(..., freq, sources, frames)")
        if weight.shape != z.shape[:-2]:
            raise ValueError(
                f"weight must have shape {tuple(z.shape[:-2])} (..., freq) for z of shape "
                f"{tuple(z.shape)}, got {tuple(weight.shape)}"
            )
        check_positive_int(max_rounds, "max_rounds")
    *lead, n_freq, n_src, n_frames = z.shape
    tiny = torch.finfo(z.dtype).tiny
    perm = torch.arange(n_src, device=z.device).expand(*lead, n_freq, n_src).clone()
    if n_src == 1:
        return perm
    # each round: the scores z c^T of every bin's sources against the slots' centroids. The
    # centroids' sums s_k = sum_f w_f z[perm[f, k], f] start as one matrix-vector product over
    # the bins (perm is the identity); then they follow the bins that changed (few, after the
    # first round), else they are summed again from all bins. Under torch.compile every round
    # runs (no data-dependent branch; a round after no change repeats its input's answer)
    compiled = torch.compiler.is_compiling()
    flat = z.reshape(-1, n_freq, n_src, n_frames)  # (B, F, K, T)
    w = weight.reshape(-1, n_freq)  # (B, F)
    sums = (w[:, None, :] @ flat.flatten(-2)).reshape(-1, n_src, n_frames)  # (B, K, T)
    for round_ in range(max_rounds):
        centroid = sums / torch.linalg.vector_norm(sums, dim=-1, keepdim=True).clamp_min(tiny)
        # score[b, f, j, k]: source j of bin f against slot k's centroid; solve_permutation
        # takes it as (..., f, slot k, source j)
        if compiled:  # products summed over frames: one loop over z (a GEMM packs z first)
            score = (flat[..., None, :] * centroid[:, None, None]).sum(-1)
        else:  # (B, F K, T) @ (B, T, K)
            score = flat.flatten(1, 2) @ centroid.transpose(-1, -2)
        new = solve_permutation(
            score.reshape(*lead, n_freq, n_src, n_src).transpose(-1, -2), allow_nan=True
        )
        if compiled:
            perm = new
            if round_ < max_rounds - 1:
                sums = _select_sum(_weighted_one_hot(perm.reshape(-1, n_freq, n_src), w), flat)
            continue
        b, f = (new != perm).any(-1).reshape(-1, n_freq).nonzero(as_tuple=True)
        if b.numel() == 0:
            break
        old, perm = perm, new
        if round_ == max_rounds - 1:
            break
        # D_f = w_f one_hot(perm_f): the sums are s = sum_f D_f z_f
        if b.numel() * 8 > w.numel():  # many changed: all bins
            sums = _select_sum(_weighted_one_hot(perm.reshape(-1, n_freq, n_src), w), flat)
        else:  # the changed bins' D_f(new) - D_f(old) applied to their rows, per bin
            pick = (b, f)
            D = _weighted_one_hot(perm.reshape(-1, n_freq, n_src)[pick], w[pick])
            D -= _weighted_one_hot(old.reshape(-1, n_freq, n_src)[pick], w[pick])  # (n, K, K)
            sums.index_add_(0, b, D @ flat[pick])
    return perm


def _select_sum(D: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """``sum_f D_f z_f`` ``(B, K, T)`` for ``D`` ``(B, F, K, K)`` and ``z`` ``(B, F, K, T)``:
    one GEMM ``(B, K, F K) @ (B, F K, T)``."""
    return D.transpose(1, 2).flatten(2) @ z.flatten(1, 2)


def _weighted_one_hot(perm: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``(..., K slot, K src)``: ``weight`` where slot ``k`` takes source ``perm[..., k]``,
    else 0 (``perm`` ``(..., K)``, ``weight`` ``(...)``)."""
    sources = torch.arange(perm.shape[-1], device=perm.device)
    return (perm[..., None] == sources).to(weight.dtype) * weight[..., None, None]


def _audible_frames(
    frame_power: torch.Tensor, frame_mask: torch.Tensor | None, silence: float
) -> torch.Tensor:
    """``(..., frames)`` {0, 1}: the valid frames with at least ``silence`` times the median
    power of the valid frames."""
    valid = torch.ones_like(frame_power, dtype=torch.bool)
    if frame_mask is not None:
        valid = frame_mask.expand_as(frame_power) > 0
    median = torch.where(valid, frame_power, torch.nan).nanmedian(-1, keepdim=True).values
    return (valid & (frame_power >= silence * median)).to(frame_power.dtype)


def permute_along(
    value: torch.Tensor, perm: torch.Tensor, source_dim: int, freq_dim: int
) -> torch.Tensor:
    """``value`` with the first ``sources`` entries of ``source_dim`` permuted per bin.

    The one gather behind every layout (:func:`permute_sources`, :func:`permute_demixing`, the
    online separators' state): along ``source_dim``, entry ``k`` of bin ``f`` (``freq_dim``)
    takes entry ``perm[..., f, k]``; the entries beyond ``sources`` (e.g. an OverIVA
    background row) are kept; every other dim is carried along.

    Args:
        value: any tensor whose leading dims are those of ``perm`` (``...``), with at least
            ``sources`` entries along ``source_dim`` and ``freq`` along ``freq_dim``.
        perm: ``(..., freq, sources)`` int64 (:func:`frequency_permutation`).
        source_dim, freq_dim: the dims of ``value`` (after the leading ones; negative or not).

    Returns:
        A new tensor shaped and laid out (contiguous) like ``value`` (gradients pass to it).
    """
    n_lead, nd = perm.ndim - 2, value.ndim
    s, f = source_dim % nd, freq_dim % nd
    if min(s, f) < n_lead or s == f:
        raise ValueError(
            f"source_dim={source_dim} and freq_dim={freq_dim} must be two different dims after "
            f"the {n_lead} leading dims of perm, for value of shape {tuple(value.shape)}"
        )
    n_src = perm.shape[-1]
    lead = tuple(perm.shape[:n_lead])
    if (
        tuple(value.shape[:n_lead]) != lead
        or value.shape[f] != perm.shape[-2]
        or value.shape[s] < n_src
        or perm.dtype != torch.int64
    ):
        raise ValueError(
            f"perm must be int64 of shape (..., freq, sources) = {lead + (value.shape[f], n_src)}"
            f" (at most {value.shape[s]} sources) for value of shape {tuple(value.shape)} "
            f"(source_dim={source_dim}, freq_dim={freq_dim}), got {perm.dtype} "
            f"{tuple(perm.shape)}"
        )
    inner = math.prod(value.shape[max(s, f) + 1 :])
    if abs(s - f) == 1 and inner >= 8:
        return _permute_rows(value, perm, s, f)
    index = perm if f < s else perm.transpose(-1, -2)  # the two dims in value's order
    shape = list(perm.shape[:n_lead]) + [1] * (nd - n_lead)
    shape[s], shape[f] = n_src, perm.shape[-2]
    target = list(value.shape)
    target[s] = n_src
    head = value.narrow(s, 0, n_src).gather(s, index.reshape(shape).expand(target))
    if value.shape[s] == n_src:
        return head
    return torch.cat([head, value.narrow(s, n_src, value.shape[s] - n_src)], dim=s)


def _permute_rows(value: torch.Tensor, perm: torch.Tensor, s: int, f: int) -> torch.Tensor:
    """:func:`permute_along` for adjacent source and frequency dims: whole rows of the dims after
    them are copied by one ``index_select`` (an elementwise gather reads an index per element,
    ~15x slower on CPU)."""
    n_lead = perm.ndim - 2
    n_freq, n_src, n_rows = perm.shape[-2], perm.shape[-1], value.shape[s]
    lo = min(s, f)
    lead = math.prod(value.shape[:n_lead])
    outer = math.prod(value.shape[n_lead:lo])  # dims between the leading ones and the pair
    # the row of (freq f, slot k) inside the pair, as (lead, F, rows): slots >= n_src keep theirs
    src = torch.arange(n_rows, device=perm.device).expand(perm.shape[:-1] + (n_rows,))
    src = torch.cat([perm, src[..., n_src:]], -1).reshape(lead, n_freq, n_rows)
    freq = torch.arange(n_freq, device=perm.device)[:, None]
    rows = src * n_freq + freq if s < f else freq * n_rows + src  # value's order of the pair
    if s < f:
        rows = rows.transpose(-1, -2)  # (lead, rows, F)
    pair = n_freq * n_rows
    base = torch.arange(lead * outer, device=perm.device).reshape(lead, outer, 1) * pair
    index = (base + rows.reshape(lead, 1, pair)).reshape(-1)
    flat = value.reshape(lead * outer * pair, -1)
    return flat.index_select(0, index).reshape(value.shape)


def permute_sources(Y: torch.Tensor, perm: torch.Tensor) -> torch.Tensor:
    """``Y`` with bin ``f``'s slot ``k`` taken from source ``perm[..., f, k]``.

    Args:
        Y: ``(..., sources, freq, frames)`` (real or complex).
        perm: ``(..., freq, sources)`` from :func:`frequency_permutation`.

    Returns:
        ``(..., sources, freq, frames)`` permuted (gradients pass to ``Y``).
    """
    return permute_along(Y, perm, -3, -2)


def permute_demixing(W: torch.Tensor, perm: torch.Tensor) -> torch.Tensor:
    """Demixing ``(..., freq, R, R)`` with its first ``sources`` rows permuted as the outputs.

    The rows beyond ``sources`` (an OverIVA background) are kept.
    """
    return permute_along(W, perm, -2, -3)
