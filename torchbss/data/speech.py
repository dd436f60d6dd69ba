"""The two short speech utterances shipped with the package (for the demo and examples)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import torch

__all__ = ["bundled_speech_files", "bundled_speech"]

_FILES = ("espeak_01.flac", "espeak_04.flac")


def bundled_speech_files() -> list[Path]:
    """Paths of the bundled 16 kHz mono utterances (see ``torchbss/assets/README.md``)."""
    root = resources.files("torchbss") / "assets"
    return [Path(str(root / name)) for name in _FILES]


def bundled_speech(num_samples: int | None = None) -> tuple[torch.Tensor, int]:
    """Load the bundled utterances as ``(2, samples)`` float32, cut to a common length.

    Args:
        num_samples: cut (or zero-pad) every utterance to this many samples (default: the
            shortest utterance).

    Returns:
        ``(signals, sample_rate)``.
    """
    from ..io import load

    signals = [load(p)[0][0] for p in bundled_speech_files()]
    n = num_samples or min(s.shape[-1] for s in signals)
    out = torch.zeros(len(signals), n)
    for i, s in enumerate(signals):
        out[i, : min(n, s.shape[-1])] = s[:n]
    return out, 16000
