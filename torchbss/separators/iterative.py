"""The batch (offline) iterative separators' shared loop: AuxIVA and ILRMA.

Every separator here minimises the negative log-likelihood (per frame)

    ``J(W, theta) = C(Y; theta) - 2 sum_f log|det W_f|``,  ``Y = W X``,

where ``C`` is the source model's cost (:mod:`torchbss.source_models`), by alternating

1. the source-model step ``(weights, theta) = source_model(Y, theta)`` (auxiliary variables;
   for NMF a multiplicative update of the factors),
2. a spatial step on the demixing matrices (IP1, IP2 or ISS, :mod:`torchbss.updates`), which
   minimises the auxiliary function built on ``weights``,
3. optionally (ILRMA) a normalisation that rescales each row of ``W`` and the source variance
   together, leaving ``J`` unchanged.

Each step never increases ``J``; the recorded cost is non-increasing.

Overdetermined input (``n_src < mics``): IP1 uses the OverIVA background subspace (``W`` stays
square, its last ``mics - n_src`` rows span the background, whose stationary Gaussian term
``sum_f log det(U C U^H)`` is added to the cost). IP2 and ISS need a square system, so the
mixture is first reduced per frequency to its ``n_src`` principal components (PCA);
``overdetermined="pca"`` selects this route for IP1 too. Either way the result's
``demixing`` is a square ``(mics, mics)`` matrix of the original mixture whose first ``n_src``
rows give the sources.

Degenerate input is documented rather than rejected: an all-zero mic channel or an all-zero
mixture gives finite output (covariances are diagonally loaded, weights floored), and an
all-zero mixture separates into all-zero sources.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.checkpoint import checkpoint as _checkpoint

from torchbss._validation import (
    check_bool,
    check_choice,
    check_complex,
    check_finite,
    check_positive_int,
    check_tensor,
)
from torchbss.separators.base import Callback, SeparationResult, Separator
from torchbss.source_models import SourceModel, as_source_model
from torchbss.source_models.base import masked_frame_mean, power
from torchbss.source_models.nmf import needs_graph
from torchbss.updates import (
    SpatialUpdate,
    as_update,
    background_update,
    demix,
    embed_reduced_demixing,
    minimum_distortion,
    mixture_covariance,
    principal_basis,
    projection_back,
)

__all__ = ["IterativeSeparator", "IterativeState", "MAX_MICS", "SCALINGS", "OVERDETERMINED"]

#: more "mics" than this is taken as a layout error (e.g. freq and mics axes swapped)
MAX_MICS = 32
SCALINGS = ("projection_back", "minimum_distortion", "none")
OVERDETERMINED = ("auto", "background", "pca")
LAYOUT = "(..., mics, freq, frames)"


@dataclass
class IterativeState:
    """State of a batch iterative separator between iterations.

    Attributes:
        demixing: ``(..., freq, R, R)`` demixing matrices of the working mixture: the mixture
            itself (``R = mics``), or its ``R = n_src`` principal components on the PCA route.
        source: the source model's state (e.g. an ``NMFState``), ``None`` for stateless models.
    """

    demixing: torch.Tensor
    source: Any = None


@dataclass
class _Problem:
    """Everything one call computes once from its input."""

    X: torch.Tensor  # (..., mics, freq, frames) original mixture
    Xr: torch.Tensor  # working mixture: X, or its principal components
    Q: torch.Tensor | None  # (..., freq, mics, mics) PCA basis, or None
    C: torch.Tensor | None  # (..., freq, R, R) mixture covariance (OverIVA background)
    n_src: int
    frame_mask: torch.Tensor | None
    cache: Any  # the spatial update's own cache


class IterativeSeparator(Separator):
    """Batch iterative BSS with a pluggable spatial update and source model.

    Base class of :class:`~torchbss.separators.AuxIVA` and :class:`~torchbss.separators.ILRMA`;
    see the module docstring for the algorithm and the overdetermined/degenerate cases.

    Args:
        n_iter: number of iterations (``>= 0``; ``0`` applies the initial ``W`` and the scaling).
        update: a :class:`~torchbss.updates.SpatialUpdate` (``IP1()``, ``IP2()``, ``ISS()``) or
            its name, shorthand for the class with its defaults.
        source_model: a :class:`~torchbss.source_models.SourceModel` or its name.
        n_src: number of sources (default: number of mics).
        ref_mic: reference microphone of the scaling.
        scaling: ``"projection_back"`` (least squares onto ``ref_mic``),
            ``"minimum_distortion"`` (``(W^{-1})[ref_mic, k]``) or ``None``.
        normalize: rescale the rows of ``W`` and the source variances together to unit output
            power after every iteration (ILRMA; the cost is unchanged).
        overdetermined: ``"auto"`` (OverIVA background for updates that support it, PCA
            otherwise), ``"background"`` or ``"pca"``.
        checkpoint: recompute each iteration in the backward pass (``torch.utils.checkpoint``,
            non-reentrant) to save activation memory; gradients are identical.
        track_cost: record the cost before and after every iteration in the result.
    """

    def __init__(
        self,
        n_iter: int,
        update: str | SpatialUpdate,
        source_model: str | SourceModel,
        n_src: int | None = None,
        ref_mic: int = 0,
        scaling: str | None = "projection_back",
        normalize: bool = False,
        overdetermined: str = "auto",
        checkpoint: bool = False,
        track_cost: bool = True,
    ) -> None:
        super().__init__()
        self.n_iter = check_positive_int(n_iter, "n_iter", minimum=0)
        self.update = as_update(update)
        self.source_model = as_source_model(source_model)
        if n_src is not None:
            check_positive_int(n_src, "n_src", minimum=1)
        self.n_src = n_src
        self.ref_mic = check_positive_int(ref_mic, "ref_mic", minimum=0)
        check_choice("none" if scaling is None else scaling, "scaling", SCALINGS)
        self.scaling = None if scaling in (None, "none") else scaling
        self.normalize = check_bool(normalize, "normalize")
        check_choice(overdetermined, "overdetermined", OVERDETERMINED)
        if overdetermined == "background" and self.update.square_only:
            raise ValueError(
                f"overdetermined='background' (OverIVA) needs an update that supports it "
                f"(IP1), got {self.update!r}; use overdetermined='pca' or 'auto'"
            )
        self.overdetermined = overdetermined
        self.checkpoint = check_bool(checkpoint, "checkpoint")
        self.track_cost = check_bool(track_cost, "track_cost")

    # ------------------------------------------------------------------ input
    def _check_input(self, X: object, frame_mask: torch.Tensor | None) -> int:
        """Validate the mixture; return the number of sources."""
        check_tensor(X, "X", min_ndim=3, layout=LAYOUT)
        check_complex(X, "X")
        n_mics, _, n_frames = X.shape[-3:]
        if n_mics < 2:
            raise ValueError(
                f"X must have at least 2 mics {LAYOUT} for blind source separation, got "
                f"shape {tuple(X.shape)} (1 mic)"
            )
        if n_mics > MAX_MICS:
            raise ValueError(
                f"X has {n_mics} 'mics' (> {MAX_MICS}) in shape {tuple(X.shape)}; expected "
                f"{LAYOUT}: did you swap the mics and freq (or frames) axes?"
            )
        n_src = self.n_src if self.n_src is not None else n_mics
        if n_src > n_mics:
            raise ValueError(
                f"n_src={n_src} sources needs at least as many mics, got {n_mics} mics in X of "
                f"shape {tuple(X.shape)}"
            )
        if n_frames < n_mics:
            raise ValueError(
                f"X has {n_frames} STFT frame(s) for {n_mics} mics (shape {tuple(X.shape)}, "
                f"expected {LAYOUT}); blind source separation needs at least as many frames "
                "as mics: the signal is too short, or its axes are in another order"
            )
        if self.ref_mic >= n_mics:
            raise ValueError(
                f"ref_mic must be in [0, {n_mics}) for {n_mics} mics, got {self.ref_mic}"
            )
        check_finite(X, "X")
        if frame_mask is not None:
            check_tensor(frame_mask, "frame_mask", min_ndim=1, layout="(..., frames)")
            if frame_mask.shape != X.shape[:-3] + (n_frames,):
                raise ValueError(
                    f"frame_mask must have shape {tuple(X.shape[:-3]) + (n_frames,)} "
                    f"(batch..., frames) for X of shape {tuple(X.shape)}, got "
                    f"{tuple(frame_mask.shape)}"
                )
        return n_src

    def _prepare(self, X: torch.Tensor, frame_mask: torch.Tensor | None) -> _Problem:
        n_src = self._check_input(X, frame_mask)
        n_mics = X.shape[-3]
        pca = n_src < n_mics and (self.update.square_only or self.overdetermined == "pca")
        Q = principal_basis(X, frame_mask) if pca else None
        Xr = demix(Q, X, n_src) if pca else X
        C = mixture_covariance(Xr, frame_mask) if n_src < Xr.shape[-3] else None
        cache = self.update.prepare(Xr, n_src, frame_mask)
        return _Problem(X, Xr, Q, C, n_src, frame_mask, cache)

    # ------------------------------------------------------------------ state
    def init_state(
        self,
        X: torch.Tensor,
        frame_mask: torch.Tensor | None = None,
        *,
        demixing: torch.Tensor | None = None,
    ) -> IterativeState:
        """Starting state: identity (or ``demixing``) and the source model's initial state.

        Args:
            X: ``(..., mics, freq, frames)`` mixture.
            frame_mask: optional ``(..., frames)`` valid-frame mask.
            demixing: optional initial demixing ``(..., freq, R, R)`` of the working mixture
                (``R = mics``; ``R = n_src`` on the PCA route), e.g. another separator's
                ``result.state.demixing``. Default: identity.
        """
        return self._init_state(self._prepare(X, frame_mask), demixing)

    def _init_state(self, problem: _Problem, W0: torch.Tensor | None) -> IterativeState:
        Xr = problem.Xr
        R, n_freq = Xr.shape[-3], Xr.shape[-2]
        shape = Xr.shape[:-3] + (n_freq, R, R)
        if W0 is None:
            W = torch.eye(R, dtype=Xr.dtype, device=Xr.device).expand(shape)
        else:
            W = self._check_demixing(W0, shape, Xr)
        if problem.C is not None:  # OverIVA: the background rows, loaded as the update loads
            W = background_update(W, problem.C, problem.n_src, getattr(self.update, "load", 0.0))
        Y = demix(W, Xr, problem.n_src)
        return IterativeState(W, self.source_model.init_state(Y, problem.frame_mask))

    @staticmethod
    def _check_demixing(W: object, shape: tuple[int, ...], Xr: torch.Tensor) -> torch.Tensor:
        check_tensor(W, "demixing", min_ndim=3, layout="(..., freq, rows, mics)")
        if W.shape[-3:] != shape[-3:]:
            raise ValueError(
                f"demixing must have shape (..., {shape[-3]}, {shape[-2]}, {shape[-1]}) "
                f"(freq, rows, mics) for this mixture, got {tuple(W.shape)}"
            )
        return W.to(device=Xr.device, dtype=Xr.dtype).expand(shape)

    def _check_state(self, state: object, problem: _Problem) -> IterativeState:
        if not isinstance(state, IterativeState):
            raise TypeError(
                f"state must be the IterativeState of a batch separator (from init_state or a "
                f"result's .state), got {type(state).__name__}"
            )
        Xr = problem.Xr
        R = Xr.shape[-3]
        W = self._check_demixing(state.demixing, Xr.shape[:-3] + (Xr.shape[-2], R, R), Xr)
        source = state.source
        if source is None:
            source = self.source_model.init_state(demix(W, Xr, problem.n_src), problem.frame_mask)
        elif hasattr(self.source_model, "check_state"):
            source = self.source_model.check_state(source, demix(W, Xr, problem.n_src))
        return IterativeState(W, source)

    # ------------------------------------------------------------------ the loop
    def _iteration(
        self, W: torch.Tensor, Y: torch.Tensor, source: Any, problem: _Problem
    ) -> tuple[torch.Tensor, torch.Tensor, Any]:
        """One MM iteration: source model, spatial update, normalisation."""
        weights, source = self.source_model(Y, source, problem.frame_mask)
        W, Y = self.update(W, Y, weights, problem.cache)
        if self.normalize:
            W, Y, source = self._normalize(W, Y, source, problem)
        return W, Y, source

    def _run(
        self,
        X: torch.Tensor,
        state: Any,
        frame_mask: torch.Tensor | None,
        callback: Callback | None,
        n_iter: int,
    ) -> SeparationResult:
        problem = self._prepare(X, frame_mask)
        if state is None:
            state = self._init_state(problem, None)
        else:
            state = self._check_state(state, problem)
        W, source = state.demixing, state.source
        Y = demix(W, problem.Xr, problem.n_src)
        costs = [self._cost(W, Y, source, problem)] if self.track_cost else None
        for i in range(n_iter):
            if self.checkpoint and torch.is_grad_enabled():
                W, Y, source = _checkpoint(
                    self._iteration, W, Y, source, problem, use_reentrant=False
                )
            else:
                W, Y, source = self._iteration(W, Y, source, problem)
            if costs is not None:
                costs.append(self._cost(W, Y, source, problem))
            if callback is not None:
                callback(i, self._result(problem, W, Y, source, None))
        return self._result(problem, W, Y, source, costs)

    def forward(
        self,
        X: torch.Tensor,
        state: IterativeState | None = None,
        *,
        frame_mask: torch.Tensor | None = None,
        callback: Callback | None = None,
    ) -> SeparationResult:
        """Separate a batch of mixtures with ``n_iter`` iterations.

        Args:
            X: ``(..., mics, freq, frames)`` complex mixture STFT (complex64 or complex128).
            state: optional :class:`IterativeState` to continue from (e.g. a previous result's
                ``.state``, or ``init_state(X, demixing=W0)`` for a given initial demixing).
            frame_mask: optional ``(..., frames)`` {0, 1} mask of valid frames (variable-length
                batches; padded frames should be zero in ``X``).
            callback: ``callback(i, result)`` after every iteration ``i``.

        Returns:
            :class:`~torchbss.separators.SeparationResult` with ``sources``
            ``(..., n_src, freq, frames)``, ``demixing`` ``(..., freq, mics, mics)``, ``state``
            and ``cost`` ``(..., n_iter + 1)`` (``track_cost=True``).
        """
        return self._run(X, state, frame_mask, callback, self.n_iter)

    def step(
        self, X: torch.Tensor, state: Any, frame_mask: torch.Tensor | None = None
    ) -> SeparationResult:
        """One iteration from ``state`` (``None``: from :meth:`init_state`)."""
        return self._run(X, state, frame_mask, None, 1)

    def _result(
        self,
        problem: _Problem,
        W: torch.Tensor,
        Y: torch.Tensor,
        source: Any,
        costs: list[torch.Tensor] | None,
    ) -> SeparationResult:
        W_full = W if problem.Q is None else embed_reduced_demixing(W, problem.Q)
        if self.scaling == "projection_back":
            Y = projection_back(Y, problem.X, self.ref_mic, problem.frame_mask)
        elif self.scaling == "minimum_distortion":
            Y = minimum_distortion(Y, W_full, self.ref_mic, load=1e-12)
        return SeparationResult(
            sources=Y,
            state=IterativeState(W, source),
            demixing=W_full,
            cost=torch.stack(costs, -1) if costs is not None else None,
        )

    # ------------------------------------------------------------------ cost, normalisation
    @torch.no_grad()
    def _cost(self, W: torch.Tensor, Y: torch.Tensor, source: Any, problem: _Problem):
        """Negative log-likelihood per frame ``(...)`` (detached)."""
        cost = self.source_model.cost(Y, source, problem.frame_mask)
        cost = cost - 2.0 * torch.linalg.slogdet(W)[1].sum(-1)
        if problem.C is not None:  # OverIVA background: stationary Gaussian, ML covariance
            U = W[..., problem.n_src :, :]
            cost = cost + torch.linalg.slogdet(U @ problem.C @ U.mH)[1].sum(-1)
            cost = cost + (W.shape[-1] - problem.n_src) * W.shape[-3]
        return cost

    def _normalize(self, W: torch.Tensor, Y: torch.Tensor, source: Any, problem: _Problem):
        """Rescale rows of ``W``, ``Y`` and the source variances to unit output power."""
        if problem.frame_mask is None:
            # mean power without a full-size temporary: a batched dot product of the real view
            Yr = torch.view_as_real(Y).flatten(-2)  # (..., n_src, freq, 2 frames)
            p = torch.linalg.vecdot(Yr, Yr).mean(-1) / Y.shape[-1]  # (..., n_src)
        else:
            p = masked_frame_mean(power(Y), problem.frame_mask).mean(-1)
        # a source that is numerically silent (all-zero input, or below the precision of the
        # loudest source, e.g. a duplicated mic) keeps its scale, so nothing overflows
        info = torch.finfo(p.dtype)
        floor = torch.maximum(info.eps * p.amax(-1, keepdim=True), torch.tensor(info.tiny**0.5))
        scale = torch.where(p > floor, p.clamp_min(info.tiny**0.5).rsqrt(), torch.ones_like(p))
        source = self.source_model.rescale(source, scale)
        if needs_graph(Y, scale):
            Y = Y * scale[..., None, None].to(Y.dtype)
        else:  # Y is this iteration's own estimate: rescale it in place
            Y = Y.mul_(scale[..., None, None].to(Y.dtype))
        pad = torch.ones(W.shape[-1] - problem.n_src, dtype=scale.dtype, device=scale.device)
        s = torch.cat([scale, pad.expand(scale.shape[:-1] + pad.shape)], -1).to(W.dtype)
        return W * s[..., None, :, None], Y, source

    def extra_repr(self) -> str:
        return (
            f"n_iter={self.n_iter}, update={self.update!r}, n_src={self.n_src}, "
            f"ref_mic={self.ref_mic}, scaling={self.scaling!r}"
        )
