"""Dynamic mixing: reverberant multichannel speech mixtures simulated on the fly.

Every example is simulated when it is asked for: a random shoebox room, a random microphone
array (linear or circular, random spacing), random source positions, a random reverberation
time, random sensor noise, and dry utterances of distinct speakers cut (or concatenated) to the
segment length. The targets are the reverberant images of the sources at the reference
microphone, as in ``shared/data/mixtures``.

The room impulse responses come from the image source method (J. B. Allen and D. A. Berkley,
"Image method for efficiently simulating small-room acoustics", JASA 65(4), 1979), computed by
:func:`torchbss.data.room.image_source_rir`: images are pruned per axis before the image grid
is built, and each image is placed on an oversampled time grid by linear interpolation and then
band-limited by a single windowed-sinc low-pass filter, instead of evaluating a 32-tap sinc per
image. The wall
absorption starts from Sabine's formula (:func:`torchbss.data.room.sabine_absorption`) and is
adjusted until the responses decay in the requested RT60.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import Dataset

from torchbss._validation import check_positive

from .datasets import AudioFileInfo, as_range, audio_info, example_generator, read_audio, uniform
from .room import convolve, image_source_rir

#: the longest reverberation time simulated: the image sources grow as rt60^3 (one response of a
#: 5 x 4 x 3 m room takes 0.8 GB at 1 s, 4.7 GB and 18 s at 2 s; 50 s asked for 3.6 TB)
MAX_RT60_S = 2.0

__all__ = [
    "sample_geometry",
    "GeometryConfig",
    "RoomGeometry",
    "reverberant_mixture",
    "speaker_split",
    "change_speed",
    "DynamicMixingDataset",
]

SPLITS = ("train", "val", "test")


# --------------------------------------------------------------------------------------------
# geometry
# --------------------------------------------------------------------------------------------

ARRAYS = ("linear", "circular")


@dataclass
class RoomGeometry:
    """A sampled room: ``room_dim (3,)``, ``mics (n_mics, 3)``, ``sources (n_src, 3)`` in
    metres (float64), the mic ``spacing`` (m, between neighbours), and the source
    ``azimuths_deg (n_src,)`` and ``distances (n_src,)`` from the array centre."""

    room_dim: torch.Tensor
    mics: torch.Tensor
    sources: torch.Tensor
    spacing: float
    azimuths_deg: torch.Tensor
    distances: torch.Tensor


@dataclass(frozen=True)
class GeometryConfig:
    """Ranges of the random rooms of :func:`sample_geometry` (every range ``(low, high)``).

    Attributes:
        room_size: ``((x_lo, x_hi), (y_lo, y_hi), (z_lo, z_hi))`` room size (m).
        array: ``"linear"`` (uniform linear array, azimuths from broadside) or ``"circular"``
            (uniform circular array, azimuths from its first mic).
        mic_spacing: distance between neighbouring mics (m).
        array_height, source_height: heights (m).
        source_distance: horizontal distance of the sources from the array centre (m).
        azimuth_deg: source azimuths (degrees).
        min_separation_deg: smallest azimuth difference between two sources.
        wall_margin: smallest horizontal distance of a mic or source to a wall (m).
    """

    room_size: tuple[tuple[float, float], ...] = ((5.0, 8.0), (4.0, 6.0), (2.6, 3.2))
    array: str = "linear"
    mic_spacing: tuple[float, float] = (0.05, 0.15)
    array_height: tuple[float, float] = (1.2, 1.5)
    source_height: tuple[float, float] = (1.4, 1.8)
    source_distance: tuple[float, float] = (1.0, 2.0)
    azimuth_deg: tuple[float, float] = (-80.0, 80.0)
    min_separation_deg: float = 25.0
    wall_margin: float = 0.5

    def azimuth_span(self) -> tuple[float, float]:
        """The interval the sorted, separated azimuths are drawn from (a full circle keeps one
        separation free so that the last and first source are also apart)."""
        low, high = self.azimuth_deg
        if high - low >= 360.0 - self.min_separation_deg:
            high = low + 360.0 - self.min_separation_deg
        return low, high

    def max_sources(self) -> int:
        """How many sources fit in the azimuth range with the minimum separation."""
        low, high = self.azimuth_span()
        if self.min_separation_deg <= 0:
            return 1_000_000
        return 1 + int(math.floor((high - low) / self.min_separation_deg + 1e-9))

    def check(self, n_sources: int, n_mics: int) -> None:
        """Raise ``ValueError`` when no room of these ranges can hold the array and sources."""
        if self.array not in ARRAYS:
            raise ValueError(f"array must be one of {ARRAYS}, got {self.array!r}")
        if n_sources > self.max_sources():
            raise ValueError(
                f"{n_sources} sources do not fit in a room with azimuths in "
                f"{list(self.azimuth_deg)} deg and at least {self.min_separation_deg} deg "
                f"between sources: at most {self.max_sources()} do; widen azimuth_deg or lower "
                f"min_separation_deg"
            )
        (x_lo, _), (y_lo, _), (z_lo, _) = self.room_size
        radius = _array_radius(self.array, n_mics, self.mic_spacing[1])
        need = 2 * (self.wall_margin + max(self.source_distance[0], radius))
        if min(x_lo, y_lo) <= need:
            raise ValueError(
                f"the smallest room ({x_lo} x {y_lo} m) cannot hold the array and sources at "
                f"{self.source_distance[0]} m or more from its centre with {self.wall_margin} m "
                f"from the walls (needs more than {need:.2f} m); enlarge room_size or lower "
                f"source_distance / wall_margin"
            )
        for name, (lo, hi) in (
            ("array_height", self.array_height),
            ("source_height", self.source_height),
        ):
            if lo <= 0 or hi >= z_lo:
                raise ValueError(
                    f"{name} {[lo, hi]} m must lie strictly between the floor and the lowest "
                    f"ceiling ({z_lo} m)"
                )


def _array_radius(array: str, n_mics: int, spacing: float) -> float:
    """Distance of the farthest mic from the array centre."""
    if n_mics <= 1:
        return 0.0
    if array == "circular" and n_mics > 2:
        return spacing / (2 * math.sin(math.pi / n_mics))
    return (n_mics - 1) / 2 * spacing


def sample_geometry(
    generator: torch.Generator,
    n_sources: int,
    n_mics: int,
    config: GeometryConfig | None = None,
    *,
    max_tries: int = 1000,
) -> RoomGeometry:
    """Draw a random room, array and source positions.

    The room size, array orientation, spacing, centre and heights, and the source azimuths,
    distances and heights are uniform in the ranges of ``config``. Azimuths are drawn sorted
    with the minimum separation (uniform over the admissible sets) and then assigned to the
    sources in random order. A placement with a source closer than ``wall_margin`` to a wall is
    drawn again.

    Args:
        generator: the only source of randomness.
        n_sources, n_mics: counts (>= 1).
        config: the ranges (default :class:`GeometryConfig`).
        max_tries: placements to try before giving up.

    Returns:
        A :class:`RoomGeometry` (float64, CPU).

    Raises:
        ValueError: the ranges cannot hold ``n_sources`` sources (see
            :meth:`GeometryConfig.check`).
        RuntimeError: no valid placement after ``max_tries`` draws.
    """
    cfg = config or GeometryConfig()
    cfg.check(n_sources, n_mics)
    g = generator
    for _ in range(max_tries):
        room = torch.tensor([uniform(g, lo, hi) for lo, hi in cfg.room_size], dtype=torch.float64)
        spacing = uniform(g, *cfg.mic_spacing)
        orient = uniform(g, 0.0, 2 * math.pi)
        radius = _array_radius(cfg.array, n_mics, spacing)
        margin = cfg.wall_margin + radius
        centre = torch.tensor(
            [
                uniform(g, margin, float(room[0]) - margin),
                uniform(g, margin, float(room[1]) - margin),
                uniform(g, *cfg.array_height),
            ],
            dtype=torch.float64,
        )
        if cfg.array == "circular" and n_mics > 2:
            angles = orient + 2 * math.pi * torch.arange(n_mics, dtype=torch.float64) / n_mics
            offsets = radius * torch.stack([angles.cos(), angles.sin()], -1)
            front = orient  # azimuth 0: towards the first mic
        else:
            along = (torch.arange(n_mics, dtype=torch.float64) - (n_mics - 1) / 2) * spacing
            offsets = along[:, None] * torch.tensor(
                [math.cos(orient), math.sin(orient)], dtype=torch.float64
            )
            front = orient + math.pi / 2  # azimuth 0: broadside
        mics = torch.cat([centre[:2] + offsets, centre[2].expand(n_mics, 1)], dim=-1)
        low, high = cfg.azimuth_span()
        free = high - low - (n_sources - 1) * cfg.min_separation_deg
        az, _ = torch.sort(low + free * torch.rand(n_sources, generator=g, dtype=torch.float64))
        az = az + cfg.min_separation_deg * torch.arange(n_sources, dtype=torch.float64)
        az = az[torch.randperm(n_sources, generator=g)]
        dist = uniform(g, *cfg.source_distance, n_sources)
        angle = front + az * math.pi / 180
        sources = torch.stack(
            [
                centre[0] + dist * angle.cos(),
                centre[1] + dist * angle.sin(),
                uniform(g, *cfg.source_height, n_sources),
            ],
            dim=-1,
        )
        xy = sources[:, :2]
        if bool(((xy >= cfg.wall_margin) & (xy <= room[:2] - cfg.wall_margin)).all()):
            return RoomGeometry(room, mics, sources, spacing, az, dist)
    raise RuntimeError(
        f"no placement of {n_sources} sources {list(cfg.source_distance)} m from the array "
        f"fitted in the sampled rooms after {max_tries} tries; enlarge room_size or lower "
        f"source_distance"
    )


# --------------------------------------------------------------------------------------------
# mixture
# --------------------------------------------------------------------------------------------


def reverberant_mixture(
    signals: torch.Tensor,
    rir: torch.Tensor,
    *,
    ref_mic: int = 0,
    snr_db: float | None = None,
    source_gain_db: torch.Tensor | None = None,
    peak: float | None = 0.9,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Convolve dry sources with their responses, set their levels, add sensor noise.

    The images are scaled to equal power at ``ref_mic`` and then by ``source_gain_db``; white
    noise of ``snr_db`` (re the mean power of the noiseless mixture over all mics) is added;
    finally mixture and images share one gain so that ``max |mixture| = peak``. So
    ``mixture[ref_mic] == images.sum(0) + noise[ref_mic]``.

    Args:
        signals: ``(n_src, samples)`` dry sources (float).
        rir: ``(n_src, n_mics, taps)`` impulse responses.
        ref_mic: microphone whose images are returned.
        snr_db: sensor noise level in dB (``None``: no noise).
        source_gain_db: ``(n_src,)`` level of each image at ``ref_mic`` re the others
            (``None``: all 0 dB).
        peak: peak of the returned mixture (``None``: no normalisation).
        generator: seeds the noise (drawn on the CPU, so a device does not change it).

    Returns:
        ``(mixture, images)``: ``(n_mics, samples)`` and ``(n_src, samples)`` in the dtype of
        ``signals``.
    """
    img = convolve(signals, rir)  # (S, M, N)
    power = img[:, ref_mic].square().mean(-1).clamp_min(1e-20)  # (S,)
    gain = power.rsqrt()
    if source_gain_db is not None:
        gain = gain * 10 ** (source_gain_db.to(gain) / 20)
    img = img * gain[:, None, None]
    mix = img.sum(0)
    if snr_db is not None:
        noise = torch.randn(mix.shape, generator=generator, dtype=mix.dtype).to(mix.device)
        mix = mix + noise * (mix.square().mean() * 10 ** (-snr_db / 10)).sqrt()
    ref = img[:, ref_mic]
    if peak is not None:
        scale = peak / mix.abs().max().clamp_min(1e-20)
        mix, ref = mix * scale, ref * scale
    return mix, ref


# --------------------------------------------------------------------------------------------
# speakers
# --------------------------------------------------------------------------------------------


def change_speed(signal: torch.Tensor, factor: float, length: int | None = None) -> torch.Tensor:
    """Play ``signal`` ``factor`` times faster (pitch and tempo together, like a tape).

    Band-limited resampling in the frequency domain: the spectrum of the whole signal is cut
    (``factor > 1``: what would alias above the new Nyquist frequency is removed) or
    zero-padded (``factor < 1``) to ``round(samples / factor)`` samples and transformed back,
    so a sinusoid of ``f`` Hz becomes one of ``factor * f`` Hz at the same sample rate. The
    transform is circular: the first and last few milliseconds see each other (negligible
    for speech segments that start and end near silence). Used as the speed perturbation of
    :class:`DynamicMixingDataset` (new "voices" from few speakers).

    Args:
        signal: ``(..., samples)`` real tensor.
        factor: speed factor > 0 (``1``: unchanged, ``1.1``: 10 % faster and higher).
        length: samples of the output (default ``round(samples / factor)``); the resampled
            signal is cut or zero-padded to it.

    Returns:
        ``(..., length)`` tensor of the input dtype.
    """
    check_positive(factor, "factor")
    n = signal.shape[-1]
    n_out = max(1, int(round(n / factor)))
    if n_out != n and n > 0:
        spectrum = torch.fft.rfft(signal.to(torch.float64), dim=-1)
        keep = min(spectrum.shape[-1], n_out // 2 + 1)
        out = torch.fft.irfft(spectrum[..., :keep], n=n_out, dim=-1) * (n_out / n)
        signal = out.to(signal.dtype)
    if length is not None:
        if signal.shape[-1] >= length:
            signal = signal[..., :length]
        else:
            signal = torch.nn.functional.pad(signal, (0, length - signal.shape[-1]))
    return signal


def speaker_split(
    speakers: Sequence[str],
    fractions: Sequence[float] = (0.8, 0.1, 0.1),
    *,
    seed: int = 0,
) -> dict[str, list[str]]:
    """Assign whole speakers to train / val / test, so that no speaker is in two splits.

    The distinct speakers are sorted, shuffled with ``seed`` and cut at the rounded cumulative
    fractions. The assignment depends only on the set of speakers, the fractions and the seed.

    Args:
        speakers: speaker names (repeats are fine: one per utterance).
        fractions: ``(train, val, test)`` shares, non-negative, summing to 1.
        seed: seed of the shuffle.

    Returns:
        ``{"train": [...], "val": [...], "test": [...]}`` (sorted names).
    """
    fractions = tuple(float(f) for f in fractions)
    if len(fractions) != 3 or min(fractions) < 0 or abs(sum(fractions) - 1) > 1e-6:
        raise ValueError(
            f"split_fractions must be 3 non-negative numbers (train, val, test) summing to 1, "
            f"got {list(fractions)}"
        )
    names = sorted(set(speakers))
    order = torch.randperm(len(names), generator=example_generator(seed, 0x5B1)).tolist()
    shuffled = [names[i] for i in order]
    bounds = [0]
    total = 0.0
    for f in fractions:
        total += f
        bounds.append(int(math.floor(total * len(names) + 0.5)))
    return {split: sorted(shuffled[bounds[i] : bounds[i + 1]]) for i, split in enumerate(SPLITS)}


def _find_utterances(
    root: Path, speaker_from: str, extensions: Sequence[str]
) -> list[tuple[Path, str]]:
    """``(file, speaker)`` of every utterance under ``root``."""
    if not root.exists():
        raise FileNotFoundError(f"speech folder not found: {str(root)!r}")
    if not root.is_dir():
        raise NotADirectoryError(f"speech folder is not a directory: {str(root)!r}")
    choices = ("auto", "manifest", "folder", "stem")
    if speaker_from not in choices:
        raise ValueError(f"speaker_from must be one of {choices}, got {speaker_from!r}")
    manifest = root / "manifest.json"
    if speaker_from == "manifest" or (speaker_from == "auto" and manifest.is_file()):
        if not manifest.is_file():
            raise FileNotFoundError(f"speaker_from='manifest' but {str(manifest)!r} is missing")
        try:
            data = json.loads(manifest.read_text())
        except (OSError, ValueError) as err:
            raise ValueError(f"could not read {str(manifest)!r}: {err}") from err
        items = data.get("utterances") if isinstance(data, dict) else data
        if not isinstance(items, list) or not all(
            isinstance(u, dict) and "file" in u and "speaker" in u for u in items
        ):
            raise ValueError(
                f"{str(manifest)!r} must hold a list 'utterances' of objects with 'file' and "
                f"'speaker' fields"
            )
        found = [(root / u["file"], str(u["speaker"])) for u in items]
    else:
        exts = tuple(e.lower() if e.startswith(".") else f".{e.lower()}" for e in extensions)
        files = sorted(p for p in root.rglob("*") if p.suffix.lower() in exts and p.is_file())
        nested = bool(files) and all(len(p.relative_to(root).parts) > 1 for p in files)
        by_folder = speaker_from == "folder" or (speaker_from == "auto" and nested)
        found = [(p, p.relative_to(root).parts[0] if by_folder else p.stem) for p in files]
    if not found:
        raise ValueError(
            f"no audio files ({', '.join(extensions)}) found in the speech folder {str(root)!r}"
        )
    return found


# --------------------------------------------------------------------------------------------
# dataset
# --------------------------------------------------------------------------------------------


class DynamicMixingDataset(Dataset):
    """Reverberant multichannel speech mixtures simulated on the fly from dry utterances.

    ``dataset[i]`` draws, from a generator seeded by ``(seed, split, i)`` only (so it does not
    depend on the ``DataLoader`` workers): ``n_sources`` distinct speakers of the split, one
    utterance segment per speaker (a random window; shorter utterances are followed by more
    utterances after a short silence, see ``concatenate``), a room and array
    (:func:`sample_geometry`), an RT60, an SNR and the source levels; it then simulates the
    responses (:func:`image_source_rir`) and the mixture (:func:`reverberant_mixture`).

    Indices past ``len(dataset)`` are valid and give new mixtures:
    :class:`~torchbss.data.datasets.EpochSampler` uses them for fresh mixtures every epoch.

    Speakers and splits: the speaker of each file comes from ``manifest.json`` in ``root``
    (a list ``utterances`` of ``{"file", "speaker"}``, as in ``shared/data/speech``), else from
    the first sub-folder (``root/<speaker>/.../x.flac``, LibriSpeech style), else from the
    file name. Whole speakers go to train / val / test (:func:`speaker_split`), so no speaker
    is in two splits; ``speakers`` picks them by name instead.

    Device: the simulation runs on ``device`` (default CPU). In ``DataLoader`` workers keep the
    CPU (a 4 s 2x2 mixture with RT60 0.15-0.6 s takes about 0.1 s of one core on average, see
    ``bench/bench_data.py``); a CUDA ``device`` needs ``num_workers=0``. The random draws are
    made on the CPU either way, so a device does not change the example beyond rounding.

    Args:
        root: folder of dry mono utterances (``.flac``/``.wav``), all at ``sample_rate``.
        split: ``"train"``, ``"val"`` or ``"test"``.
        n_sources: sources per mixture (distinct speakers).
        n_mics: microphones.
        segment_s: length of every example (s).
        sample_rate: Hz; every file must have it.
        length: examples per epoch (``len``).
        seed: seed of the examples.
        rt60: reverberation time (s): a number or ``(low, high)``.
        snr_db: sensor noise SNR (dB) re the mean mixture power: a number, ``(low, high)`` or
            ``None`` (no noise).
        source_gain_db: level of each source image at the reference mic re 0 dB (equal
            powers): a number or ``(low, high)``, drawn per source.
        mic_spacing: distance between neighbouring mics (m): a number or ``(low, high)``.
        array: ``"linear"`` or ``"circular"``.
        room_size: ``((x_lo, x_hi), (y_lo, y_hi), (z_lo, z_hi))`` (m).
        source_distance: horizontal source-to-array-centre distance (m).
        azimuth_deg: source azimuths re broadside (linear) or the first mic (circular).
        min_separation_deg: smallest azimuth difference between sources.
        array_height, source_height: heights (m).
        wall_margin: smallest distance of a mic or source to a wall (m).
        concatenate: how a segment longer than the utterance is filled: ``"speaker"`` (more
            utterances of the same speaker, the same one again if it has only one), ``"any"``
            (utterances of any speaker of the split not used by another source of the mixture)
            or ``"none"`` (zero padding).
        gap_s: silence between concatenated utterances (s), number or ``(low, high)``.
        speed_perturb: ``None`` (default) or a speed factor range ``(low, high)`` (or a
            number): each source's segment is played that many times faster
            (:func:`change_speed`: pitch, formants and tempo move together), drawn per
            source and example; ``(0.85, 1.15)`` turns a few speakers into many voices.
        split_fractions: ``(train, val, test)`` shares of the speakers.
        split_seed: seed of the speaker assignment (keep it fixed across experiments).
        speakers: use exactly these speakers (overrides ``split_fractions``).
        exclude_speakers: leave these speakers out before splitting (e.g. the speakers of a
            fixed test set).
        speaker_from: ``"auto"``, ``"manifest"``, ``"folder"`` or ``"stem"`` (see above).
        extensions: audio file extensions searched when there is no manifest.
        ref_mic: reference microphone of the targets.
        peak: peak of the mixture (``None``: unnormalised).
        rir_oversampling: see :func:`image_source_rir`.
        cache_audio: keep every utterance of the split in memory (fast for small folders).
        return_dry: also return ``dry (n_sources, samples)``, the dry segments as read
            (before the room and any level change).
        device: where the simulation runs.

    Returns (``dataset[i]``):
        A dict of tensors: ``mixture (n_mics, samples)`` float32; ``reference (n_sources,
        samples)`` float32, the reverberant images at ``ref_mic`` (``mixture[ref_mic] ==
        reference.sum(0) + noise``); and the metadata ``rt60``, ``snr_db`` (``inf`` without
        noise), ``mic_spacing`` (scalars), ``source_gain_db (n_sources,)``, ``room_dim (3,)``,
        ``mic_positions (n_mics, 3)``, ``source_positions (n_sources, 3)``, ``azimuth_deg
        (n_sources,)``, ``distance (n_sources,)``, ``speaker_ids (n_sources,)`` (indices into
        :attr:`speakers`) and ``index``.

    Example:
        >>> ds = DynamicMixingDataset("shared/data/speech", n_sources=2, n_mics=2)  # doctest: +SKIP
        >>> ds[0]["mixture"].shape  # doctest: +SKIP
        torch.Size([2, 64000])
    """

    def __init__(
        self,
        root: str | Path,
        *,
        split: str = "train",
        n_sources: int = 2,
        n_mics: int = 2,
        segment_s: float = 4.0,
        sample_rate: int = 16000,
        length: int = 1000,
        seed: int = 0,
        rt60: float | Sequence[float] = (0.15, 0.6),
        snr_db: float | Sequence[float] | None = (20.0, 40.0),
        source_gain_db: float | Sequence[float] = 0.0,
        mic_spacing: float | Sequence[float] = (0.05, 0.15),
        array: str = "linear",
        room_size: Sequence[Sequence[float]] = ((5.0, 8.0), (4.0, 6.0), (2.6, 3.2)),
        source_distance: float | Sequence[float] = (1.0, 2.0),
        azimuth_deg: float | Sequence[float] = (-80.0, 80.0),
        min_separation_deg: float = 25.0,
        array_height: float | Sequence[float] = (1.2, 1.5),
        source_height: float | Sequence[float] = (1.4, 1.8),
        wall_margin: float = 0.5,
        concatenate: str = "speaker",
        gap_s: float | Sequence[float] = (0.1, 0.5),
        speed_perturb: float | Sequence[float] | None = None,
        split_fractions: Sequence[float] = (0.8, 0.1, 0.1),
        split_seed: int = 0,
        speakers: Sequence[str] | None = None,
        exclude_speakers: Sequence[str] = (),
        speaker_from: str = "auto",
        extensions: Sequence[str] = (".flac", ".wav"),
        ref_mic: int = 0,
        peak: float | None = 0.9,
        rir_oversampling: int = 8,
        cache_audio: bool = False,
        return_dry: bool = False,
        device: str | torch.device = "cpu",
    ) -> None:
        super().__init__()
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        for name, value in (
            ("n_sources", n_sources),
            ("n_mics", n_mics),
            ("length", length),
            ("sample_rate", sample_rate),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not 0 <= ref_mic < n_mics:
            raise ValueError(f"ref_mic must be in [0, {n_mics - 1}], got {ref_mic!r}")
        if concatenate not in ("speaker", "any", "none"):
            raise ValueError(f"concatenate must be 'speaker', 'any' or 'none', got {concatenate!r}")
        if not segment_s > 0:
            raise ValueError(f"segment_s must be > 0 seconds, got {segment_s!r}")
        if peak is not None and not peak > 0:
            raise ValueError(f"peak must be > 0 or None, got {peak!r}")
        self.root = Path(root)
        self.split = split
        self.n_sources = n_sources
        self.n_mics = n_mics
        self.sample_rate = sample_rate
        self.segment = int(round(segment_s * sample_rate))
        self.length = length
        self.seed = int(seed)
        self.rt60 = as_range(rt60, "rt60", minimum=1e-3, maximum=MAX_RT60_S)
        self.snr_db = None if snr_db is None else as_range(snr_db, "snr_db")
        self.source_gain_db = as_range(source_gain_db, "source_gain_db")
        self.gap_s = as_range(gap_s, "gap_s", minimum=0.0)
        self.speed_perturb = (
            None
            if speed_perturb is None
            else as_range(speed_perturb, "speed_perturb", minimum=0.5, maximum=2.0)
        )
        if len(room_size) != 3:
            raise ValueError(f"room_size must be 3 ranges (x, y, z) in metres, got {room_size!r}")
        self.geometry = GeometryConfig(
            room_size=tuple(
                as_range(r, f"room_size[{i}]", minimum=1e-3) for i, r in enumerate(room_size)
            ),
            array=array,
            mic_spacing=as_range(mic_spacing, "mic_spacing", minimum=0.0),
            array_height=as_range(array_height, "array_height"),
            source_height=as_range(source_height, "source_height"),
            source_distance=as_range(source_distance, "source_distance", minimum=0.0),
            azimuth_deg=as_range(azimuth_deg, "azimuth_deg"),
            min_separation_deg=float(min_separation_deg),
            wall_margin=float(wall_margin),
        )
        self.geometry.check(n_sources, n_mics)
        self.concatenate = concatenate
        self.ref_mic = ref_mic
        self.peak = peak
        self.rir_oversampling = rir_oversampling
        self.return_dry = return_dry
        self.device = torch.device(device)

        found = _find_utterances(self.root, speaker_from, extensions)
        excluded = {str(s) for s in exclude_speakers}
        unknown = sorted(excluded - {s for _, s in found})
        if unknown:  # a misspelt name would leave a held-out speaker in the data
            raise ValueError(
                f"exclude_speakers {unknown} are not in {str(self.root)!r} (it has "
                f"{sorted({s for _, s in found})})"
            )
        found = [(p, s) for p, s in found if s not in excluded]
        if speakers is not None:
            chosen = [str(s) for s in speakers]
            known = {s for _, s in found}
            missing = [s for s in chosen if s not in known]
            if missing:
                raise ValueError(
                    f"speakers {missing} are not in {str(self.root)!r} (it has {sorted(known)})"
                )
        else:
            chosen = speaker_split([s for _, s in found], split_fractions, seed=split_seed)[split]
        #: the speakers of this split (``speaker_ids`` index into it)
        self.speakers: list[str] = sorted(set(chosen))
        if len(self.speakers) < n_sources:
            raise ValueError(
                f"the {split!r} split of {str(self.root)!r} has {len(self.speakers)} speaker(s) "
                f"({self.speakers}) but n_sources={n_sources} needs as many distinct speakers; "
                f"change split_fractions (now {list(split_fractions)}) or pass speakers=[...]"
            )
        keep = set(self.speakers)
        self.utterances: list[list[AudioFileInfo]] = [[] for _ in self.speakers]
        index = {s: i for i, s in enumerate(self.speakers)}
        for path, speaker in found:
            if speaker not in keep:
                continue
            info = audio_info(path)
            if info.channels != 1:
                raise ValueError(
                    f"dry utterances must be mono, {str(path)!r} has {info.channels} channels"
                )
            if info.sample_rate != sample_rate:
                raise ValueError(
                    f"{str(path)!r} has sample rate {info.sample_rate} Hz, expected "
                    f"{sample_rate} Hz (sample_rate)"
                )
            if info.frames == 0:
                raise ValueError(f"{str(path)!r} holds no samples")
            self.utterances[index[speaker]].append(info)
        self._cache: dict[Path, torch.Tensor] | None = None
        if cache_audio:
            self._cache = {u.path: read_audio(u.path)[0] for us in self.utterances for u in us}

    #: indices past ``len`` give new mixtures (see :class:`~torchbss.data.datasets.EpochSampler`)
    fresh_indices = True

    def __len__(self) -> int:
        return self.length

    def _read(self, utt: AudioFileInfo, start: int, frames: int) -> torch.Tensor:
        if self._cache is not None:
            return self._cache[utt.path][start : start + frames]
        return read_audio(utt.path, start, frames)[0]

    def _source(self, g: torch.Generator, speaker: int, others: set[int]) -> torch.Tensor:
        """``(segment,)`` dry signal of one source: a random window of an utterance of the
        speaker, followed by more utterances (after a silence) while it is too short."""

        def pick(items: Sequence) -> object:
            return items[int(torch.randint(len(items), (1,), generator=g))]

        factor = None if self.speed_perturb is None else uniform(g, *self.speed_perturb)
        n = self.segment if factor is None else int(math.ceil(self.segment * factor))
        utt = pick(self.utterances[speaker])
        start = int(torch.randint(max(0, utt.frames - n) + 1, (1,), generator=g))
        pieces = [self._read(utt, start, min(utt.frames - start, n))]
        total = pieces[0].numel()
        while total < n and self.concatenate != "none":
            gap = min(int(uniform(g, *self.gap_s) * self.sample_rate), n - total)
            pieces.append(torch.zeros(gap))
            total += gap
            if total >= n:
                break
            if self.concatenate == "speaker":
                utt = pick(self.utterances[speaker])
            else:
                allowed = [i for i in range(len(self.speakers)) if i not in others]
                utt = pick(self.utterances[pick(allowed)])
            pieces.append(self._read(utt, 0, min(utt.frames, n - total)))
            total += pieces[-1].numel()
        out = torch.zeros(n)
        signal = torch.cat(pieces)[:n]
        out[: signal.numel()] = signal
        if factor is not None:
            out = change_speed(out, factor, length=self.segment)
        return out

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        index = int(index)
        if index < 0:
            raise IndexError(f"index must be >= 0, got {index}")
        g = example_generator(self.seed, SPLITS.index(self.split) + 1, index)
        speaker_ids = torch.randperm(len(self.speakers), generator=g)[: self.n_sources]
        ids = speaker_ids.tolist()
        dry = torch.stack([self._source(g, s, set(ids) - {s}) for s in ids])  # (S, N)
        geo = sample_geometry(g, self.n_sources, self.n_mics, self.geometry)
        rt60 = uniform(g, *self.rt60)
        snr = None if self.snr_db is None else uniform(g, *self.snr_db)
        gains = uniform(g, *self.source_gain_db, self.n_sources)
        rir = image_source_rir(
            geo.room_dim.to(self.device),
            geo.sources.to(self.device),
            geo.mics.to(self.device),
            sample_rate=self.sample_rate,
            rt60=rt60,
            oversampling=self.rir_oversampling,
        )
        mixture, reference = reverberant_mixture(
            dry.to(self.device),
            rir,
            ref_mic=self.ref_mic,
            snr_db=snr,
            source_gain_db=gains,
            peak=self.peak,
            generator=g,
        )

        def f32(x) -> torch.Tensor:
            return torch.as_tensor(x, dtype=torch.float32)

        out = {
            "mixture": mixture.float().cpu(),
            "reference": reference.float().cpu(),
            "rt60": f32(rt60),
            "snr_db": f32(math.inf if snr is None else snr),
            "mic_spacing": f32(geo.spacing),
            "source_gain_db": f32(gains),
            "room_dim": f32(geo.room_dim),
            "mic_positions": f32(geo.mics),
            "source_positions": f32(geo.sources),
            "azimuth_deg": f32(geo.azimuths_deg),
            "distance": f32(geo.distances),
            "speaker_ids": speaker_ids,
            "index": torch.tensor(index),
        }
        if self.return_dry:
            out["dry"] = dry
        return out

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(root={str(self.root)!r}, split={self.split!r}, "
            f"n_sources={self.n_sources}, n_mics={self.n_mics}, segment={self.segment}, "
            f"length={self.length}, speakers={len(self.speakers)}, seed={self.seed})"
        )
