"""Online ILRMA: online IS-NMF source model + online IP1, frame by frame.

References:
    T. Nakashima and N. Ono, "Online independent low-rank matrix analysis as a lightweight and
    trainable model for real-time multichannel music source separation", 2026.
    A. Lefevre, F. Bach and C. Fevotte, "Online algorithms for nonnegative matrix factorization
    with the Itakura-Saito divergence", WASPAA 2011.
"""

from __future__ import annotations

import torch
from torch import nn

from torchbss._validation import check_choice, check_positive_int, check_range
from torchbss.separators.online.base import State, config_repr, inverse_softplus
from torchbss.separators.online.spatial import (
    REALIGN_EVERY,
    REALIGN_ROUNDS,
    REALIGN_SILENCE,
    REALIGN_WINDOW,
    WARMUP_FRAMES,
    OnlineSpatialSeparator,
    demix_frame,
    spatial_frame_planes,
)
from torchbss.source_models.neural import FrameCorrection
from torchbss.source_models.nmf import (
    _activation_update,
    _basis_statistics,
    basis_from_statistics,
    broadcast_matmul,
)
from torchbss.updates.fused import demix_planes

__all__ = ["OnlineILRMA", "nmf_frame_planes"]


def decayed(stat: torch.Tensor, new: torch.Tensor, forget: torch.Tensor) -> torch.Tensor:
    """``alpha * stat + new`` with a scalar or per-frequency ``alpha`` (stats ``(..., F, B)``)."""
    alpha = forget if forget.ndim == 0 else forget[:, None]
    return alpha * stat + new


def minibatch_due(state: State, count: int | None, minibatch: int) -> torch.Tensor | bool:
    """Whether the bases are updated after this frame: every ``minibatch`` frames per stream."""
    if count is None:
        return (state["frame"] + 1) % minibatch == 0
    return (count + 1) % minibatch == 0


def update_bases_where(
    T: torch.Tensor, num: torch.Tensor, den: torch.Tensor, due: torch.Tensor | bool, eps: float
) -> torch.Tensor:
    """``basis_from_statistics(num, den)`` for the streams where ``due``, else ``T``."""
    if due is False:
        return T
    new = basis_from_statistics(num, den, eps)
    if due is True:
        return new
    return torch.where(due.reshape(due.shape + (1,) * (T.ndim - due.ndim)), new, T)


def frame_weights(
    p: torch.Tensor,
    T: torch.Tensor,
    h: torch.Tensor,
    exponent: torch.Tensor,
    n_iter: int,
    eps: float,
    mm=torch.matmul,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``n_iter`` activation updates of one frame, then the weights ``phi = 1 / (T h)``.

    Args:
        p: ``(..., K, F, 1)`` power of the frame's estimates.
        T: ``(..., K, F, B)`` bases; h: ``(..., K, B, 1)`` activations.

        mm: ``torch.matmul``, or :func:`~torchbss.source_models.nmf.broadcast_matmul` in the
            compiled frame (fused with the elementwise passes).

    Returns:
        ``(h, phi)`` with ``phi`` ``(..., K, F)``.
    """
    for _ in range(n_iter):
        h = _activation_update(p, T, h, exponent, eps, mm=mm)
    return h, mm(T, h).clamp_min(eps).reciprocal()[..., 0]


def basis_step(
    p: torch.Tensor,
    T: torch.Tensor,
    h: torch.Tensor,
    num: torch.Tensor,
    den: torch.Tensor,
    forget: torch.Tensor,
    due: torch.Tensor | bool,
    eps: float,
    mm=torch.matmul,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Decayed basis statistics with this frame's, and the bases where an update is ``due``
    (``mm`` as in :func:`frame_weights`).

    Returns:
        ``(T, num, den)``, each ``(..., K, F, B)``.
    """
    num_t, den_t = _basis_statistics(p, T, h, eps, None, mm=mm)
    num, den = decayed(num, num_t, forget), decayed(den, den_t, forget)
    return update_bases_where(T, num, den, due, eps), num, den


def nmf_frame_planes(
    x: torch.Tensor,
    W: torch.Tensor,
    T: torch.Tensor,
    h: torch.Tensor,
    num: torch.Tensor,
    den: torch.Tensor,
    exponent: torch.Tensor,
    forget: torch.Tensor,
    due: torch.Tensor,
    activation_iter: int,
    eps: float,
    last: bool,
) -> tuple[torch.Tensor, ...]:
    """The NMF half of one inner iteration in real arithmetic (compiled frames).

    The frame's power ``p = |W x|^2`` (``x`` ``(..., 2, M, F)``, ``W`` ``(..., 2, M, M, F)``),
    its activations and weights (:func:`frame_weights`) and, on the ``last`` inner iteration,
    the decayed basis statistics and bases (:func:`basis_step`). The spatial half is
    :func:`~torchbss.separators.online.spatial.spatial_frame_planes`; the two run as separate
    kernels, which TorchInductor compiles to faster code than one fused frame.

    Returns:
        ``(h, phi, T, num, den, p)`` (``T``, ``num``, ``den`` unchanged unless ``last``; ``p``
        ``(..., K, F, 1)`` the frame's power, for a learned weight correction).
    """
    y_re, y_im = demix_planes(W, x, T.shape[-3])
    p = (y_re * y_re + y_im * y_im).unsqueeze(-1)  # (..., K, F, 1)
    h, phi = frame_weights(p, T, h, exponent, activation_iter, eps, broadcast_matmul)
    if last:
        T, num, den = basis_step(p, T, h, num, den, forget, due, eps, broadcast_matmul)
    return h, phi, T, num, den, p


class OnlineILRMA(OnlineSpatialSeparator):
    """Online ILRMA (Nakashima & Ono 2026): online IS-NMF source model + online IP1.

    Per frame ``x_t`` and inner iteration ``i``: ``y = W x_t``, ``p = |y|^2``; the activations
    ``h_k`` of this frame get ``activation_iter`` multiplicative IS-NMF updates with the bases
    fixed (:func:`~torchbss.source_models.nmf_activation_update`, starting from the previous
    frame's activations); ``r_k = T_k h_k``;
    ``V_k(t) = (1 - beta_t) V_k(t-1) + beta_t x_t x_t^H / r_k``; one IP1 sweep. After the inner
    iterations the decayed basis statistics (:func:`~torchbss.source_models.nmf_basis_statistics`)
    are accumulated and, every ``minibatch`` frames (a per-stream counter in the state), the
    bases become ``sqrt(A / B)``. The output ``W_t x_t`` is scaled by minimal distortion.

    Trainable (unrolled) parameters, with safe parameterisations and defaults reproducing the
    plain algorithm exactly: ``forget_logit`` (``alpha = sigmoid``; scalar or per frequency),
    ``basis_raw`` (initial bases ``= softplus``), ``load_raw`` (loading ``= softplus``),
    ``inner_weights`` (per inner iteration, multiplier of the activation exponent ``1/2``).

    Args:
        n_freq: number of frequency bins (the initial bases are a parameter of that size).
        n_src: number of sources (default: number of mics, fixed at ``init_state``).
        n_basis: NMF bases per source.
        forget: forgetting factor ``alpha`` in ``(0, 1]`` (spatial and NMF statistics). The
            default 0.96 (and ``load``, ``n_basis``) was chosen on the held-out validation
            protocol (BENCHMARKS.md): the best second-half and whole-signal means and the fewest
            collapsed runs among 0.96-0.995 x loads 1e-3-3e-2.
        minibatch: update the bases every ``minibatch`` frames.
        inner_iter: (activation update + IP1) iterations per frame.
        activation_iter: multiplicative updates of the frame's activations per inner iteration.
        ref_mic: reference microphone of the output scale.
        load: relative diagonal loading of the covariances (``> 0``).
        eps: floor of variances, activations and bases.
        seed: seed of the random initial bases.
        basis_init: ``"flat"``: bases ``1 + U(-jitter, jitter)`` (nearly flat spectra, so the
            model starts as the time-varying Gauss model of online AuxIVA, ``r_ft ~ mean power
            of the frame``, and learns spectral shapes as the bases adapt; the jitter breaks the
            symmetry between bases), or ``"uniform"``: ``U(0.1, 1)`` (Kitamura's batch init).
        basis_jitter: half-width of the flat init's jitter.
        trainable, forget_per_freq, tbptt, checkpoint, checkpoint_block, compile,
            realign_every, realign_window, realign_rounds, realign_silence, warmup_frames,
            warmup_sweeps: see
            :class:`~torchbss.separators.OnlineAuxIVA` (``realign_*``: the running
            frequency-permutation alignment, on by default; ``warmup_*``: off by default for
            online ILRMA, whose whole-signal gain on the validation rooms was within noise,
            +0.14 dB, with the second half 0.03 dB lower).
        correction_hidden: ``> 0``: a learned correction of each frame's NMF weights
            (:class:`~torchbss.source_models.FrameCorrection`, hidden layers of this width,
            trained end to end with ``trainable=True``, else frozen; the identity until
            trained; with ``compile=True`` it runs eagerly between the compiled NMF and spatial
            kernels); ``0``: none (the paper's algorithm).

    Shapes:
        ``X``: ``(..., mics, freq, frames)`` complex -> ``sources``: ``(..., n_src, freq,
        frames)``.
    """

    source_keys = ("V", "basis", "stat_num", "stat_den")

    def __init__(
        self,
        n_freq: int,
        n_src: int | None = None,
        n_basis: int = 2,
        forget: float = 0.96,
        minibatch: int = 2,
        inner_iter: int = 1,
        activation_iter: int = 1,
        ref_mic: int = 0,
        load: float = 3e-2,
        eps: float = 1e-10,
        seed: int = 0,
        basis_init: str = "flat",
        basis_jitter: float = 0.1,
        trainable: bool = False,
        forget_per_freq: bool = False,
        tbptt: int | None = None,
        checkpoint: bool = False,
        checkpoint_block: int = 32,
        compile: bool = False,
        realign_every: int = REALIGN_EVERY,
        realign_window: int = REALIGN_WINDOW,
        realign_rounds: int = REALIGN_ROUNDS,
        realign_silence: float = REALIGN_SILENCE,
        warmup_frames: int = WARMUP_FRAMES,
        warmup_sweeps: int = 1,
        correction_hidden: int = 0,
    ) -> None:
        check_positive_int(n_freq, "n_freq")
        check_choice(basis_init, "basis_init", ("flat", "uniform"))
        check_range(basis_jitter, "basis_jitter", 0.0, 1.0)
        super().__init__(
            n_src, ref_mic, load, forget, eps, trainable, forget_per_freq, n_freq, tbptt,
            checkpoint, checkpoint_block, compile, realign_every, realign_window, realign_rounds,
            realign_silence, warmup_frames, warmup_sweeps,
        )  # fmt: skip
        self.n_basis = check_positive_int(n_basis, "n_basis")
        self.minibatch = check_positive_int(minibatch, "minibatch")
        self.inner_iter = check_positive_int(inner_iter, "inner_iter")
        self.activation_iter = check_positive_int(activation_iter, "activation_iter")
        self.seed = check_positive_int(seed, "seed", minimum=0)
        # one row of bases per source slot; n_src may be fixed only at init_state, so the
        # parameter holds bases for up to n_src (or, if None, for MAX sources) lazily: the
        # sources use the first rows.
        n_rows = n_src if n_src is not None else _MAX_SOURCES
        self.basis_init, self.basis_jitter = basis_init, float(basis_jitter)
        gen = torch.Generator().manual_seed(seed)
        u = torch.rand(n_rows, n_freq, n_basis, generator=gen, dtype=torch.float64)
        if basis_init == "flat":
            basis = 1.0 + self.basis_jitter * (2.0 * u - 1.0)
        else:
            basis = 0.1 + 0.9 * u
        self.register_trainable("basis_raw", inverse_softplus(basis))
        self.register_trainable("inner_weights", torch.ones(inner_iter))
        check_positive_int(correction_hidden, "correction_hidden", minimum=0)
        self.correction = None
        if correction_hidden:  # frozen like the other parameters unless trainable
            self.correction = FrameCorrection(n_freq, correction_hidden).requires_grad_(trainable)

    def parameters_for(self, rdtype):
        params = super().parameters_for(rdtype)
        params["exponents"] = 0.5 * self.inner_weights.to(rdtype)
        return params

    def init_state(self, X: torch.Tensor, frame_mask: torch.Tensor | None = None) -> State:
        """Initial state for streams shaped like ``X`` (only its shape, dtype, device are read).

        Args:
            X: ``(..., mics, freq, frames)`` complex.

        Returns:
            dict with ``W``, ``A``, ``V`` (and ``C``, ``recent``) as :class:`OnlineAuxIVA`,
            ``basis`` ``(..., n_src, freq, n_basis)``, ``activation`` ``(..., n_src, n_basis)``
            (ones), ``stat_num``, ``stat_den`` ``(..., n_src, freq, n_basis)`` (zeros),
            ``frame``.
        """
        X = self.prepare_block(X)
        state = self.spatial_state(X)
        n_src = state["V"].shape[-4]
        if n_src > self.basis_raw.shape[0]:
            raise ValueError(
                f"X has {X.shape[-3]} mics, so {n_src} sources, but this OnlineILRMA holds "
                f"initial bases for at most {self.basis_raw.shape[0]}; pass n_src explicitly"
            )
        batch, rdtype = X.shape[:-3], X.real.dtype
        raw = self.basis_raw[:n_src].to(device=X.device, dtype=rdtype)
        shape = batch + (n_src, X.shape[-2], self.n_basis)
        state["basis"] = nn.functional.softplus(raw).expand(shape)
        state["activation"] = torch.ones(
            batch + (n_src, self.n_basis), dtype=rdtype, device=X.device
        )
        state["stat_num"] = torch.zeros(shape, dtype=rdtype, device=X.device)
        state["stat_den"] = torch.zeros(shape, dtype=rdtype, device=X.device)
        return state

    def frame(self, x, state, params, beta, count):
        warmup = self.warmup(state, count)
        if self.compile:
            return self._compiled_frame(x, state, params, beta, count, warmup)
        W, A, T = state["W"], state["A"], state["basis"]
        h = state["activation"].unsqueeze(-1)  # (..., K, B, 1)
        n_src = T.shape[-3]
        C = None
        if "C" in state:
            C = self.update_mixture_covariance(state["C"], x, beta)
        for i in range(self.inner_iter):
            y = demix_frame(W, x, n_src)
            p = (y.real.square() + y.imag.square()).unsqueeze(-1)  # (..., K, F, 1)
            h, phi = frame_weights(
                p, T, h, params["exponents"][i], self.activation_iter, self.eps
            )  # phi = 1 / r, (..., K, F)
            if self.correction is not None:
                phi = self.correction(p[..., 0], phi)
            Vd, Vo = self.update_covariances(state, x, beta, phi)
            W, A = self.spatial_step(W, A, Vd, Vo, C, params["load"], warmup)
        due = minibatch_due(state, count, self.minibatch)
        T, num, den = basis_step(
            p, T, h, state["stat_num"], state["stat_den"], params["forget"], due, self.eps
        )
        new = {"W": W, "A": A, "Vd": Vd, "Vo": Vo, "basis": T, "activation": h[..., 0]}
        new["stat_num"], new["stat_den"] = num, den
        if C is not None:
            new["C"] = C
        return self.output(W, A, x, n_src), new

    def _compiled_frame(self, x, state, params, beta, count, warmup):
        """:meth:`frame` on the planes layout: per inner iteration the compiled NMF half, then
        the compiled spatial half."""
        due = minibatch_due(state, count, self.minibatch)
        if isinstance(due, bool):  # one layout for the kernel: a flag per stream
            due = torch.full(state["frame"].shape, due, dtype=torch.bool, device=x.device)
        W, A, T = state["W"], state["A"], state["basis"]
        h, num, den = state["activation"].unsqueeze(-1), state["stat_num"], state["stat_den"]
        for i in range(self.inner_iter):
            h, phi, T, num, den, p = self.kernel(nmf_frame_planes)(
                x, W, T, h, num, den, params["exponents"][i], params["forget"], due,
                self.activation_iter, self.eps, i == self.inner_iter - 1,
            )  # fmt: skip
            if self.correction is not None:  # eager, between the two compiled kernels
                phi = self.correction(p[..., 0], phi)
            y, W, A, Vd, Vo = self.kernel(spatial_frame_planes)(
                x, W, A, state["Vd"], state["Vo"], beta, phi, params["load"], self.eps,
                self.ref_mic,
            )  # fmt: skip
            y, W, A = self.warmup_planes(x, y, W, A, Vd, Vo, params["load"], warmup)
        new = {"W": W, "A": A, "Vd": Vd, "Vo": Vo, "basis": T, "activation": h[..., 0]}
        new["stat_num"], new["stat_den"] = num, den
        return y, new

    def extra_repr(self) -> str:
        return config_repr(
            n_freq=self.n_freq, n_src=self.n_src, n_basis=self.n_basis, minibatch=self.minibatch,
            inner_iter=self.inner_iter,
        )  # fmt: skip


#: initial bases held when ``n_src`` is left to the number of mics
_MAX_SOURCES = 8
