"""Audio file I/O on top of soundfile: ``(channels, samples)`` tensors, atomic writes.

soundfile is an optional dependency (``pip install torchbss[io]``); it is imported on first use
so that the rest of torchbss works without it.

Writing never leaves a partial or clipped file behind silently:

* every file is written to a temporary file in the destination folder and renamed into place
  once complete (an error or an interrupt leaves the destination untouched);
* an existing file is replaced only with ``overwrite=True``;
* float output (``subtype="float"``, ``"float64"``) is never clipped; integer output that
  would exceed full scale is handled by ``overflow``: ``"rescale"`` (default: the whole file is
  scaled by ``0.999 / peak`` and a :class:`ClippingWarning` says so), ``"clip"`` (clipped, with
  a warning counting the samples) or ``"error"``;
* :func:`check_output_paths` checks a set of destinations (existing files, folders in the way,
  unwritable folders) *before* any work is done.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from ._validation import (
    check_choice,
    check_finite,
    check_positive_int,
    check_real_float,
    check_tensor,
)

__all__ = [
    "load",
    "save",
    "info",
    "AudioInfo",
    "iter_blocks",
    "MultiWriter",
    "check_output_paths",
    "ClippingWarning",
    "SUBTYPES",
    "OVERFLOW",
]

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
#: What :func:`save` does with integer output beyond full scale.
OVERFLOW = ("rescale", "clip", "error")
_FORMATS = {".wav": "WAV", ".flac": "FLAC", ".ogg": "OGG"}
_FLOAT_SUBTYPES = ("FLOAT", "DOUBLE")


class ClippingWarning(UserWarning):
    """Integer output exceeded full scale and was rescaled or clipped."""


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


def _sf_subtype(path: Path, subtype: str) -> str:
    """The libsndfile subtype for ``subtype`` in the format of ``path`` (checked)."""
    fmt = _format_of(path)
    if subtype not in SUBTYPES:
        raise ValueError(f"unknown subtype {subtype!r}; valid options are {sorted(SUBTYPES)}")
    sf_subtype = SUBTYPES[subtype]
    if fmt == "OGG":  # always (lossy) Vorbis, whatever the subtype (documented in save)
        return "VORBIS"
    if sf_subtype == "VORBIS":
        raise ValueError("subtype 'vorbis' needs an .ogg file")
    if fmt == "FLAC" and sf_subtype not in ("PCM_16", "PCM_24"):
        raise ValueError(
            f"FLAC stores int16 or int24 only, got subtype {subtype!r} for {str(path)!r}; "
            "write a .wav file for float output"
        )
    return sf_subtype


def _check_readable(path: str | os.PathLike) -> Path:
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"expected an audio file, got the folder {str(path)!r}")
    if not path.is_file():
        raise FileNotFoundError(f"audio file not found: {str(path)!r}")
    _format_of(path)
    return path


@dataclass(frozen=True)
class AudioInfo:
    """What :func:`info` reads from a file's header."""

    sample_rate: int
    channels: int
    frames: int


def info(path: str | os.PathLike) -> AudioInfo:
    """Sample rate, channels and length (samples) of an audio file, without reading it."""
    sf = _soundfile()
    path = _check_readable(path)
    try:
        meta = sf.info(str(path))
    except (RuntimeError, sf.LibsndfileError) as err:
        raise ValueError(f"could not read audio file {str(path)!r}: {err}") from err
    return AudioInfo(int(meta.samplerate), int(meta.channels), int(meta.frames))


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
    path = _check_readable(path)
    _check_read_dtype(dtype)
    check_positive_int(frame_offset, "frame_offset", minimum=0)
    if isinstance(num_frames, bool) or not isinstance(num_frames, int) or num_frames < -1:
        raise ValueError(f"num_frames must be an int >= 0, or -1 (to the end), got {num_frames!r}")
    np_dtype = "float32" if dtype == torch.float32 else "float64"
    try:
        data, sample_rate = sf.read(
            str(path), start=frame_offset, frames=num_frames, dtype=np_dtype, always_2d=True
        )
    except (RuntimeError, sf.LibsndfileError) as err:
        raise ValueError(f"could not decode audio file {str(path)!r}: {err}") from err
    return torch.from_numpy(data.T.copy()), int(sample_rate)


#: libsndfile's channel limit
_MAX_CHANNELS = 1024


def _check_write_rate(sample_rate: object) -> int:
    if (
        isinstance(sample_rate, bool)
        or not isinstance(sample_rate, int)
        or not 0 < sample_rate < 2**31
    ):
        raise ValueError(
            f"sample_rate must be a positive integer (Hz) below 2**31, got {sample_rate!r}"
        )
    return sample_rate


def _check_read_dtype(dtype: object) -> None:
    if dtype not in (torch.float32, torch.float64):
        raise TypeError(f"dtype must be torch.float32 or torch.float64, got {dtype}")


def iter_blocks(
    path: str | os.PathLike, block_samples: int, *, dtype: torch.dtype = torch.float32
) -> Iterator[torch.Tensor]:
    """Read a file block by block: ``(channels, n)`` tensors with ``n <= block_samples``."""
    sf = _soundfile()
    path = _check_readable(path)
    _check_read_dtype(dtype)
    check_positive_int(block_samples, "block_samples")  # (0 yielded empty blocks forever)
    np_dtype = "float32" if dtype == torch.float32 else "float64"
    try:
        for data in sf.blocks(str(path), blocksize=block_samples, dtype=np_dtype, always_2d=True):
            yield torch.from_numpy(data.T.copy())
    except (RuntimeError, sf.LibsndfileError) as err:
        raise ValueError(f"could not decode audio file {str(path)!r}: {err}") from err


def check_output_paths(
    paths: Sequence[str | os.PathLike],
    overwrite: bool = False,
    audio: bool = True,
    subtype: str | None = None,
) -> list[Path]:
    """Check that every path can be written, before any work is done.

    Raises ``FileExistsError`` for an existing file without ``overwrite``, ``IsADirectoryError``
    for a folder in the way, ``NotADirectoryError`` when a parent is a file and
    ``PermissionError`` for a folder that cannot be written; each names the path. Missing
    parent folders are fine (they are created when writing). ``audio``: the paths must also end
    in an audio format this module writes (``False``: any file, e.g. JSON or CSV scores), and
    with ``subtype`` that format must take it (``ValueError`` otherwise).
    """
    checked = []
    for p in paths:
        path = Path(p)
        if audio:
            _format_of(path)
            if subtype is not None:
                _sf_subtype(path, subtype)
        if path.is_dir():
            raise IsADirectoryError(f"output {str(path)!r} is an existing folder, not a file")
        if path.exists() and not overwrite:
            raise FileExistsError(
                f"output {str(path)!r} already exists; pass overwrite (--overwrite) to replace it"
            )
        parent = path.parent
        while not parent.exists():
            parent = parent.parent
        if not parent.is_dir():
            raise NotADirectoryError(
                f"cannot write {str(path)!r}: {str(parent)!r} is a file, not a folder"
            )
        if not os.access(parent, os.W_OK | os.X_OK):
            raise PermissionError(
                f"cannot write {str(path)!r}: folder {str(parent)!r} is not writable"
            )
        checked.append(path)
    if len({p.resolve() for p in checked}) != len(checked):
        raise ValueError(f"output paths must be distinct, got {[str(p) for p in checked]}")
    return checked


def _overflow_gain(peak: float, sf_subtype: str, overflow: str, path: Path) -> float | None:
    """The gain applied to integer output beyond full scale (``None``: clip)."""
    check_choice(overflow, "overflow", OVERFLOW)
    if sf_subtype in _FLOAT_SUBTYPES or peak <= 1.0:
        return 1.0
    if overflow == "error":
        raise ValueError(
            f"{str(path)!r}: peak {peak:.3f} exceeds full scale for integer subtype "
            f"{sf_subtype}; use a float subtype, overflow='rescale' or overflow='clip'"
        )
    if overflow == "rescale":
        gain = 0.999 / peak
        warnings.warn(
            f"{str(path)!r}: peak {peak:.3f} exceeds full scale for {sf_subtype}; the file was "
            f"scaled by {gain:.4f} ({20 * torch.tensor(gain).log10().item():.1f} dB). Use a "
            "float subtype to keep the original level",
            ClippingWarning,
            stacklevel=3,
        )
        return gain
    return None


def _temporary_path(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600: give the file the usual mode
    return Path(tmp)


def save(
    path: str | os.PathLike,
    audio: torch.Tensor,
    sample_rate: int,
    *,
    subtype: str = "int16",
    overflow: str = "rescale",
    overwrite: bool = True,
) -> Path:
    """Write a ``(channels, samples)`` tensor to an audio file, atomically.

    Args:
        path: output ``.wav``, ``.flac`` or ``.ogg`` file (parent folders are created).
        audio: ``(channels, samples)`` real floating point tensor. A 1-D ``(samples,)`` tensor
            is rejected (use ``audio.unsqueeze(0)`` for mono).
        sample_rate: sampling rate in Hz (> 0).
        subtype: one of :data:`SUBTYPES` (``int16``, ``int24``, ``float``, ...); an ``.ogg``
            file is always (lossy) Vorbis, whatever the subtype.
        overflow: integer output beyond full scale: ``"rescale"``, ``"clip"`` or ``"error"``
            (see the module docstring; float output is never changed).
        overwrite: replace an existing file (``False``: raise ``FileExistsError``).

    Returns:
        The path written.
    """
    sf = _soundfile()
    path = Path(path)
    check_tensor(audio, "audio", min_ndim=2, layout="(channels, samples)")
    if audio.ndim != 2:
        raise ValueError(
            f"audio must have shape (channels, samples), got shape {tuple(audio.shape)}"
        )
    check_real_float(audio, "audio")
    check_finite(audio, "audio")
    if audio.shape[-1] == 0:
        raise ValueError("audio is empty (0 samples); nothing to write")
    _check_write_rate(sample_rate)
    if audio.shape[0] > _MAX_CHANNELS:
        raise ValueError(
            f"audio has {audio.shape[0]} channels and {audio.shape[1]} samples; expected "
            f"(channels, samples) with at most {_MAX_CHANNELS} channels (transposed?)"
        )
    sf_subtype = _sf_subtype(path, subtype)
    check_output_paths([path], overwrite=overwrite)
    data = audio.detach().to("cpu", torch.float64)
    gain = _overflow_gain(float(data.abs().max()), sf_subtype, overflow, path)
    if gain is None:
        n = int((data.abs() > 1).sum())
        warnings.warn(
            f"{str(path)!r}: {n} samples beyond full scale were clipped", ClippingWarning, 2
        )
        data = data.clamp(-1.0, 1.0)
    elif gain != 1.0:
        data = data * gain
    tmp = _temporary_path(path)
    try:
        sf.write(str(tmp), data.T.numpy(), sample_rate, subtype=sf_subtype, format=_format_of(path))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


class MultiWriter:
    """Write several files block by block, atomically, as a context manager.

    Blocks are ``(files, samples)`` tensors (one channel per file) or ``(files, channels,
    samples)``. The files appear (renamed from temporary files) only when the ``with`` block
    ends without error. Integer output cannot be rescaled in a stream: samples beyond full scale
    are clipped and counted, and a :class:`ClippingWarning` says how many at the end (write
    float output to keep them).

    Args:
        paths: output paths (checked with :func:`check_output_paths` on entry).
        sample_rate: sampling rate in Hz.
        subtype: one of :data:`SUBTYPES`.
        overwrite: replace existing files.
    """

    def __init__(
        self, paths: Sequence[Path], sample_rate: int, *, subtype: str = "float",
        overwrite: bool = False,
    ) -> None:  # fmt: skip
        self.paths = check_output_paths(paths, overwrite=overwrite)
        self.sample_rate = _check_write_rate(sample_rate)
        self.subtypes = [_sf_subtype(p, subtype) for p in self.paths]
        self._files: list = []
        self._tmps: list[Path] = []
        self.clipped = 0

    def __enter__(self) -> MultiWriter:
        return self

    def write(self, block: torch.Tensor) -> None:
        """Append ``(files, samples)`` or ``(files, channels, samples)`` to the files."""
        sf = _soundfile()
        if block.ndim == 2:
            block = block.unsqueeze(1)
        if block.shape[0] != len(self.paths):
            raise ValueError(f"block has {block.shape[0]} sources for {len(self.paths)} files")
        if not self._files:
            for path, sub in zip(self.paths, self.subtypes):
                tmp = _temporary_path(path)
                self._tmps.append(tmp)
                self._files.append(
                    sf.SoundFile(str(tmp), "w", self.sample_rate, block.shape[1], sub,
                                 format=_format_of(path))
                )  # fmt: skip
        data = block.detach().to("cpu", torch.float64)
        check_finite(data, "block")  # (as save: NaN would be written, or clipped to full scale)
        for f, sub, chunk in zip(self._files, self.subtypes, data):
            if sub not in _FLOAT_SUBTYPES:
                self.clipped += int((chunk.abs() > 1).sum())
                chunk = chunk.clamp(-1.0, 1.0)
            f.write(chunk.T.numpy())

    def __exit__(self, exc_type, exc, tb) -> None:
        for f in self._files:
            f.close()
        try:
            if exc_type is None:
                if not self._files:
                    raise ValueError("nothing was written: the stream was empty")
                for tmp, path in zip(self._tmps, self.paths):
                    os.replace(tmp, path)
                if self.clipped:
                    warnings.warn(
                        f"{self.clipped} samples beyond full scale were clipped in "
                        f"{[str(p) for p in self.paths]}; write float output to keep them",
                        ClippingWarning,
                        stacklevel=2,
                    )
        finally:
            for tmp in self._tmps:
                tmp.unlink(missing_ok=True)
