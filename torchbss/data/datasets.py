"""What the training datasets share: reproducible per-example randomness, an epoch sampler, and
audio file access with errors that name the file.

The datasets themselves live in :mod:`torchbss.data.dynamic_mixing`
(:class:`~torchbss.data.dynamic_mixing.DynamicMixingDataset`) and :mod:`torchbss.data.folders`
(:class:`~torchbss.data.folders.WavFolderDataset`,
:class:`~torchbss.data.folders.StemFolderDataset`).

Reproducibility contract of every dataset here: ``dataset[i]`` is a pure function of the
dataset's constructor arguments (``seed`` included) and of ``i``. It draws all its randomness
from a ``torch.Generator`` seeded by :func:`example_generator` with ``(seed, i)``, never from a
global generator, so an example does not depend on the number of ``DataLoader`` workers, on
which worker made it, or on what was drawn before. Indices past ``len(dataset)`` are valid for
the randomised datasets and give new examples: :class:`EpochSampler` uses them to draw fresh
mixtures every epoch (``len`` is the epoch size).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import DistributedSampler

__all__ = [
    "AudioFileInfo",
    "audio_info",
    "read_audio",
    "example_generator",
    "uniform",
    "as_range",
    "EpochSampler",
]

_MASK64 = (1 << 64) - 1


def _splitmix64(x: int) -> int:
    """One step of the SplitMix64 mixer (Steele, Lea & Flood, OOPSLA 2014): a bijection on
    64-bit integers whose nearby inputs give unrelated outputs."""
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def example_generator(seed: int, *keys: int) -> torch.Generator:
    """A CPU generator seeded by ``(seed, *keys)``, e.g. ``(seed, split, index)``.

    Consecutive seeds or indices give unrelated streams (the key is hashed with SplitMix64),
    so ``seed=0, index=1`` and ``seed=1, index=0`` do not share random numbers.

    Args:
        seed: the user's seed (any int).
        *keys: further non-negative ints (split number, example index, ...).

    Returns:
        A freshly seeded ``torch.Generator`` on the CPU.
    """
    state = _splitmix64(int(seed) & _MASK64)
    for key in keys:
        state = _splitmix64(state ^ (int(key) & _MASK64))
    return torch.Generator().manual_seed(state & ((1 << 63) - 1))


def uniform(
    generator: torch.Generator, low: float, high: float, n: int | None = None
) -> torch.Tensor | float:
    """Uniform draw(s) in ``[low, high]`` (float64); a float when ``n`` is ``None``."""
    u = torch.rand(1 if n is None else n, generator=generator, dtype=torch.float64)
    u = low + (high - low) * u
    return float(u) if n is None else u


def as_range(
    value: float | Sequence[float],
    name: str,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
) -> tuple[float, float]:
    """Check a config range: a number ``x`` (read as ``(x, x)``) or a pair ``(low, high)``.

    Args:
        value: the number or the pair (a list from YAML is fine).
        name: argument name for the error message.
        minimum, maximum: allowed bounds (inclusive).

    Returns:
        ``(low, high)`` as floats with ``low <= high``.
    """
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        pair = (float(value), float(value))
    else:
        try:
            pair = tuple(float(v) for v in value)  # type: ignore[union-attr]
        except (TypeError, ValueError):
            pair = ()
        if len(pair) != 2:
            raise ValueError(f"{name} must be a number or a pair (low, high), got {value!r}")
    low, high = pair
    if not (math.isfinite(low) and math.isfinite(high)):
        raise ValueError(f"{name} must be finite, got {value!r}")
    if not low <= high:
        raise ValueError(f"{name} must satisfy low <= high, got {value!r}")
    if minimum is not None and low < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
    if maximum is not None and high > maximum:
        raise ValueError(f"{name} must be <= {maximum}, got {value!r}")
    return low, high


# --------------------------------------------------------------------------------------------
# audio files
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AudioFileInfo:
    """Header of an audio file: ``path``, ``frames`` (samples per channel), ``sample_rate``
    (Hz) and ``channels``."""

    path: Path
    frames: int
    sample_rate: int
    channels: int


def audio_info(path: str | os.PathLike) -> AudioFileInfo:
    """Read the header of an audio file (no samples are decoded): :func:`torchbss.io.info`
    with the path kept.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: soundfile cannot read it (the message names the file).
    """
    from torchbss.io import info

    meta = info(path)
    return AudioFileInfo(Path(path), meta.frames, meta.sample_rate, meta.channels)


def read_audio(path: str | os.PathLike, start: int = 0, frames: int = -1) -> torch.Tensor:
    """Read ``frames`` samples from ``start`` as a float32 ``(channels, frames)`` tensor
    (:func:`torchbss.io.load`); fewer come back only at the end of the file.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file cannot be decoded (the message names the file).
    """
    from torchbss.io import load

    return load(path, frame_offset=start, num_frames=frames)[0]


# --------------------------------------------------------------------------------------------
# sampler
# --------------------------------------------------------------------------------------------


class EpochSampler(DistributedSampler):
    """Indices ``epoch * size + i`` (``i`` shuffled or in order) for datasets that make a new
    example for every index, sharded over data-parallel processes.

    With a randomised dataset (dynamic mixing, random chunks) epoch ``e`` then sees new rooms
    and chunks while every example stays a function of its index: resuming at an epoch, or
    changing the number of workers, gives the same data. Lightning calls :meth:`set_epoch`
    at the start of each epoch.

    Under data parallelism (``num_replicas > 1``) process ``rank`` takes every
    ``num_replicas``-th index of the epoch's order, starting at ``rank``, so the processes'
    batches together hold exactly the examples of one process's batch of
    ``num_replicas x`` the size. Every process gets ``size // num_replicas`` indices (the last
    ``size % num_replicas`` of the epoch's order are left out), so that all take as many
    steps. It is a ``DistributedSampler`` so that Lightning does not wrap (and reshuffle) it
    again.

    Args:
        size: examples per epoch (usually ``len(dataset)``).
        shuffle: shuffle the order of the ``size`` indices of an epoch (seeded by
            ``(seed, epoch)``).
        seed: seed of the shuffling.
        fresh: ``True``: epoch ``e`` uses indices ``e * size + i`` (new examples each epoch);
            ``False``: always ``i`` (the same examples, as for validation).
        num_replicas: number of data-parallel processes.
        rank: this process's rank.
    """

    def __init__(
        self,
        size: int,
        *,
        shuffle: bool = True,
        seed: int = 0,
        fresh: bool = True,
        num_replicas: int = 1,
        rank: int = 0,
    ):
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ValueError(f"size must be a positive integer, got {size!r}")
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank must be in [0, num_replicas={num_replicas}), got {rank}")
        # no DistributedSampler.__init__: it needs a dataset and a process group
        self.size = size
        self.shuffle = shuffle
        self.seed = seed
        self.fresh = fresh
        self.num_replicas = num_replicas
        self.rank = rank
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose indices :meth:`__iter__` yields."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.size // self.num_replicas

    def __iter__(self) -> Iterator[int]:
        if self.shuffle:
            order = torch.randperm(self.size, generator=example_generator(self.seed, self.epoch))
        else:
            order = torch.arange(self.size)
        base = self.epoch * self.size if self.fresh else 0
        # every process takes as many indices (the epoch's last size % num_replicas are left
        # out): one with a batch fewer would wait forever for the others' next step
        used = len(self) * self.num_replicas
        return iter((order[:used] + base)[self.rank :: self.num_replicas].tolist())
