"""Shared machinery of the batch (offline) iterative separators AuxIVA and ILRMA.

Every separator here minimises the negative log-likelihood

    ``J(W, theta) = C(Y; theta) - 2 sum_f log|det W_f|``,  ``Y = W X``,

where ``C`` is the source model's cost (:mod:`torchbss.source_models`) by alternating

1. the source-model step ``(weights, theta) = source_model(Y, theta)`` (auxiliary variables; for
   NMF a multiplicative update of the factors),
2. a spatial step on the demixing matrices (IP1, IP2 or ISS, :mod:`torchbss.updates`), which
   minimises the auxiliary function built on ``weights``,
3. optionally (ILRMA) a normalisation that rescales each row of ``W`` and the source variance
   together, leaving ``J`` unchanged.

Overdetermined input (``n_src < mics``): IP1 uses the OverIVA background subspace (the
demixing matrix stays square, its last ``mics - n_src`` rows span the background, whose
stationary Gaussian term ``sum_f log det(U C U^H)`` is added to the cost). IP2 and ISS need a
square system, so the mixture is first reduced per frequency to its ``n_src`` principal
components (PCA); ``overdetermined="pca"`` selects this route for IP1 too. In both cases the
returned ``W`` is a square ``(mics, mics)`` matrix whose first ``n_src`` rows give the sources
from the original mixture, so both scalings work on it.

Degenerate input is documented rather than rejected: an all-zero mic channel or an all-zero
mixture gives finite output (the covariances are diagonally loaded relative to their mean
diagonal, with an absolute floor, and the weights are floored), and an all-zero mixture
separates into all-zero sources.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint as _checkpoint

from torchbss._validation import (
    check_choice,
    check_complex,
    check_finite,
    check_positive_int,
    check_tensor,
)
from torchbss.source_models import SOURCE_MODELS, NMFState, laplace_weights
from torchbss.source_models.nmf import _needs_graph
from torchbss.updates import (
    DEFAULT_LOAD,
    background_update,
    demix,
    demix_freq_major,
    ip1_update,
    ip2_update,
    iss_update,
    minimum_distortion,
    outer_products,
    projection_back,
    weighted_covariance,
    weighted_covariance_from_outer,
)

__all__ = [
    "SeparationResult",
    "SpatialUpdate",
    "IP1",
    "IP2",
    "ISS",
    "UPDATES",
    "IterativeSeparator",
    "MAX_MICS",
]

# Heuristic guard against wrongly ordered tensors: more "mics" than this is taken as a layout
# error (e.g. (..., freq, mics, frames) passed as (..., mics, freq, frames)).
MAX_MICS = 32

SCALINGS = ("projection_back", "minimum_distortion", "none")


@dataclass
class SeparationResult:
    """Everything a batch separator computed.

    Attributes:
        Y: ``(..., sources, freq, frames)`` separated (and scaled) STFT.
        W: ``(..., freq, mics, mics)`` final demixing matrices for the original mixture, before
            scaling; the first ``sources`` rows give the (unscaled) sources.
        source_state: final state of the source model (e.g. an ``NMFState``), ``None`` if
            stateless.
        cost: ``(..., n_iter + 1)`` negative log-likelihood (per frame) before the first and
            after every iteration (detached), or ``None`` when ``track_cost=False``.
        cost_steps: ``(..., n_iter, 3)`` cost after the source-model step, the spatial step and
            the normalisation of every iteration (detached; only without checkpointing).
    """

    Y: torch.Tensor
    W: torch.Tensor
    source_state: Any = None
    cost: torch.Tensor | None = None
    cost_steps: torch.Tensor | None = field(default=None, repr=False)


def _covariances(X, weights, frame_mask, XX):
    """Weighted covariances, from the precomputed outer products ``XX`` when given."""
    if XX is not None:
        return weighted_covariance_from_outer(XX, weights, frame_mask)
    return weighted_covariance(X, weights, frame_mask)


def _demix(W, X, n_src, Xf):
    """``Y = W X``, from the frequency-major copy ``Xf`` when given."""
    return demix(W, X, n_src) if Xf is None else demix_freq_major(W, Xf, n_src)


class SpatialUpdate:
    """Interface of a spatial update: one sweep over all sources.

    ``__call__(X, Y, W, weights, n_src, frame_mask, C) -> (W, Y)`` with ``X`` the (possibly
    PCA-reduced) mixture ``(..., mics, freq, frames)``, ``Y`` the current estimates
    ``(..., n_src, freq, frames)``, ``W`` square ``(..., freq, mics, mics)``, ``weights``
    ``(..., n_src, freq or 1, frames)``, ``C`` the mixture covariance (for OverIVA) or ``None``.
    ``square_only`` tells whether it needs ``n_src == mics``. When ``uses_outer`` is true the
    separator precomputes ``XX = outer_products(X)`` once and passes it as ``XX=`` so the
    weighted covariances cost one real matmul per iteration, and the frequency-major copy
    ``Xf = X.transpose(-3, -2).contiguous()`` as ``Xf=`` for :func:`demix_freq_major`.
    """

    name = "custom"
    square_only = True
    uses_outer = False

    def __call__(
        self,
        X: torch.Tensor,
        Y: torch.Tensor,
        W: torch.Tensor,
        weights: torch.Tensor,
        n_src: int,
        frame_mask: torch.Tensor | None,
        C: torch.Tensor | None,
        XX: torch.Tensor | None = None,
        Xf: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class IP1(SpatialUpdate):
    """Iterative projection, one row at a time (Ono 2011); OverIVA background when ``C`` given.

    Args:
        load: relative diagonal loading of the weighted covariances (``0`` for exact parity).
    """

    name = "ip1"
    square_only = False
    uses_outer = True

    def __init__(self, load: float = DEFAULT_LOAD) -> None:
        self.load = load

    def __call__(self, X, Y, W, weights, n_src, frame_mask, C, XX=None, Xf=None):
        V = _covariances(X, weights, frame_mask, XX)
        for k in range(n_src):
            W = ip1_update(W, V[..., k, :, :, :], k, load=self.load)
            if C is not None:
                W = background_update(W, C, n_src, load=self.load)
        return W, _demix(W, X, n_src, Xf)


class IP2(SpatialUpdate):
    """Pairwise iterative projection (Ono 2012); pairs ``(0,1), (2,3), ...`` (cyclic if odd).

    Args:
        load: relative diagonal loading of the weighted covariances.
    """

    name = "ip2"
    uses_outer = True

    def __init__(self, load: float = DEFAULT_LOAD) -> None:
        self.load = load

    def __call__(self, X, Y, W, weights, n_src, frame_mask, C, XX=None, Xf=None):
        V = _covariances(X, weights, frame_mask, XX)
        for i in range(math.ceil(n_src / 2)):
            k, l = 2 * i, (2 * i + 1) % n_src
            W = ip2_update(W, V[..., k, :, :, :], V[..., l, :, :, :], k, l, load=self.load)
        return W, _demix(W, X, n_src, Xf)


class ISS(SpatialUpdate):
    """Iterative source steering, rank-1 updates of ``Y`` and ``W`` (Scheibler & Ono 2020)."""

    name = "iss"

    def __init__(self, eps: float = 1e-12) -> None:
        self.eps = eps

    def __call__(self, X, Y, W, weights, n_src, frame_mask, C, XX=None, Xf=None):
        weights = weights.expand(Y.shape)
        for k in range(n_src):
            Y, W = iss_update(Y, W, weights, k, frame_mask, eps=self.eps)
        return W, Y


UPDATES: dict[str, Callable[[], SpatialUpdate]] = {"ip1": IP1, "ip2": IP2, "iss": ISS}


def _resolve_update(update: str | SpatialUpdate, load: float) -> SpatialUpdate:
    if isinstance(update, SpatialUpdate):
        return update
    if not isinstance(update, str):
        raise TypeError(
            f"update must be a name {sorted(UPDATES)} or a SpatialUpdate, got {type(update)}"
        )
    check_choice(update, "update", list(UPDATES))
    return UPDATES[update](load) if update in ("ip1", "ip2") else UPDATES[update]()


def _resolve_source_model(model: str | nn.Module, **kwargs: Any) -> nn.Module:
    if isinstance(model, nn.Module):
        return model
    if not isinstance(model, str):
        raise TypeError(
            f"source_model must be a name {sorted(SOURCE_MODELS)} or an nn.Module, "
            f"got {type(model)}"
        )
    check_choice(model, "source_model", list(SOURCE_MODELS))
    cls = SOURCE_MODELS[model]
    return cls(**kwargs) if model == "nmf" else cls()


def _logabsdet(W: torch.Tensor) -> torch.Tensor:
    return torch.linalg.slogdet(W)[1]


def _pca(X: torch.Tensor, n_src: int, frame_mask: torch.Tensor | None) -> torch.Tensor:
    """Per-frequency unitary basis ``Q`` ``(..., freq, mics, mics)``, principal rows first.

    ``Q X`` has its ``n_src`` strongest principal components in its first rows; the remaining
    rows span the orthogonal complement, so ``Q`` stays square and invertible.
    """
    ones = torch.ones(X.shape[:-3] + (1, 1, X.shape[-1]), dtype=X.real.dtype, device=X.device)
    C = weighted_covariance(X, ones, frame_mask)[..., 0, :, :, :]
    _, vecs = torch.linalg.eigh(C)  # ascending eigenvalues
    return vecs.flip(-1).conj().transpose(-1, -2)


class IterativeSeparator(nn.Module):
    """Batch iterative BSS with a pluggable spatial update and source model.

    Base class of :class:`~torchbss.separators.AuxIVA` and :class:`~torchbss.separators.ILRMA`;
    see the module docstring for the algorithm and the overdetermined/degenerate cases.

    Args:
        n_iter: number of iterations (``>= 0``; ``0`` only applies the initial ``W`` and the
            scaling).
        update: ``"ip1"``, ``"ip2"``, ``"iss"`` or a :class:`SpatialUpdate`.
        source_model: ``"laplace"``, ``"gauss"``, ``"nmf"`` or any source-model ``nn.Module``.
        n_src: number of sources (default: number of mics).
        ref_mic: reference microphone of the scaling.
        scaling: ``"projection_back"`` (least squares onto ``ref_mic``), ``"minimum_distortion"``
            (``(W^{-1})[ref_mic, k]``) or ``None``.
        normalize: ILRMA normalisation after every iteration: ``"rows"`` (rows of ``W`` and the
            source variances rescaled together to unit mean power, cost unchanged), ``None``, or
            ``"pyroomacoustics"`` (reproduces pyroomacoustics 0.10.1, which scales the
            *columns* of ``W`` while scaling the estimates as if rows were scaled; for parity
            tests only, not cost-preserving).
        overdetermined: ``"auto"`` (OverIVA background for IP1, PCA otherwise), ``"background"``
            (IP1 only) or ``"pca"``.
        load: relative diagonal loading of the weighted covariances (IP1/IP2), ``0`` for exact
            parity with unloaded references.
        checkpoint: recompute each iteration in the backward pass (``torch.utils.checkpoint``,
            non-reentrant) to save activation memory; gradients are identical.
        track_cost: compute the per-iteration cost when ``return_state=True``.
        init_iter: number of AuxIVA iterations (spherical Laplace source model, spatial update
            ``init_update``) run first to initialise ``W`` when no ``W0`` is given (``0``: start
            from the identity). A warm start that gives NMF (ILRMA) estimates already partly
            separated to fit, which makes ILRMA much less dependent on its random NMF init.
        init_update: spatial update of those iterations (default: the separator's ``update``).
        source_model_kwargs: keyword arguments for a source model given by name.
    """

    def __init__(
        self,
        n_iter: int = 50,
        update: str | SpatialUpdate = "ip1",
        source_model: str | nn.Module = "laplace",
        n_src: int | None = None,
        ref_mic: int = 0,
        scaling: str | None = "projection_back",
        normalize: str | None = None,
        overdetermined: str = "auto",
        load: float = DEFAULT_LOAD,
        checkpoint: bool = False,
        track_cost: bool = True,
        init_iter: int = 0,
        init_update: str | SpatialUpdate | None = None,
        **source_model_kwargs: Any,
    ) -> None:
        super().__init__()
        self.init_iter = check_positive_int(init_iter, "init_iter", minimum=0)
        self.init_update = None if init_update is None else _resolve_update(init_update, load)
        self.n_iter = check_positive_int(n_iter, "n_iter", minimum=0)
        self.update = _resolve_update(update, load)
        self.source_model = _resolve_source_model(source_model, **source_model_kwargs)
        if n_src is not None:
            check_positive_int(n_src, "n_src", minimum=1)
        self.n_src = n_src
        check_positive_int(ref_mic, "ref_mic", minimum=0)
        self.ref_mic = ref_mic
        check_choice("none" if scaling is None else scaling, "scaling", SCALINGS)
        self.scaling = None if scaling == "none" else scaling
        check_choice(
            "none" if normalize is None else normalize,
            "normalize",
            ["rows", "pyroomacoustics", "none"],
        )
        self.normalize = None if normalize == "none" else normalize
        check_choice(overdetermined, "overdetermined", ["auto", "background", "pca"])
        if overdetermined == "background" and self.update.square_only:
            raise ValueError(
                f"overdetermined='background' (OverIVA) needs update='ip1', got {self.update!r}; "
                "use overdetermined='pca' or 'auto'"
            )
        self.overdetermined = overdetermined
        self.load = load
        self.checkpoint = checkpoint
        self.track_cost = track_cost

    # ------------------------------------------------------------------ validation
    def _check_input(
        self, X: torch.Tensor, frame_mask: torch.Tensor | None
    ) -> tuple[int, int, int, int]:
        layout = "(..., mics, freq, frames)"
        check_tensor(X, "X", min_ndim=3, layout=layout)
        check_complex(X, "X")
        n_mics, n_freq, n_frames = X.shape[-3:]
        if n_mics < 2:
            raise ValueError(
                f"X must have at least 2 mics {layout} for blind source separation, got "
                f"shape {tuple(X.shape)} (1 mic)"
            )
        if n_mics > MAX_MICS:
            raise ValueError(
                f"X has {n_mics} 'mics' (> {MAX_MICS}) in shape {tuple(X.shape)}; expected "
                f"{layout}: did you swap the mics and freq (or frames) axes?"
            )
        n_src = self.n_src if self.n_src is not None else n_mics
        if n_src > n_mics:
            raise ValueError(
                f"n_src={n_src} sources needs at least as many mics, got {n_mics} mics in X of "
                f"shape {tuple(X.shape)}"
            )
        if n_frames < n_mics:
            what = "fewer frames than sources" if n_frames < n_src else "fewer frames than mics"
            raise ValueError(
                f"X has {what}: {n_frames} frames for {n_mics} mics / {n_src} sources in shape "
                f"{tuple(X.shape)}; expected {layout} with frames >= mics (pyroomacoustics uses "
                "(frames, freq, mics): convert with X.permute(2, 1, 0))"
            )
        if self.ref_mic >= n_mics:
            raise ValueError(
                f"ref_mic must be in [0, {n_mics}) for {n_mics} mics, got {self.ref_mic}"
            )
        check_finite(X, "X")
        if frame_mask is not None:
            check_tensor(frame_mask, "frame_mask", min_ndim=1, layout="(..., frames)")
            if frame_mask.shape[-1] != n_frames or frame_mask.shape[:-1] != X.shape[:-3]:
                raise ValueError(
                    f"frame_mask must have shape {tuple(X.shape[:-3]) + (n_frames,)} "
                    f"(batch..., frames) for X of shape {tuple(X.shape)}, got "
                    f"{tuple(frame_mask.shape)}"
                )
        return n_mics, n_freq, n_frames, n_src

    # ------------------------------------------------------------------ cost
    def _cost(self, Xr, Y, W, state, n_src, frame_mask, C) -> torch.Tensor:
        cost = self.source_model.cost(Y, state, frame_mask) - 2.0 * _logabsdet(W).sum(-1)
        if C is not None:  # OverIVA background: stationary Gaussian with ML covariance
            U = W[..., n_src:, :]
            cov = U @ C @ U.conj().transpose(-1, -2)
            cost = cost + _logabsdet(cov).sum(-1) + (W.shape[-1] - n_src) * W.shape[-3]
        return cost

    # ------------------------------------------------------------------ normalisation
    def _normalize(self, W, Y, state, n_src, frame_mask):
        from torchbss.source_models.base import masked_frame_mean, power

        if frame_mask is None:
            # mean power without a full-size temporary: a batched dot product of the real view
            Yr = torch.view_as_real(Y).flatten(-2)  # (..., n_src, freq, 2 frames)
            p = torch.linalg.vecdot(Yr, Yr).mean(-1) / Y.shape[-1]  # (..., n_src)
        else:
            p = masked_frame_mean(power(Y), frame_mask).mean(-1)  # (..., n_src)
        # a silent source (all-zero input) keeps its scale, so nothing overflows
        floor = torch.finfo(p.dtype).tiny ** 0.5
        scale = torch.where(p > floor, p.clamp_min(floor).rsqrt(), torch.ones_like(p))
        state = self.source_model.rescale(state, scale)
        if self.normalize == "pyroomacoustics" and isinstance(state, NMFState):
            state = dataclasses.replace(state, stale_scale=scale)
        if _needs_graph(Y, scale):
            Y = Y * scale[..., None, None].to(Y.dtype)
        else:  # Y is this iteration's own estimate: rescale it in place
            Y = Y.mul_(scale[..., None, None].to(Y.dtype))
        pad = torch.ones(W.shape[-1] - n_src, dtype=scale.dtype, device=scale.device)
        s = torch.cat([scale, pad.expand(scale.shape[:-1] + pad.shape)], -1).to(W.dtype)
        if self.normalize == "rows":
            W = W * s[..., None, :, None]
        else:  # pyroomacoustics 0.10.1: scales the columns of W
            W = W * s[..., None, None, :]
        return W, Y, state

    # ------------------------------------------------------------------ forward
    def forward(
        self,
        X: torch.Tensor,
        frame_mask: torch.Tensor | None = None,
        *,
        W0: torch.Tensor | None = None,
        source_state: Any = None,
        return_state: bool = False,
    ) -> torch.Tensor | SeparationResult:
        """Separate a batch of mixtures.

        Args:
            X: ``(..., mics, freq, frames)`` complex mixture STFT (complex64 or complex128).
            frame_mask: optional ``(..., frames)`` {0, 1} mask of valid frames (variable-length
                batches; padded frames should be zero in ``X``).
            W0: optional initial demixing matrices ``(..., freq, rows, cols)``. Determined or
                OverIVA: ``rows`` is ``n_src`` or ``mics`` and ``cols == mics`` (missing
                background rows are completed); PCA route: ``(..., freq, n_src, n_src)`` acting
                on the principal components. Default: identity.
            source_state: optional initial source-model state (e.g. ``NMFState`` warm start).
            return_state: return a :class:`SeparationResult` instead of ``Y``.

        Returns:
            ``Y`` ``(..., n_src, freq, frames)``, or a :class:`SeparationResult`.
        """
        n_mics, n_freq, n_frames, n_src = self._check_input(X, frame_mask)
        use_pca = n_src < n_mics and (self.update.square_only or self.overdetermined == "pca")
        Q = None
        Xr = X
        if use_pca:
            Q = _pca(X, n_src, frame_mask)
            Xr = demix(Q, X, n_src)
        n_rows = Xr.shape[-3]
        C = None
        if n_src < n_rows:
            ones = torch.ones(X.shape[:-3] + (1, 1, n_frames), dtype=X.real.dtype, device=X.device)
            C = weighted_covariance(Xr, ones, frame_mask)[..., 0, :, :, :]
        fast = getattr(self.update, "uses_outer", False)
        XX = outer_products(Xr) if fast else None
        Xf = Xr.transpose(-3, -2).contiguous() if fast else None
        W = self._initial_W(Xr, W0, n_src, C)
        if W0 is None and self.init_iter > 0:
            W = self._warm_start(Xr, W, n_src, frame_mask, C, XX, Xf)
        Y = demix(W, Xr, n_src)
        model = self.source_model
        state = source_state if source_state is not None else model.init_state(Y, frame_mask)
        track = return_state and self.track_cost
        costs, steps = [], []

        def cost_now(W_, Y_, state_):
            with torch.no_grad():
                return self._cost(Xr, Y_, W_, state_, n_src, frame_mask, C)

        if track:
            costs.append(cost_now(W, Y, state))

        def step(W, Y, state, record: bool = False):
            weights, state = model(Y, state, frame_mask)
            if record:
                c1 = cost_now(W, Y, state)
            W, Y = self.update(Xr, Y, W, weights, n_src, frame_mask, C, XX=XX, Xf=Xf)
            if record:
                c2 = cost_now(W, Y, state)
            if self.normalize is not None:
                W, Y, state = self._normalize(W, Y, state, n_src, frame_mask)
            if record:
                steps.append(torch.stack([c1, c2, cost_now(W, Y, state)], -1))
            return W, Y, state

        for _ in range(self.n_iter):
            if self.checkpoint and torch.is_grad_enabled():
                W, Y, state = _checkpoint(step, W, Y, state, use_reentrant=False)
            else:
                W, Y, state = step(W, Y, state, record=track)
            if track:
                costs.append(cost_now(W, Y, state))

        if Q is not None:  # back to the original mics: square (mics, mics) demixing
            eye = torch.eye(n_mics - n_src, dtype=W.dtype, device=W.device)
            W_full = (
                torch.cat(
                    [
                        torch.cat([W, W.new_zeros(W.shape[:-1] + (n_mics - n_src,))], -1),
                        torch.cat(
                            [
                                W.new_zeros(W.shape[:-2] + (n_mics - n_src, n_src)),
                                eye.expand(W.shape[:-2] + eye.shape),
                            ],
                            -1,
                        ),
                    ],
                    -2,
                )
                @ Q
            )
        else:
            W_full = W
        if self.scaling == "projection_back":
            Y = projection_back(Y, X, self.ref_mic, frame_mask)
        elif self.scaling == "minimum_distortion":
            Y = minimum_distortion(Y, W_full, self.ref_mic, load=1e-12)
        if not return_state:
            return Y
        return SeparationResult(
            Y=Y,
            W=W_full,
            source_state=state,
            cost=torch.stack(costs, -1) if track else None,
            cost_steps=torch.stack(steps, -2) if (track and steps) else None,
        )

    def _warm_start(self, Xr, W, n_src, frame_mask, C, XX, Xf) -> torch.Tensor:
        """``init_iter`` AuxIVA iterations (Laplace model) from ``W`` on the same mixture."""
        update = self.init_update if self.init_update is not None else self.update
        if update.square_only and C is not None:
            update = IP1(self.load)
        if not getattr(update, "uses_outer", False):
            XX = Xf = None
        elif XX is None:
            XX, Xf = outer_products(Xr), Xr.transpose(-3, -2).contiguous()
        Y = demix(W, Xr, n_src)
        for _ in range(self.init_iter):
            weights = laplace_weights(Y)
            W, Y = update(Xr, Y, W, weights, n_src, frame_mask, C, XX=XX, Xf=Xf)
        return W

    def _initial_W(self, Xr, W0, n_src, C) -> torch.Tensor:
        n_rows, n_freq = Xr.shape[-3], Xr.shape[-2]
        batch = Xr.shape[:-3]
        if W0 is None:
            W = torch.eye(n_rows, dtype=Xr.dtype, device=Xr.device).expand(
                batch + (n_freq, n_rows, n_rows)
            )
        else:
            check_tensor(W0, "W0", min_ndim=3, layout="(..., freq, rows, mics)")
            if (
                W0.shape[-1] != n_rows
                or W0.shape[-2] not in (n_src, n_rows)
                or W0.shape[-3] != n_freq
            ):
                raise ValueError(
                    f"W0 must have shape (..., {n_freq}, {n_src} or {n_rows}, {n_rows}) "
                    f"(freq, rows, mics), got {tuple(W0.shape)}"
                )
            W = W0.to(Xr.dtype).expand(batch + W0.shape[-3:])
            if W.shape[-2] < n_rows:
                pad = torch.zeros(
                    batch + (n_freq, n_rows - n_src, n_rows), dtype=Xr.dtype, device=Xr.device
                )
                W = torch.cat([W, pad], -2)
        if C is not None:
            W = background_update(W, C, n_src, load=self.load)
        return W

    def extra_repr(self) -> str:
        return (
            f"n_iter={self.n_iter}, update={self.update.name!r}, n_src={self.n_src}, "
            f"ref_mic={self.ref_mic}, scaling={self.scaling!r}, normalize={self.normalize!r}"
        )
