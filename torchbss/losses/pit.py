"""Permutation invariant training (PIT) around any pairwise loss.

Yu, Kolbæk, Tan, Jensen, "Permutation invariant training of deep models for speaker-independent
multi-talker speech separation", ICASSP 2017. The loss of every (estimate, reference) pair is
computed in one broadcast call, the assignment minimising the summed loss is found without
gradient (exhaustive search up to ``max_exhaustive`` sources, the Hungarian algorithm beyond),
and the loss of the matched pairs is back-propagated.

Permutation convention (shared with :func:`torchbss.metrics.bss_eval_sdr`):
``permutation[b, j]`` is the index of the estimate matched to reference ``j``, so
``apply_permutation(estimate, permutation)`` reorders the estimates to line up with the
references.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import nn

from torchbss._validation import check_choice, check_positive_int, check_tensor
from torchbss.losses.sdr import REDUCTIONS, negative_si_sdr, reduce_loss
from torchbss.metrics.permutation import apply_permutation, solve_permutation

__all__ = ["pit", "PITLoss", "PITResult", "pairwise_loss_matrix", "apply_permutation"]

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
_LAYOUT = "(batch, sources, ...)"


class PITResult(NamedTuple):
    """Output of :func:`pit`.

    Attributes:
        loss: loss of the best assignment: scalar, or ``(batch,)`` for ``reduction="none"``
            (the mean over references of the matched pair losses).
        permutation: estimate matched to each reference, ``(batch, n_ref)`` int64.
    """

    loss: torch.Tensor
    permutation: torch.Tensor


def _default_loss() -> LossFn:
    return functools.partial(negative_si_sdr, reduction="none")


def pairwise_loss_matrix(
    loss_fn: LossFn, estimate: torch.Tensor, reference: torch.Tensor
) -> torch.Tensor:
    """Loss of every (estimate, reference) pair, computed in a single broadcast call.

    ``loss_fn`` receives ``estimate`` and ``reference`` expanded (as views, without copying)
    to ``(batch, n_est, n_ref, *signal)`` and must return one loss per pair, shape
    ``(batch, n_est, n_ref)``; trailing extra dimensions (e.g. channels) are averaged.

    Args:
        loss_fn: per-item loss ``loss_fn(estimate, reference) -> (...)``, e.g.
            ``functools.partial(negative_si_sdr, reduction="none")``.
        estimate: estimates, shape ``(batch, n_est, *signal)``.
        reference: references, shape ``(batch, n_ref, *signal)``.

    Returns:
        Pairwise losses ``L[b, k, j] = loss(estimate[b, k], reference[b, j])``, shape
        ``(batch, n_est, n_ref)``.
    """
    check_tensor(estimate, "estimate", min_ndim=3, layout="(batch, n_est, *signal)")
    check_tensor(reference, "reference", min_ndim=3, layout="(batch, n_ref, *signal)")
    if estimate.shape[0] != reference.shape[0] or estimate.shape[2:] != reference.shape[2:]:
        raise ValueError(
            "estimate (batch, n_est, *signal) and reference (batch, n_ref, *signal) must share "
            f"batch and signal dimensions, got {tuple(estimate.shape)} and "
            f"{tuple(reference.shape)}"
        )
    batch, n_est, n_ref = estimate.shape[0], estimate.shape[1], reference.shape[1]
    shape = (batch, n_est, n_ref, *estimate.shape[2:])
    losses = loss_fn(estimate.unsqueeze(2).expand(shape), reference.unsqueeze(1).expand(shape))
    if not isinstance(losses, torch.Tensor) or tuple(losses.shape[:3]) != (batch, n_est, n_ref):
        got = tuple(losses.shape) if isinstance(losses, torch.Tensor) else type(losses).__name__
        raise ValueError(
            f"loss_fn must return one loss per pair, shape (batch, n_est, n_ref) = "
            f"{(batch, n_est, n_ref)} (pass an unreduced loss, e.g. "
            f"functools.partial(negative_si_sdr, reduction='none')), got {got}"
        )
    if losses.ndim > 3:
        losses = losses.flatten(3).mean(-1)
    return losses


def pit(
    loss_fn: LossFn | None,
    estimate: torch.Tensor,
    reference: torch.Tensor,
    reduction: str = "mean",
    max_exhaustive: int = 4,
) -> PITResult:
    """Permutation invariant loss: the loss of the best estimate-to-reference assignment.

    Args:
        loss_fn: per-item loss ``loss_fn(estimate, reference) -> (...)`` (unreduced; see
            :func:`pairwise_loss_matrix`). None: negative SI-SDR.
        estimate: estimates, shape ``(batch, n_est, *signal)`` with ``n_est >= n_ref``.
        reference: references, shape ``(batch, n_ref, *signal)``.
        reduction: ``"mean"`` (default) or ``"sum"`` over the batch, or ``"none"``.
        max_exhaustive: up to this many references all permutations are tried (exact,
            batched); beyond, the Hungarian algorithm is used (also exact).

    Returns:
        :class:`PITResult` ``(loss, permutation)``; ``loss`` averages the matched pair losses
        over references; ``permutation[b, j]`` is the estimate matched to reference ``j``.

    Example:
        >>> ref = torch.randn(4, 3, 8000)
        >>> loss, perm = pit(None, ref[:, [2, 0, 1]], ref)
        >>> perm[0]
        tensor([1, 2, 0])
    """
    check_choice(reduction, "reduction", REDUCTIONS)
    check_positive_int(max_exhaustive, "max_exhaustive")
    loss_fn = _default_loss() if loss_fn is None else loss_fn
    check_tensor(estimate, "estimate", min_ndim=3, layout="(batch, n_est, *signal)")
    check_tensor(reference, "reference", min_ndim=3, layout="(batch, n_ref, *signal)")
    if estimate.shape[1] < reference.shape[1]:
        raise ValueError(
            f"need at least as many estimates as references, got n_est={estimate.shape[1]} "
            f"and n_ref={reference.shape[1]}"
        )
    pairwise = pairwise_loss_matrix(loss_fn, estimate, reference)  # (batch, n_est, n_ref)
    by_reference = pairwise.transpose(1, 2)  # (batch, n_ref, n_est)
    permutation = solve_permutation(by_reference, maximize=False, max_exhaustive=max_exhaustive)
    matched = by_reference.gather(2, permutation[..., None])[..., 0]  # (batch, n_ref)
    return PITResult(reduce_loss(matched.mean(-1), reduction), permutation)


class PITLoss(nn.Module):
    """Permutation invariant wrapper around a pairwise loss (see :func:`pit`).

    ``PITLoss(loss_fn)(estimate, reference) -> PITResult(loss, permutation)``.

    Args:
        loss_fn: unreduced per-item loss ``(estimate, reference) -> (...)``; None gives
            negative SI-SDR.
        reduction: ``"mean"``, ``"sum"`` or ``"none"`` over the batch.
        max_exhaustive: largest number of sources solved by exhaustive search.
    """

    def __init__(
        self, loss_fn: LossFn | None = None, reduction: str = "mean", max_exhaustive: int = 4
    ) -> None:
        super().__init__()
        self.loss_fn = _default_loss() if loss_fn is None else loss_fn
        self.reduction = check_choice(reduction, "reduction", REDUCTIONS)
        self.max_exhaustive = check_positive_int(max_exhaustive, "max_exhaustive")

    def forward(self, estimate: torch.Tensor, reference: torch.Tensor) -> PITResult:
        return pit(self.loss_fn, estimate, reference, self.reduction, self.max_exhaustive)
