"""What online AuxIVA and online ILRMA share: the demixing state, the covariance recursion,
the IP1 sweep (the batch separators' own :func:`~torchbss.updates.ip1_sweep`), the OverIVA
background and the output scale.

Public state: ``W``, ``A = W^{-1}`` ``(..., freq, M, M)``, ``V`` ``(..., K, freq, M, M)``,
``C`` ``(..., freq, M, M)`` (only with ``n_src < mics``), ``recent``
``(..., freq, 2 M, window)`` real (the last frames as rows ``[Re x; Im x]`` per bin,
ring-buffered by the frame counter, for the running frequency-permutation alignment; only with
``realign_every > 0``). Inside the frame loop ``W``, ``A`` are frequency-last
``(..., M, M, freq)`` and ``V`` packed (real diagonal ``Vd`` ``(..., K, M, freq)``, strict
upper triangle ``Vo`` ``(..., K, M (M - 1) / 2, freq)``), so the per-bin ``M x M`` algebra
runs as elementwise operations over contiguous frequency vectors. The conversion is exact.

With ``compile=True`` the frame loop runs in real arithmetic (TorchInductor generates no code
for complex tensors): each frame is one compiled call of the separator's ``*_frame_planes``
function, the internal ``W``, ``A`` are ``(..., 2, M, M, F)`` and ``Vo``
``(..., 2, K, M (M - 1) / 2, F)`` (real and imaginary planes), a frame enters as
``(..., 2, M, F)`` and leaves as ``(..., K, F, 2)``. Block in, block out: the conversions run
once per ``step`` call, not per frame (once per stream with
:class:`~torchbss.separators.online.OnlineStream`). The running realignment is compiled too:
the window's alignment features (:func:`window_features_planes`), the permutation search
(:func:`~torchbss.updates.alignment.cluster_permutation`) and the state's permutation are one
kernel each.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from einops import einsum
from torch import nn

from torchbss._compile import CompiledKernels
from torchbss._validation import check_bool, check_positive_int, check_range
from torchbss.separators.base import SeparationResult
from torchbss.separators.online.base import OnlineSeparator, State, inverse_softplus
from torchbss.updates import background_update, ip1_sweep, loaded_inverse
from torchbss.updates.alignment import cluster_permutation, permute_along, power_features
from torchbss.updates.base import demix_power
from torchbss.updates.fused import (
    covariance_update_planes,
    demix_planes,
    from_planes,
    ip1_step_planes,
    output_planes,
    to_planes,
)
from torchbss.updates.hermitian import (
    SWEEP_MAX,
    from_freq_last,
    pack_hermitian,
    packed_outer,
    to_freq_last,
    unpack_hermitian,
)

__all__ = [
    "OnlineSpatialSeparator",
    "REALIGN_EVERY",
    "REALIGN_ROUNDS",
    "REALIGN_SILENCE",
    "REALIGN_WINDOW",
    "WARMUP_FRAMES",
    "WARMUP_SWEEPS",
    "demix_frame",
    "ip1_step_stacked",
    "permute_state",
    "spatial_frame_planes",
    "store_frames",
    "sweeps_planes",
    "window_features_planes",
]

#: default period (frames) of the running frequency-permutation alignment (0: off) and the
#: frames it looks back over (128 frames: 4.1 s at hop 512 / 16 kHz); chosen on the `val`
#: rooms of the validation protocol (bench/validation, BENCHMARKS.md)
REALIGN_EVERY = 8
REALIGN_WINDOW = 128
#: most centroid / assignment rounds of one realignment (the next one goes on from its result)
REALIGN_ROUNDS = 2
#: during its first WARMUP_FRAMES frames a stream runs WARMUP_SWEEPS IP1 sweeps per frame (on
#: the frame's covariances) instead of one, so the demixing catches up with the fast-moving
#: statistics of the start; chosen for online AuxIVA on the `val` rooms (16-250 frames x
#: 2/4/8 sweeps; online ILRMA keeps one sweep by default)
WARMUP_FRAMES = 64
WARMUP_SWEEPS = 4
#: frames of the window quieter than this times its median frame power are left out of the
#: realignment (see :func:`~torchbss.updates.alignment.power_permutation`): the near-silent
#: frames at a stream's start weighed as much as speech, and their leaving the window flipped
#: a third of the bins at once; chosen on the `val` rooms (0.001-0.4)
REALIGN_SILENCE = 0.1
#: internal state entries: the realignments' scratch buffers (see ``begin_block``)
_POWER, _WORK = "_realign_power", "_realign_work"


def _realign_chunk(n_freq: int, n_src: int, window: int, device: torch.device) -> int:
    """Streams per piece of a realignment: on CPU output powers of at most ~2 MB (float32),
    so that they stay in cache; elsewhere all streams at once."""
    if device.type != "cpu":
        return 1 << 62
    return max(1, (1 << 19) // (n_freq * n_src * window))


def window_features_planes(
    W: torch.Tensor,
    Xp: torch.Tensor,
    n_src: int,
    frame_mask: torch.Tensor | None,
    silence: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The realignment's features (:func:`~torchbss.updates.alignment.power_features`) of the
    window demixed by the current ``W``, written for ``torch.compile``.

    Args:
        W: ``(n, 2, M, M, F)`` real and imaginary planes of the demixing.
        Xp: ``(n, F, 2 M, T)`` the window buffer (rows ``[Re x; Im x]`` per bin).
        n_src: ``K``, the first rows of ``W``.
        frame_mask, silence: as for :func:`~torchbss.updates.alignment.power_features`.

    Returns:
        ``z`` ``(n, F, K, T)`` and ``weight`` ``(n, F)``.
    """
    n_mics = Xp.shape[-2] // 2
    Wk = W[:, :, :n_src].movedim(-1, -3)  # (n, 2, F, K, M)
    Wr, Wi = Wk[:, 0], Wk[:, 1]
    # y_k = sum_m W_km x_m written out over the mics (complex multiply-adds on the planes):
    # compiled, one loop over (bin, source, frame) in the powers' layout reads each bin's
    # frames once, and Y is never written out (a matmul would write it; a sum over a
    # broadcast product re-read the window once per output row)
    yr = yi = torch.zeros((), dtype=Xp.dtype, device=Xp.device)
    for m in range(n_mics):
        xr, xi = Xp[..., None, m, :], Xp[..., None, n_mics + m, :]  # (n, F, 1, T)
        wr, wi = Wr[..., m, None], Wi[..., m, None]  # (n, F, K, 1)
        yr, yi = yr + (wr * xr - wi * xi), yi + (wr * xi + wi * xr)
    P = yr * yr + yi * yi  # (n, F, K, T)
    return power_features(P.movedim(-2, -3), frame_mask, silence)


def store_frames(recent: torch.Tensor, X: torch.Tensor, first: int) -> None:
    """Write frames into the realignment's window buffer, in place.

    Args:
        recent: ``(..., F, 2 M, window)`` real ring buffer, planar rows ``[Re x; Im x]`` per bin;
            the frame with counter ``c`` goes to slot ``c % window``.
        X: ``(..., M, F, n)`` complex: consecutive frames (only the last ``window`` are kept).
        first: the counter of the frame ``X[..., 0]``.
    """
    window, n_mics = recent.shape[-1], X.shape[-3]
    if X.shape[-1] > window:
        first += X.shape[-1] - window
        X = X[..., -window:]
    lead = X.ndim - 3
    # (..., M, F, n, 2) -> (..., F, 2, M, n): the buffer's rows are (part, mic)
    src = torch.view_as_real(X.detach()).permute(*range(lead), lead + 1, lead + 3, lead, lead + 2)
    dst = recent.unflatten(-2, (2, n_mics))  # (..., F, 2, M, window)
    n, start = src.shape[-1], first % window
    head = min(n, window - start)  # the slots up to the ring's end, then from its start
    dst[..., start : start + head].copy_(src[..., :head])
    if n > head:
        dst[..., : n - head].copy_(src[..., head:])


def permute_state(state: State, perm: torch.Tensor, source_keys: Sequence[str]) -> State:
    """A public online state with its sources permuted per bin.

    Args:
        state: public state: ``W`` ``(..., freq, R, M)``, ``A = W^{-1}`` ``(..., freq, M, R)``
            and the per-source entries ``(..., K, freq, ...)`` named in ``source_keys``.
        perm: ``(..., freq, K)`` int64: slot ``k`` of bin ``f`` takes source ``perm[..., f, k]``
            (:func:`~torchbss.updates.alignment.frequency_permutation`).
        source_keys: the per-source entries to permute.

    Returns:
        A new dict: the first ``K`` rows of ``W``, columns of ``A`` and per-source entries
        permuted (an OverIVA background is kept); ``A`` stays the inverse of ``W``.
    """
    n_lead = perm.ndim - 2
    # the columns of A = W^{-1} follow the rows of W
    dims = {"W": (-2, -3), "A": (-1, -3)} | {key: (n_lead, n_lead + 1) for key in source_keys}
    return _permuted(state, perm, dims)


def _permuted(state: State, perm: torch.Tensor, dims: dict[str, tuple[int, int]]) -> State:
    """``state`` with the entries of ``dims`` (``key: (source_dim, freq_dim)``) permuted."""
    out = dict(state)
    for key, (source_dim, freq_dim) in dims.items():
        out[key] = permute_along(state[key], perm, source_dim, freq_dim)
    return out


def demix_frame(W: torch.Tensor, x: torch.Tensor, n_src: int) -> torch.Tensor:
    """``y = W[:n_src] x`` for one frame, frequency last: ``W`` ``(..., M, M, freq)``,
    ``x`` ``(..., M, freq)`` -> ``(..., n_src, freq)``."""
    return (W[..., :n_src, :, :] * x.unsqueeze(-3)).sum(-2)


def ip1_step_stacked(
    W: torch.Tensor,
    A: torch.Tensor,
    Vd: torch.Tensor,
    Vo: torch.Tensor,
    load: torch.Tensor,
    eps: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`~torchbss.updates.fused.ip1_step_planes` on stacked planes: ``W``, ``A``
    ``(..., 2, M, M, F)``, ``Vd`` ``(..., K, M, F)``, ``Vo`` ``(..., 2, K, P, F)``."""
    W_re, W_im, A_re, A_im = ip1_step_planes(
        W[..., 0, :, :, :], W[..., 1, :, :, :], A[..., 0, :, :, :], A[..., 1, :, :, :],
        Vd, Vo[..., 0, :, :, :], Vo[..., 1, :, :, :], load, eps, eps,
    )  # fmt: skip
    return torch.stack([W_re, W_im], -4), torch.stack([A_re, A_im], -4)


def spatial_frame_planes(
    x: torch.Tensor,
    W: torch.Tensor,
    A: torch.Tensor,
    Vd: torch.Tensor,
    Vo: torch.Tensor,
    beta: torch.Tensor,
    phi: torch.Tensor,
    load: torch.Tensor,
    eps: float,
    ref_mic: int,
) -> tuple[torch.Tensor, ...]:
    """The spatial half of a frame in real arithmetic (compiled frames): the covariance
    recursion with the weights ``phi`` ``(..., K, F or 1)``, the IP1 step and the scaled output.

    Layout as :func:`ip1_step_stacked`, ``x`` ``(..., 2, M, F)``.

    Returns:
        ``(y, W, A, Vd, Vo)`` with the output ``y`` ``(..., K, F, 2)``.
    """
    Vd, Vo = covariance_update_planes(Vd, Vo, x, beta, phi)
    y, W, A = sweeps_planes(x, W, A, Vd, Vo, load, eps, ref_mic, 1)
    return y, W, A, Vd, Vo


def sweeps_planes(
    x: torch.Tensor,
    W: torch.Tensor,
    A: torch.Tensor,
    Vd: torch.Tensor,
    Vo: torch.Tensor,
    load: torch.Tensor,
    eps: float,
    ref_mic: int,
    n: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``n`` IP1 sweeps on the frame's covariances and the scaled output (compiled frames: one
    sweep in :func:`spatial_frame_planes`, the warm-up frames' extra ones after it; layout as
    :func:`spatial_frame_planes`). Returns ``(y, W, A)``."""
    for _ in range(n):
        W, A = ip1_step_stacked(W, A, Vd, Vo, load, eps)
    return output_planes(*demix_planes(W, x, Vd.shape[-3]), A, ref_mic), W, A


class OnlineSpatialSeparator(CompiledKernels, OnlineSeparator):
    """Base of online AuxIVA and ILRMA: state, recursion, IP1 sweep, output scale.

    Args:
        n_src: number of sources (``None``: number of mics, fixed at ``init_state``).
        ref_mic: reference microphone of the output scale (minimal distortion principle).
        load: relative diagonal loading of the covariances (``> 0``; see
            :func:`~torchbss.updates.diagonal_loading`). Floored at 16x the resolution of the
            input's real dtype (``16 torch.finfo(dtype).eps``: 1.9e-6 for complex64): below it
            the loading cannot keep the early, rank-deficient covariances invertible.
        compile: run each frame (demixing, source model, covariance recursion, IP1 step with
            its loaded inverses, NMF steps, output scale) as one ``torch.compile`` kernel in
            real arithmetic (:mod:`torchbss.updates.fused`): the same result to rounding,
            faster per frame once compiled (the first frames of each stream shape compile,
            ~10-30 s; needs a C++ compiler on CPU). Only for ``n_src == mics <= 4``.
        **kwargs: see :class:`~torchbss.separators.online.base.OnlineSeparator`.
    """

    def __init__(
        self,
        n_src: int | None,
        ref_mic: int,
        load: float,
        forget: float,
        eps: float,
        trainable: bool,
        forget_per_freq: bool,
        n_freq: int | None,
        tbptt: int | None,
        checkpoint: bool,
        checkpoint_block: int,
        compile: bool = False,
        realign_every: int = REALIGN_EVERY,
        realign_window: int = REALIGN_WINDOW,
        realign_rounds: int = REALIGN_ROUNDS,
        realign_silence: float = REALIGN_SILENCE,
        warmup_frames: int = WARMUP_FRAMES,
        warmup_sweeps: int = WARMUP_SWEEPS,
    ) -> None:
        super().__init__(
            forget, eps, trainable, forget_per_freq, n_freq, tbptt, checkpoint, checkpoint_block
        )
        self.compile = check_bool(compile, "compile")
        self.realign_every = check_positive_int(realign_every, "realign_every", minimum=0)
        self.realign_window = check_positive_int(realign_window, "realign_window", minimum=2)
        self.realign_rounds = check_positive_int(realign_rounds, "realign_rounds")
        self.realign_silence = check_range(realign_silence, "realign_silence", 0.0, 1.0)
        self.warmup_frames = check_positive_int(warmup_frames, "warmup_frames", minimum=0)
        self.warmup_sweeps = check_positive_int(warmup_sweeps, "warmup_sweeps")
        if n_src is not None:
            check_positive_int(n_src, "n_src")
        self.n_src = n_src
        self.ref_mic = check_positive_int(ref_mic, "ref_mic", minimum=0)
        check_range(load, "load", 0.0, math.inf, low_inclusive=False)
        self.register_trainable("load_raw", inverse_softplus(torch.tensor(float(load)).double()))

    def parameters_for(self, rdtype):
        params = super().parameters_for(rdtype)
        # floored at the dtype's resolution: a smaller relative loading leaves the rank-1
        # covariances of the first frames singular (silent NaN from the first frame)
        load = nn.functional.softplus(self.load_raw.to(rdtype))
        params["load"] = load.clamp_min(16 * torch.finfo(rdtype).eps)
        return params

    def resolve_n_src(self, n_mics: int) -> int:
        """The number of sources for ``n_mics`` mics (checked)."""
        if self.n_src is None:
            return n_mics
        if self.n_src > n_mics:
            raise ValueError(
                f"n_src={self.n_src} is larger than the number of mics {n_mics}; online "
                "AuxIVA/ILRMA need n_src <= mics (use OnlineISNMF for single-channel "
                "separation)"
            )
        return self.n_src

    def spatial_state(self, X: torch.Tensor) -> State:
        """Identity ``W`` and ``A``, zero covariances, zero frame counters."""
        n_mics, n_freq = X.shape[-3], X.shape[-2]
        n_src = self.resolve_n_src(n_mics)
        if self.ref_mic >= n_mics:
            raise ValueError(f"ref_mic={self.ref_mic} but X has only {n_mics} mics")
        if self.compile and (n_src != n_mics or n_mics > SWEEP_MAX):
            raise ValueError(
                f"compile=True supports n_src == mics <= {SWEEP_MAX}, got {n_src} sources and "
                f"{n_mics} mics; use compile=False"
            )
        if self.n_freq is not None and n_freq != self.n_freq:
            raise ValueError(
                f"X has {n_freq} frequency bins but the model was built with n_freq={self.n_freq}"
            )
        batch = X.shape[:-3]
        opts = {"dtype": X.dtype, "device": X.device}
        eye = torch.eye(n_mics, **opts).expand(batch + (n_freq, n_mics, n_mics))
        state = {
            "W": eye.clone(),
            "A": eye.clone(),
            "V": torch.zeros(batch + (n_src, n_freq, n_mics, n_mics), **opts),
            "frame": torch.zeros(batch, dtype=torch.int64, device=X.device),
        }
        if n_src < n_mics:
            state["C"] = torch.zeros(batch + (n_freq, n_mics, n_mics), **opts)
        if self.realign_every:  # the last frames, planar: rows [Re x; Im x] per bin
            shape = batch + (n_freq, 2 * n_mics, self.realign_window)
            state["recent"] = torch.zeros(shape, dtype=X.real.dtype, device=X.device)
        return state

    def state_block_shape(self, state: State) -> tuple[int, ...] | None:
        W = state.get("W")
        if not isinstance(W, torch.Tensor) or W.ndim < 3:
            return None
        return tuple(W.shape[:-3]) + (W.shape[-1], W.shape[-3])

    def to_internal(self, state: State) -> State:
        out = dict(state)
        out["W"], out["A"] = to_freq_last(state["W"]), to_freq_last(state["A"])
        out["Vd"], out["Vo"] = pack_hermitian(out.pop("V"))
        if self.compile:
            for key in ("W", "A", "Vo"):
                out[key] = to_planes(out[key], -4)
            # contiguous (e.g. not the expanded initial bases): the compiled kernels are
            # specialised on strides, a second layout would compile them again
            out = {key: value.contiguous() for key, value in out.items()}
        return out

    def to_public(self, state: State) -> State:
        out = {k: v for k, v in state.items() if k not in (_POWER, _WORK)}
        W, A, Vo = out["W"], out["A"], out.pop("Vo")
        if self.compile:
            W, A, Vo = from_planes(W, -4), from_planes(A, -4), from_planes(Vo, -4)
        out["W"], out["A"] = from_freq_last(W), from_freq_last(A)
        out["V"] = unpack_hermitian(out.pop("Vd"), Vo).contiguous()
        return out

    # ----- the running frequency-permutation alignment -----------------------------------------
    #: per-source state entries ``(..., K, freq, ...)`` permuted with the rows of ``W``
    source_keys: tuple[str, ...] = ("V",)

    inplace_keys = ("recent",)

    def begin_block(self, state: State) -> State:
        state = super().begin_block(state)  # the window buffer: the block's own copy
        if "recent" in state and not self.compile:  # (the compiled features need no buffers)
            recent = state["recent"]
            # scratch of the realignments of this block (internal only, dropped by to_public):
            # the output powers (..., F, K, window) and the block demixing's (..., F, 2 K,
            # window), allocated once per block (fresh large tensors per realignment cost page
            # faults)
            n_src, shape = state["Vd"].shape[-3], recent.shape
            n_freq, window = shape[-3], shape[-1]
            n = min(math.prod(shape[:-3]), _realign_chunk(n_freq, n_src, window, recent.device))
            opts = {"dtype": recent.dtype, "device": recent.device}
            state[_POWER] = torch.empty((n, n_freq, n_src, window), **opts)
            state[_WORK] = torch.empty((n, n_freq, 2 * n_src, window), **opts)
        return state

    def after_frame(self, X, t, before, state, count):
        if not self.realign_every:
            return state
        recent, window, every = state["recent"], self.realign_window, self.realign_every
        if count is not None:  # the usual case: one counter, no skipped frame, no host sync
            # the frames since the last realignment go into the window buffer together, when
            # the next one is due (end_block stores the rest): one strided write per frame
            # touched a cache line per bin and mic
            if (count + 1) % every:
                return state
            first = max(0, t + 1 - every)
            store_frames(recent, X[..., first : t + 1], count - (t - first))
            return self.realign(state, None, count + 1)
        xt = X[..., t].detach().transpose(-1, -2)  # (..., F, M)
        after = state["frame"]
        moved = after != before  # (...): streams that took this frame
        slot = (before % window).reshape(before.shape + (1, 1, 1))
        slot = slot.expand(recent.shape[:-1] + (1,))
        old = recent.gather(-1, slot)[..., 0]
        new = torch.where(moved[..., None, None], torch.cat([xt.real, xt.imag], -1), old)
        recent.scatter_(-1, slot, new[..., None])
        due = moved & (after % every == 0)
        if not bool(due.any()):
            return state
        return self.realign(state, due)

    def end_block(self, X, state, count):
        if not self.realign_every or count is None:  # without a common counter: stored already
            return state
        n = X.shape[-1]
        pending = min(n, (count + n) % self.realign_every)  # the frames after the last realignment
        if pending:
            store_frames(state["recent"], X[..., n - pending :], count + n - pending)
        return state

    def realign(self, state: State, due: torch.Tensor | None, count: int | None = None) -> State:
        """Undo frequency-block permutations of the current demixing (internal state).

        The current ``W`` demixes the last ``realign_window`` frames (``state["recent"]``;
        those quieter than ``realign_silence`` times the window's median frame power are left
        out); the batch alignment (:func:`~torchbss.updates.alignment.power_permutation`) finds
        the per-bin permutation of its outputs that aligns their power-ratio envelopes, and the
        rows of ``W``, the columns of ``A`` and the per-source statistics (:attr:`source_keys`)
        of every bin are permuted alike (in the internal layout, :meth:`internal_source_dims`),
        so the recursion goes on from the aligned solution. ``due``: ``(...)`` streams to
        realign (``None``: all); ``count``: the frames every stream has seen, when known (a full
        window needs no frame mask). The choice passes no gradient; the permuted state does.
        """
        recent, window, frame = state["recent"], self.realign_window, state["frame"]
        n_src, n_freq = state["Vd"].shape[-3], recent.shape[-3]
        mask = None
        if count is None or count < window:  # slots not yet written count for nothing
            filled = frame.clamp_max(window)[..., None]  # (..., 1)
            mask = torch.arange(window, device=recent.device) < filled  # (..., window)
        lead = frame.shape
        W = state["W"].detach()  # (..., M, M, F) or with compile (..., 2, M, M, F) planes
        # streams a few at a time, so that a chunk's powers stay in cache (a batch of 64 4x4
        # streams as one piece streams ~0.7 GB per realignment)
        flat_W = W.reshape((-1,) + W.shape[len(lead) :])
        flat_recent = recent.reshape((-1,) + recent.shape[-3:])
        if mask is not None:
            mask = mask.expand(lead + (window,)).reshape(-1, window)
        flat_due = None if due is None else due.reshape(-1)
        chunk = _realign_chunk(n_freq, n_src, window, W.device)
        perm = torch.arange(n_src, device=W.device).repeat(flat_W.shape[0], n_freq, 1)
        with torch.no_grad():
            for i in range(0, flat_W.shape[0], chunk):
                part = slice(i, i + chunk)
                if flat_due is not None and not bool(flat_due[part].any()):
                    continue
                z, weight = self.window_features(
                    state, flat_W[part], flat_recent[part], None if mask is None else mask[part]
                )
                perm[part] = self.window_permutation(z, weight)  # (n, F, K)
        perm = perm.reshape(lead + (n_freq, n_src))
        identity = torch.arange(n_src, device=perm.device).expand_as(perm)
        if due is not None:
            perm = torch.where(due[..., None, None], perm, identity)
        if torch.equal(perm, identity):  # nothing moves (the usual case once aligned)
            return state
        return self.permute_internal(state, perm)

    def permute_internal(self, state: State, perm: torch.Tensor) -> State:
        """The internal ``state`` with its sources permuted per bin (``perm`` ``(..., F, K)``;
        :meth:`internal_source_dims`)."""
        dims = self.internal_source_dims(perm.ndim - 2)
        if not self.compile:
            return _permuted(state, perm, dims)
        # compiled: the gathers along the frequency-last entries as one loop each (eager, an
        # elementwise gather reads an index per element)
        return {**state, **self.kernel(_permuted)({k: state[k] for k in dims}, perm, dims)}

    def window_features(
        self, state: State, W: torch.Tensor, Xp: torch.Tensor, mask: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The features of one piece of a realignment: ``W`` ``(n, M, M, F)`` (with compile
        ``(n, 2, M, M, F)``), ``Xp`` ``(n, F, 2 M, T)``, ``mask`` ``(n, T)`` or ``None`` ->
        ``z`` ``(n, F, K, T)``, ``weight`` ``(n, F)``
        (:func:`~torchbss.updates.alignment.power_features`)."""
        n_src, silence = state["Vd"].shape[-3], self.realign_silence
        if self.compile:
            return self.kernel(window_features_planes)(W, Xp, n_src, mask, silence)
        out = work = None
        if _POWER in state:  # (n, K, F, window) view of the (n, F, K, window) buffer
            n = W.shape[0]
            out = state[_POWER].reshape((-1,) + state[_POWER].shape[-3:])[:n].movedim(-2, -3)
            work = state[_WORK].reshape((-1,) + state[_WORK].shape[-3:])[:n]
        P = demix_power(W, Xp, n_src, out, work)  # (n, K, F, T)
        return power_features(P, mask, silence, overwrite=True)

    def window_permutation(self, z: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """The permutation search of one piece of a realignment on the features of
        :meth:`window_features` (:func:`~torchbss.updates.alignment.cluster_permutation`;
        compiled, every round runs: the same permutations)."""
        return self.kernel(cluster_permutation)(z, weight, self.realign_rounds)

    def internal_source_dims(self, n_lead: int) -> dict[str, tuple[int, int]]:
        """The internal state's per-source entries as ``key: (source_dim, freq_dim)``: the rows
        of ``W``, the columns of ``A`` (eager ``(..., M, M, F)`` or planes ``(..., 2, M, M,
        F)``), the packed covariances ``Vd``, ``Vo`` and the other :attr:`source_keys`, which
        keep their public layout ``(..., K, F, ...)``."""
        dims = {"W": (-3, -1), "A": (-2, -1), "Vd": (-3, -1), "Vo": (-3, -1)}
        return dims | {key: (n_lead, n_lead + 1) for key in self.source_keys if key != "V"}

    def frame_inputs(self, X: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        if not self.compile:
            return super().frame_inputs(X)
        # (frames, ..., 2, M, F): one transposing copy, each frame a view
        return to_planes(X, -4).movedim(-1, 0).contiguous().unbind(0)

    def frame_outputs(self, out: torch.Tensor) -> torch.Tensor:
        if self.compile:  # (frames, ..., K, F, 2) planes
            out = torch.view_as_complex(out)
        return super().frame_outputs(out)  # (..., K, F, frames)

    def make_result(self, out: torch.Tensor, state: State) -> SeparationResult:
        return SeparationResult(sources=self.block_sources(out), state=state, demixing=state["W"])

    # ----- the per-frame pieces ------------------------------------------------------------------
    @staticmethod
    def update_covariances(
        state: State, x: torch.Tensor, beta: torch.Tensor, phi: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``V_k <- (1 - beta) V_k + beta phi_k x x^H`` in packed form.

        Args:
            state: internal state with ``Vd`` ``(..., K, M, F)`` and ``Vo``.
            x: ``(..., M, F)`` the frame.
            beta: ``(..., F or 1)`` step sizes.
            phi: ``(..., K, F or 1)`` weights of the sources.
        """
        xd, xo = packed_outer(x)
        keep = (1.0 - beta).unsqueeze(-2).unsqueeze(-2)  # (..., 1, 1, F)
        c = (beta.unsqueeze(-2) * phi).unsqueeze(-2)  # (..., K, 1, F)
        Vd = keep * state["Vd"] + c * xd.unsqueeze(-3)
        Vo = keep * state["Vo"] + c * xo.unsqueeze(-3)
        return Vd, Vo

    @staticmethod
    def update_mixture_covariance(C: torch.Tensor, x: torch.Tensor, beta: torch.Tensor):
        """``C <- (1 - beta) C + beta x x^H`` in the public ``(..., F, M, M)`` layout."""
        b = beta[..., None, None]
        return (1.0 - b) * C + b * einsum(x, x.conj(), "... m f, ... n f -> ... f m n")

    def spatial_step(
        self,
        W: torch.Tensor,
        A: torch.Tensor,
        Vd: torch.Tensor,
        Vo: torch.Tensor,
        C: torch.Tensor | None,
        load: torch.Tensor,
        warmup: tuple[int, torch.Tensor | None] = (0, None),
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """IP1 on every source row; with ``C``, OverIVA background rows after each row.

        ``warmup``: ``(extra, warm)`` from :meth:`warmup`: ``extra`` more sweeps on the same
        covariances, for the streams in ``warm`` ``(...)`` (``None``: all).
        """
        V_inv = loaded_inverse(Vd, Vo, load, self.eps)
        W1, A1 = self._sweep(W, A, V_inv, C, load)
        extra, warm = warmup
        if not extra:
            return W1, A1
        W, A = W1, A1
        for _ in range(extra):
            W, A = self._sweep(W, A, V_inv, C, load)
        if warm is None:
            return W, A
        mask = warm.reshape(warm.shape + (1, 1, 1))
        return torch.where(mask, W, W1), torch.where(mask, A, A1)

    def _sweep(self, W, A, V_inv, C, load):
        if C is None:
            return ip1_sweep(W, A, V_inv, self.eps)
        n_src = V_inv.shape[-4]
        for k in range(n_src):
            W, _ = ip1_sweep(W, A, V_inv[..., k : k + 1, :, :, :], self.eps, [k])
            Wp = background_update(from_freq_last(W), C, n_src, load=load)
            W, A = to_freq_last(Wp), to_freq_last(torch.linalg.inv(Wp))
        return W, A

    def warmup(self, state: State, count: int | None) -> tuple[int, torch.Tensor | None]:
        """Extra IP1 sweeps of this frame: ``(extra, warm)``, ``warm`` ``(...)`` the streams
        still in their first ``warmup_frames`` frames (``None``: all of them)."""
        extra = self.warmup_sweeps - 1
        if not extra or not self.warmup_frames:
            return 0, None
        if count is not None:  # one counter for all streams: no mask, no host sync
            return (extra, None) if count < self.warmup_frames else (0, None)
        warm = state["frame"] < self.warmup_frames
        if not bool(warm.any()):
            return 0, None
        return extra, warm

    def warmup_planes(self, x, y, W, A, Vd, Vo, load, warmup):
        """:meth:`spatial_step`'s extra sweeps on the compiled frames' planes: ``(y, W, A)``."""
        extra, warm = warmup
        if not extra:
            return y, W, A
        y2, W2, A2 = self.kernel(sweeps_planes)(
            x, W, A, Vd, Vo, load, self.eps, self.ref_mic, extra
        )
        if warm is None:
            return y2, W2, A2
        m_y, m_w = (warm.reshape(warm.shape + (1,) * n) for n in (3, 4))
        return torch.where(m_y, y2, y), torch.where(m_w, W2, W), torch.where(m_w, A2, A)

    def output(self, W: torch.Tensor, A: torch.Tensor, x: torch.Tensor, n_src: int):
        """``y = W_t x_t`` scaled by the minimal distortion principle: ``y_k (W^{-1})[ref, k]``."""
        return demix_frame(W, x, n_src) * A[..., self.ref_mic, :n_src, :]
