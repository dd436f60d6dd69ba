"""Source models: map separated estimates to the auxiliary weights of the spatial updates."""

from torchbss.source_models.base import SourceModel
from torchbss.source_models.iva import Gauss, Laplace, gauss_weights, laplace_weights
from torchbss.source_models.nmf import NMF, NMFState, nmf_init, nmf_update

SOURCE_MODELS = {"laplace": Laplace, "gauss": Gauss, "nmf": NMF}

__all__ = [
    "SourceModel",
    "Laplace",
    "Gauss",
    "NMF",
    "NMFState",
    "laplace_weights",
    "gauss_weights",
    "nmf_init",
    "nmf_update",
    "SOURCE_MODELS",
]
