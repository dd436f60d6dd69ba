"""ILRMA: independent low-rank matrix analysis (IVA spatial model + NMF source model), batched.

References:
    D. Kitamura, N. Ono, H. Sawada, H. Kameoka and H. Saruwatari, "Determined blind source
    separation unifying independent vector analysis and nonnegative matrix factorization",
    IEEE/ACM TASLP 24(9), 2016.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from torchbss.separators.base import IterativeSeparator, SpatialUpdate
from torchbss.source_models.nmf import NMF
from torchbss.updates import DEFAULT_LOAD

__all__ = ["ILRMA"]


class ILRMA(IterativeSeparator):
    """ILRMA on a batch of mixtures ``(..., mics, freq, frames)``.

    Every iteration: one multiplicative NMF update per source (bases, then activations), one
    spatial sweep (IP1 by default; IP2/ISS also work) with weights ``1 / lambda``, then the
    normalisation that rescales each demixing row to unit output power together with its NMF
    variance (so the cost ``sum_{k,f} mean_t (|y|^2/lambda + log lambda) - 2 sum_f log|det W_f|``
    is unchanged). The cost is non-increasing over iterations.

    The NMF state is explicit: pass ``source_state=NMFState(basis, activations)`` to warm start,
    get the final factors from ``return_state=True``. The random init draws from a
    ``torch.Generator`` seeded with ``seed`` (no global RNG).

    By default ``W`` is initialised by ``init_iter=10`` AuxIVA-IP2 iterations (Laplace model)
    instead of the identity: the NMF then fits estimates that are already partly separated,
    which makes ILRMA far less dependent on its random NMF init (mean SI-SDR improvement on the
    shared speech mixtures 7.0 dB with 2 and with 10 bases, against 6.3 and 3.3 dB for
    pyroomacoustics). ``init_iter=0, load=0, normalize="pyroomacoustics"`` with the same initial
    factors reproduces ``pyroomacoustics.bss.ilrma`` to float64 rounding.

    Differences with ``pyroomacoustics.bss.ilrma`` (0.10.1): it initialises the factors with
    ``np.random.rand`` (pass the same factors as ``source_state`` for parity) and its
    normalisation scales the *columns* of ``W`` (``normalize="pyroomacoustics"`` reproduces
    this; the default ``"rows"`` is the cost-preserving version of Kitamura et al.). It requires
    ``n_src == mics``; here ``n_src < mics`` first reduces the mixture by PCA to ``n_src``
    channels (``overdetermined="auto"``) or, with IP1 and ``overdetermined="background"``, uses
    the OverIVA background subspace.

    Args:
        n_iter: number of iterations.
        n_basis: NMF bases per source.
        update: ``"ip1"``, ``"ip2"``, ``"iss"`` or a spatial update object.
        n_src: number of sources (default: mics).
        ref_mic: reference microphone of the scaling.
        scaling: ``"projection_back"``, ``"minimum_distortion"`` or ``None``.
        normalize: ``"rows"`` (default), ``None`` or ``"pyroomacoustics"``.
        seed: seed of the NMF initialisation (``None``: random).
        source_model: override the NMF model (e.g. ``NMF(n_basis, eps=...)`` or a custom one).
        overdetermined: ``"auto"`` (PCA), ``"pca"`` or ``"background"`` (IP1 only).
        load: relative diagonal loading of the weighted covariances.
        checkpoint: per-iteration gradient checkpointing.
        track_cost: record the cost per iteration in the result.
        eps: floor of the NMF factors and variance.
        init_iter: AuxIVA iterations that initialise ``W`` (``0``: identity, as pyroomacoustics).
        init_update: spatial update of those iterations (``"ip2"``; ``"ip1"`` is used
            instead when the OverIVA background route needs it).

    Example:
        >>> import torch
        >>> X = torch.randn(2, 2, 33, 40, dtype=torch.complex64)
        >>> res = ILRMA(n_iter=5, n_basis=2)(X, return_state=True)
        >>> res.Y.shape, res.source_state.basis.shape
        (torch.Size([2, 2, 33, 40]), torch.Size([2, 2, 33, 2]))
    """

    def __init__(
        self,
        n_iter: int = 100,
        n_basis: int = 10,
        update: str | SpatialUpdate = "ip1",
        n_src: int | None = None,
        ref_mic: int = 0,
        scaling: str | None = "projection_back",
        normalize: str | None = "rows",
        seed: int | None = 0,
        source_model: nn.Module | None = None,
        overdetermined: str = "auto",
        load: float = DEFAULT_LOAD,
        checkpoint: bool = False,
        track_cost: bool = True,
        eps: float = 1e-15,
        init_iter: int = 10,
        init_update: str | SpatialUpdate | None = "ip2",
        **kwargs: Any,
    ) -> None:
        if source_model is None:
            source_model = NMF(n_basis=n_basis, eps=eps, seed=seed)
        if overdetermined == "auto":
            overdetermined = "pca"
        super().__init__(
            n_iter=n_iter,
            update=update,
            source_model=source_model,
            n_src=n_src,
            ref_mic=ref_mic,
            scaling=scaling,
            normalize=normalize,
            overdetermined=overdetermined,
            load=load,
            checkpoint=checkpoint,
            track_cost=track_cost,
            init_iter=init_iter,
            init_update=init_update,
            **kwargs,
        )
