"""Permutation solvers: match estimates to references (BSS-Eval, PIT, invariant metrics).

Convention (shared with :func:`torchbss.metrics.bss_eval_sdr` and :func:`torchbss.losses.pit`):
``permutation[..., j]`` is the index of the estimate matched to reference ``j``, so
:func:`apply_permutation` ``(estimate, permutation)`` lines the estimates up with the references.

:func:`solve_permutation` searches all permutations (batched, exact) for few sources and uses a
batched pure-torch Hungarian algorithm (:func:`linear_sum_assignment`) beyond;
:func:`permutation_invariant_score` wraps any pairwise metric.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import lru_cache
from typing import NamedTuple

import torch

from torchbss._validation import check_finite, check_positive_int, check_tensor

__all__ = [
    "linear_sum_assignment",
    "solve_permutation",
    "apply_permutation",
    "pairwise_scores",
    "permutation_invariant_score",
    "PermutationScore",
]

ScoreFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
_MAX_PERMUTATIONS = 40320


@lru_cache(maxsize=32)
def _permutation_table(n_cols: int, n_rows: int) -> tuple[tuple[int, ...], ...]:
    return tuple(_permutations(list(range(n_cols)), n_rows))


def _permutations(items: list[int], k: int) -> list[tuple[int, ...]]:
    """``itertools.permutations(items, k)`` as a list, in the same order; a plain recursion
    that dynamo also traces once the sizes have become dynamic (itertools it cannot)."""
    if k == 0:
        return [()]
    return [
        (x,) + rest
        for i, x in enumerate(items)
        for rest in _permutations(items[:i] + items[i + 1 :], k - 1)
    ]


def _exhaustive_assignment(cost: torch.Tensor) -> torch.Tensor:
    """Minimum-cost assignment of rows to distinct columns by trying every permutation.

    The totals of all candidates are one GEMM of the flattened costs ``(..., rows cols)``
    with the candidates' 0/1 selection matrix ``(rows cols, P)`` (a gather of
    ``(..., P, rows)`` costs several times more on CPU for the many small problems of the
    frequency-permutation alignment).
    """
    n_rows, n_cols = cost.shape[-2:]
    # traced (torch.compile) without the cache, which dynamo would warn of
    table_of = (
        _permutation_table.__wrapped__ if torch.compiler.is_compiling() else _permutation_table
    )
    table = table_of(n_cols, n_rows)
    perms = torch.tensor(table, device=cost.device)  # (P, rows)
    rows = torch.arange(n_rows, device=cost.device)
    select = torch.zeros(n_rows * n_cols, perms.shape[0], dtype=cost.dtype, device=cost.device)
    select[rows * n_cols + perms, torch.arange(perms.shape[0], device=cost.device)[:, None]] = 1
    total = cost.flatten(-2) @ select  # (..., P)
    # min(-1).indices: the same first minimum as argmin(-1), ~3x faster for ~24 candidates on CPU
    return perms[total.min(-1).indices]


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
    score: torch.Tensor, maximize: bool = True, max_exhaustive: int = 4, allow_nan: bool = False
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
        allow_nan: let NaN scores through to the exhaustive search (a problem with a NaN gets
            the first best candidate among the rest; the frequency alignment uses it for
            silent bins). Default: a ``ValueError`` (no assignment is defined).

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
    if not allow_nan and not torch.compiler.is_compiling() and bool(cost.isnan().any()):
        raise ValueError(
            f"score contains {int(cost.isnan().sum())} NaN value(s) (shape "
            f"{tuple(score.shape)}): no assignment is defined (a NaN metric or loss upstream?)"
        )
    # the candidates' count n_est! / (n_est - n_ref)! as a product: math.perm takes no sizes
    # traced with dynamic shapes (torch.compile)
    if (
        n_ref <= max_exhaustive
        and math.prod(range(n_est - n_ref + 1, n_est + 1)) <= _MAX_PERMUTATIONS
    ):
        return _exhaustive_assignment(cost)
    return linear_sum_assignment(cost)


def apply_permutation(estimate: torch.Tensor, permutation: torch.Tensor) -> torch.Tensor:
    """Reorder estimates so that ``result[..., j, ...]`` is the estimate matched to reference j.

    Args:
        estimate: estimates, shape ``(*lead, n_est, *rest)``.
        permutation: estimate index per reference, shape ``(*lead, n_ref)`` (as returned by
            :func:`solve_permutation`, :func:`torchbss.metrics.bss_eval_sdr` or
            :func:`torchbss.losses.pit`).

    Returns:
        Reordered estimates, shape ``(*lead, n_ref, *rest)``; differentiable in ``estimate``.
    """
    check_tensor(permutation, "permutation", min_ndim=1, layout="(*lead, n_ref)")
    dim = permutation.ndim - 1
    check_tensor(estimate, "estimate", min_ndim=dim + 1, layout="(*lead, n_est, *rest)")
    if estimate.shape[:dim] != permutation.shape[:-1]:
        raise ValueError(
            f"permutation {tuple(permutation.shape)} must have the leading dimensions of "
            f"estimate {tuple(estimate.shape)} (everything before the sources dimension)"
        )
    if permutation.dtype not in (torch.int64, torch.int32):
        raise TypeError(f"permutation must be an integer tensor, got {permutation.dtype}")
    rest = estimate.shape[dim + 1 :]
    index = permutation.long().reshape(*permutation.shape, *(1,) * len(rest))
    return estimate.gather(dim, index.expand(*permutation.shape, *rest))


def pairwise_scores(
    score_fn: ScoreFn, reference: torch.Tensor, estimate: torch.Tensor, signal_ndim: int = 1
) -> torch.Tensor:
    """Score of every (reference, estimate) pair in one broadcast call.

    ``score_fn`` receives both inputs expanded (views, no copy) to
    ``(*lead, n_ref, n_est, *signal)`` and must return one value per pair.

    Args:
        score_fn: per-item metric ``score_fn(reference, estimate) -> (...)``, e.g.
            :func:`torchbss.metrics.si_sdr`.
        reference: references, shape ``(*lead, n_ref, *signal)``.
        estimate: estimates, shape ``(*lead, n_est, *signal)``.
        signal_ndim: number of trailing signal dimensions (1 for ``(samples,)``, 2 for
            ``(channels, samples)``).

    Returns:
        ``scores[..., j, k] = score_fn(reference[..., j, :], estimate[..., k, :])``, shape
        ``(*lead, n_ref, n_est)``.
    """
    check_positive_int(signal_ndim, "signal_ndim")
    layout = "(..., sources, " + ", ".join(["signal"] * signal_ndim) + ")"
    check_tensor(reference, "reference", min_ndim=signal_ndim + 1, layout=layout)
    check_tensor(estimate, "estimate", min_ndim=signal_ndim + 1, layout=layout)
    src = -signal_ndim - 1
    if (
        reference.shape[:src] != estimate.shape[:src]
        or reference.shape[src + 1 :] != estimate.shape[src + 1 :]
    ):
        raise ValueError(
            f"reference {tuple(reference.shape)} and estimate {tuple(estimate.shape)} must share "
            f"every dimension but the sources dimension {layout}"
        )
    shape = (*reference.shape[:src], reference.shape[src], estimate.shape[src])
    shape = (*shape, *reference.shape[src + 1 :])
    ref = reference.unsqueeze(src).expand(shape)  # (..., n_ref, n_est, *signal)
    est = estimate.unsqueeze(src - 1).expand(shape)
    scores = score_fn(ref, est)
    if not isinstance(scores, torch.Tensor) or scores.shape != shape[: len(shape) - signal_ndim]:
        got = tuple(scores.shape) if isinstance(scores, torch.Tensor) else type(scores).__name__
        raise ValueError(
            f"score_fn must return one value per pair, shape {shape[: len(shape) - signal_ndim]}, "
            f"got {got}"
        )
    return scores


class PermutationScore(NamedTuple):
    """Output of :func:`permutation_invariant_score`.

    Attributes:
        values: score of each reference with its matched estimate, shape ``(..., n_ref)``.
        permutation: estimate matched to each reference, ``(..., n_ref)`` int64.
    """

    values: torch.Tensor
    permutation: torch.Tensor


def permutation_invariant_score(
    score_fn: ScoreFn,
    reference: torch.Tensor,
    estimate: torch.Tensor,
    maximize: bool = True,
    signal_ndim: int = 1,
    max_exhaustive: int = 4,
) -> PermutationScore:
    """Permutation-invariant form of a metric: score every reference with its best estimate.

    The matching optimises the summed pairwise score (:func:`pairwise_scores`) over all
    one-to-one assignments (:func:`solve_permutation`); no gradient flows through the choice.

    Args:
        score_fn: per-item metric ``score_fn(reference, estimate) -> (...)``.
        reference: references, shape ``(..., n_ref, *signal)``.
        estimate: estimates, shape ``(..., n_est, *signal)`` with ``n_est >= n_ref``.
        maximize: True for a score (higher is better), False for a distance.
        signal_ndim: number of trailing signal dimensions.
        max_exhaustive: largest number of references solved by exhaustive search.

    Returns:
        :class:`PermutationScore` ``(values, permutation)``, each ``(..., n_ref)``.

    Example:
        >>> from torchbss.metrics import si_sdr
        >>> ref = torch.randn(3, 4000, dtype=torch.float64)
        >>> permutation_invariant_score(si_sdr, ref, ref[[2, 0, 1]]).permutation
        tensor([1, 2, 0])
    """
    scores = pairwise_scores(score_fn, reference, estimate, signal_ndim)
    permutation = solve_permutation(scores, maximize=maximize, max_exhaustive=max_exhaustive)
    return PermutationScore(scores.gather(-1, permutation[..., None])[..., 0], permutation)
