"""Online (frame-by-frame) separators with explicit, tensor-only state."""

from torchbss.separators.online.auxiva import OnlineAuxIVA
from torchbss.separators.online.base import OnlineSeparator, OnlineStream, State, state_to
from torchbss.separators.online.ilrma import OnlineILRMA
from torchbss.separators.online.isnmf import OnlineISNMF
from torchbss.separators.online.spatial import OnlineSpatialSeparator

__all__ = [
    "OnlineSeparator",
    "OnlineSpatialSeparator",
    "OnlineStream",
    "OnlineAuxIVA",
    "OnlineILRMA",
    "OnlineISNMF",
    "State",
    "state_to",
]
