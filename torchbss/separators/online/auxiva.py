"""Online AuxIVA: auxiliary-function IVA frame by frame, batched and streaming.

References:
    T. Taniguchi, N. Ono, A. Kawamura and S. Sagayama, "An auxiliary-function approach to
    online independent vector analysis for real-time blind source separation", HSCMA 2014.
"""

from __future__ import annotations

import torch

from torchbss.separators.online.base import State, config_repr
from torchbss.separators.online.spatial import (
    REALIGN_EVERY,
    REALIGN_ROUNDS,
    REALIGN_SILENCE,
    REALIGN_WINDOW,
    WARMUP_FRAMES,
    WARMUP_SWEEPS,
    OnlineSpatialSeparator,
    demix_frame,
    spatial_frame_planes,
)
from torchbss.source_models import SourceModel, as_source_model
from torchbss.source_models.iva import SphericalModel
from torchbss.updates.fused import demix_planes

__all__ = ["OnlineAuxIVA", "auxiva_frame_planes"]


def frame_weights_planes(
    model: SourceModel, y_re: torch.Tensor, y_im: torch.Tensor
) -> torch.Tensor:
    """The source model's weights ``(..., K, 1 or F)`` of one frame ``(..., K, F)`` (planes)."""
    if isinstance(model, SphericalModel) and model.uses_power_only():
        p = (y_re * y_re + y_im * y_im).sum(-1, keepdim=True)
        return model.weights_from_power(p, y_re.shape[-1])
    phi, _ = model(torch.complex(y_re, y_im).unsqueeze(-1))
    return phi[..., 0]


def auxiva_frame_planes(
    x: torch.Tensor,
    W: torch.Tensor,
    A: torch.Tensor,
    Vd: torch.Tensor,
    Vo: torch.Tensor,
    beta: torch.Tensor,
    load: torch.Tensor,
    model: SourceModel,
    eps: float,
    ref_mic: int,
) -> tuple[torch.Tensor, ...]:
    """One frame of online AuxIVA in real arithmetic (the body of ``compile=True``).

    The same steps as :meth:`OnlineAuxIVA.frame` on the planes layout of
    :mod:`torchbss.separators.online.spatial`: ``x`` ``(..., 2, M, F)``, ``W``, ``A``
    ``(..., 2, M, M, F)``, ``Vd`` ``(..., K, M, F)``, ``Vo`` ``(..., 2, K, P, F)``.

    Returns:
        ``(y, W, A, Vd, Vo)`` with the output ``y`` ``(..., K, F, 2)``.
    """
    phi = frame_weights_planes(model, *demix_planes(W, x, Vd.shape[-3]))
    return spatial_frame_planes(x, W, A, Vd, Vo, beta, phi, load, eps, ref_mic)


class OnlineAuxIVA(OnlineSpatialSeparator):
    """Online auxiliary-function IVA (Taniguchi et al. 2014).

    Per frame ``x_t``: ``y = W_{t-1} x_t``; weights ``phi_k`` from the source model (the same
    :class:`~torchbss.source_models.Laplace` / ``Gauss`` as batch AuxIVA, on this frame);
    ``V_k(t) = (1 - beta_t) V_k(t-1) + beta_t phi_k x_t x_t^H`` (see
    :mod:`torchbss.separators.online.base`); one IP1 sweep over the rows of ``W``
    (:func:`~torchbss.updates.ip1_sweep`); output ``W_t x_t`` scaled by the minimal distortion
    principle at ``ref_mic``. With ``n_src < mics`` the background rows follow the OverIVA rule
    from the recursive mixture covariance.

    Args:
        n_src: number of sources (default: number of mics, fixed at ``init_state``).
        forget: forgetting factor ``alpha`` in ``(0, 1]``.
        source_model: ``Laplace()``, ``Gauss()`` (or their names), or a stateless
            :class:`~torchbss.source_models.SourceModel` that works on one frame.
        ref_mic: reference microphone of the output scale.
        load: relative diagonal loading of the covariances before each solve (``> 0``).
        eps: floor of the IP1 normaliser and of the loading's mean diagonal.
        trainable: make ``forget`` (``sigmoid(forget_logit)``) and ``load``
            (``softplus(load_raw)``) learnable; the initial output is identical.
        forget_per_freq: one forgetting factor per frequency (needs ``n_freq``).
        n_freq: number of frequency bins (needed by ``forget_per_freq``; checked if given).
        tbptt: detach the state every ``tbptt`` frames of a ``step`` call (truncated BPTT).
        checkpoint: gradient checkpointing over blocks of ``checkpoint_block`` frames.
        checkpoint_block: frames per checkpointed block.
        compile: each frame as one compiled kernel in real arithmetic
            (:func:`auxiva_frame_planes`; see
            :class:`~torchbss.separators.online.spatial.OnlineSpatialSeparator`).
        realign_every: every this many frames, undo frequency-block permutations of the
            current demixing: the frequency-permutation alignment of the batch separators
            (:func:`~torchbss.updates.alignment.frequency_permutation`) on the outputs of the
            current ``W`` over the last ``realign_window`` frames, applied to ``W``, ``A`` and
            the per-source statistics (:meth:`~torchbss.separators.online.spatial.
            OnlineSpatialSeparator.realign`); ``0``: off. Causal: it only looks back.
        realign_window: frames the alignment looks back over (kept in ``state["recent"]``).
        realign_rounds: most centroid / assignment rounds of one realignment (the next one
            goes on from its result).
        realign_silence: frames of the window whose output power is below this fraction of
            its median frame power are left out of the realignment (near-silent frames carry
            no evidence of which source is active; ``0``: all frames count; 0.1 chosen on the
            validation rooms).
        warmup_frames, warmup_sweeps: on the first ``warmup_frames`` frames of a stream the
            IP1 sweep runs ``warmup_sweeps`` times per frame on the frame's covariances (the
            demixing catches up with the fast-changing statistics of the start; later frames
            cost as before); ``warmup_sweeps=1``: the paper's one sweep per frame. With
            ``compile=True`` the extra sweeps are one more compiled kernel.

    Shapes:
        ``X``: ``(..., mics, freq, frames)`` complex -> ``sources``: ``(..., n_src, freq,
        frames)``.
    """

    def __init__(
        self,
        n_src: int | None = None,
        forget: float = 0.99,
        source_model: str | SourceModel = "laplace",
        ref_mic: int = 0,
        load: float = 1e-3,
        eps: float = 1e-10,
        trainable: bool = False,
        forget_per_freq: bool = False,
        n_freq: int | None = None,
        tbptt: int | None = None,
        checkpoint: bool = False,
        checkpoint_block: int = 32,
        compile: bool = False,
        realign_every: int = REALIGN_EVERY,
        realign_window: int = REALIGN_WINDOW,
        realign_rounds: int = REALIGN_ROUNDS,
        realign_silence: float = REALIGN_SILENCE,
        warmup_frames: int = WARMUP_FRAMES,
        warmup_sweeps: int = WARMUP_SWEEPS,
    ) -> None:
        super().__init__(
            n_src, ref_mic, load, forget, eps, trainable, forget_per_freq, n_freq, tbptt,
            checkpoint, checkpoint_block, compile, realign_every, realign_window, realign_rounds,
            realign_silence, warmup_frames, warmup_sweeps,
        )  # fmt: skip
        self.source_model = as_source_model(source_model)

    def init_state(self, X: torch.Tensor, frame_mask: torch.Tensor | None = None) -> State:
        """Initial state for streams shaped like ``X`` (only its shape, dtype, device are read).

        Args:
            X: ``(..., mics, freq, frames)`` complex (e.g. the first block).

        Returns:
            dict with ``W`` ``(..., freq, mics, mics)`` (identity), its inverse ``A``, ``V``
            ``(..., n_src, freq, mics, mics)`` (zeros), ``frame`` ``(...,)`` int64, ``C``
            ``(..., freq, mics, mics)`` when ``n_src < mics``, and ``recent``
            ``(..., freq, 2 mics, realign_window)`` real (the frames the realignment looks back
            over, zeros) when ``realign_every > 0``.
        """
        return self.spatial_state(self.prepare_block(X))

    def frame(self, x, state, params, beta, count):
        warmup = self.warmup(state, count)
        if self.compile:
            y, W, A, Vd, Vo = self.kernel(auxiva_frame_planes)(
                x, state["W"], state["A"], state["Vd"], state["Vo"], beta, params["load"],
                self.source_model, self.eps, self.ref_mic,
            )  # fmt: skip
            y, W, A = self.warmup_planes(x, y, W, A, Vd, Vo, params["load"], warmup)
            return y, {"W": W, "A": A, "Vd": Vd, "Vo": Vo}
        W, A = state["W"], state["A"]
        n_src = state["Vd"].shape[-3]
        y = demix_frame(W, x, n_src)  # (..., K, F)
        phi, _ = self.source_model(y.unsqueeze(-1))  # (..., K, 1 or F, 1)
        Vd, Vo = self.update_covariances(state, x, beta, phi[..., 0])
        new = {"Vd": Vd, "Vo": Vo}
        C = None
        if "C" in state:
            C = new["C"] = self.update_mixture_covariance(state["C"], x, beta)
        W, A = self.spatial_step(W, A, Vd, Vo, C, params["load"], warmup)
        new["W"], new["A"] = W, A
        return self.output(W, A, x, n_src), new

    def extra_repr(self) -> str:
        return config_repr(n_src=self.n_src, forget=round(float(self.forget.mean()), 6))
