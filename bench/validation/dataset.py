"""The validation set: simulated reverberant rooms with the real speech of ``shared/data/speech``.

See the package docstring (:mod:`bench.validation`) for the protocol. One mixture is fully
determined by ``(case, index)``: a generator seeded with :func:`room_seed` draws the speakers,
the room, the array, the source positions, the RT60 and the SNR (:func:`sample_room`, no audio
needed); a second one draws the speech windows, the onsets and the sensor noise. The torch image
source simulation :func:`torchbss.data.simulate_mixture` renders it (equal-power images at mic 0,
white sensor noise, common gain to a 0.9 peak). Built mixtures are cached as
``out/validation_cache/<case>_<index>.pt`` (float32) so reruns are fast.

``voices="synthetic"`` renders the same rooms (geometry, RT60, SNR) with speakers drawn from
the eight espeak-ng training voices instead of the real ones (cached as
``synthetic_<case>_<index>.pt``): it tells what a trained model loses to unseen voices from what
it loses to unseen rooms. It never chooses a default.
"""

from __future__ import annotations

import functools
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from torchbss.data import simulate_mixture

__all__ = [
    "CASES",
    "PROTOCOL_VERSION",
    "SAMPLE_RATE",
    "SEGMENT_SAMPLES",
    "SPLITS",
    "VOICES",
    "ValidationMixture",
    "build_mixture",
    "default_cache_dir",
    "default_speech_dir",
    "list_speakers",
    "load_mixture",
    "room_indices",
    "room_seed",
    "sample_room",
    "split_of",
]

#: bump when anything below changes the rendered mixtures (invalidates the cache)
PROTOCOL_VERSION = 1
SAMPLE_RATE = 16000
SEGMENT_SAMPLES = 8 * SAMPLE_RATE
#: case name -> (n_src, n_mics)
CASES: dict[str, tuple[int, int]] = {"2x2": (2, 2), "3x3": (3, 3), "2s4m": (2, 4)}
SPLITS = ("val", "test")
SPEAKER_PREFIXES = ("libri_", "arctic_")
#: the speakers of a protocol's rooms: the real ones, or the synthetic training voices
VOICES: dict[str, tuple[str, ...]] = {"real": SPEAKER_PREFIXES, "synthetic": ("espeak_",)}

RT60_RANGE_S = (0.15, 0.5)
SPACING_RANGE_M = (0.03, 0.15)
DISTANCE_RANGE_M = (1.0, 2.5)  # horizontal distance from the array centre
AZIMUTH_RANGE_DEG = (-80.0, 80.0)  # from broadside
MIN_SEPARATION_DEG = 20.0
SNR_RANGE_DB = (20.0, 40.0)
MAX_ONSET_S = 0.6
LOOP_GAP_S = 0.3  # silence between two passes of an utterance (windows may wrap around)
ROOM_RANGE_M = ((6.0, 9.0), (5.0, 7.0), (2.6, 3.2))
MIC_HEIGHT_M = (1.2, 1.5)
SOURCE_HEIGHT_M = (1.4, 1.8)
WALL_MARGIN_M = 0.5
_BASE_SEED = 0x5EED_0000
_CASE_OFFSET = {"2x2": 0, "3x3": 1, "2s4m": 2}
_SIGNAL_SEED_OFFSET = 500_000  # speech windows, onsets and noise: a second generator
_VOICE_SEED_OFFSET = 700_000  # the speakers of voices="synthetic" rooms: a third one


def default_speech_dir() -> Path:
    """``$TORCHBSS_DATA/speech`` or ``../shared/data/speech`` next to the repository."""
    root = os.environ.get("TORCHBSS_DATA", Path(__file__).resolve().parents[3] / "shared" / "data")
    return Path(root) / "speech"


def default_cache_dir() -> Path:
    """``out/validation_cache`` in the repository (``out/`` is git-ignored)."""
    return Path(__file__).resolve().parents[2] / "out" / "validation_cache"


def list_speakers(speech_dir: Path | None = None, voices: str = "real") -> list[str]:
    """Sorted ids of the real-speech utterances (``libri_*``, ``arctic_*``; one per speaker).

    The synthetic ``espeak_*`` files are used only with ``voices="synthetic"`` (then only they).

    Raises:
        FileNotFoundError: the folder is missing or holds fewer than 3 utterances of ``voices``.
        ValueError: ``voices`` is not a key of :data:`VOICES`.
    """
    if voices not in VOICES:
        raise ValueError(f"voices must be one of {sorted(VOICES)}, got {voices!r}")
    speech_dir = Path(speech_dir) if speech_dir is not None else default_speech_dir()
    prefixes = VOICES[voices]
    ids = sorted(p.stem for p in speech_dir.glob("*.flac") if p.stem.startswith(prefixes))
    if len(ids) < max(k for k, _ in CASES.values()):
        wanted = ", ".join(f"{prefix}*.flac" for prefix in prefixes)
        raise FileNotFoundError(
            f"need >= 3 {voices}-speech utterances ({wanted}) in {speech_dir}, found {ids}"
        )
    return ids


@functools.lru_cache(maxsize=16)
def _utterance(path: str) -> torch.Tensor:
    import soundfile as sf

    audio, fs = sf.read(path, dtype="float64", always_2d=True)
    if fs != SAMPLE_RATE:
        raise ValueError(f"{path}: expected {SAMPLE_RATE} Hz, got {fs} Hz")
    return torch.from_numpy(audio[:, 0].copy())


def split_of(index: int) -> str:
    """``"val"`` for even room indices, ``"test"`` for odd ones (same rule for every case)."""
    return SPLITS[index % 2]


def room_indices(split: str, n_rooms: int, first: int = 0) -> list[int]:
    """Indices of rooms ``first .. first + n_rooms - 1`` of ``split`` (``"val"``/``"test"``)."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if n_rooms < 0 or first < 0:
        raise ValueError(f"n_rooms and first must be >= 0, got {n_rooms}, {first}")
    offset = SPLITS.index(split)
    return [2 * (first + i) + offset for i in range(n_rooms)]


def room_seed(case: str, index: int) -> int:
    """Seed of the generator that draws the speakers and geometry of room ``index``."""
    if case not in CASES:
        raise ValueError(f"case must be one of {sorted(CASES)}, got {case!r}")
    if index < 0 or index >= 500_000:
        raise ValueError(f"room index must be in [0, 500000), got {index}")
    return _BASE_SEED + 1_000_000 * _CASE_OFFSET[case] + index


@dataclass
class ValidationMixture:
    """One validation mixture.

    Attributes:
        case: ``"2x2"``, ``"3x3"`` or ``"2s4m"``.
        index: room index (its parity gives the split).
        split: ``"val"`` or ``"test"``.
        mixture: ``(n_mics, SEGMENT_SAMPLES)`` float32 microphone signals.
        images: ``(n_src, SEGMENT_SAMPLES)`` float32 reverberant image of each source at mic 0
            (the targets); ``mixture[0] - images.sum(0)`` is the sensor noise at mic 0.
        meta: JSON-able description (speakers, windows, onsets, room, positions, RT60, SNR...).
    """

    case: str
    index: int
    split: str
    mixture: torch.Tensor
    images: torch.Tensor
    meta: dict[str, Any] = field(default_factory=dict)


def _uniform(g: torch.Generator, lo: float, hi: float, n: int | None = None):
    u = torch.rand(1 if n is None else n, generator=g, dtype=torch.float64)
    v = lo + (hi - lo) * u
    return float(v) if n is None else v


def _randint(g: torch.Generator, lo: int, hi: int) -> int:
    """Integer in ``[lo, hi)``."""
    return int(torch.randint(lo, hi, (1,), generator=g))


def _speech_window(utt: torch.Tensor, g: torch.Generator) -> tuple[torch.Tensor, int, int]:
    """An 8-s source: ``onset`` zeros, then a window of the looped utterance from ``start``."""
    onset = _randint(g, 0, int(MAX_ONSET_S * SAMPLE_RATE) + 1)
    gap = torch.zeros(int(LOOP_GAP_S * SAMPLE_RATE), dtype=utt.dtype)
    period = torch.cat([utt, gap])
    start = _randint(g, 0, period.numel())
    reps = math.ceil((start + SEGMENT_SAMPLES) / period.numel()) + 1
    stream = period.repeat(reps)
    out = torch.zeros(SEGMENT_SAMPLES, dtype=utt.dtype)
    out[onset:] = stream[start : start + SEGMENT_SAMPLES - onset]
    return out, start, onset


def _geometry(g: torch.Generator, n_src: int, n_mics: int) -> dict[str, Any]:
    """Room, linear array and source positions (rejection-sampled to keep wall margins)."""
    room = torch.tensor([_uniform(g, lo, hi) for lo, hi in ROOM_RANGE_M], dtype=torch.float64)
    spacing = _uniform(g, *SPACING_RANGE_M)
    for _ in range(10_000):
        centre = torch.tensor(
            [
                _uniform(g, 1.0, float(room[0]) - 1.0),
                _uniform(g, 1.0, float(room[1]) - 1.0),
                _uniform(g, *MIC_HEIGHT_M),
            ],
            dtype=torch.float64,
        )
        orient = _uniform(g, 0.0, 2 * math.pi)
        while True:
            az = _uniform(g, *AZIMUTH_RANGE_DEG, n=n_src)
            gaps = (az[:, None] - az[None, :]).abs() + 360.0 * torch.eye(n_src)
            if float(gaps.min()) >= MIN_SEPARATION_DEG:
                break
        dist = _uniform(g, *DISTANCE_RANGE_M, n=n_src)
        heights = _uniform(g, *SOURCE_HEIGHT_M, n=n_src)
        angle = orient + math.pi / 2 + az * math.pi / 180  # broadside + azimuth
        src = torch.stack(
            [centre[0] + dist * torch.cos(angle), centre[1] + dist * torch.sin(angle), heights],
            dim=-1,
        )
        inside = (src[:, :2] >= WALL_MARGIN_M) & (src[:, :2] <= room[:2] - WALL_MARGIN_M)
        if bool(inside.all()):
            break
    else:  # pragma: no cover - the ranges make this practically impossible
        raise RuntimeError("could not place the sources inside the room")
    offsets = (torch.arange(n_mics, dtype=torch.float64) - (n_mics - 1) / 2) * spacing
    axis = torch.tensor([math.cos(orient), math.sin(orient), 0.0], dtype=torch.float64)
    mics = centre + offsets[:, None] * axis
    return {
        "room_m": room.tolist(),
        "mic_spacing_m": spacing,
        "array_centre_m": centre.tolist(),
        "array_orientation_rad": orient,
        "mics_m": mics.tolist(),
        "sources_m": src.tolist(),
        "azimuth_deg": az.tolist(),
        "distance_m": dist.tolist(),
    }


def sample_room(case: str, index: int, speakers: list[str]) -> dict[str, Any]:
    """Speakers, geometry, RT60 and SNR of room ``index`` of ``case`` (no audio is read).

    Drawn from a generator seeded with :func:`room_seed` in a fixed order: speakers (distinct),
    room, array, source positions, RT60, SNR. The speech windows, onsets and sensor noise come
    from a second generator in :func:`build_mixture`, so this function is cheap and can check
    the metadata of many rooms.

    Returns:
        A JSON-able dict: ``speakers``, ``room_m``, ``mic_spacing_m``, ``array_centre_m``,
        ``array_orientation_rad``, ``mics_m``, ``sources_m``, ``azimuth_deg``, ``distance_m``,
        ``rt60_s``, ``snr_db``.
    """
    if case not in CASES:
        raise ValueError(f"case must be one of {sorted(CASES)}, got {case!r}")
    n_src, n_mics = CASES[case]
    if len(set(speakers)) < n_src:
        raise ValueError(f"case {case} needs {n_src} distinct speakers, got {speakers}")
    g = torch.Generator().manual_seed(room_seed(case, index))
    order = torch.randperm(len(speakers), generator=g)[:n_src].tolist()
    meta: dict[str, Any] = {"speakers": [speakers[i] for i in order]}
    meta.update(_geometry(g, n_src, n_mics))
    meta["rt60_s"] = _uniform(g, *RT60_RANGE_S)
    meta["snr_db"] = _uniform(g, *SNR_RANGE_DB)
    return meta


def build_mixture(
    case: str, index: int, speech_dir: Path | None = None, voices: str = "real"
) -> ValidationMixture:
    """Render room ``index`` of ``case`` (deterministic; no cache).

    Args:
        case: ``"2x2"``, ``"3x3"`` or ``"2s4m"``.
        index: room index ``>= 0`` (even: ``"val"``, odd: ``"test"``).
        speech_dir: folder of the utterances (default :func:`default_speech_dir`).
        voices: ``"real"`` (the protocol) or ``"synthetic"`` (same rooms, the training voices).

    Returns:
        A :class:`ValidationMixture` (float32 signals, 8 s at 16 kHz).
    """
    speech_dir = Path(speech_dir) if speech_dir is not None else default_speech_dir()
    meta = sample_room(case, index, list_speakers(speech_dir))
    if voices != "real":  # the same room, its speakers drawn again from the other voices
        others = list_speakers(speech_dir, voices)
        g = torch.Generator().manual_seed(room_seed(case, index) + _VOICE_SEED_OFFSET)
        order = torch.randperm(len(others), generator=g)[: len(meta["speakers"])].tolist()
        meta["speakers"] = [others[i] for i in order]
    g = torch.Generator().manual_seed(room_seed(case, index) + _SIGNAL_SEED_OFFSET)
    signals, starts, onsets = [], [], []
    for spk in meta["speakers"]:
        sig, start, onset = _speech_window(_utterance(str(speech_dir / f"{spk}.flac")), g)
        signals.append(sig)
        starts.append(start / SAMPLE_RATE)
        onsets.append(onset)
    mix = simulate_mixture(
        torch.stack(signals),
        torch.tensor(meta["room_m"], dtype=torch.float64),
        torch.tensor(meta["sources_m"], dtype=torch.float64),
        torch.tensor(meta["mics_m"], dtype=torch.float64),
        sample_rate=SAMPLE_RATE,
        rt60=meta["rt60_s"],
        snr_db=meta["snr_db"],
        ref_mic=0,
        generator=g,
    )
    meta["window_start_s"] = starts
    meta["onset_samples"] = onsets
    meta["protocol_version"] = PROTOCOL_VERSION
    if voices != "real":  # (the cached real rooms stay as they were)
        meta["voices"] = voices
    return ValidationMixture(
        case=case,
        index=index,
        split=split_of(index),
        mixture=mix.mixture.float(),
        images=mix.images.float(),
        meta=meta,
    )


def load_mixture(
    case: str,
    index: int,
    *,
    cache_dir: Path | None = None,
    speech_dir: Path | None = None,
    voices: str = "real",
) -> ValidationMixture:
    """:func:`build_mixture`, cached as ``<cache_dir>/<case>_<index:04d>.pt`` (with
    ``voices="synthetic"``: ``synthetic_<case>_<index:04d>.pt``).

    A cached file written by another :data:`PROTOCOL_VERSION` is rebuilt. The file is written
    to a temporary name and renamed, so an interrupted run never leaves a truncated cache entry.
    """
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    prefix = "" if voices == "real" else f"{voices}_"
    path = cache_dir / f"{prefix}{case}_{index:04d}.pt"
    if path.is_file():
        data = torch.load(path, weights_only=True)
        if data["meta"].get("protocol_version") == PROTOCOL_VERSION:
            return ValidationMixture(case, index, split_of(index), **data)
    item = build_mixture(case, index, speech_dir, voices)
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    torch.save({"mixture": item.mixture, "images": item.images, "meta": item.meta}, tmp)
    tmp.replace(path)
    return item
