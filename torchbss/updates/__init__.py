"""Spatial updates of the demixing matrices: pure functions with their strategy classes.

Shared by the batch separators (one sweep per iteration) and the online separators (one sweep
per frame). See :mod:`torchbss.updates.base` for the notation and the update contract.

* :mod:`~torchbss.updates.covariance`: weighted covariances and the one diagonal loading;
* :mod:`~torchbss.updates.ip`: IP1 (:func:`ip1_sweep`, the single implementation) and IP2;
* :mod:`~torchbss.updates.iss`: iterative source steering;
* :mod:`~torchbss.updates.overiva`: OverIVA background rows, PCA reduction;
* :mod:`~torchbss.updates.scaling`: projection back, minimal distortion;
* :mod:`~torchbss.updates.alignment`: frequency-permutation alignment of the outputs;
* :mod:`~torchbss.updates.hermitian`: tiny Hermitian algebra in a frequency-last layout.
"""

from torchbss.updates.alignment import (
    cluster_permutation,
    frequency_permutation,
    permute_along,
    permute_demixing,
    permute_sources,
    power_features,
    power_permutation,
)
from torchbss.updates.base import SpatialUpdate, UpdateCache, demix
from torchbss.updates.covariance import (
    DEFAULT_LOAD,
    diagonal_loading,
    mixture_covariance,
    outer_products,
    weighted_covariance,
    weighted_covariance_from_outer,
)
from torchbss.updates.ip import IP1, IP2, ip1_sweep, ip1_update, ip2_update, loaded_inverse
from torchbss.updates.iss import ISS, iss_update
from torchbss.updates.overiva import background_update, embed_reduced_demixing, principal_basis
from torchbss.updates.scaling import minimum_distortion, projection_back

__all__ = [
    "as_update",
    "SpatialUpdate",
    "UpdateCache",
    "IP1",
    "IP2",
    "ISS",
    "DEFAULT_LOAD",
    "demix",
    "diagonal_loading",
    "weighted_covariance",
    "mixture_covariance",
    "outer_products",
    "weighted_covariance_from_outer",
    "loaded_inverse",
    "ip1_sweep",
    "ip1_update",
    "ip2_update",
    "iss_update",
    "background_update",
    "principal_basis",
    "embed_reduced_demixing",
    "projection_back",
    "minimum_distortion",
    "frequency_permutation",
    "power_permutation",
    "power_features",
    "cluster_permutation",
    "permute_sources",
    "permute_demixing",
    "permute_along",
]


def as_update(update: str | SpatialUpdate) -> SpatialUpdate:
    """A spatial update object; a name (``"ip1"``, ``"ip2"``, ``"iss"``) is shorthand for that
    class with its own defaults (``"ip2"`` is ``IP2()``)."""
    if isinstance(update, SpatialUpdate):
        return update
    classes = {cls.name: cls for cls in (IP1, IP2, ISS)}
    if isinstance(update, str) and update in classes:
        return classes[update]()
    raise ValueError(
        f"unknown update {update!r}; expected a SpatialUpdate object or one of {sorted(classes)}"
    )
