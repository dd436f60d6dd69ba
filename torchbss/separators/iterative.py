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

Each step never increases ``J``; the recorded cost is non-increasing, except where a source
model's variance floor ``eps`` is active: the weights then come from the floored variance while
the cost is that of the model, so the time-varying Gauss model can raise it on frames that fall
silent in one output (an audit measured +109 on a run with strong loudness changes; the
separation is unaffected); and the diagonal loading of IP1/IP2 (``load > 0``), which solves a
slightly different problem, can raise it on nearly collinear mics.

Overdetermined input (``n_src < mics``): IP1 uses the OverIVA background subspace (``W`` stays
square, its last ``mics - n_src`` rows span the background, whose stationary Gaussian term
``sum_f log det(U C U^H)`` is added to the cost). IP2 and ISS need a square system, so the
mixture is first reduced per frequency to its ``n_src`` principal components (PCA);
``overdetermined="pca"`` selects this route for IP1 too. Either way the result's
``demixing`` is a square ``(mics, mics)`` matrix of the original mixture whose first ``n_src``
rows give the sources.

How an iteration is computed (same results, less memory traffic): with one of the built-in
packed updates (IP1, IP2, ISS; not the OverIVA background route) the loop keeps ``W`` in the
frequency-last layout ``(..., M, M, freq)`` across iterations and never forms the complex
``Y = W X`` until the end:

* IP1 / IP2 take the weighted covariances of the mixture from its packed outer products: one
  real GEMM over frames for all sources when the weights do not depend on frequency (Laplace,
  Gauss), one batched matmul otherwise (:mod:`torchbss.updates.covariance`);
* ISS takes those of the estimates, from the packed outer products of ``Y`` computed by one
  real block matmul per frequency (:func:`~torchbss.updates.base.demix_outer_products`), and
  transforms them in closed form along its sweep (:mod:`torchbss.updates.iss`);
* the source model gets only what it reads: Laplace and Gauss the frame powers
  ``sum_f |y|^2`` (for IP1 / IP2 with complex64 input one GEMM over the float64 outer products,
  :func:`~torchbss.updates.covariance.packed_output_power`), NMF the powers ``|y|^2``
  (:func:`~torchbss.updates.base.demix_power`), with reused buffers;
* on CPU a batch is run in chunks of mixtures whose outer products stay in cache
  (:attr:`IterativeSeparator.cpu_chunk_bytes`), one mixture at a time when a single
  mixture fills the cache: a batch is then as fast as a loop, not slower.

Other updates and source models take the generic loop (``source_model(Y)`` ->
``update(W, Y, weights, cache)``).

After the last iteration and the scaling, ``align_permutations=True`` (AuxIVA's default)
undoes frequency-block permutations of the outputs (:mod:`torchbss.updates.alignment`) and
permutes the demixing rows and the state to match.

Degenerate input is documented rather than rejected: an all-zero mic channel or an all-zero
mixture gives finite output (covariances are diagonally loaded, weights floored), and an
all-zero mixture separates into all-zero sources. The tracked cost can then be ``-inf`` for the
OverIVA path (``n_src < mics`` with IP1): its background rows span the silent channel, whose
mixture covariance is singular, so ``log |det W|`` is unbounded; the sources stay finite.
"""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.checkpoint import checkpoint as _checkpoint

from torchbss._validation import (
    check_bool,
    check_choice,
    check_complex,
    check_finite,
    check_freq_bins,
    check_mask,
    check_positive_int,
    check_range,
    check_tensor,
    finite_items,
)
from torchbss.separators.base import Callback, SeparationResult, Separator
from torchbss.source_models import SourceModel, as_source_model
from torchbss.source_models.base import masked_frame_mean, power
from torchbss.source_models.iva import SphericalModel
from torchbss.source_models.nmf import NMF, NMFState, needs_graph
from torchbss.updates import (
    IP1,
    SpatialUpdate,
    as_update,
    background_update,
    demix,
    embed_reduced_demixing,
    frequency_permutation,
    minimum_distortion,
    mixture_covariance,
    permute_demixing,
    permute_sources,
    principal_basis,
    projection_back,
)
from torchbss.updates.base import (
    PackedUpdate,
    demix_outer_products,
    demix_power,
    planar_mixture,
)
from torchbss.updates.covariance import (
    packed_outer_products,
    packed_output_power,
    packed_weighted_covariance,
)
from torchbss.updates.hermitian import from_freq_last, log_abs_det, to_freq_last, upper_pairs

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
    route: str | None = None  # see IterativeSeparator._packed_route


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
        align_permutations: after the last iteration (and the scaling), undo frequency-block
            permutations by clustering the outputs' power-ratio envelopes
            (:func:`~torchbss.updates.alignment.frequency_permutation`); the sources, the
            demixing and the state (its demixing rows and an NMF model's bases) are permuted
            per bin together, so a run continued from the state goes on from the aligned
            solution. It runs at the end of every call (``forward`` and ``step``), so ``n``
            single steps are ``n`` iterations each followed by an alignment, not one call of
            ``n`` iterations. The recorded cost is that of the iterations (before the alignment).
        align_silence: frames quieter than this fraction of the median output frame power are
            left out of the alignment (``silence`` of
            :func:`~torchbss.updates.alignment.power_permutation`; ``0``: every frame counts).
        align_every: with ``align_permutations``, also align after every ``align_every``
            iterations inside a call (``0``: only at the end), on the scaled outputs as at the
            end; the iterations then go on from the aligned demixing, which gets a source model
            that sees all bins of a source at once (IVA, a neural model) out of a
            frequency-block permutation that it would otherwise keep. The same as splitting the
            call into calls of ``align_every`` iterations, without preparing the input again.
            A recorded cost can jump at an alignment.
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
        align_permutations: bool = False,
        align_silence: float = 0.0,
        align_every: int = 0,
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
        self.align_permutations = check_bool(align_permutations, "align_permutations")
        self.align_silence = check_range(align_silence, "align_silence", 0.0, 1.0)
        self.align_every = check_positive_int(align_every, "align_every", minimum=0)

    # ------------------------------------------------------------------ input
    def _check_input(self, X: object, frame_mask: torch.Tensor | None) -> int:
        """Validate the mixture; return the number of sources."""
        check_tensor(X, "X", min_ndim=3, layout=LAYOUT)
        X = check_complex(X, "X")  # (a lazy conjugate resolved)
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
        check_freq_bins(X, LAYOUT)
        if X.numel() == 0:
            raise ValueError(
                f"X of shape {tuple(X.shape)} holds no mixture: a leading (batch) dimension is "
                f"0, expected {LAYOUT} with at least one mixture"
            )
        # one vectorised pass over the real view: NaN / inf propagate into the sum; only a
        # non-finite sum (also reached by huge finite values) needs the exact, counting check
        if not bool(torch.isfinite(torch.view_as_real(X).sum())):  # (X is not empty: above)
            check_finite(X, "X")
        if frame_mask is not None:
            layout = f"(batch..., frames) for X of shape {tuple(X.shape)}"
            check_mask(frame_mask, "frame_mask", X.shape[:-3] + (n_frames,), layout)
            valid = (frame_mask != 0).sum(-1)
            if bool((valid < n_mics).any()):
                few = [
                    i[0] if len(i) == 1 else tuple(i)
                    for i in (valid < n_mics).nonzero()[:4].tolist()
                ]
                raise ValueError(
                    f"frame_mask leaves fewer valid frames than mics ({n_mics}) in mixture(s) at "
                    f"batch index {few}{' ...' if len(few) == 4 else ''}: there is no "
                    f"full-rank covariance to separate; drop those mixtures from the batch"
                )
        return n_src

    def _prepare(self, X: torch.Tensor, frame_mask: torch.Tensor | None) -> _Problem:
        n_src = self._check_input(X, frame_mask)
        n_mics = X.shape[-3]
        # frames contiguous (torch.stft returns frequency-contiguous strides): every reduction
        # over frames below reads memory in order (and a lazy conjugate, X.conj(), resolved:
        # the real views below refuse it)
        X = X.resolve_conj().contiguous()
        pca = n_src < n_mics and (self.update.square_only or self.overdetermined == "pca")
        Q = principal_basis(X, frame_mask) if pca else None
        Xr = demix(Q, X, n_src) if pca else X
        C = mixture_covariance(Xr, frame_mask) if n_src < Xr.shape[-3] else None
        route = self._packed_route(C is not None)
        mixture_domain = getattr(self.update, "domain", "mixture") == "mixture"
        exact = Xr.dtype == torch.complex64 and Xr.device.type != "mps"  # (no float64 there)
        if route == "frame_power" and mixture_domain and exact:
            # exact (float64) products for the frame powers (see packed_output_power). On CPU
            # the covariances read the same numbers (GEMM in float64, rounded to float32): one
            # copy, stored frames-major when it exceeds the cache budget (cpu_chunk_bytes; the
            # order both GEMMs then stream fastest, see covariance.frames_major; 3x3 8 s IP1
            # ~420 -> ~400 ms against a float32 copy for the covariances). On other devices
            # the covariances read a float32 copy, fewer bytes
            big = Xr.shape[:-3].numel() * _outer_bytes(Xr) > self.cpu_chunk_bytes
            cpu = Xr.device.type == "cpu"
            exact = packed_outer_products(
                Xr, frame_mask, dtype=torch.float64, store_frames_major=cpu and big
            )
            outer = exact if cpu else exact.to(torch.float32)
            cache = self.update.prepare(Xr, n_src, frame_mask, outer=outer)
            cache = dataclasses.replace(cache, outer_power=exact)
        else:
            cache = self.update.prepare(Xr, n_src, frame_mask)
            if route in ("frame_power", "power"):
                cache = dataclasses.replace(cache, planar=planar_mixture(Xr))
        return _Problem(X, Xr, Q, C, n_src, frame_mask, cache, route)

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
        if type(self.source_model).init_state is SourceModel.init_state:
            return IterativeState(W, None)  # the default (stateless) start needs no estimates
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
        lead, want = W.shape[:-3], shape[:-3]
        if len(lead) > len(want) or any(a not in (1, b) for a, b in zip(lead[::-1], want[::-1])):
            raise ValueError(
                f"demixing of shape {tuple(W.shape)} has another batch than the mixture "
                f"{tuple(want)} (a state of another batch?); expected (..., freq, rows, mics) "
                f"with batch {tuple(want)} (or one demixing for all)"
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
        chunk = self._cpu_chunk(X, state, frame_mask, callback)
        if chunk:
            return self._run_chunked(X, frame_mask, n_iter, chunk)
        problem = self._prepare(X, frame_mask)
        if state is None:
            state = self._init_state(problem, None)
        else:
            state = self._check_state(state, problem)
        if problem.route is not None:
            return self._run_packed(problem, state, callback, n_iter)
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
            if self._aligns_after(i, n_iter):
                W, source = self._aligned_state(problem, W, Y, source)
                Y = demix(W, problem.Xr, problem.n_src)
            if costs is not None:
                costs.append(self._cost(W, Y, source, problem))
            if callback is not None:
                callback(i, self._result(problem, W, Y, source, None))
        return self._result(problem, W, Y, source, costs)

    def _aligns_after(self, i: int, n_iter: int) -> bool:
        """Whether the iterations align after iteration ``i`` (0-based) of ``n_iter``."""
        every = self.align_every if self.align_permutations else 0
        return every > 0 and (i + 1) % every == 0 and i + 1 < n_iter

    def _aligned_state(
        self, problem: _Problem, W: torch.Tensor, Y: torch.Tensor, source: Any
    ) -> tuple[torch.Tensor, Any]:
        """The demixing ``(..., freq, mics, mics)`` and source state aligned as at the end."""
        result = self._result(problem, W, Y, source, None)
        return result.state.demixing, result.state.source

    # ------------------------------------------------------------------ the packed loop
    def _packed_route(self, background: bool) -> str | None:
        """How the packed loop represents the estimates between iterations, or ``None`` for the
        generic loop (custom updates, the OverIVA ``background``; see the module docstring):

        * ``"frame_power"``: spherical models (Laplace, Gauss): ``sum_f |y|^2`` ``(..., K, 1, T)``;
        * ``"power"``: NMF: ``|y|^2`` ``(..., K, F, T)``;
        * ``"estimates"``: any other source model: ``Y``.
        """
        update = self.update
        packed = isinstance(update, PackedUpdate) and type(update).__call__ in (
            PackedUpdate.__call__,
            IP1.__call__,
        )
        if not packed or background:
            return None
        model = self.source_model
        if isinstance(model, SphericalModel) and model.uses_power_only():
            return "frame_power"
        if isinstance(model, NMF) and model.uses_power_only():
            return "power"
        return "estimates"

    def _packed_estimates(
        self, W: torch.Tensor, problem: _Problem, buffers: dict | None = None
    ) -> torch.Tensor:
        """What the loop keeps of the estimates of frequency-last ``W`` between iterations.

        ``"estimates"`` route: ``Y``. Otherwise, for the mixture-domain updates (IP1, IP2) the
        powers the source model needs (``"frame_power"``: ``sum_f |y|^2``, from the float64
        outer products for complex64 input; ``"power"``: ``|y|^2``), and for the
        estimates-domain update (ISS) the packed outer products of ``Y``, whose first ``K``
        planes are those powers.
        """
        cache, K, route = problem.cache, problem.n_src, problem.route
        if route == "estimates":
            return demix(from_freq_last(W), problem.Xr, K)
        buffers = buffers or {}
        if self.update.domain == "estimates":
            return demix_outer_products(W, cache.planar, K, buffers.get("est"), buffers.get("work"))
        if route == "frame_power" and cache.outer_power is not None:
            return packed_output_power(W, cache.outer_power, K).to(W.real.dtype)
        P = demix_power(W, cache.planar, K, buffers.get("est"), buffers.get("work"))
        return P.sum(-2, keepdim=True) if route == "frame_power" else P

    def _model_input(self, est: torch.Tensor, problem: _Problem) -> torch.Tensor:
        """The source model's input (frame powers, powers or ``Y``) from the loop's estimates."""
        route = problem.route
        if route == "estimates" or self.update.domain == "mixture":
            return est
        P = est[..., : problem.n_src, :, :]  # the powers are the first planes of y y^H
        return P.sum(-2, keepdim=True) if route == "frame_power" else P

    def _packed_buffers(self, problem: _Problem, W: torch.Tensor) -> dict | None:
        """Buffers reused by every iteration (without autograd) for the full-size estimates."""
        route, Xp = problem.route, problem.cache.planar
        if Xp is None or route == "estimates" or needs_graph(problem.Xr, W):
            return None
        K, (F, _, T) = problem.n_src, Xp.shape[-3:]
        iss = self.update.domain == "estimates"
        if route == "frame_power" and not iss:
            return None  # the frame powers are small
        new = lambda *s: torch.empty(Xp.shape[:-3] + s, dtype=Xp.dtype, device=Xp.device)  # noqa: E731
        buffers = {"est": new(K * K if iss else K, F, T), "work": new(F, 2 * K, T)}
        if route == "power":
            buffers["workspace"] = (new(K, F, T), new(K, F, T))
        return buffers

    def _packed_iteration(
        self,
        W: torch.Tensor,
        est: torch.Tensor,
        source: Any,
        problem: _Problem,
        buffers: dict | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, Any, torch.Tensor | None]:
        """One MM iteration on frequency-last ``W``; ``est`` as :meth:`_packed_estimates`.

        Returns ``(W, est, source, cost)``; ``cost`` (detached) when it came for free (NMF:
        the cost of the new state is the Gaussian cost with the weights computed here, and the
        normalisation leaves it unchanged), else ``None``.
        """
        cache, model, route, K = problem.cache, self.source_model, problem.route, problem.n_src
        inputs = self._model_input(est, problem)
        if route == "frame_power":
            weights = model.weights_from_power(inputs, problem.Xr.shape[-2])
        elif route == "power":
            workspace = buffers["workspace"] if buffers else None
            weights, source = model.weights_from_power(
                inputs, source, problem.frame_mask, workspace
            )
        else:
            weights, source = model(inputs, source, problem.frame_mask)
        model_weights = weights
        if self.update.domain == "mixture":
            Vd, Vo = self.update.covariances(weights, cache)
        else:  # ISS: the weighted covariances of the estimates
            mask = problem.frame_mask
            if route == "estimates":
                YY = packed_outer_products(est, mask)  # invalid frames zeroed
            else:
                YY = est  # from the unmasked mixture: the weights drop the invalid frames
                if mask is not None:
                    weights = weights * mask.to(weights.dtype)[..., None, None, :]
            Vd, Vo = packed_weighted_covariance(YY, weights, cache.n_valid)
        W = self.update.update_packed(W, Vd, Vo, cache.n_valid)
        est = self._packed_estimates(W, problem, buffers)
        cost, low = None, None
        if self.track_cost and route == "power" and not needs_graph(model_weights, est, W):
            with torch.no_grad():
                # the identity is exact unless the variance floor eps is active: checked below
                # (also after the normalisation) with lower bounds of lambda = T H per source
                # from the small factors: T min_t H and (min_f T) H
                T, H = source.basis, source.activations
                low = torch.maximum(
                    (T @ H.amin(-1, keepdim=True)).amin((-1, -2)),
                    (T.amin(-2, keepdim=True) @ H).amin((-1, -2)),
                )  # (..., K)
                inputs = self._model_input(est, problem)
                nll = model.cost_from_weights(inputs, model_weights, problem.frame_mask)
                cost = nll - 2.0 * log_abs_det(W).sum(-1)
        scale = None
        if self.normalize:
            inputs = self._model_input(est, problem)
            if route == "frame_power":
                p = inputs[..., 0, :].sum(-1) / (problem.Xr.shape[-2] * _valid(problem))
            elif route == "power":
                p = masked_frame_mean(inputs, problem.frame_mask).mean(-1)
            else:
                p = _mean_power(inputs, problem.frame_mask)
            scale = _normalization_scale(p)
            source = model.rescale(source, scale)
            factor = _estimate_scale(scale, route, self.update.domain)[..., None, None]
            factor = factor.to(est.dtype)
            # est is this iteration's own: rescale it in place unless autograd records it
            est = est * factor if needs_graph(est, scale) else est.mul_(factor)
            s = _pad_scale(scale, W.shape[-2], K).to(W.dtype)
            W = W * s[..., :, None, None]
        if cost is not None:
            if scale is not None:
                low = low * scale.square().clamp_max(1.0)
            if not bool((low > model.eps).all()):
                cost = None  # the caller evaluates the cost directly
        return W, est, source, cost

    @torch.no_grad()
    def _packed_cost(
        self,
        W: torch.Tensor,
        est: torch.Tensor,
        source: Any,
        problem: _Problem,
        buffers: dict | None = None,
    ):
        """Negative log-likelihood per frame ``(...)`` (detached), frequency-last ``W``."""
        model, mask, route = self.source_model, problem.frame_mask, problem.route
        inputs = self._model_input(est, problem)
        if route == "frame_power":
            cost = model.cost_from_power(inputs[..., 0, :], problem.Xr.shape[-2], mask)
        elif route == "power":
            workspace = buffers.get("workspace") if buffers else None
            cost = model.cost_from_power(inputs, source, mask, workspace)
        else:
            cost = model.cost(inputs, source, mask)
        return cost - 2.0 * log_abs_det(W).sum(-1)

    def _run_packed(
        self, problem: _Problem, state: IterativeState, callback: Callback | None, n_iter: int
    ) -> SeparationResult:
        W, source = to_freq_last(state.demixing), state.source
        buffers = self._packed_buffers(problem, W)
        est = self._packed_estimates(W, problem, buffers)
        track = self.track_cost
        costs = [self._packed_cost(W, est, source, problem, buffers)] if track else None
        for i in range(n_iter):
            if self.checkpoint and torch.is_grad_enabled():
                W, est, source, cost = _checkpoint(
                    self._packed_iteration, W, est, source, problem, use_reentrant=False
                )
            else:
                W, est, source, cost = self._packed_iteration(W, est, source, problem, buffers)
            if self._aligns_after(i, n_iter):
                W_pub = from_freq_last(W)
                Y = est if problem.route == "estimates" else demix(W_pub, problem.Xr, problem.n_src)
                W_pub, source = self._aligned_state(problem, W_pub, Y, source)
                W, cost = to_freq_last(W_pub), None
                est = self._packed_estimates(W, problem, buffers)
            if costs is not None:
                if cost is None:
                    cost = self._packed_cost(W, est, source, problem, buffers)
                costs.append(cost)
            if callback is not None:
                W_pub = from_freq_last(W)
                Y = est if problem.route == "estimates" else demix(W_pub, problem.Xr, problem.n_src)
                callback(i, self._result(problem, W_pub, Y, source, None))
        W = from_freq_last(W)
        Y = est if problem.route == "estimates" else demix(W, problem.Xr, problem.n_src)
        return self._result(problem, W, Y, source, costs)

    # ------------------------------------------------------------------ batches on CPU
    #: on CPU a batch is separated in chunks of mixtures whose working set (about
    #: ``8 mics^2 freq frames`` bytes each: the float64 outer products, read twice every
    #: iteration) stays below this many bytes: beyond it the reads come from memory instead of
    #: cache and a batch runs slower than a loop over its mixtures. Measured on the 2-core AMD
    #: EPYC VM of BENCHMARKS.md (32 MB of L3 shared with other tenants): the covariance GEMM
    #: streams at ~14 GB/s up to 8 MB and at ~3.5 GB/s from 12 MB on; on a 2-core Xeon VM the
    #: cliff was at ~32 MB; on the family-26 EPYC VM of stop 31 a batch of 16 8 s 2x2 mixtures
    #: took 0.80 s in chunks of 1 or 2 mixtures, 1.15 s in chunks of 4 and 1.3-1.5 s in chunks
    #: of 8 (the loop: 0.80 s). Raise it on a machine with a larger cache of its own.
    cpu_chunk_bytes: int = 8 * 2**20

    def _cpu_chunk(
        self,
        X: object,
        state: Any,
        frame_mask: torch.Tensor | None,
        callback: Callback | None,
    ) -> int:
        """Mixtures per chunk for a CPU batch (0: no chunking)."""
        if not isinstance(X, torch.Tensor) or X.ndim < 4 or X.device.type != "cpu":
            return 0
        if state is not None or callback is not None:
            return 0  # (a given state goes through the one-call path and its checks)
        if torch.is_grad_enabled() and X.requires_grad:
            return 0
        model = self.source_model
        if type(model).init_state is not SourceModel.init_state and not isinstance(model, NMF):
            return 0  # a custom state: the chunks' states could not be put together
        n_batch = X.shape[:-3].numel()
        chunk = max(1, self.cpu_chunk_bytes // max(_outer_bytes(X), 1))
        return chunk if chunk < n_batch else 0

    def _run_chunked(
        self, X: torch.Tensor, frame_mask: torch.Tensor | None, n_iter: int, chunk: int
    ) -> SeparationResult:
        """:meth:`_run` on chunks of the flattened batch, each result copied into the outputs.

        The outputs are allocated once, at the first chunk, and every chunk's own result is
        released before the next one runs, so the next chunk reuses its memory: fresh pages cost
        more than the copy on CPU (~1.5 us per 4 KiB page on the BENCHMARKS machine), and
        concatenating the kept chunk results at the end paid for a second full-size output.
        """
        self._check_input(X, frame_mask)  # errors name the whole input, not a chunk
        batch = X.shape[:-3]
        flat = X.reshape((-1,) + X.shape[-3:])
        mask = None if frame_mask is None else frame_mask.reshape(-1, frame_mask.shape[-1])
        n = flat.shape[0]
        outputs: list[torch.Tensor | None] | None = None
        for start in range(0, n, chunk):
            # chunks of one run without a batch dim (plain GEMMs rather than batched ones)
            part = slice(start, start + chunk) if chunk > 1 else start
            part_mask = None if mask is None else mask[part]
            parts = _result_tensors(self._run(flat[part], None, part_mask, None, n_iter))
            if outputs is None:
                outputs = [
                    None if t is None else t.new_empty((n,) + t.shape[1 if chunk > 1 else 0 :])
                    for t in parts
                ]
            for out, t in zip(outputs, parts):
                if out is not None:
                    out[part].copy_(t)
            del parts
        outputs = [None if t is None else t.reshape(batch + t.shape[1:]) for t in outputs]
        sources, W, demixing, cost, basis, activations = outputs
        source = None if basis is None else NMFState(basis=basis, activations=activations)
        return SeparationResult(
            sources=sources,
            state=IterativeState(W, source),
            demixing=demixing,
            cost=cost,
        )

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
            frame_mask: optional ``(..., frames)`` {0, 1} mask of valid frames, at least as many
                as mics in every mixture (variable-length batches; padded frames should be
                zero in ``X``).
            callback: ``callback(i, result)`` after every iteration ``i``.

        Returns:
            :class:`~torchbss.separators.SeparationResult` with ``sources``
            ``(..., n_src, freq, frames)``, ``demixing`` ``(..., freq, mics, mics)``, ``state``
            and ``cost`` ``(..., n_iter + 1)`` (``track_cost=True``).

        Warns:
            RuntimeWarning: the iterations diverged (non-finite sources from finite input, e.g.
                an unloaded ``IP1(load=0)`` in complex64, or an input whose power overflows the
                dtype); the result is returned as computed.
        """
        if callback is not None and not callable(callback):
            raise TypeError(f"callback must be callable(i, result) or None, got {callback!r}")
        return self._checked(self._run(X, state, frame_mask, callback, self.n_iter), X)

    def step(
        self, X: torch.Tensor, state: Any, frame_mask: torch.Tensor | None = None
    ) -> SeparationResult:
        """One iteration from ``state`` (``None``: from :meth:`init_state`)."""
        return self._checked(self._run(X, state, frame_mask, None, 1), X)

    def _checked(self, result: SeparationResult, X: torch.Tensor) -> SeparationResult:
        """Warn when the sources are not finite (the input was checked finite): divergence; or,
        with finite sources, when the tracked cost of a mixture that is not all zero ends at
        +inf or NaN: a singular demixing (e.g. ISS in complex64 on two identical mics), whose
        sources cannot be projected back."""
        Y = result.sources
        # per mixture (..., K, F, T), in Y's own layout: torch.isfinite of a batch wrote four
        # full-size temporaries, ~0.4 s for 16 8 s 2x2 mixtures on the BENCHMARKS machine
        finite = finite_items(Y.detach(), 3)
        if not bool(finite.all()):
            n_bad, n = int((~finite).sum()), finite.numel()
            warnings.warn(
                f"{type(self).__name__} diverged: non-finite sources from finite input in "
                f"{n_bad} of {n} mixture(s) ({Y.dtype}, update {self.update!r}); the iterations "
                "lost precision, typically with an unloaded update (IP1(load=0)) in complex64 "
                "or an input so loud that its power overflows the dtype: use the default "
                "loading, scale the input, use complex128 input or fewer iterations",
                RuntimeWarning,
                stacklevel=3,
            )
        elif result.cost is not None:
            last = result.cost[..., -1].detach()
            bad = last.isnan() | (last == float("inf"))
            if bool(bad.any()):  # (an all-zero mixture separates into zeros: nothing to say)
                bad &= X.detach().flatten(-3).abs().amax(-1) > 0
            if bool(bad.any()):
                warnings.warn(
                    f"{type(self).__name__}: the cost ends at +inf or NaN (update "
                    f"{self.update!r}): the demixing became singular (|det W| = 0), e.g. on "
                    "identical or linearly dependent mics; its images and projection back are "
                    "not defined: drop the dependent mics, or use complex128 input",
                    RuntimeWarning,
                    stacklevel=3,
                )
        return result

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
        if self.align_permutations:
            perm = frequency_permutation(Y, problem.frame_mask, silence=self.align_silence)
            Y = permute_sources(Y, perm)
            W, W_full = permute_demixing(W, perm), permute_demixing(W_full, perm)
            if isinstance(source, NMFState):  # bases (..., K, F, B) follow their bins
                source = NMFState(permute_sources(source.basis, perm), source.activations)
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
        scale = _normalization_scale(_mean_power(Y, problem.frame_mask))
        source = self.source_model.rescale(source, scale)
        if needs_graph(Y, scale):
            Y = Y * scale[..., None, None].to(Y.dtype)
        else:  # Y is this iteration's own estimate: rescale it in place
            Y = Y.mul_(scale[..., None, None].to(Y.dtype))
        s = _pad_scale(scale, W.shape[-1], problem.n_src).to(W.dtype)
        return W * s[..., None, :, None], Y, source

    def extra_repr(self) -> str:
        return (
            f"n_iter={self.n_iter}, update={self.update!r}, n_src={self.n_src}, "
            f"ref_mic={self.ref_mic}, scaling={self.scaling!r}, "
            f"align_permutations={self.align_permutations}"
            + (f", align_every={self.align_every}" if self.align_every else "")
        )


def _result_tensors(result: SeparationResult) -> list[torch.Tensor | None]:
    """The tensors of a batch separator's result, in :meth:`IterativeSeparator._run_chunked`'s
    order: sources, state demixing, demixing, cost, NMF bases and activations."""
    source = result.state.source
    nmf = [source.basis, source.activations] if source is not None else [None, None]
    return [result.sources, result.state.demixing, result.demixing, result.cost, *nmf]


def _outer_bytes(X: torch.Tensor) -> int:
    """Bytes of one mixture's float64 packed outer products (``8 mics^2 freq frames``), the
    working set that :attr:`IterativeSeparator.cpu_chunk_bytes` budgets."""
    M, F, T = X.shape[-3:]
    return 8 * M * M * F * T


def _valid(problem: _Problem) -> torch.Tensor | int:
    """Number of valid frames ``(...)`` of the problem (an int without a mask)."""
    return problem.cache.n_valid if hasattr(problem.cache, "n_valid") else problem.Xr.shape[-1]


def _mean_power(Y: torch.Tensor, frame_mask: torch.Tensor | None) -> torch.Tensor:
    """Mean output power ``(..., n_src)`` over frequencies and (valid) frames."""
    if frame_mask is None:
        # mean power without a full-size temporary: a batched dot product of the real view
        Yr = torch.view_as_real(Y).flatten(-2)  # (..., n_src, freq, 2 frames)
        return torch.linalg.vecdot(Yr, Yr).mean(-1) / Y.shape[-1]
    return masked_frame_mean(power(Y), frame_mask).mean(-1)


def _normalization_scale(p: torch.Tensor) -> torch.Tensor:
    """Per-source amplitude scale ``(..., n_src)`` to unit mean power ``p``.

    A source that is numerically silent (all-zero input, or below the precision of the loudest
    source, e.g. a duplicated mic) keeps its scale, so nothing overflows.
    """
    info = torch.finfo(p.dtype)
    floor = torch.maximum(info.eps * p.amax(-1, keepdim=True), torch.tensor(info.tiny**0.5))
    return torch.where(p > floor, p.clamp_min(info.tiny**0.5).rsqrt(), torch.ones_like(p))


def _estimate_scale(scale: torch.Tensor, route: str, domain: str) -> torch.Tensor:
    """How the loop's estimates scale when source ``k`` is scaled by ``scale[k]``: ``Y`` by
    ``s_k``, powers by ``s_k^2``, the packed outer products of ``Y`` by ``s_i s_j``."""
    if route == "estimates":
        return scale
    if domain == "mixture":
        return scale.square()
    rows, cols = upper_pairs(scale.shape[-1])
    cross = scale[..., list(rows)] * scale[..., list(cols)]
    return torch.cat([scale.square(), cross, cross], -1)


def _pad_scale(scale: torch.Tensor, n_rows: int, n_src: int) -> torch.Tensor:
    """The scale of every row of ``W``: ``scale`` for the sources, 1 for the background rows."""
    pad = torch.ones(n_rows - n_src, dtype=scale.dtype, device=scale.device)
    return torch.cat([scale, pad.expand(scale.shape[:-1] + pad.shape)], -1)
