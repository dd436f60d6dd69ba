"""Datasets read from folders of audio files: mixture/reference pairs and MUSDB18-style stems.

* :class:`WavFolderDataset`: one mixture file and one references file per example
  (``<name>_mix.flac`` + ``<name>_ref.flac`` as in ``shared/data/mixtures``; the suffixes are
  arguments), read whole or in chunks (random, or consecutive to cover every file).
* :class:`StemFolderDataset`: one folder per track with one file per stem
  (``track/{mixture,bass,drums,other,vocals}.wav``, the MUSDB18-HQ layout), random chunks,
  random gains and cross-track remixing (each stem from a random track and offset).

Both follow the reproducibility contract of :mod:`torchbss.data.datasets`: an example is a
function of the constructor arguments and of its index only.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch.utils.data import Dataset

from torchbss._validation import check_positive

from .datasets import AudioFileInfo, as_range, audio_info, example_generator, read_audio, uniform

__all__ = ["WavFolderDataset", "StemFolderDataset"]


def _check_folder(root: Path, what: str) -> None:
    if not root.exists():
        raise FileNotFoundError(f"{what} folder not found: {str(root)!r}")
    if not root.is_dir():
        raise NotADirectoryError(f"{what} folder is not a directory: {str(root)!r}")


def _check_pair(a: AudioFileInfo, b: AudioFileInfo, what: str) -> None:
    """Same sample rate and length, or a ``ValueError`` naming both files."""
    if a.sample_rate != b.sample_rate:
        raise ValueError(
            f"sample rates differ between {what}: {str(a.path)!r} has {a.sample_rate} Hz, "
            f"{str(b.path)!r} has {b.sample_rate} Hz"
        )
    if a.frames != b.frames:
        raise ValueError(
            f"lengths differ between {what}: {str(a.path)!r} has {a.frames} samples, "
            f"{str(b.path)!r} has {b.frames} samples"
        )


def _segment_samples(segment_s: float | None, sample_rate: int) -> int | None:
    if segment_s is None:
        return None
    check_positive(segment_s, "segment_s (seconds, or None)")
    samples = int(round(segment_s * sample_rate))
    if samples < 1:
        raise ValueError(
            f"segment_s={segment_s} is less than one sample at {sample_rate} Hz: empty examples"
        )
    return samples


def _nonempty(info: AudioFileInfo) -> AudioFileInfo:
    """``info``, refused when its file holds no sample (it would give silent examples)."""
    if info.frames < 1:
        raise ValueError(f"{str(info.path)!r} holds no audio (0 samples)")
    return info


def _chunk(path: Path, start: int, frames: int | None, total: int) -> torch.Tensor:
    """``(channels, frames)`` from ``start``, zero-padded past the end of the file."""
    if frames is None:
        return read_audio(path)
    x = read_audio(path, start, min(frames, total - start))
    if x.shape[-1] < frames:
        x = torch.nn.functional.pad(x, (0, frames - x.shape[-1]))
    return x


def _randint(g: torch.Generator, high: int) -> int:
    """Uniform integer in ``[0, high)``."""
    return int(torch.randint(high, (1,), generator=g))


class _WindowedDataset(Dataset):
    """Shared indexing of the folder datasets: fixed windows ``self._windows`` (``len`` = their
    number), or random windows (``len`` = ``self.length`` or :meth:`_n_units`,
    and any index >= 0 gives a fresh example) when :attr:`fresh_indices`."""

    _windows: list
    length: int | None

    @property
    def fresh_indices(self) -> bool:
        """Whether indices past ``len`` give new examples (random windows)."""
        raise NotImplementedError

    def _n_units(self) -> int:
        raise NotImplementedError

    def __len__(self) -> int:
        if self.fresh_indices:
            return self.length or self._n_units()
        return len(self._windows)

    def _check_index(self, index: int) -> int:
        index = int(index)
        if index < 0 or (not self.fresh_indices and index >= len(self._windows)):
            raise IndexError(f"index {index} out of range for {len(self)} examples")
        return index


class WavFolderDataset(_WindowedDataset):
    """Examples stored as a mixture file and a references file each.

    Every ``<name><mixture_suffix>`` in ``root`` that matches ``include`` is an example; its
    targets are in ``<name><reference_suffix>`` (same sample rate and length, one channel per
    source). With the defaults this reads ``shared/data/mixtures`` (``2x2_00_mix.flac`` +
    ``2x2_00_ref.flac``: references = images of each source at mic 0).

    Chunks:

    * ``segment_s=None``: whole files, one example per file (batch them with the DataModule's
      ``collate="pad"`` when their lengths differ);
    * ``random_chunks=True``: one random window per example, example ``i`` from file
      ``i % n_files``; indices past ``len`` give new windows (fresh chunks every epoch with
      :class:`~torchbss.data.datasets.EpochSampler`);
    * ``random_chunks=False``: consecutive windows covering every file, in order (the last
      window of a file is zero-padded), for validation and test.

    Args:
        root: the folder.
        mixture_suffix, reference_suffix: file name endings of the two files of an example.
        include: glob pattern on ``<name>`` (e.g. ``"2x2_*"``).
        segment_s: window length (s), or ``None`` for whole files.
        random_chunks: random windows (train) or consecutive windows (val/test).
        length: examples per epoch with random chunks (default: the number of files).
        seed: seed of the random windows.
        sample_rate: expected sample rate (default: that of the first file; all must agree).

    Returns (``dataset[i]``):
        ``{"mixture": (mics, samples), "reference": (sources, samples)}`` float32, plus
        ``file_index`` (into :attr:`names`) and ``start`` (first sample of the window).
    """

    def __init__(
        self,
        root: str | Path,
        *,
        mixture_suffix: str = "_mix.flac",
        reference_suffix: str = "_ref.flac",
        include: str = "*",
        segment_s: float | None = None,
        random_chunks: bool = True,
        length: int | None = None,
        seed: int = 0,
        sample_rate: int | None = None,
    ) -> None:
        super().__init__()
        self.root = Path(root)
        _check_folder(self.root, "mixture")
        if not mixture_suffix or not reference_suffix or mixture_suffix == reference_suffix:
            raise ValueError(
                f"mixture_suffix and reference_suffix must be two different non-empty endings, "
                f"got {mixture_suffix!r} and {reference_suffix!r}"
            )
        mixtures = sorted(
            p
            for p in self.root.glob(include + mixture_suffix)
            if p.is_file() and not p.name.startswith(".")  # hidden (e.g. macOS ._ files)
        )
        if not mixtures:
            raise ValueError(
                f"no mixture files matching {include + mixture_suffix!r} in {str(self.root)!r}"
            )
        #: example names (the file names without the suffixes)
        self.names = [p.name[: -len(mixture_suffix)] for p in mixtures]
        self.files: list[tuple[AudioFileInfo, AudioFileInfo]] = []
        for name, mix_path in zip(self.names, mixtures):
            ref_path = self.root / (name + reference_suffix)
            if not ref_path.is_file():
                raise FileNotFoundError(
                    f"mixture {str(mix_path)!r} has no references file {str(ref_path)!r}"
                )
            mix, ref = _nonempty(audio_info(mix_path)), _nonempty(audio_info(ref_path))
            _check_pair(mix, ref, "a mixture and its references")
            if self.files:
                first_mix, first_ref = self.files[0]
                if mix.sample_rate != first_mix.sample_rate:
                    raise ValueError(
                        f"sample rates differ between examples: {str(first_mix.path)!r} has "
                        f"{first_mix.sample_rate} Hz, {str(mix.path)!r} has {mix.sample_rate} Hz"
                    )
                if (mix.channels, ref.channels) != (first_mix.channels, first_ref.channels):
                    raise ValueError(
                        f"examples cannot be batched: {str(first_mix.path)!r} has "
                        f"{first_mix.channels} mics and {first_ref.channels} sources, "
                        f"{str(mix.path)!r} has {mix.channels} and {ref.channels}; narrow "
                        f"'include' to one layout"
                    )
            self.files.append((mix, ref))
        self.sample_rate = self.files[0][0].sample_rate
        if sample_rate is not None and sample_rate != self.sample_rate:
            raise ValueError(
                f"{str(self.files[0][0].path)!r} has sample rate {self.sample_rate} Hz, "
                f"expected {sample_rate} Hz (sample_rate)"
            )
        self.segment = _segment_samples(segment_s, self.sample_rate)
        self.random_chunks = random_chunks
        self.seed = int(seed)
        if length is not None and (
            not isinstance(length, int) or isinstance(length, bool) or length < 1
        ):
            raise ValueError(f"length must be a positive integer or None, got {length!r}")
        if length is not None and not self._random:
            raise ValueError(
                "length sets the epoch size of random windows; with whole files or consecutive "
                "windows the number of examples is fixed by the files: leave length unset"
            )
        # consecutive windows: (file, start) of every window, in order
        self._windows: list[tuple[int, int]] = []
        if self.segment is None or not random_chunks:
            step = self.segment
            for f, (mix, _) in enumerate(self.files):
                starts = [0] if step is None else range(0, max(mix.frames, 1), step)
                self._windows += [(f, s) for s in starts]
        self.length = length

    @property
    def _random(self) -> bool:
        return self.segment is not None and self.random_chunks

    @property
    def fresh_indices(self) -> bool:
        """Whether indices past ``len`` give new examples (random windows)."""
        return self._random

    def _n_units(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        index = self._check_index(index)
        if self._random:
            f = index % len(self.files)
            frames = self.files[f][0].frames
            g = example_generator(self.seed, index)
            start = _randint(g, max(frames - self.segment, 0) + 1)
        else:
            f, start = self._windows[index]
        mix, ref = self.files[f]
        return {
            "mixture": _chunk(mix.path, start, self.segment, mix.frames),
            "reference": _chunk(ref.path, start, self.segment, ref.frames),
            "file_index": torch.tensor(f),
            "start": torch.tensor(start),
        }

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(root={str(self.root)!r}, files={len(self.files)}, "
            f"segment={self.segment}, random_chunks={self.random_chunks}, len={len(self)})"
        )


class StemFolderDataset(_WindowedDataset):
    """MUSDB18-style music: one folder per track, one file per stem, remixed on the fly.

    Layout: ``root/<track>/<stem><extension>`` for every name in ``stems`` (and
    ``<mixture><extension>`` when ``mixture_from_stems=False``). Every track's files must share
    sample rate, length and channels (checked when the dataset is built).

    Random examples (``random_chunks=True``): example ``i`` takes a window of track
    ``i % n_tracks``; with ``remix=True`` each stem comes from its own random track and offset
    instead (cross-track remixing, as in Uhlich et al., "Improving music source separation
    based on deep neural networks through data augmentation and network blending", ICASSP
    2017); each stem gets a random gain (``gain_db``) and, with ``channel_swap``, a random
    left/right swap. The mixture is the sum of the stems as returned. Indices past ``len``
    give new examples.

    Consecutive examples (``random_chunks=False``, for validation/test): the windows of every
    track in order (``segment_s=None``: whole tracks), no remixing, no gains.

    Args:
        root: folder of track folders.
        stems: the stems that make the mixture.
        targets: the stems returned as references (default: all of ``stems``).
        mixture: name of the mixture file (used when ``mixture_from_stems=False``).
        extension: file extension of every stem.
        segment_s: window length (s), ``None`` for whole tracks (consecutive mode only).
        random_chunks: random windows (train) or consecutive windows (val/test).
        remix: each stem from a random track (default: on in random mode with
            ``mixture_from_stems``, else off).
        gain_db: per-stem gain (dB): a number or ``(low, high)`` (default: ``(-3, 3)`` in
            random mode with ``mixture_from_stems``, else 0).
        channel_swap: randomly swap the channels of each stereo stem.
        mixture_from_stems: mixture = sum of ``stems`` (``True``) or the mixture file
            (``False``).

        Remixing, gains and swaps need random windows and a mixture made of the stems;
        asking for them otherwise is an error.
        tracks: use only these track names (e.g. a validation list); ``exclude_tracks``:
            leave these out.
        length: examples per epoch in random mode (default: the number of tracks).
        seed: seed of the random draws.
        sample_rate: expected sample rate (default: that of the first track).

    Returns (``dataset[i]``):
        ``{"mixture": (channels, samples), "reference": (targets, channels, samples)}``
        float32, plus ``track_ids (stems,)``, ``start (stems,)``, ``gain_db (stems,)`` and
        ``swapped (stems,)`` (channels reversed) of each stem in ``stems`` order.
    """

    def __init__(
        self,
        root: str | Path,
        *,
        stems: Sequence[str] = ("bass", "drums", "other", "vocals"),
        targets: Sequence[str] | None = None,
        mixture: str = "mixture",
        extension: str = ".wav",
        segment_s: float | None = 6.0,
        random_chunks: bool = True,
        remix: bool | None = None,
        gain_db: float | Sequence[float] | None = None,
        channel_swap: bool = False,
        mixture_from_stems: bool = True,
        tracks: Sequence[str] | None = None,
        exclude_tracks: Sequence[str] = (),
        length: int | None = None,
        seed: int = 0,
        sample_rate: int | None = None,
    ) -> None:
        super().__init__()
        self.root = Path(root)
        _check_folder(self.root, "track")
        self.stems = [str(s) for s in stems]
        if not self.stems or len(set(self.stems)) != len(self.stems):
            raise ValueError(f"stems must be distinct names, at least one, got {list(stems)}")
        self.targets = self.stems if targets is None else [str(t) for t in targets]
        unknown = [t for t in self.targets if t not in self.stems]
        if unknown or not self.targets:
            raise ValueError(
                f"targets must be a non-empty subset of stems {self.stems}, got {list(targets)}"
            )
        augment = random_chunks and mixture_from_stems  # what the defaults switch on
        self.random_chunks = random_chunks
        self.remix = augment if remix is None else bool(remix)
        self.gain_db = as_range((-3.0, 3.0) if augment else 0.0, "gain_db")
        if gain_db is not None:  # (beyond +-100 dB float32 stems overflow)
            self.gain_db = as_range(gain_db, "gain_db", minimum=-100.0, maximum=100.0)
        self.channel_swap = bool(channel_swap)
        self.mixture_from_stems = mixture_from_stems
        augmented = self.remix or self.gain_db != (0.0, 0.0) or self.channel_swap
        if augmented and not random_chunks:
            raise ValueError(
                "consecutive windows (random_chunks=False) are read as stored: set remix=False, "
                "gain_db=0 and channel_swap=False (or leave them unset), or random_chunks=True"
            )
        if augmented and not mixture_from_stems:
            raise ValueError(
                "mixture_from_stems=False reads the mixture file, which does not follow "
                "remixed, re-gained or channel-swapped stems: set remix=False, gain_db=0 and "
                "channel_swap=False (or leave them unset), or mixture_from_stems=True"
            )
        names = sorted(
            p.name for p in self.root.iterdir() if p.is_dir() and not p.name.startswith(".")
        )
        for arg, value in (("tracks", tracks), ("exclude_tracks", exclude_tracks)):
            if isinstance(value, str):  # its letters were taken as track names
                raise TypeError(f"{arg} must be a list of track names, got the string {value!r}")
            if value is not None:
                missing = [t for t in value if t not in names]
                if missing:  # a misspelt exclusion would leave that track in the data
                    raise FileNotFoundError(
                        f"{arg} {missing} not found in {str(self.root)!r} (it has {names})"
                    )
        if tracks is not None:
            names = [t for t in names if t in set(tracks)]
        names = [t for t in names if t not in set(exclude_tracks)]
        if not names:
            raise ValueError(f"no track folders in {str(self.root)!r}")
        #: track names (``track_ids`` index into it)
        self.tracks = names
        needed = list(self.stems) + ([] if mixture_from_stems else [mixture])
        self.files: list[dict[str, AudioFileInfo]] = []
        for name in names:
            folder = self.root / name
            missing = [s for s in needed if not (folder / f"{s}{extension}").is_file()]
            if missing:
                raise FileNotFoundError(
                    f"track {str(folder)!r} lacks stems {missing} (expected "
                    f"{', '.join(f'{s}{extension}' for s in missing)})"
                )
            info = {s: _nonempty(audio_info(folder / f"{s}{extension}")) for s in needed}
            # the mixture file (if read) or the first stem is the yardstick of the track
            ref = info[mixture] if not mixture_from_stems else info[self.stems[0]]
            for s in needed:
                what = "a mixture and its stems" if not mixture_from_stems else "stems of a track"
                _check_pair(ref, info[s], what)
                if info[s].channels != ref.channels:
                    raise ValueError(
                        f"channel counts differ in track {name!r}: {str(ref.path)!r} has "
                        f"{ref.channels}, {str(info[s].path)!r} has {info[s].channels}"
                    )
            if self.files:
                first = self.files[0][self.stems[0]]
                if (first.sample_rate, first.channels) != (ref.sample_rate, ref.channels):
                    raise ValueError(
                        f"tracks differ: {str(first.path)!r} has {first.sample_rate} Hz, "
                        f"{first.channels} channels; {str(ref.path)!r} has {ref.sample_rate} "
                        f"Hz, {ref.channels} channels"
                    )
            self.files.append(info)
        self.mixture = mixture
        first = self.files[0][self.stems[0]]
        self.sample_rate, self.channels = first.sample_rate, first.channels
        if sample_rate is not None and sample_rate != self.sample_rate:
            raise ValueError(
                f"{str(first.path)!r} has sample rate {self.sample_rate} Hz, expected "
                f"{sample_rate} Hz (sample_rate)"
            )
        self.segment = _segment_samples(segment_s, self.sample_rate)
        if random_chunks and self.segment is None:
            raise ValueError("random_chunks=True needs a segment_s (seconds), got None")
        if length is not None and (
            not isinstance(length, int) or isinstance(length, bool) or length < 1
        ):
            raise ValueError(f"length must be a positive integer or None, got {length!r}")
        if length is not None and not random_chunks:
            raise ValueError(
                "length sets the epoch size of random windows; with consecutive windows the "
                "number of examples is fixed by the tracks: leave length unset"
            )
        self.length = length
        self.seed = int(seed)
        self._windows: list[tuple[int, int]] = []
        if not random_chunks:
            for t, info in enumerate(self.files):
                frames = info[self.stems[0]].frames
                step = self.segment
                starts = [0] if step is None else range(0, max(frames, 1), step)
                self._windows += [(t, s) for s in starts]

    @property
    def fresh_indices(self) -> bool:
        """Whether indices past ``len`` give new examples (random windows)."""
        return self.random_chunks

    def _n_units(self) -> int:
        return len(self.tracks)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        index = self._check_index(index)
        n_stems = len(self.stems)
        if self.random_chunks:
            g = example_generator(self.seed, index)
            n_tracks = len(self.tracks)
            if self.remix:  # every stem from its own track and window
                track_ids = [_randint(g, n_tracks) for _ in range(n_stems)]
            else:
                track_ids = [index % n_tracks] * n_stems
            frames = [self.files[t][self.stems[0]].frames for t in track_ids]
            if self.remix:
                starts = [_randint(g, max(f - self.segment, 0) + 1) for f in frames]
            else:  # one window for the whole track
                starts = [_randint(g, max(frames[0] - self.segment, 0) + 1)] * n_stems
            gains = uniform(g, *self.gain_db, n_stems)
            swaps = torch.rand(n_stems, generator=g) < 0.5
        else:
            t, start = self._windows[index]
            track_ids, starts = [t] * n_stems, [start] * n_stems
            gains = torch.zeros(n_stems, dtype=torch.float64)
            swaps = torch.zeros(n_stems, dtype=torch.bool)
        audio = {}
        for k, stem in enumerate(self.stems):
            info = self.files[track_ids[k]][stem]
            x = _chunk(info.path, starts[k], self.segment, info.frames)
            if self.channel_swap and bool(swaps[k]):
                x = x.flip(0)
            audio[stem] = x * float(10 ** (gains[k] / 20))
        if self.mixture_from_stems:
            mix = torch.stack(list(audio.values())).sum(0)
        else:
            info = self.files[track_ids[0]][self.mixture]
            mix = _chunk(info.path, starts[0], self.segment, info.frames)
        return {
            "mixture": mix,
            "reference": torch.stack([audio[t] for t in self.targets]),
            "track_ids": torch.tensor(track_ids),
            "start": torch.tensor(starts),
            "gain_db": gains.float(),
            "swapped": swaps & self.channel_swap,
        }

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(root={str(self.root)!r}, tracks={len(self.tracks)}, "
            f"stems={self.stems}, targets={self.targets}, segment={self.segment}, "
            f"remix={self.remix}, len={len(self)})"
        )
