"""Training losses: ``loss(estimate, reference)``, minimised, scalar by default.

:func:`negative_si_sdr`, :func:`negative_sdr` (optional soft threshold),
:func:`multi_resolution_stft_l1`, and the permutation invariant wrapper :func:`pit` /
:class:`PITLoss` with :func:`apply_permutation`.
"""

from torchbss.losses.pit import PITLoss, PITResult, apply_permutation, pairwise_loss_matrix, pit
from torchbss.losses.sdr import NegSDR, NegSISDR, negative_sdr, negative_si_sdr
from torchbss.losses.spectral import (
    DEFAULT_RESOLUTIONS,
    MultiResolutionSTFTLoss,
    multi_resolution_stft_l1,
)

__all__ = [
    "negative_si_sdr",
    "negative_sdr",
    "NegSISDR",
    "NegSDR",
    "multi_resolution_stft_l1",
    "MultiResolutionSTFTLoss",
    "DEFAULT_RESOLUTIONS",
    "pit",
    "PITLoss",
    "PITResult",
    "pairwise_loss_matrix",
    "apply_permutation",
]
