"""Online (frame-by-frame) blind source separation with explicit, tensor-only state.

Three streaming separators share one API::

    sep = OnlineILRMA(n_src=4, n_freq=1025, n_basis=10, forget=0.99, minibatch=2)
    Y = sep(X)                              # whole signal, (..., mics, freq, frames) complex
    state = sep.init_state(X_first_block)   # dict of tensors (torch.save-able)
    Y_blk, state = sep.step(X_block, state) # any block length >= 1 frame

``sep(X)`` is exactly ``step`` applied to all frames from ``init_state(X)``: the state holds
everything the recursion needs (demixing matrices, weighted covariances, NMF basis,
activations, sufficient statistics and a per-stream frame counter), so splitting a stream into
blocks of any length gives the same output. ``init_state`` only reads the shape, dtype and device
of its argument.

Conventions shared by the three models:

* **Spatial statistics** follow the paper's recursion with a bias-corrected start,
  ``V_k(t) = (1 - beta_t) V_k(t-1) + beta_t phi_k(t) x_t x_t^H`` with
  ``beta_t = max(1 - alpha, 1 / n_t)`` and ``n_t`` the number of frames seen so far (the state's
  counter, plus one). Once ``n_t >= 1 / (1 - alpha)`` this is exactly
  ``alpha V + (1 - alpha) phi x x^H``; before that it is the running mean, so the zero initial
  covariance leaves no bias and ``forget = 1`` is the cumulative (growing-window) average. The
  normalised form matters: with variance-based weights (Gauss, NMF) the scale of ``W`` is only
  stationary when the recursion's weights sum to one.
* **NMF statistics** ``A, B`` are exponentially weighted sums (only their ratio is used).
* **Initial state**: identity demixing matrices, zero covariances (the first IP1 updates are kept
  finite by the relative diagonal loading ``load``), unit activations, a seeded uniform positive
  NMF basis.
* **Non-finite frames** (any NaN/inf in a frame of one stream) are skipped: that frame's output is
  zero and that stream's state (counter included) is left unchanged, so the rest of the stream is
  exactly what it would be without that frame.
* **Silence** is harmless: weights, variances, activations and bases are floored at ``eps``.

References:
    T. Taniguchi, N. Ono, A. Kawamura, S. Sagayama, "An auxiliary-function approach to online
    independent vector analysis for real-time blind source separation", HSCMA 2014.
    T. Nakashima, N. Ono, "Online independent low-rank matrix analysis as a lightweight and
    trainable model for real-time multichannel music source separation", 2026.
    A. Lefevre, F. Bach, C. Fevotte, "Online algorithms for nonnegative matrix factorization with
    the Itakura-Saito divergence", WASPAA 2011.
    K. Matsuoka, "Minimal distortion principle for blind source separation", SICE 2002.
"""

from __future__ import annotations

import math

import torch
from einops import einsum
from torch import nn
from torch.utils.checkpoint import checkpoint as _checkpoint

from torchbss._validation import (
    check_choice,
    check_complex,
    check_positive_int,
    check_range,
    check_tensor,
)
from torchbss.separators._small_linalg import (
    hermitian_inverse,
    pack_hermitian,
    packed_outer,
    unpack_hermitian,
)
from torchbss.updates import background_update

__all__ = [
    "OnlineAuxIVA",
    "OnlineILRMA",
    "OnlineISNMF",
    "state_to",
]

State = dict[str, torch.Tensor]

_LAYOUT = "(..., mics, freq, frames)"


# --------------------------------------------------------------------------------------------
# small pure helpers
# --------------------------------------------------------------------------------------------


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


def _logit(p: float) -> float:
    return math.inf if p >= 1.0 else math.log(p) - math.log1p(-p)


def _inv_softplus(x: torch.Tensor) -> torch.Tensor:
    """Inverse of ``softplus`` for positive ``x``."""
    return x + torch.log(-torch.expm1(-x))


def _check_forget(forget: float) -> float:
    if isinstance(forget, bool) or not isinstance(forget, (int, float)):
        raise TypeError(f"forget must be a float in (0, 1], got {forget!r}")
    return check_range(forget, "forget", 0.0, 1.0, low_inclusive=False, high_inclusive=True)


def _loaded(V: torch.Tensor, load: torch.Tensor, eps: float) -> torch.Tensor:
    """``V + load * max(mean diag(V), eps) * I`` with a tensor ``load`` (differentiable).

    Public ``(..., freq, M, M)`` layout; used for the OverIVA background covariance.
    """
    scale = V.diagonal(dim1=-2, dim2=-1).real.mean(-1).clamp_min(eps)
    eye = torch.eye(V.shape[-1], dtype=V.dtype, device=V.device)
    return V + (load * scale)[..., None, None] * eye


def _mid(b: torch.Tensor, n: int) -> torch.Tensor:
    """Insert ``n`` singleton dims before the last (frequency) dim of ``b``."""
    return b.reshape(b.shape[:-1] + (1,) * n + b.shape[-1:])


def _step_sizes(forget: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """``beta = max(1 - alpha, 1 / (count + 1))`` shaped ``counts.shape + (freq or 1,)``."""
    inv = (counts + 1).to(forget.dtype).reciprocal()[..., None]
    return torch.maximum(1.0 - forget.reshape(-1), inv)


def _decay(forget: torch.Tensor, ndim_after_freq: int) -> torch.Tensor:
    """Reshape a scalar or per-frequency ``(freq,)`` forgetting factor for broadcasting."""
    if forget.ndim == 0:
        return forget
    return forget.reshape(forget.shape + (1,) * ndim_after_freq)


def _outer(x: torch.Tensor) -> torch.Tensor:
    """``x x^H`` per frequency: ``(..., mics, freq)`` -> ``(..., freq, mics, mics)``."""
    return einsum(x, x.conj(), "... m f, ... n f -> ... f m n")


def _mixture_covariance(C: torch.Tensor, x: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    """``C <- (1 - beta) C + beta x x^H`` in the public ``(..., freq, M, M)`` layout."""
    b = beta[..., None, None]
    return (1.0 - b) * C + b * _outer(x)


def _demix_frame(W: torch.Tensor, x: torch.Tensor, n_src: int) -> torch.Tensor:
    """``y = W[:n_src] x`` for one frame, frequency last: ``W`` ``(..., M, M, freq)``,
    ``x`` ``(..., M, freq)`` -> ``(..., K, freq)``."""
    return (W[..., :n_src, :, :] * x.unsqueeze(-3)).sum(-2)


def _ip1_sweep(
    W: torch.Tensor,
    A: torch.Tensor,
    Vd: torch.Tensor,
    Vo: torch.Tensor,
    load: torch.Tensor,
    eps: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """IP1 on every source row (sequentially) with the inverse ``A = W^{-1}`` kept in sync.

    Frequency-last layout: ``W``, ``A`` ``(..., M, M, freq)``; packed covariances ``Vd``
    ``(..., K, M, freq)`` (diagonal) and ``Vo`` ``(..., K, M (M - 1) / 2, freq)``.

    IP1 (Ono 2011) sets ``w_k = (W V_k)^{-1} e_k`` and ``w_k /= sqrt(w_k^H V_k w_k)`` with the
    loaded ``V_k <- V_k + load max(mean diag V_k, eps) I``. Since ``(W V_k)^{-1} e_k =
    V_k^{-1} a_k`` with ``a_k`` column ``k`` of ``A``, and ``w_k^H V_k w_k = a_k^H V_k^{-1} a_k``
    for the unnormalised ``w_k``, each row needs one matrix-vector product with ``V_k^{-1}``
    (all ``K`` inverses come from one elementwise sweep, batched over sources). Replacing row
    ``k`` of ``W`` by ``w^H`` changes the inverse by the Sherman-Morrison formula
    ``A <- A - a_k (w^H A - e_k^T) / (w^H a_k)``; after it, row ``k`` of ``W A - I`` is exactly
    zero whatever the error of the old ``A``, so a full sweep (``K = M``) restores
    ``A = W^{-1}`` to rounding and no error accumulates over frames.
    """
    M = W.shape[-2]
    scale = Vd.mean(-2).clamp_min(eps)
    Vinv = hermitian_inverse(Vd + (load * scale).unsqueeze(-2), Vo)  # (..., K, M, M, F)
    eye = torch.eye(M, dtype=W.dtype, device=W.device)
    rows = list(W.unbind(-3))
    for k in range(Vd.shape[-3]):
        a = A[..., :, k, :]  # (..., M, F)
        u = (Vinv[..., k, :, :, :] * a.unsqueeze(-3)).sum(-2)  # V_k^{-1} a_k
        norm = (a.conj() * u).sum(-2).real.clamp_min(eps)  # a^H V_k^{-1} a_k
        w_h = (u * norm.rsqrt().unsqueeze(-2)).conj()  # new row k of W
        g = (w_h.unsqueeze(-2) * A).sum(-3)  # w^H A, (..., M, F)
        coef = (g - eye[k, :, None]) / g[..., k : k + 1, :]
        A = torch.addcmul(A, a.unsqueeze(-2), coef.unsqueeze(-3), value=-1)
        rows[k] = w_h
    return torch.stack(rows, dim=-3), A


def _background(
    W: torch.Tensor, C: torch.Tensor, n_src: int, load: torch.Tensor, eps: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """OverIVA background rows from the mixture covariance ``C`` ``(..., freq, M, M)``.

    Returns ``W`` and its (recomputed) inverse, both frequency-last ``(..., M, M, freq)``.
    """
    Wp = background_update(W.movedim(-1, -3), _loaded(C, load, eps), n_src)
    return Wp.movedim(-3, -1).contiguous(), torch.linalg.inv(Wp).movedim(-3, -1).contiguous()


def _nmf_activation_step(
    T: torch.Tensor, h: torch.Tensor, p: torch.Tensor, exponent: torch.Tensor, eps: float
) -> torch.Tensor:
    """One IS-NMF multiplicative update of the activations of one frame, bases fixed.

    ``h <- h * (T^T (p / r^2) / T^T (1 / r)) ** exponent`` with ``r = T h`` (``exponent = 1/2``
    is the majorisation-minimisation update of ILRMA; Lefevre et al. 2011 use 1).

    Args:
        T: ``(..., freq, bases)`` nonnegative bases.
        h: ``(..., bases)`` activations of this frame.
        p: ``(..., freq)`` observed power of this frame.
        exponent: scalar tensor.
        eps: floor of ``r`` and of the new activations.

    Returns:
        ``(..., bases)`` new activations.
    """
    inv_r = _nmf_model(T, h, eps).reciprocal()
    both = torch.stack([p * inv_r * inv_r, inv_r], dim=-1)  # (..., freq, 2)
    num, den = (T.transpose(-1, -2) @ both).unbind(-1)
    return (h * (num / den.clamp_min(eps)).clamp_min(eps * eps).pow(exponent)).clamp_min(eps)


def _nmf_model(T: torch.Tensor, h: torch.Tensor, eps: float) -> torch.Tensor:
    """``r = T h`` floored at ``eps``: ``(..., freq, bases), (..., bases) -> (..., freq)``."""
    return (T @ h.unsqueeze(-1)).squeeze(-1).clamp_min(eps)


def _nmf_statistics(
    T: torch.Tensor,
    h: torch.Tensor,
    p: torch.Tensor,
    num: torch.Tensor,
    den: torch.Tensor,
    forget: torch.Tensor,
    eps: float,
    r: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Decayed sufficient statistics of the online IS-NMF basis update (Lefevre et al. 2011).

    ``A <- alpha A + ((p / r^2) h^T) * T^2`` and ``B <- alpha B + (1 / r) h^T`` with ``r = T h``:
    the auxiliary function of the IS divergence of all past frames (majorised at the bases in
    use when each frame arrived) is ``sum A / T' + B T'``, minimised by ``T' = sqrt(A / B)``.

    Args:
        T: ``(..., freq, bases)`` current bases.
        h: ``(..., bases)`` activations of this frame.
        p: ``(..., freq)`` observed power of this frame.
        num, den: ``(..., freq, bases)`` statistics ``A``, ``B`` so far.
        forget: scalar or ``(freq,)`` forgetting factor.
        eps: floor of ``r``.
        r: ``T h`` floored at ``eps`` if already computed.

    Returns:
        ``(A, B, r)`` with ``A, B`` of shape ``(..., freq, bases)`` and ``r`` ``(..., freq)``.
    """
    if r is None:
        r = _nmf_model(T, h, eps)
    inv_r = r.reciprocal()
    a = _decay(forget, 1)
    hT = h.unsqueeze(-2)
    num = a * num + (p * inv_r * inv_r).unsqueeze(-1) * hT * (T * T)
    den = a * den + inv_r.unsqueeze(-1) * hT
    return num, den, r


def _nmf_basis_update(
    T: torch.Tensor,
    num: torch.Tensor,
    den: torch.Tensor,
    do_update: torch.Tensor | bool,
    eps: float,
) -> torch.Tensor:
    """``T <- sqrt(A / B)`` (floored at ``eps``) where ``do_update`` (per stream), else ``T``."""
    if do_update is False:
        return T
    new = (num / den.clamp_min(eps)).clamp_min(eps * eps).sqrt()
    if do_update is True:
        return new
    mask = do_update.reshape(do_update.shape + (1,) * (T.ndim - do_update.ndim))
    return torch.where(mask, new, T)


def _blend(valid: torch.Tensor, new: State, old: State) -> State:
    """Keep the old state for streams whose frame was not finite."""
    out = {}
    for key, value in new.items():
        mask = valid.reshape(valid.shape + (1,) * (value.ndim - valid.ndim))
        out[key] = torch.where(mask, value, old[key])
    return out


# --------------------------------------------------------------------------------------------
# shared module machinery
# --------------------------------------------------------------------------------------------


class _OnlineBase(nn.Module):
    """Frame loop, validation, TBPTT and checkpointing shared by the online separators."""

    #: number of leading non-batch dims of the input block (mics, freq, frames) = 3
    _block_ndim = 3

    def __init__(
        self,
        forget: float,
        load: float,
        eps: float,
        ref_mic: int,
        trainable: bool,
        forget_per_freq: bool,
        n_freq: int | None,
        tbptt: int | None,
        checkpoint: bool,
        checkpoint_block: int,
    ) -> None:
        super().__init__()
        _check_forget(forget)
        check_range(load, "load", 0.0, math.inf, low_inclusive=False)
        check_range(eps, "eps", 0.0, math.inf, low_inclusive=False)
        check_positive_int(ref_mic, "ref_mic", minimum=0)
        if tbptt is not None:
            check_positive_int(tbptt, "tbptt")
        check_positive_int(checkpoint_block, "checkpoint_block")
        if forget_per_freq and n_freq is None:
            raise ValueError("forget_per_freq=True needs n_freq (the number of frequency bins)")
        self.ref_mic = ref_mic
        self.eps = float(eps)
        self.trainable = bool(trainable)
        self.tbptt = tbptt
        self.checkpoint = bool(checkpoint)
        self.checkpoint_block = checkpoint_block
        shape = (n_freq,) if forget_per_freq else ()
        self._register("forget_logit", torch.full(shape, _logit(float(forget))))
        self._register("load_raw", _inv_softplus(torch.tensor(float(load), dtype=torch.float64)))

    def _register(self, name: str, value: torch.Tensor) -> None:
        """A parameter when ``trainable`` else a buffer, so both follow the same code path."""
        value = value.to(torch.float32)
        if self.trainable:
            self.register_parameter(name, nn.Parameter(value))
        else:
            self.register_buffer(name, value)

    # ----- parameters -------------------------------------------------------------------------
    def _parameters_for(self, rdtype: torch.dtype) -> dict[str, torch.Tensor]:
        return {
            "forget": torch.sigmoid(self.forget_logit.to(rdtype)),
            "load": nn.functional.softplus(self.load_raw.to(rdtype)),
        }

    @property
    def forget(self) -> torch.Tensor:
        """The forgetting factor(s) ``alpha = sigmoid(forget_logit)``."""
        return torch.sigmoid(self.forget_logit)

    # ----- validation -------------------------------------------------------------------------
    def _check_block(self, X: object, name: str = "X") -> torch.Tensor:
        X = check_tensor(X, name, min_ndim=self._block_ndim, layout=_LAYOUT)
        return check_complex(X, name)

    def _check_against_state(self, X: torch.Tensor, state: State) -> None:
        if not isinstance(state, dict) or "frame" not in state:
            raise TypeError(
                f"state must be the dict returned by init_state/step, got {type(state).__name__}"
            )
        ref = state[self._ref_key]
        batch, channels, n_freq = self._state_layout(state)
        got = tuple(X.shape[:-1])
        expected = batch + channels + (n_freq,)
        if got != expected:
            raise ValueError(
                f"X block has shape {tuple(X.shape)} (batch, channels, freq = {got}) but the state "
                f"was built for {expected}; a block must have the same batch shape, number of "
                "channels and number of frequency bins as the state"
            )
        if ref.device != X.device:
            raise ValueError(
                f"state is on device {ref.device} but the X block is on {X.device}; move the state "
                "with torchbss.separators.online.state_to(state, device=X.device)"
            )
        expected_dtype = X.dtype if ref.is_complex() else X.real.dtype
        if ref.dtype != expected_dtype:
            raise TypeError(
                f"state has dtype {ref.dtype} (for complex blocks of dtype "
                f"{ref.dtype if ref.is_complex() else ref.dtype.to_complex()}) but the X block has "
                f"dtype {X.dtype}; convert the state with state_to(state, dtype=X.dtype) or the "
                "block with X.to(...)"
            )

    # ----- frame loop -------------------------------------------------------------------------
    def _frame(
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
            state: internal state (see ``_to_internal``).
            params: ``_parameters_for`` output.
            beta: step size ``(..., freq or 1)`` (or ``(freq or 1,)``, shared by all streams).
            count: frames seen so far when every stream has the same counter, else ``None``.
        """
        raise NotImplementedError

    def _safe_frame(
        self, x: torch.Tensor, state: State, params: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, State]:
        """Run one frame; a stream whose frame is not finite keeps its state, outputs zero."""
        batch_ndim = state["frame"].ndim
        valid = torch.isfinite(x).flatten(batch_ndim).all(-1)
        valid_x = valid.reshape(valid.shape + (1,) * (x.ndim - batch_ndim))
        x = torch.where(valid_x, x, torch.zeros((), dtype=x.dtype, device=x.device))
        beta = _step_sizes(params["forget"], state["frame"])
        y, new = self._frame(x, state, params, beta, None)
        new["frame"] = state["frame"] + 1
        valid_y = valid.reshape(valid.shape + (1,) * (y.ndim - batch_ndim))
        y = torch.where(valid_y, y, torch.zeros((), dtype=y.dtype, device=y.device))
        return y, _blend(valid, new, state)

    def _frames(
        self, X: torch.Tensor, state: State, params: dict[str, torch.Tensor], start: int
    ) -> tuple[torch.Tensor, State]:
        """Frame loop over a block ``X`` ``(..., frames)`` on the internal state.

        Non-finite input is checked once per block: without it (the usual case) the frames run
        without the per-frame masks and, when all streams share the frame counter (one host
        read per block), with step sizes and basis-update decisions computed once per block.
        """
        n_frames = X.shape[-1]
        frames = X.movedim(-1, 0).contiguous()  # contiguous frames (..., [mics,] freq)
        fast = bool(torch.isfinite(X).all())
        count = None
        if fast:
            counter = state["frame"].reshape(-1)
            if counter.numel() > 0 and bool((counter == counter[0]).all()):
                count = int(counter[0])
        if count is not None:
            counts = torch.arange(n_frames, device=X.device) + count
            betas = _step_sizes(params["forget"], counts)  # (frames, freq or 1)
        outs = []
        for t in range(n_frames):
            if self.tbptt is not None and (start + t) > 0 and (start + t) % self.tbptt == 0:
                state = {k: v.detach() for k, v in state.items()}
            if not fast:
                y, state = self._safe_frame(frames[t], state, params)
            else:
                if count is not None:
                    y, new = self._frame(frames[t], state, params, betas[t], count + t)
                else:
                    beta = _step_sizes(params["forget"], state["frame"])
                    y, new = self._frame(frames[t], state, params, beta, None)
                new["frame"] = state["frame"] + 1
                state = new
            outs.append(y)
        return torch.stack(outs, dim=-1), state

    def step(self, X: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        """Process a block of frames, continuing from ``state``.

        Args:
            X: block of the mixture STFT, ``(..., mics, freq, frames)`` complex, ``frames >= 1``
                (``OnlineISNMF``: ``(..., freq, frames)``).
            state: dict of tensors from ``init_state`` or a previous ``step``.

        Returns:
            ``(Y, state)``: ``Y`` of shape ``(..., sources, freq, frames)`` and the new state.
        """
        X = self._prepare(X)
        self._check_against_state(X, state)
        params = self._parameters_for(X.real.dtype)
        state = self._to_internal(state)
        n_frames = X.shape[-1]
        use_ckpt = self.checkpoint and torch.is_grad_enabled()
        block = self.checkpoint_block if use_ckpt else n_frames
        outs = []
        for s in range(0, n_frames, block):
            Xb = X[..., s : s + block]
            if use_ckpt:
                keys = list(state)

                def run(Xb: torch.Tensor, *values: torch.Tensor, _s: int = s, _k=keys):
                    Yb, st = self._frames(Xb, dict(zip(_k, values)), params, _s)
                    return (Yb, *[st[k] for k in _k])

                res = _checkpoint(run, Xb, *[state[k] for k in keys], use_reentrant=False)
                Yb, state = res[0], dict(zip(keys, res[1:]))
            else:
                Yb, state = self._frames(Xb, state, params, s)
            outs.append(Yb)
        Y = outs[0] if len(outs) == 1 else torch.cat(outs, dim=-1)
        return self._finish(Y), self._to_public(state)

    def forward(
        self, X: torch.Tensor, state: State | None = None, return_state: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, State]:
        """Separate a whole signal (or continue from ``state``).

        Args:
            X: mixture STFT, ``(..., mics, freq, frames)`` complex.
            state: optional state to continue from (default: ``init_state(X)``).
            return_state: also return the final state.

        Returns:
            ``Y`` of shape ``(..., sources, freq, frames)``, and the state if ``return_state``.
        """
        if state is None:
            state = self.init_state(X)
        Y, state = self.step(X, state)
        return (Y, state) if return_state else Y

    # hooks ---------------------------------------------------------------------------------------
    _ref_key = "W"

    def _prepare(self, X: object) -> torch.Tensor:
        return self._check_block(X)

    def _finish(self, Y: torch.Tensor) -> torch.Tensor:
        return Y

    def _state_layout(self, state: State) -> tuple[tuple[int, ...], tuple[int, ...], int]:
        W = state["W"]
        return tuple(W.shape[:-3]), (W.shape[-1],), W.shape[-3]

    def _to_internal(self, state: State) -> State:
        """Public state -> the frame loop's layout (default: the same)."""
        return dict(state)

    def _to_public(self, state: State) -> State:
        """Inverse of ``_to_internal``."""
        return state

    def _spatial_state(self, X: torch.Tensor, n_src: int) -> State:
        batch, M, F = X.shape[:-3], X.shape[-3], X.shape[-2]
        opts = {"dtype": X.dtype, "device": X.device}
        eye = torch.eye(M, **opts)
        state = {
            "W": eye.expand(batch + (F, M, M)).clone(),
            "A": eye.expand(batch + (F, M, M)).clone(),
            "V": torch.zeros(batch + (n_src, F, M, M), **opts),
            "frame": torch.zeros(batch, dtype=torch.int64, device=X.device),
        }
        if n_src < M:
            state["C"] = torch.zeros(batch + (F, M, M), **opts)
        return state


class _SpatialBase(_OnlineBase):
    """State layout conversion shared by online AuxIVA and ILRMA.

    Public state (``init_state`` / ``step``): ``W``, ``A = W^{-1}`` ``(..., freq, M, M)``,
    ``V`` ``(..., K, freq, M, M)``. Frame loop: ``W``, ``A`` frequency-last
    ``(..., M, M, freq)`` and ``V`` packed (``Vd`` real diagonal ``(..., K, M, freq)``, ``Vo``
    strict upper triangle ``(..., K, M (M - 1) / 2, freq)``), so that the per-bin ``M x M``
    algebra runs as elementwise ops over contiguous frequency vectors. The conversion is exact.
    """

    def _to_internal(self, state: State) -> State:
        out = dict(state)
        W = state["W"]
        A = state["A"] if "A" in state else torch.linalg.inv(W)
        out["W"] = W.movedim(-3, -1).contiguous()
        out["A"] = A.movedim(-3, -1).contiguous()
        out["Vd"], out["Vo"] = pack_hermitian(out.pop("V"))
        return out

    def _to_public(self, state: State) -> State:
        out = dict(state)
        out["W"] = state["W"].movedim(-1, -3).contiguous()
        out["A"] = state["A"].movedim(-1, -3).contiguous()
        out["V"] = unpack_hermitian(out.pop("Vd"), out.pop("Vo")).contiguous()
        return out

    def _spatial_step(
        self,
        W: torch.Tensor,
        A: torch.Tensor,
        Vd: torch.Tensor,
        Vo: torch.Tensor,
        C: torch.Tensor | None,
        load: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        W, A = _ip1_sweep(W, A, Vd, Vo, load, self.eps)
        if C is not None:
            W, A = _background(W, C, Vd.shape[-3], load, self.eps)
        return W, A

    def _output(self, W: torch.Tensor, A: torch.Tensor, x: torch.Tensor, K: int) -> torch.Tensor:
        """``y = W_t x_t`` scaled by the minimal distortion principle: ``y_k (W^{-1})[ref, k]``."""
        return _demix_frame(W, x, K) * A[..., self.ref_mic, :K, :]


def _resolve_n_src(n_src: int | None, n_mics: int) -> int:
    if n_src is None:
        return n_mics
    if n_src > n_mics:
        raise ValueError(
            f"n_src={n_src} is larger than the number of mics {n_mics}; online AuxIVA/ILRMA "
            "need n_src <= mics (use OnlineISNMF for underdetermined single-channel separation)"
        )
    return n_src


# --------------------------------------------------------------------------------------------
# online AuxIVA
# --------------------------------------------------------------------------------------------


class OnlineAuxIVA(_SpatialBase):
    """Online auxiliary-function IVA (Taniguchi et al. 2014), batched and streaming.

    Per frame ``x_t``: ``y = W_{t-1} x_t``; ``r_k = ||y_k||`` over frequency;
    ``V_k(t) = (1 - beta_t) V_k(t-1) + beta_t phi(r_k) x_t x_t^H`` (``beta_t = 1 - alpha`` after
    the first ``1 / (1 - alpha)`` frames, see the module notes); one IP1 update of every row of
    ``W``;
    output ``y_t = W_t x_t`` scaled by the minimal distortion principle at ``ref_mic``.
    With ``n_src < mics`` the background rows follow the OverIVA rule from the recursive mixture
    covariance.

    Args:
        n_src: number of sources (default: number of mics, fixed at ``init_state``).
        forget: forgetting factor ``alpha`` in ``(0, 1]``.
        source_model: ``"laplace"`` (``phi = 1 / r``) or ``"gauss"`` (time-varying variance,
            ``phi = freq / r^2``).
        ref_mic: reference microphone of the output scale.
        load: relative diagonal loading of the covariances before each solve (> 0).
        eps: floor of ``r^2`` and of the IP1 normaliser.
        trainable: make ``forget`` (``sigmoid`` of ``forget_logit``) and ``load`` (``softplus`` of
            ``load_raw``) learnable ``nn.Parameter``s; the initial output is identical.
        forget_per_freq: one forgetting factor per frequency (needs ``n_freq``).
        n_freq: number of frequency bins (only for ``forget_per_freq``).
        tbptt: detach the state every ``tbptt`` frames of a ``step`` call (truncated BPTT).
        checkpoint: gradient checkpointing over blocks of ``checkpoint_block`` frames.
        checkpoint_block: frames per checkpointed block.

    Shapes:
        ``X``: ``(..., mics, freq, frames)`` complex -> ``Y``: ``(..., n_src, freq, frames)``.
    """

    def __init__(
        self,
        n_src: int | None = None,
        forget: float = 0.99,
        source_model: str = "laplace",
        ref_mic: int = 0,
        load: float = 1e-3,
        eps: float = 1e-10,
        trainable: bool = False,
        forget_per_freq: bool = False,
        n_freq: int | None = None,
        tbptt: int | None = None,
        checkpoint: bool = False,
        checkpoint_block: int = 32,
    ) -> None:
        super().__init__(
            forget, load, eps, ref_mic, trainable, forget_per_freq, n_freq, tbptt, checkpoint,
            checkpoint_block,
        )  # fmt: skip
        if n_src is not None:
            check_positive_int(n_src, "n_src")
        self.n_src = n_src
        self.source_model = check_choice(source_model, "source_model", ("laplace", "gauss"))

    def init_state(self, X: torch.Tensor) -> State:
        """Initial state for streams shaped like ``X`` (only its shape, dtype, device are read).

        Args:
            X: ``(..., mics, freq, frames)`` complex (e.g. the first block).

        Returns:
            dict with ``W`` ``(..., freq, mics, mics)`` (identity), its inverse ``A`` (kept in
            sync by Sherman-Morrison updates, used for IP1 and the output scale), ``V``
            ``(..., n_src, freq, mics, mics)`` (zeros), ``frame`` ``(...,)`` int64, and ``C``
            ``(..., freq, mics, mics)`` when ``n_src < mics``.
        """
        X = self._check_block(X)
        n_src = _resolve_n_src(self.n_src, X.shape[-3])
        if self.ref_mic >= X.shape[-3]:
            raise ValueError(f"ref_mic={self.ref_mic} but X has only {X.shape[-3]} mics")
        return self._spatial_state(X, n_src)

    def _frame(self, x, state, params, beta, count):
        W, A = state["W"], state["A"]
        n_src = state["Vd"].shape[-3]
        keep = 1.0 - beta
        y = _demix_frame(W, x, n_src)
        power = (y.real.square() + y.imag.square()).sum(-1).clamp_min(self.eps)  # (..., K)
        if self.source_model == "laplace":
            phi = power.rsqrt()
        else:
            phi = x.shape[-1] / power
        c = beta.unsqueeze(-2) * phi.unsqueeze(-1)  # (..., K, freq or 1)
        xd, xo = packed_outer(x)
        Vd = _mid(keep, 2) * state["Vd"] + c.unsqueeze(-2) * xd.unsqueeze(-3)
        Vo = _mid(keep, 2) * state["Vo"] + c.unsqueeze(-2) * xo.unsqueeze(-3)
        new = {"Vd": Vd, "Vo": Vo}
        C = None
        if "C" in state:
            C = new["C"] = _mixture_covariance(state["C"], x, beta)
        W, A = self._spatial_step(W, A, Vd, Vo, C, params["load"])
        new["W"], new["A"] = W, A
        return self._output(W, A, x, n_src), new


# --------------------------------------------------------------------------------------------
# online ILRMA
# --------------------------------------------------------------------------------------------


class OnlineILRMA(_SpatialBase):
    """Online ILRMA (Nakashima & Ono 2026): online IS-NMF source model + online IP1.

    Per frame ``x_t`` and inner iteration ``i``: ``y = W x_t``, ``p = |y|^2``; the activations
    ``h_k`` of this frame get one IS-NMF multiplicative update with the bases ``T_k`` fixed (the
    previous frame's activations are the starting point); ``r_k = T_k h_k``;
    ``V_k(t) = (1 - beta_t) V_k(t-1) + beta_t x_t x_t^H / r_k``; IP1 on every row. After the inner
    iterations the decayed IS-NMF statistics ``A_k, B_k`` (Lefevre et al. 2011) are accumulated
    and, every ``minibatch`` frames (a per-stream counter in the state, so any block boundary
    works),
    ``T_k <- sqrt(A_k / B_k)``. The output ``W_t x_t`` is scaled by minimal distortion.

    Trainable (unrolled) parameters, all with safe parameterisations and defaults reproducing
    the plain algorithm exactly: ``forget_logit`` (``alpha = sigmoid``; scalar or per
    frequency), ``basis_raw`` (initial bases ``= softplus(basis_raw)``), ``load_raw``
    (diagonal loading ``= softplus``), ``inner_weights`` (per-inner-iteration multiplier of the
    activation update exponent ``1/2``).

    Args:
        n_src: number of sources (``<= mics``).
        n_freq: number of frequency bins.
        n_basis: NMF bases per source.
        forget: forgetting factor ``alpha`` in ``(0, 1]`` (spatial and NMF statistics).
        minibatch: update the bases every ``minibatch`` frames.
        inner_iter: (activation update + IP1) iterations per frame.
        ref_mic: reference microphone of the output scale.
        activation_iter: multiplicative updates of the frame's activations per inner iteration.
        load: relative diagonal loading of the covariances (> 0). The default ``0.03`` is larger
            than for AuxIVA: with per-bin NMF variances of the current frame the weights
            ``1 / r`` can be very large in bins that ``W`` already nulls, and the loading keeps
            that self-reinforcement from locking onto a bad solution at start-up.
        eps: floor of variances, activations and bases.
        seed: seed of the uniform ``[0.1, 1]`` initial bases.
        trainable, forget_per_freq, tbptt, checkpoint, checkpoint_block: see ``OnlineAuxIVA``.

    Shapes:
        ``X``: ``(..., mics, freq, frames)`` complex -> ``Y``: ``(..., n_src, freq, frames)``.
    """

    def __init__(
        self,
        n_src: int,
        n_freq: int,
        n_basis: int = 10,
        forget: float = 0.99,
        minibatch: int = 2,
        inner_iter: int = 1,
        activation_iter: int = 1,
        ref_mic: int = 0,
        load: float = 3e-2,
        eps: float = 1e-10,
        seed: int = 0,
        trainable: bool = False,
        forget_per_freq: bool = False,
        tbptt: int | None = None,
        checkpoint: bool = False,
        checkpoint_block: int = 32,
    ) -> None:
        check_positive_int(n_src, "n_src")
        check_positive_int(n_freq, "n_freq")
        check_positive_int(n_basis, "n_basis")
        check_positive_int(minibatch, "minibatch")
        check_positive_int(inner_iter, "inner_iter")
        super().__init__(
            forget, load, eps, ref_mic, trainable, forget_per_freq, n_freq, tbptt, checkpoint,
            checkpoint_block,
        )  # fmt: skip
        self.n_src, self.n_freq, self.n_basis = n_src, n_freq, n_basis
        self.minibatch, self.inner_iter = minibatch, inner_iter
        self.activation_iter = check_positive_int(activation_iter, "activation_iter")
        gen = torch.Generator().manual_seed(seed)
        basis = 0.1 + 0.9 * torch.rand(n_src, n_freq, n_basis, generator=gen, dtype=torch.float64)
        self._register("basis_raw", _inv_softplus(basis))
        self._register("inner_weights", torch.ones(inner_iter))

    def _parameters_for(self, rdtype):
        params = super()._parameters_for(rdtype)
        params["basis"] = nn.functional.softplus(self.basis_raw.to(rdtype))
        params["exponents"] = 0.5 * self.inner_weights.to(rdtype)
        return params

    def init_state(self, X: torch.Tensor) -> State:
        """Initial state for streams shaped like ``X`` (only its shape, dtype, device are read).

        Args:
            X: ``(..., mics, freq, frames)`` complex.

        Returns:
            dict with ``W``, ``V`` (as ``OnlineAuxIVA``), ``basis`` ``(..., n_src, freq,
            n_basis)``, ``activation`` ``(..., n_src, n_basis)`` (ones), ``stat_num``,
            ``stat_den`` ``(..., n_src, freq, n_basis)`` (zeros) and ``frame`` ``(...,)``.
        """
        X = self._check_block(X)
        _resolve_n_src(self.n_src, X.shape[-3])
        if X.shape[-2] != self.n_freq:
            raise ValueError(
                f"X has {X.shape[-2]} frequency bins but the model was built with "
                f"n_freq={self.n_freq}"
            )
        if self.ref_mic >= X.shape[-3]:
            raise ValueError(f"ref_mic={self.ref_mic} but X has only {X.shape[-3]} mics")
        state = self._spatial_state(X, self.n_src)
        batch, rdtype = X.shape[:-3], X.real.dtype
        basis = nn.functional.softplus(self.basis_raw.to(device=X.device, dtype=rdtype))
        stats_shape = batch + (self.n_src, self.n_freq, self.n_basis)
        state["basis"] = basis.expand(stats_shape)
        state["activation"] = torch.ones(
            batch + (self.n_src, self.n_basis), dtype=rdtype, device=X.device
        )
        state["stat_num"] = torch.zeros(stats_shape, dtype=rdtype, device=X.device)
        state["stat_den"] = torch.zeros(stats_shape, dtype=rdtype, device=X.device)
        return state

    def _frame(self, x, state, params, beta, count):
        W, A, T, h = state["W"], state["A"], state["basis"], state["activation"]
        n_src = self.n_src
        keep = _mid(1.0 - beta, 2)
        xd, xo = packed_outer(x)
        xd, xo = xd.unsqueeze(-3), xo.unsqueeze(-3)
        C = _mixture_covariance(state["C"], x, beta) if "C" in state else None
        for i in range(self.inner_iter):
            y = _demix_frame(W, x, n_src)
            p = y.real.square() + y.imag.square()
            for _ in range(self.activation_iter):
                h = _nmf_activation_step(T, h, p, params["exponents"][i], self.eps)
            r = _nmf_model(T, h, self.eps)
            c = (beta.unsqueeze(-2) * r.reciprocal()).unsqueeze(-2)  # (..., K, 1, freq)
            Vd = keep * state["Vd"] + c * xd
            Vo = keep * state["Vo"] + c * xo
            W, A = self._spatial_step(W, A, Vd, Vo, C, params["load"])
        num, den, _ = _nmf_statistics(
            T, h, p, state["stat_num"], state["stat_den"], params["forget"], self.eps, r
        )
        if count is None:
            do_update = (state["frame"] + 1) % self.minibatch == 0
        else:
            do_update = (count + 1) % self.minibatch == 0
        T = _nmf_basis_update(T, num, den, do_update, self.eps)
        new = {"W": W, "A": A, "Vd": Vd, "Vo": Vo, "basis": T, "activation": h}
        new["stat_num"], new["stat_den"] = num, den
        if C is not None:
            new["C"] = C
        return self._output(W, A, x, n_src), new


# --------------------------------------------------------------------------------------------
# online IS-NMF (single channel, mask-based)
# --------------------------------------------------------------------------------------------


class OnlineISNMF(_OnlineBase):
    """Online IS-NMF of one channel (Lefevre, Bach & Fevotte 2011) with ratio-mask separation.

    Per frame ``x_t``: ``p = |x_t|^2``; ``inner_iter`` multiplicative updates of the frame's
    activations ``h`` with the bases ``T`` fixed; decayed statistics
    ``A <- alpha A + (p / r^2) h^T``, ``B <- alpha B + (1 / r) h^T`` (``r = T h``); every
    ``minibatch`` frames ``T <- sqrt(A / B)``. The ``n_basis`` components are
    assigned to ``n_src`` sources by a (soft) assignment matrix ``G`` ``(n_src, n_basis)``
    (columns sum to one); the source estimates are Wiener-like masks
    ``m_s = sum_c G_sc T_c h_c / sum_c T_c h_c`` applied to ``x_t``.

    Args:
        n_src: number of sources.
        n_freq: number of frequency bins.
        n_basis: number of NMF components (default assignment: split evenly and contiguously).
        forget: forgetting factor of the statistics in ``(0, 1]``.
        minibatch: update the bases every ``minibatch`` frames.
        inner_iter: activation updates per frame.
        assignment: optional ``(n_src, n_basis)`` nonnegative assignment (normalised per column).
        learn_assignment: learn the assignment as ``softmax`` over sources of a logit parameter
            (initialised from ``assignment`` / the even split, scaled by ``assignment_temp``).
        assignment_temp: logit scale of the learned assignment initialisation.
        exponent: exponent of the activation updates (1: Lefevre et al.; 0.5: MM).
        return_masks: ``step``/``forward`` also return the masks ``(..., n_src, freq, frames)``.
        eps: floor of variances, activations and bases.
        seed: seed of the initial bases.
        trainable, forget_per_freq, tbptt, checkpoint, checkpoint_block: see ``OnlineAuxIVA``.

    Shapes:
        ``X``: ``(..., freq, frames)`` (or ``(..., 1, freq, frames)``) complex ->
        ``Y``: ``(..., n_src, freq, frames)``.
    """

    _block_ndim = 2
    _ref_key = "basis"

    def __init__(
        self,
        n_src: int,
        n_freq: int,
        n_basis: int = 10,
        forget: float = 0.99,
        minibatch: int = 2,
        inner_iter: int = 2,
        assignment: torch.Tensor | None = None,
        learn_assignment: bool = False,
        assignment_temp: float = 5.0,
        exponent: float = 1.0,
        return_masks: bool = False,
        eps: float = 1e-10,
        seed: int = 0,
        trainable: bool = False,
        forget_per_freq: bool = False,
        tbptt: int | None = None,
        checkpoint: bool = False,
        checkpoint_block: int = 32,
    ) -> None:
        check_positive_int(n_src, "n_src")
        check_positive_int(n_freq, "n_freq")
        check_positive_int(n_basis, "n_basis")
        check_positive_int(minibatch, "minibatch")
        check_positive_int(inner_iter, "inner_iter")
        if n_basis < n_src and assignment is None:
            raise ValueError(f"n_basis={n_basis} must be >= n_src={n_src} to split the components")
        super().__init__(
            forget, 1e-3, eps, 0, trainable, forget_per_freq, n_freq, tbptt, checkpoint,
            checkpoint_block,
        )  # fmt: skip
        self.n_src, self.n_freq, self.n_basis = n_src, n_freq, n_basis
        self.minibatch, self.inner_iter = minibatch, inner_iter
        self.exponent = float(check_range(exponent, "exponent", 0.0, 1.0, low_inclusive=False,
                                          high_inclusive=True))  # fmt: skip
        self.return_masks = bool(return_masks)
        if assignment is None:
            owner = torch.arange(n_basis) * n_src // n_basis
            assignment = nn.functional.one_hot(owner, n_src).T.to(torch.float64)
        else:
            assignment = check_tensor(assignment, "assignment", min_ndim=2).to(torch.float64)
            if tuple(assignment.shape) != (n_src, n_basis) or bool((assignment < 0).any()):
                raise ValueError(
                    f"assignment must be a nonnegative (n_src, n_basis) = ({n_src}, {n_basis}) "
                    f"tensor, got shape {tuple(assignment.shape)}"
                )
            assignment = assignment / assignment.sum(0, keepdim=True).clamp_min(1e-12)
        self.learn_assignment = bool(learn_assignment)
        if learn_assignment:
            self.assignment_logits = nn.Parameter((assignment_temp * assignment).float())
        else:
            self.register_buffer("assignment", assignment.float())
        gen = torch.Generator().manual_seed(seed)
        basis = 0.1 + 0.9 * torch.rand(n_freq, n_basis, generator=gen, dtype=torch.float64)
        self._register("basis_raw", _inv_softplus(basis))

    def _parameters_for(self, rdtype):
        params = super()._parameters_for(rdtype)
        if self.learn_assignment:
            params["assignment"] = torch.softmax(self.assignment_logits.to(rdtype), dim=0)
        else:
            params["assignment"] = self.assignment.to(rdtype)
        return params

    def _prepare(self, X):
        X = self._check_block(X)
        if X.ndim >= 3 and X.shape[-3] == 1:
            X = X[..., 0, :, :]
        return X

    def _state_layout(self, state):
        T = state["basis"]
        return tuple(T.shape[:-2]), (), T.shape[-2]

    def init_state(self, X: torch.Tensor) -> State:
        """Initial state for single-channel streams shaped like ``X``.

        Args:
            X: ``(..., freq, frames)`` or ``(..., 1, freq, frames)`` complex (only the shape,
                dtype and device are read).

        Returns:
            dict with ``basis`` ``(..., freq, n_basis)``, ``activation`` ``(..., n_basis)``,
            ``stat_num``, ``stat_den`` ``(..., freq, n_basis)`` and ``frame`` ``(...,)``.
        """
        X = self._prepare(X)
        if X.shape[-2] != self.n_freq:
            raise ValueError(
                f"X has {X.shape[-2]} frequency bins but the model was built with "
                f"n_freq={self.n_freq}"
            )
        batch, rdtype, dev = X.shape[:-2], X.real.dtype, X.device
        shape = batch + (self.n_freq, self.n_basis)
        basis = nn.functional.softplus(self.basis_raw.to(device=dev, dtype=rdtype))
        return {
            "basis": basis.expand(shape),
            "activation": torch.ones(batch + (self.n_basis,), dtype=rdtype, device=dev),
            "stat_num": torch.zeros(shape, dtype=rdtype, device=dev),
            "stat_den": torch.zeros(shape, dtype=rdtype, device=dev),
            "frame": torch.zeros(batch, dtype=torch.int64, device=dev),
        }

    def _frame(self, x, state, params, beta, count):
        T, h = state["basis"], state["activation"]
        p = x.real**2 + x.imag**2
        exponent = torch.tensor(self.exponent, dtype=p.dtype, device=p.device)
        for _ in range(self.inner_iter):
            h = _nmf_activation_step(T, h, p, exponent, self.eps)
        num, den, r = _nmf_statistics(
            T, h, p, state["stat_num"], state["stat_den"], params["forget"], self.eps
        )
        components = T * h[..., None, :]  # (..., freq, n_basis)
        source_power = einsum(params["assignment"], components, "s b, ... f b -> ... s f")
        masks = source_power / r.unsqueeze(-2)
        if count is None:
            do_update = (state["frame"] + 1) % self.minibatch == 0
        else:
            do_update = (count + 1) % self.minibatch == 0
        T = _nmf_basis_update(T, num, den, do_update, self.eps)
        out = torch.stack([masks * x.unsqueeze(-2), masks.to(x.dtype)], dim=-3)  # (..., 2, S, F)
        new = {"basis": T, "activation": h, "stat_num": num, "stat_den": den}
        return out, new

    def step(self, X, state):
        """Process a block; returns ``(Y, state)`` or ``(Y, masks, state)`` with ``return_masks``.

        Args:
            X: ``(..., freq, frames)`` or ``(..., 1, freq, frames)`` complex block.
            state: dict from ``init_state`` / ``step``.

        Returns:
            ``Y`` ``(..., n_src, freq, frames)`` complex, optionally the real masks of the same
            shape, and the new state.
        """
        out, state = super().step(X, state)
        Y, masks = out[..., 0, :, :, :], out[..., 1, :, :, :].real
        return (Y, masks, state) if self.return_masks else (Y, state)

    def forward(self, X, state=None, return_state=False):
        """Separate a whole single-channel signal; see ``step`` for the outputs."""
        if state is None:
            state = self.init_state(X)
        res = self.step(X, state)
        return res if return_state else (res[:-1] if self.return_masks else res[0])
