"""Online AuxIVA: auxiliary-function IVA frame by frame, batched and streaming.

References:
    T. Taniguchi, N. Ono, A. Kawamura and S. Sagayama, "An auxiliary-function approach to
    online independent vector analysis for real-time blind source separation", HSCMA 2014.
"""

from __future__ import annotations

import torch

from torchbss.separators.online.base import State, config_repr
from torchbss.separators.online.spatial import OnlineSpatialSeparator, demix_frame
from torchbss.source_models import SourceModel, as_source_model

__all__ = ["OnlineAuxIVA"]


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
        compile: the IP1 step of each frame as one compiled kernel (see
            :class:`~torchbss.separators.online.spatial.OnlineSpatialSeparator`).

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
    ) -> None:
        super().__init__(
            n_src, ref_mic, load, forget, eps, trainable, forget_per_freq, n_freq, tbptt,
            checkpoint, checkpoint_block, compile,
        )  # fmt: skip
        self.source_model = as_source_model(source_model)

    def init_state(self, X: torch.Tensor, frame_mask: torch.Tensor | None = None) -> State:
        """Initial state for streams shaped like ``X`` (only its shape, dtype, device are read).

        Args:
            X: ``(..., mics, freq, frames)`` complex (e.g. the first block).

        Returns:
            dict with ``W`` ``(..., freq, mics, mics)`` (identity), its inverse ``A``, ``V``
            ``(..., n_src, freq, mics, mics)`` (zeros), ``frame`` ``(...,)`` int64, and ``C``
            ``(..., freq, mics, mics)`` when ``n_src < mics``.
        """
        return self.spatial_state(self.prepare_block(X))

    def frame(self, x, state, params, beta, count):
        W, A = state["W"], state["A"]
        n_src = state["Vd"].shape[-3]
        y = demix_frame(W, x, n_src)  # (..., K, F)
        phi, _ = self.source_model(y.unsqueeze(-1))  # (..., K, 1 or F, 1)
        Vd, Vo = self.update_covariances(state, x, beta, phi[..., 0])
        new = {"Vd": Vd, "Vo": Vo}
        C = None
        if "C" in state:
            C = new["C"] = self.update_mixture_covariance(state["C"], x, beta)
        W, A = self.spatial_step(W, A, Vd, Vo, C, params["load"])
        new["W"], new["A"] = W, A
        return self.output(W, A, x, n_src), new

    def extra_repr(self) -> str:
        return config_repr(n_src=self.n_src, forget=round(float(self.forget.mean()), 6))
