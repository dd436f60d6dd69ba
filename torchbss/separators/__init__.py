"""Blind source separators: batch AuxIVA and ILRMA, online AuxIVA, ILRMA and IS-NMF."""

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
from torchbss.separators.online import OnlineAuxIVA, OnlineILRMA, OnlineISNMF, state_to

__all__ = [
    "AuxIVA",
    "ILRMA",
    "OnlineAuxIVA",
    "OnlineILRMA",
    "OnlineISNMF",
    "state_to",
    "IterativeSeparator",
    "SeparationResult",
    "SpatialUpdate",
    "IP1",
    "IP2",
    "ISS",
]
