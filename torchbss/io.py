"""Audio file I/O on top of soundfile: ``(channels, samples)`` float32 tensors.

soundfile is an optional dependency (``pip install torchbss[io]``); it is imported on first use
so that the rest of torchbss works without it.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from ._validation import check_finite, check_real_float, check_tensor

__all__ = ["load", "save", "SUBTYPES"]

#: Accepted ``subtype`` names for :func:`save` and what they mean.
SUBTYPES = {
    "int16": "PCM_16",
    "int24": "PCM_24",
    "int32": "PCM_32",
    "float": "FLOAT",
    "float32": "FLOAT",
    "float64": "DOUBLE",
    "vorbis": "VORBIS",
}
_FORMATS = {".wav": "WAV", ".flac": "FLAC", ".ogg": "OGG"}


def _soundfile():
    try:
        import soundfile
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "torchbss.io needs the 'soundfile' package: pip install 'torchbss[io]'"
        ) from err
    return soundfile


def _format_of(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix not in _FORMATS:
        raise ValueError(
            f"unsupported audio format {suffix!r} for {str(path)!r}; "
            f"supported extensions are {sorted(_FORMATS)}"
        )
    return _FORMATS[suffix]


def load(
    path: str | os.PathLike,
    *,
    frame_offset: int = 0,
    num_frames: int = -1,
    dtype: torch.dtype = torch.float32,
) -> tuple[torch.Tensor, int]:
    """Load an audio file as a ``(channels, samples)`` floating point tensor.

    Args:
        path: a ``.wav``, ``.flac`` or ``.ogg`` file.
        frame_offset: first sample to read.
        num_frames: number of samples to read (``-1``: to the end).
        dtype: ``torch.float32`` (default) or ``torch.float64``; PCM is scaled to [-1, 1).

    Returns:
        ``(audio, sample_rate)`` with ``audio`` of shape ``(channels, samples)``.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: unsupported extension, or a file soundfile cannot decode.
    """
    sf = _soundfile()
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"audio file not found: {str(path)!r}")
    _format_of(path)
    if dtype not in (torch.float32, torch.float64):
        raise TypeError(f"dtype must be torch.float32 or torch.float64, got {dtype}")
    np_dtype = "float32" if dtype == torch.float32 else "float64"
    try:
        data, sample_rate = sf.read(
            str(path),
            start=frame_offset,
            frames=num_frames,
            dtype=np_dtype,
            always_2d=True,
        )
    except (RuntimeError, sf.LibsndfileError) as err:
        raise ValueError(f"could not decode audio file {str(path)!r}: {err}") from err
    audio = torch.from_numpy(data.T.copy())
    return audio, int(sample_rate)


def save(
    path: str | os.PathLike,
    audio: torch.Tensor,
    sample_rate: int,
    *,
    subtype: str = "int16",
    clip: bool = True,
) -> Path:
    """Write a ``(channels, samples)`` tensor to an audio file.

    Args:
        path: output ``.wav``, ``.flac`` or ``.ogg`` file (parent folders are created).
        audio: ``(channels, samples)`` real floating point tensor, nominally in [-1, 1].
            A 1-D ``(samples,)`` tensor is rejected (use ``audio.unsqueeze(0)`` for mono).
        sample_rate: sampling rate in Hz (> 0).
        subtype: one of :data:`SUBTYPES` (``int16``, ``int24``, ``float``, ...).
        clip: clip to [-1, 1] before integer encoding (otherwise libsndfile wraps).

    Returns:
        The path written.
    """
    sf = _soundfile()
    path = Path(path)
    fmt = _format_of(path)
    check_tensor(audio, "audio", min_ndim=2, layout="(channels, samples)")
    if audio.ndim != 2:
        raise ValueError(
            f"audio must have shape (channels, samples), got shape {tuple(audio.shape)}"
        )
    check_real_float(audio, "audio")
    check_finite(audio, "audio")
    if audio.shape[-1] == 0:
        raise ValueError("audio is empty (0 samples); nothing to write")
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, int) or sample_rate <= 0:
        raise ValueError(f"sample_rate must be a positive integer (Hz), got {sample_rate!r}")
    if subtype not in SUBTYPES:
        raise ValueError(f"unknown subtype {subtype!r}; valid options are {sorted(SUBTYPES)}")
    sf_subtype = SUBTYPES[subtype]
    if fmt == "OGG":
        sf_subtype = "VORBIS"
    elif sf_subtype == "VORBIS":
        raise ValueError("subtype 'vorbis' needs an .ogg file")
    elif fmt == "FLAC" and sf_subtype not in ("PCM_16", "PCM_24"):
        raise ValueError(f"FLAC stores int16 or int24 only, got subtype {subtype!r}")
    data = audio.detach().to("cpu", torch.float64)
    if clip:
        data = data.clamp(-1.0, 1.0)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), data.T.numpy(), sample_rate, subtype=sf_subtype, format=fmt)
    return path
