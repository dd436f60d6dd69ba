"""Neural separation models: BS-RoFormer and Mel-RoFormer (music), MaskNet (speech).

Both load community checkpoints (Music-Source-Separation-Training layout) unchanged; build them
from a community YAML config with :func:`from_config`, load weights with
:func:`load_checkpoint`, and separate whole songs with :func:`separate_song`.
"""

from torchbss.models.bs_roformer import DEFAULT_FREQS_PER_BANDS, BSRoformer
from torchbss.models.config import ConfiguredModel, from_config, load_config
from torchbss.models.mask_net import MaskNet
from torchbss.models.mel_band_roformer import MelBandRoformer, mel_band_membership
from torchbss.models.music import load_checkpoint, separate_song

__all__ = [
    "BSRoformer",
    "MelBandRoformer",
    "MaskNet",
    "DEFAULT_FREQS_PER_BANDS",
    "mel_band_membership",
    "from_config",
    "load_config",
    "ConfiguredModel",
    "load_checkpoint",
    "separate_song",
]
