"""Batch (offline) blind source separators: AuxIVA and ILRMA."""

from torchbss.separators.auxiva import AuxIVA
from torchbss.separators.base import (
    IP1,
    IP2,
    ISS,
    IterativeSeparator,
    SeparationResult,
    SpatialUpdate,
)
from torchbss.separators.ilrma import ILRMA

__all__ = [
    "AuxIVA",
    "ILRMA",
    "IterativeSeparator",
    "SeparationResult",
    "SpatialUpdate",
    "IP1",
    "IP2",
    "ISS",
]
