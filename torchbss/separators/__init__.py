"""Separators, one contract for all (:mod:`torchbss.separators.base`): batch AuxIVA and ILRMA,
online AuxIVA, ILRMA and IS-NMF."""

from torchbss.separators.auxiva import AuxIVA
from torchbss.separators.base import Callback, SeparationResult, Separator
from torchbss.separators.ilrma import ILRMA
from torchbss.separators.iterative import IterativeSeparator, IterativeState
from torchbss.separators.online import (
    OnlineAuxIVA,
    OnlineILRMA,
    OnlineISNMF,
    OnlineSeparator,
    OnlineStream,
    state_to,
)

__all__ = [
    "Separator",
    "SeparationResult",
    "Callback",
    "IterativeSeparator",
    "IterativeState",
    "OnlineSeparator",
    "OnlineStream",
    "AuxIVA",
    "ILRMA",
    "OnlineAuxIVA",
    "OnlineILRMA",
    "OnlineISNMF",
    "state_to",
]
