"""Data: room simulation, dynamic mixing, wav/stem folder datasets and the bundled speech."""

from .datasets import EpochSampler
from .dynamic_mixing import (
    DynamicMixingDataset,
    GeometryConfig,
    change_speed,
    reverberant_mixture,
    sample_geometry,
    speaker_split,
)
from .folders import StemFolderDataset, WavFolderDataset
from .room import (
    RoomMixture,
    convolve,
    image_source_rir,
    random_room_mixture,
    sabine_absorption,
    shoebox_rir,
    simulate_mixture,
)
from .speech import bundled_speech, bundled_speech_files

__all__ = [
    "DynamicMixingDataset",
    "GeometryConfig",
    "WavFolderDataset",
    "StemFolderDataset",
    "EpochSampler",
    "reverberant_mixture",
    "sample_geometry",
    "speaker_split",
    "change_speed",
    "RoomMixture",
    "bundled_speech",
    "bundled_speech_files",
    "convolve",
    "image_source_rir",
    "random_room_mixture",
    "sabine_absorption",
    "shoebox_rir",
    "simulate_mixture",
]
