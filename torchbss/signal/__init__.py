"""Signal core: STFT, normalisation, chunking with overlap-add, chunked inference, stems."""

from torchbss.signal.chunking import (
    ChunkBatch,
    ChunkInfo,
    apply_chunked,
    chunk,
    chunk_info,
    chunk_window,
    iter_chunk_batches,
    overlap_add,
)
from torchbss.signal.normalization import NormalizationStats, Normalize, denormalize, normalize
from torchbss.signal.stems import derive_stems
from torchbss.signal.stft import STFT, hann_window, istft, num_frames, stft

__all__ = [
    "STFT",
    "stft",
    "istft",
    "num_frames",
    "hann_window",
    "normalize",
    "denormalize",
    "Normalize",
    "NormalizationStats",
    "chunk",
    "chunk_info",
    "ChunkInfo",
    "ChunkBatch",
    "iter_chunk_batches",
    "chunk_window",
    "overlap_add",
    "apply_chunked",
    "derive_stems",
]
