"""Data: on-the-fly room simulation and the bundled demo speech."""

from .room import (
    RoomMixture,
    convolve,
    random_room_mixture,
    sabine_absorption,
    shoebox_rir,
    simulate_mixture,
)
from .speech import bundled_speech, bundled_speech_files

__all__ = [
    "RoomMixture",
    "bundled_speech",
    "bundled_speech_files",
    "convolve",
    "random_room_mixture",
    "sabine_absorption",
    "shoebox_rir",
    "simulate_mixture",
]
