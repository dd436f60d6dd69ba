"""torchbss: PyTorch-native, batched, differentiable audio source separation.

Shapes: time signals ``(..., channels, samples)``; STFTs ``(..., channels, freq, frames)``
complex; separated sources ``(..., sources, freq, frames)``. Metrics take
``(reference, estimate)``; losses take ``(estimate, reference)``.
"""

from torchbss import functional, losses, metrics, signal, source_models, updates
from torchbss.losses import PITLoss, pit
from torchbss.metrics import bss_eval_sdr, sdr, si_sdr
from torchbss.separators import (
    ILRMA,
    AuxIVA,
    OnlineAuxIVA,
    OnlineILRMA,
    OnlineISNMF,
    SeparationResult,
    Separator,
)
from torchbss.signal import STFT, Normalize, apply_chunked, derive_stems
from torchbss.source_models import NMF, Gauss, Laplace, SourceModel
from torchbss.updates import IP1, IP2, ISS, minimum_distortion, projection_back

__version__ = "0.1.0"

__all__ = [
    "STFT",
    "Normalize",
    "apply_chunked",
    "derive_stems",
    "AuxIVA",
    "ILRMA",
    "OnlineAuxIVA",
    "OnlineILRMA",
    "OnlineISNMF",
    "Separator",
    "SeparationResult",
    "IP1",
    "IP2",
    "ISS",
    "SourceModel",
    "Laplace",
    "Gauss",
    "NMF",
    "projection_back",
    "minimum_distortion",
    "sdr",
    "si_sdr",
    "bss_eval_sdr",
    "pit",
    "PITLoss",
    "functional",
    "signal",
    "metrics",
    "losses",
    "updates",
    "source_models",
    "io",
    "plot",
    "report",
    "inference",
    "export",
    "images",
    "runlog",
    "evaluation",
    "benchmark",
    "models",
    "__version__",
]


_LAZY = ("io", "plot", "report", "inference", "export", "images", "runlog", "evaluation",
         "benchmark", "models")  # fmt: skip


def __getattr__(name: str):
    # optional dependencies (soundfile, matplotlib) are imported only when asked for
    if name in _LAZY:
        import importlib

        return importlib.import_module(f"torchbss.{name}")
    raise AttributeError(f"module 'torchbss' has no attribute {name!r}")
