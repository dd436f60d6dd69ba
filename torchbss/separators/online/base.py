"""Shared machinery of the online (frame-by-frame) separators: explicit state, frame loop.

Every online separator follows the separator contract (:mod:`torchbss.separators.base`)::

    sep = OnlineILRMA(n_freq=1025)
    res = sep(X)                               # whole signal, (..., mics, freq, frames)
    state = sep.init_state(X_first_block)      # dict of tensors (torch.save-able)
    res = sep.step(X_block, state)             # any block length >= 0 frames; res.state next

``sep(X)`` is exactly ``step`` applied to all frames from ``init_state(X)``: the state holds
everything the recursion needs (demixing matrices and their inverse, weighted covariances, NMF
factors and statistics, a per-stream frame counter), so splitting a stream into blocks of any
length gives the same output. ``init_state`` only reads the shape, dtype and device of its
argument. ``step`` validates the state against the separator (keys, shapes, dtype, device,
finite values) and names what does not match.

Conventions shared by the online separators:

* **Spatial statistics**: ``V_k(t) = (1 - beta_t) V_k(t-1) + beta_t phi_k(t) x_t x_t^H`` with
  ``beta_t = max(1 - alpha, 1 / n_t)`` and ``n_t`` the number of frames seen so far (plus one):
  the running mean at the start (the zero initial covariance leaves no bias; ``forget = 1`` is
  the cumulative average), the paper's ``alpha V + (1 - alpha) phi x x^H`` afterwards. The
  weights ``phi`` come from the same source models as the batch separators.
* **NMF statistics** are exponentially weighted sums with factor ``alpha`` (only their ratio is
  used); the NMF updates are those of :mod:`torchbss.source_models.nmf`.
* **Non-finite frames** (any NaN/inf in a frame of one stream) are skipped: that frame's output
  is zero and that stream's state (counter included) is left unchanged.
* **Silence** is harmless: weights, variances, activations and bases are floored at ``eps``.
* **Trainable parameters** (``trainable=True``) have safe parameterisations and defaults that
  reproduce the plain algorithm exactly; only parameters the algorithm uses are registered.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint as _checkpoint

from torchbss._validation import (
    check_bool,
    check_complex,
    check_freq_bins,
    check_positive_int,
    check_range,
    check_tensor,
    finite_items,
)
from torchbss.separators.base import Callback, SeparationResult, Separator

__all__ = [
    "State",
    "OnlineSeparator",
    "OnlineStream",
    "state_to",
    "inverse_softplus",
    "logit",
    "step_sizes",
]

State = dict[str, torch.Tensor]

LAYOUT = "(..., mics, freq, frames)"


def state_to(
    state: State, device: torch.device | str | None = None, dtype: torch.dtype | None = None
) -> State:
    """Move an online state to another device and/or precision.

    Args:
        state: a state returned by ``init_state`` / ``step``.
        device: target device (default: unchanged).
        dtype: target *complex* dtype of the STFT (``torch.complex64`` or ``torch.complex128``);
            real tensors get the matching real dtype, integer counters are left as they are.

    Returns:
        A new dict of tensors.
    """
    out = {}
    for key, value in state.items():
        target = None
        if dtype is not None:
            if value.is_complex():
                target = dtype
            elif value.is_floating_point():
                target = dtype.to_real()
        out[key] = value.to(device=device, dtype=target)
    return out


def logit(p: float) -> float:
    """``log(p / (1 - p))`` (``inf`` at ``p = 1``)."""
    return math.inf if p >= 1.0 else math.log(p) - math.log1p(-p)


def inverse_softplus(x: torch.Tensor) -> torch.Tensor:
    """Inverse of ``softplus`` for positive ``x``."""
    return x + torch.log(-torch.expm1(-x))


def step_sizes(forget: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """``beta = max(1 - alpha, 1 / (count + 1))`` shaped ``counts.shape + (freq or 1,)``."""
    inv = (counts + 1).to(forget.dtype).reciprocal()[..., None]
    return torch.maximum(1.0 - forget.reshape(-1), inv)


def _blend(valid: torch.Tensor, new: State, old: State) -> State:
    """Keep the old state for streams whose frame was not finite."""
    out = {}
    for key, value in new.items():
        mask = valid.reshape(valid.shape + (1,) * (value.ndim - valid.ndim))
        out[key] = torch.where(mask, value, old[key])
    return out


def check_forget(forget: object) -> float:
    """Check a forgetting factor: a float in ``(0, 1]``."""
    if isinstance(forget, bool) or not isinstance(forget, (int, float)):
        raise TypeError(f"forget must be a float in (0, 1], got {forget!r}")
    return check_range(forget, "forget", 0.0, 1.0, low_inclusive=False, high_inclusive=True)


class OnlineSeparator(Separator):
    """Frame loop, state validation, TBPTT and checkpointing shared by the online separators.

    Args:
        forget: forgetting factor ``alpha`` in ``(0, 1]``.
        eps: floor of variances, weights and normalisers (``> 0``).
        trainable: register the algorithm's parameters as ``nn.Parameter`` (else buffers).
        forget_per_freq: one forgetting factor per frequency (needs ``n_freq``).
        n_freq: number of frequency bins (needed by per-frequency parameters).
        tbptt: detach the state every ``tbptt`` frames of a ``step`` call (truncated BPTT).
        checkpoint: gradient checkpointing over blocks of ``checkpoint_block`` frames.
        checkpoint_block: frames per checkpointed block.
    """

    #: dims of one input block after the batch dims: (mics, freq, frames)
    block_ndim = 3

    def __init__(
        self,
        forget: float,
        eps: float,
        trainable: bool,
        forget_per_freq: bool,
        n_freq: int | None,
        tbptt: int | None,
        checkpoint: bool,
        checkpoint_block: int,
    ) -> None:
        super().__init__()
        check_forget(forget)
        check_range(eps, "eps", 0.0, math.inf, low_inclusive=False)
        if n_freq is not None:
            check_positive_int(n_freq, "n_freq")
        if tbptt is not None:
            check_positive_int(tbptt, "tbptt")
        check_positive_int(checkpoint_block, "checkpoint_block")
        if check_bool(forget_per_freq, "forget_per_freq") and n_freq is None:
            raise ValueError("forget_per_freq=True needs n_freq (the number of frequency bins)")
        self.n_freq = n_freq
        self.eps = float(eps)
        self.trainable = check_bool(trainable, "trainable")
        self.tbptt = tbptt
        self.checkpoint = check_bool(checkpoint, "checkpoint")
        self.checkpoint_block = checkpoint_block
        shape = (n_freq,) if forget_per_freq else ()
        self.register_trainable("forget_logit", torch.full(shape, logit(float(forget))))

    def register_trainable(self, name: str, value: torch.Tensor) -> None:
        """A parameter when ``trainable`` else a buffer, so both follow the same code path."""
        value = value.to(torch.float32)
        if self.trainable:
            self.register_parameter(name, nn.Parameter(value))
        else:
            self.register_buffer(name, value)

    @property
    def forget(self) -> torch.Tensor:
        """The forgetting factor(s) ``alpha = sigmoid(forget_logit)``."""
        return torch.sigmoid(self.forget_logit)

    def parameters_for(self, rdtype: torch.dtype) -> dict[str, torch.Tensor]:
        """The algorithm's parameters in their natural parameterisation, in ``rdtype``."""
        return {"forget": torch.sigmoid(self.forget_logit.to(rdtype))}

    # ----- hooks of the subclasses ---------------------------------------------------------------
    def prepare_block(self, X: object) -> torch.Tensor:
        """Validate a block and bring it to ``(..., mics, freq, frames)`` (ISNMF: no mics)."""
        X = check_tensor(X, "X", min_ndim=self.block_ndim, layout=LAYOUT)
        if X.dtype == torch.complex32:
            raise TypeError(
                "X has dtype complex32, which is not supported; use X.to(torch.complex64)"
            )
        X = check_complex(X, "X")
        check_freq_bins(X, LAYOUT)
        return X

    def init_state(self, X: torch.Tensor, frame_mask: torch.Tensor | None = None) -> State:
        raise NotImplementedError

    def frame(
        self,
        x: torch.Tensor,
        state: State,
        params: dict[str, torch.Tensor],
        beta: torch.Tensor,
        count: int | None,
    ) -> tuple[torch.Tensor, State]:
        """One frame on the internal state.

        Args:
            x: ``(..., [mics,] freq)`` one frame.
            state: internal state (see :meth:`to_internal`).
            params: :meth:`parameters_for` output.
            beta: step size ``(..., freq or 1)`` (or ``(freq or 1,)``, shared by all streams).
            count: frames seen so far when every stream has the same counter, else ``None``.

        Returns:
            The frame's output (any tensor; see :meth:`make_result`) and the new state.
        """
        raise NotImplementedError

    def state_block_shape(self, state: State) -> tuple[int, ...] | None:
        """The block shape without frames that ``state`` was built for (``None``: unknown)."""
        return None

    def to_internal(self, state: State) -> State:
        """Public state -> the frame loop's layout (default: the same)."""
        return dict(state)

    def to_public(self, state: State) -> State:
        """Inverse of :meth:`to_internal`."""
        return state

    def frame_inputs(self, X: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        """A block -> the frame loop's inputs, frames first: ``frames[t]`` is frame ``t``."""
        return X.movedim(-1, 0).contiguous()

    def frame_outputs(self, out: torch.Tensor) -> torch.Tensor:
        """The frame outputs stacked frames first ``(frames, ...)`` -> the block's output
        ``(..., frames)`` (default: one transposing copy; stacking the frames on a last dim
        wrote each frame's values strided, ~10x slower)."""
        return out.movedim(0, -1).contiguous()

    def make_result(self, out: torch.Tensor, state: State) -> SeparationResult:
        """The result of a block from the (converted) frame outputs ``(..., frames)``."""
        return SeparationResult(sources=self.block_sources(out), state=state)

    def block_sources(self, out: torch.Tensor) -> torch.Tensor:
        """The sources ``(..., sources, freq, frames)`` in the converted frame outputs
        (default: they are the outputs)."""
        return out

    #: internal state entries the frame loop writes in place: :meth:`begin_block` makes them
    #: the block's own (never the caller's tensors) and an :class:`OnlineStream` hands out
    #: copies of them
    inplace_keys: tuple[str, ...] = ()

    def begin_block(self, state: State) -> State:
        """Called on the internal state before a block's frame loop: copies of the
        :attr:`inplace_keys` entries it holds."""
        own = {k: state[k].clone() for k in self.inplace_keys if k in state}
        return {**state, **own} if own else state

    def after_frame(
        self, X: torch.Tensor, t: int, before: torch.Tensor, state: State, count: int | None
    ) -> State:
        """Called after every frame on the internal state (default: as is).

        Args:
            X: ``(..., [mics,] freq, frames)`` the block as it came in (complex, possibly
                non-finite); the frame is ``X[..., t]``.
            t: the frame's index in the block.
            before: ``(...)`` the frame counters before the frame (a stream whose counter did
                not advance skipped the frame).
            state: the internal state after the frame.
            count: the common counter before the frame when every stream has one and the
                block is finite (no frame skipped), else ``None``.
        """
        return state

    def end_block(self, X: torch.Tensor, state: State, count: int | None) -> State:
        """Called on the internal state after a block's last frame (default: as is).

        Args:
            X: ``(..., [mics,] freq, frames)`` the block as it came in.
            state: the internal state after the block.
            count: the common counter before the block's first frame when every stream has
                one and the block is finite, else ``None`` (as for :meth:`after_frame`).
        """
        return state

    # ----- state validation ----------------------------------------------------------------------
    def check_state(self, X: torch.Tensor, state: object) -> State:
        """Validate ``state`` against this separator and the block ``X``; return it."""
        if not isinstance(state, dict) or not all(
            isinstance(v, torch.Tensor) for v in state.values()
        ):
            raise TypeError(
                f"state must be the dict of tensors returned by {type(self).__name__}.init_state "
                f"or a result's .state, got {type(state).__name__}"
            )
        built_for = self.state_block_shape(state)
        if built_for is not None and tuple(X.shape[:-1]) != built_for:
            raise ValueError(
                f"X block has shape {tuple(X.shape)} (batch, channels, freq = "
                f"{tuple(X.shape[:-1])}) but the state was built for {built_for}; a block must "
                "have the same batch shape, number of channels and number of frequency bins as "
                "the state"
            )
        expected = self.state_spec(X)
        missing, extra = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
        if missing or extra:
            raise ValueError(
                f"state does not belong to this {type(self).__name__} "
                f"({self.extra_repr()}): missing keys {missing}, unexpected keys {extra}; "
                "pass the state of the same separator class and configuration"
            )
        for key, (shape, dtype) in expected.items():
            value = state[key]
            if value.shape != shape:
                raise ValueError(
                    f"state[{key!r}] has shape {tuple(value.shape)} but this "
                    f"{type(self).__name__} ({self.extra_repr()}) expects {shape} for "
                    f"a block of shape {tuple(X.shape)}: a block must have the same batch "
                    "shape, number of channels and number of frequency bins as the state, and "
                    "the state must come from the same configuration"
                )
            if value.device != X.device:
                raise ValueError(
                    f"state is on device {value.device} but the X block is on {X.device}; move "
                    "the state with torchbss.separators.online.state_to(state, device=X.device)"
                )
            if value.dtype != dtype:
                raise TypeError(
                    f"state[{key!r}] has dtype {value.dtype} but a block of dtype {X.dtype} needs "
                    f"{dtype}; convert the state with state_to(state, dtype=X.dtype) or the "
                    "block with X.to(...)"
                )
        # all entries' NaN/inf tests (and the integer ones' sign: a frame counter) with one
        # host read; the culprit is looked for on failure
        floats, ints = [], []
        for k, v in state.items():
            if v.numel():
                (floats if v.is_floating_point() or v.is_complex() else ints).append(k)
        flags = [finite_items(state[k]) for k in floats] + [state[k].min() >= 0 for k in ints]
        if flags and not bool(torch.stack(flags).all()):
            for key in floats:
                bad = ~torch.isfinite(state[key])
                if bool(bad.any()):
                    raise ValueError(
                        f"state[{key!r}] contains {int(bad.sum())} NaN/inf value(s): a corrupted "
                        "state would poison every later output; start again from init_state"
                    )
            for key in ints:
                if bool((state[key] < 0).any()):
                    raise ValueError(
                        f"state[{key!r}] holds negative values (a frame counter or an index "
                        "counts from 0): a corrupted state; start again from init_state"
                    )
        return state

    def state_spec(self, X: torch.Tensor) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
        """The shape and dtype of every state entry for blocks like ``X``: ``init_state`` on
        the meta device, cached per block layout, dtype and configuration (every module's plain
        attributes and parameter shapes), so that a stream of one-frame ``step`` calls does not
        pay for it each time (~1.5 ms on CPU)."""
        plain = (bool, int, float, str, type(None))
        config = tuple(
            (name, key, value)
            for name, module in self.named_modules()
            for key, value in sorted(vars(module).items())
            if isinstance(value, plain)
        ) + tuple((name, tuple(p.shape), p.dtype) for name, p in self.named_parameters())
        key = (tuple(X.shape[:-1]), X.dtype, config)
        specs = self.__dict__.setdefault("_state_specs", {})
        if key not in specs:
            if len(specs) >= 16:  # a long-lived separator seeing many layouts
                specs.clear()
            specs[key] = {
                k: (tuple(v.shape), v.dtype) for k, v in self.init_state(X.to("meta")).items()
            }
        return specs[key]

    # ----- frame loop ----------------------------------------------------------------------------
    def _safe_frame(self, x, state, params):
        """Run one frame; a stream whose frame is not finite keeps its state, outputs zero."""
        batch_ndim = state["frame"].ndim
        valid = torch.isfinite(x).flatten(batch_ndim).all(-1)
        valid_x = valid.reshape(valid.shape + (1,) * (x.ndim - batch_ndim))
        x = torch.where(valid_x, x, torch.zeros((), dtype=x.dtype, device=x.device))
        beta = step_sizes(params["forget"], state["frame"])
        y, new = self.frame(x, state, params, beta, None)
        new["frame"] = state["frame"] + 1
        valid_y = valid.reshape(valid.shape + (1,) * (y.ndim - batch_ndim))
        y = torch.where(valid_y, y, torch.zeros((), dtype=y.dtype, device=y.device))
        return y, _blend(valid, new, state)

    def _frames(self, X, state, params, start, begin: bool = True):
        """Frame loop over a block ``X`` ``(..., frames)`` on the internal state.

        Non-finite input is checked once per block: without it (the usual case) the frames run
        without the per-frame masks and, when all streams share the frame counter (one host
        read per block), with step sizes computed once per block.
        """
        n_frames = X.shape[-1]
        frames = self.frame_inputs(X)
        if begin:  # (an OnlineStream began its state once)
            state = self.begin_block(state)
        fast = bool(finite_items(X))
        count = None
        if fast:
            counter = state["frame"].reshape(-1)
            if counter.numel() > 0 and bool((counter == counter[0]).all()):
                count = int(counter[0])
        if count is not None:
            counts = torch.arange(n_frames, device=X.device) + count
            betas = step_sizes(params["forget"], counts)  # (frames, freq or 1)
        outs = []
        for t in range(n_frames):
            if self.tbptt is not None and (start + t) > 0 and (start + t) % self.tbptt == 0:
                state = {k: v.detach() for k, v in state.items()}
            before, previous = state["frame"], state
            if not fast:
                y, state = self._safe_frame(frames[t], state, params)
            else:
                if count is not None:
                    y, new = self.frame(frames[t], state, params, betas[t], count + t)
                else:
                    beta = step_sizes(params["forget"], state["frame"])
                    y, new = self.frame(frames[t], state, params, beta, None)
                new["frame"] = state["frame"] + 1
                state = new
            # entries the frame does not touch (e.g. the alignment's buffer) carry over
            state.update((k, v) for k, v in previous.items() if k not in state)
            state = self.after_frame(X, t, before, state, None if count is None else count + t)
            outs.append(y)
        return torch.stack(outs), self.end_block(X, state, count)  # (frames, ...)

    def step(
        self, X: torch.Tensor, state: State, frame_mask: torch.Tensor | None = None
    ) -> SeparationResult:
        """Process a block of frames, continuing from ``state``.

        Args:
            X: block of the mixture STFT, ``(..., mics, freq, frames)`` complex, ``frames >= 0``
                (``OnlineISNMF``: ``(..., freq, frames)``).
            state: dict of tensors from ``init_state`` or a previous result's ``.state``.
            frame_mask: not supported by online separators (must be ``None``): a stream's
                invalid frames can be skipped by making them NaN.

        Returns:
            :class:`~torchbss.separators.SeparationResult` of the block (``sources``
            ``(..., sources, freq, frames)``) with the new ``state``.

        Warns:
            RuntimeWarning: the recursion diverged (non-finite outputs; a skipped input frame
                outputs zeros), e.g. a loading too small for the dtype or an input whose power
                overflows it; the result is returned as computed.
        """
        if frame_mask is not None:
            raise ValueError(
                "online separators take no frame_mask; set the frames to skip to NaN instead "
                "(a non-finite frame leaves the stream's state unchanged)"
            )
        X = self.prepare_block(X)
        state = self.check_state(X, state)
        params = self.parameters_for(X.real.dtype)
        internal = self.to_internal(state)
        n_frames = X.shape[-1]
        if n_frames == 0:
            out, _ = self.frame(
                self.frame_inputs(X.new_zeros(X.shape[:-1] + (1,)))[0], internal, params,
                step_sizes(params["forget"], state["frame"]), None,
            )  # fmt: skip
            empty = out.new_zeros((0,) + out.shape)
            return self.make_result(self.frame_outputs(empty), state)
        use_ckpt = self.checkpoint and torch.is_grad_enabled()
        block = self.checkpoint_block if use_ckpt else n_frames
        outs = []
        for s in range(0, n_frames, block):
            Xb = X[..., s : s + block]
            if use_ckpt:
                keys = list(internal)

                def run(Xb: torch.Tensor, *values: torch.Tensor, _s: int = s, _k=keys):
                    Yb, st = self._frames(Xb, dict(zip(_k, values)), params, _s)
                    return (Yb, *[st[k] for k in _k])

                res = _checkpoint(run, Xb, *[internal[k] for k in keys], use_reentrant=False)
                Yb, internal = res[0], dict(zip(keys, res[1:]))
            else:
                Yb, internal = self._frames(Xb, internal, params, s)
            outs.append(Yb)
        out = outs[0] if len(outs) == 1 else torch.cat(outs)
        self.warn_diverged(out)
        return self.make_result(self.frame_outputs(out), self.to_public(internal))

    def warn_diverged(self, out: torch.Tensor) -> None:
        """Warn when a block's outputs (frames first) are not finite: a skipped (non-finite)
        input frame outputs zeros, so a NaN or inf output means the recursion lost precision."""
        if not bool(finite_items(out.detach()).all()):
            warnings.warn(
                f"{type(self).__name__} diverged: non-finite outputs ({out.dtype}); the "
                "recursion lost precision, typically with a loading too small for the dtype or "
                "an input so loud that its power overflows the dtype: use the default load, "
                "scale the input or use complex128; the outputs are returned as computed and "
                "the state stays non-finite",
                RuntimeWarning,
                stacklevel=3,
            )

    def open_stream(self, X: torch.Tensor, state: State | None = None) -> OnlineStream:
        """A stream of blocks shaped like ``X`` (not consumed; e.g. the first block), from
        ``state`` (``None``: ``init_state(X)``): see :class:`OnlineStream`."""
        return OnlineStream(self, X, state)

    def forward(
        self,
        X: torch.Tensor,
        state: State | None = None,
        *,
        frame_mask: torch.Tensor | None = None,
        callback: Callback | None = None,
    ) -> SeparationResult:
        """Separate a whole signal (or continue from ``state``): ``step`` from ``init_state``.

        Args:
            X: mixture STFT ``(..., mics, freq, frames)`` complex.
            state: optional state to continue from (default: ``init_state(X)``).
            frame_mask: must be ``None`` (see :meth:`step`).
            callback: ``callback(0, result)`` after the step.

        Returns:
            :class:`~torchbss.separators.SeparationResult` with ``sources`` and ``state``.
        """
        if callback is not None and not callable(callback):
            raise TypeError(f"callback must be callable(i, result) or None, got {callback!r}")
        if state is None:
            state = self.init_state(self.prepare_block(X))
        result = self.step(X, state, frame_mask)
        if callback is not None:
            callback(0, result)
        return result

    def extra_repr(self) -> str:
        return ""


class OnlineStream:
    """Blocks through an online separator with its state kept between calls in the frame
    loop's own layout: for real-time loops that feed a hop or a few at a time.

    :meth:`OnlineSeparator.step` validates the public state, converts it to the frame loop's
    layout and back, and copies the realignment's window at every call (~0.9 ms per call for a
    4x4 stream on one CPU thread, more than a compiled frame); fed one frame per call that
    triples a frame's time (``bench_online``, table ``streaming``). A stream does all that once:
    it validates and converts the state when it opens, owns the converted state (updated in
    place) and converts it back only when :attr:`state` is read. The outputs and the state are
    exactly those of ``step`` on the same blocks. Gradients pass as in ``step``, without its
    gradient checkpointing (train with ``step`` or ``forward``).

    Args:
        separator: the online separator.
        X: a block shaped like the stream's blocks ``(..., [mics,] freq, frames)`` (only its
            layout is used: batch shape, channels, bins, dtype, device).
        state: the state to go on from (``None``: ``separator.init_state(X)``).

    Example:
        >>> from torchbss.separators import OnlineAuxIVA
        >>> sep = OnlineAuxIVA(n_src=2)
        >>> X = torch.randn(2, 65, 40, dtype=torch.complex64)
        >>> stream = sep.open_stream(X)
        >>> Y = torch.cat([stream.step(X[..., t : t + 1]) for t in range(40)], -1)
        >>> torch.equal(Y, sep(X).sources)
        True
    """

    def __init__(self, separator: OnlineSeparator, X: torch.Tensor, state: State | None = None):
        X = separator.prepare_block(X)
        state = separator.init_state(X) if state is None else separator.check_state(X, state)
        self.separator = separator
        self._layout = (tuple(X.shape[:-1]), X.dtype, X.device)
        self._internal = separator.begin_block(separator.to_internal(state))
        self._start = 0  # frames run through this stream (for TBPTT's boundaries)

    @property
    def state(self) -> State:
        """The public state after the frames so far (a copy: the stream goes on with its own,
        and changing the copy leaves the stream alone)."""
        out = self.separator.to_public(self._internal)
        return {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in out.items()}

    def step(self, X: torch.Tensor) -> torch.Tensor:
        """Separate the next block ``X`` ``(..., [mics,] freq, frames)`` (the layout of the
        stream, any number of frames) -> the sources ``(..., sources, freq, frames)``."""
        sep = self.separator
        X = sep.prepare_block(X)
        layout = (tuple(X.shape[:-1]), X.dtype, X.device)
        if layout != self._layout:
            raise ValueError(
                f"X block has shape {tuple(X.shape)}, dtype {X.dtype} on {X.device}, but this "
                f"stream was opened for blocks of shape {self._layout[0] + ('frames',)}, dtype "
                f"{self._layout[1]} on {self._layout[2]}; open another stream for another layout"
            )
        if X.shape[-1] == 0:
            return sep.step(X, self.state).sources
        params = sep.parameters_for(X.real.dtype)
        Y, self._internal = sep._frames(X, self._internal, params, self._start, begin=False)
        self._start += X.shape[-1]
        sep.warn_diverged(Y)
        return sep.block_sources(sep.frame_outputs(Y))


def config_repr(**kwargs: Any) -> str:
    """``k=v, ...`` for ``extra_repr``."""
    return ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
