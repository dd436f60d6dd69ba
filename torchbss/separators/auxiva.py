"""AuxIVA: independent vector analysis with auxiliary-function (MM) updates, batched.

References:
    N. Ono, "Stable and fast update rules for independent vector analysis based on auxiliary
    function technique", WASPAA 2011 (AuxIVA, IP1).
    N. Ono, "Fast stereo independent vector analysis and its implementation on mobile phone",
    IWAENC 2012 (IP2).
    R. Scheibler and N. Ono, "Fast and stable blind source separation with rank-1 updates",
    ICASSP 2020 (ISS).
    R. Scheibler and N. Ono, "Independent vector analysis with more microphones than sources",
    WASPAA 2019 (OverIVA).
"""

from __future__ import annotations

from typing import Any

from torch import nn

from torchbss.separators.base import IterativeSeparator, SpatialUpdate
from torchbss.updates import DEFAULT_LOAD

__all__ = ["AuxIVA"]


class AuxIVA(IterativeSeparator):
    """Auxiliary-function IVA on a batch of mixtures ``(..., mics, freq, frames)``.

    Minimises ``sum_k mean_t G(||y_kt||) - 2 sum_f log|det W_f|`` (``G`` from the source model:
    ``"laplace"`` ``G(r) = r``, ``"gauss"`` time-varying Gaussian, or any source-model module)
    with IP1, IP2 or ISS updates, each of which never increases the cost.

    The default update is IP2 (pairwise, cyclic pairs for an odd number of sources; with more
    mics than sources the mixture is first reduced by PCA): on the shared speech mixtures it
    converges in far fewer sweeps than IP1 (mean SI-SDR improvement 5.9 dB after 50 iterations
    against 2.6 dB for IP1 and for pyroomacoustics). ``update="ip1", load=0`` reproduces
    ``pyroomacoustics.bss.auxiva`` (OverIVA when ``n_src < mics``) to float64 rounding.

    Args:
        n_iter: number of iterations.
        update: ``"ip1"``, ``"ip2"``, ``"iss"`` or a ``SpatialUpdate`` object.
        source_model: ``"laplace"``, ``"gauss"`` or a source-model ``nn.Module``.
        n_src: number of sources (default: mics). ``n_src < mics``: OverIVA background with IP1,
            PCA to ``n_src`` channels with IP2/ISS (see :mod:`torchbss.separators.base`).
        ref_mic: reference microphone of the scaling.
        scaling: ``"projection_back"``, ``"minimum_distortion"`` or ``None``.
        overdetermined: ``"auto"``, ``"background"`` or ``"pca"``.
        load: relative diagonal loading of the weighted covariances.
        checkpoint: per-iteration gradient checkpointing (identical gradients, less memory).
        track_cost: record the cost per iteration in the result (``return_state=True``).
        **kwargs: forwarded to :class:`~torchbss.separators.base.IterativeSeparator`.

    Example:
        >>> import torch
        >>> X = torch.randn(4, 2, 65, 50, dtype=torch.complex64)  # (batch, mics, freq, frames)
        >>> Y = AuxIVA(n_iter=10)(X)
        >>> Y.shape
        torch.Size([4, 2, 65, 50])
    """

    def __init__(
        self,
        n_iter: int = 50,
        update: str | SpatialUpdate = "ip2",
        source_model: str | nn.Module = "laplace",
        n_src: int | None = None,
        ref_mic: int = 0,
        scaling: str | None = "projection_back",
        overdetermined: str = "auto",
        load: float = DEFAULT_LOAD,
        checkpoint: bool = False,
        track_cost: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            n_iter=n_iter,
            update=update,
            source_model=source_model,
            n_src=n_src,
            ref_mic=ref_mic,
            scaling=scaling,
            overdetermined=overdetermined,
            load=load,
            checkpoint=checkpoint,
            track_cost=track_cost,
            **kwargs,
        )
