"""Source models: map separated estimates to the auxiliary weights of the spatial updates."""

from torchbss.source_models.base import SourceModel, masked_frame_mean, power
from torchbss.source_models.iva import Gauss, Laplace, gauss_weights, laplace_weights
from torchbss.source_models.neural import FrameCorrection, NeuralSourceModel
from torchbss.source_models.nmf import (
    NMF,
    NMFState,
    basis_from_statistics,
    nmf_activation_update,
    nmf_basis_statistics,
    nmf_init,
    nmf_update,
)

__all__ = [
    "as_source_model",
    "SourceModel",
    "Laplace",
    "Gauss",
    "NMF",
    "NMFState",
    "FrameCorrection",
    "NeuralSourceModel",
    "laplace_weights",
    "gauss_weights",
    "nmf_init",
    "nmf_update",
    "nmf_activation_update",
    "nmf_basis_statistics",
    "basis_from_statistics",
    "masked_frame_mean",
    "power",
]


def as_source_model(model: str | SourceModel) -> SourceModel:
    """A source-model module; a name (``"laplace"``, ``"gauss"``, ``"nmf"``) is shorthand for
    that class with its own defaults."""
    if isinstance(model, SourceModel):
        return model
    classes = {"laplace": Laplace, "gauss": Gauss, "nmf": NMF}  # the parameter-free models
    if isinstance(model, str) and model in classes:
        return classes[model]()
    raise ValueError(
        f"unknown source_model {model!r}; expected a SourceModel module or one of {sorted(classes)}"
    )
