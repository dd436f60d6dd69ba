"""Chunking of long signals, windowed overlap-add, and chunked model inference.

A signal of ``num_samples`` samples is cut into chunks of ``chunk_size`` samples every ``hop``
samples. It is first padded by ``chunk_size - hop`` samples on both sides, plus a tail on the
right so that the padded length is ``chunk_size + hop * (num_chunks - 1)``; every original sample
is then covered by the same number of chunks as a sample in the middle of the signal, so the
edges get the same cross-fade treatment as the rest.

Stitching is a weighted overlap-add (Allen & Rabiner, "A unified approach to short-time Fourier
analysis and synthesis", Proc. IEEE 65(11), 1977): each chunk is multiplied by a window, the
chunks are summed at their positions, and the sum is divided by the summed windows. This is the
cross-fade used for chunked inference by source separation networks (e.g. Défossez et al.,
"Music Source Separation in the Waveform Domain", arXiv:1911.13254). An identity model therefore
gives back the input exactly, whatever the window.

Windows (all strictly positive, so the division is always defined):

- ``"hann"``: ``sin(pi * (n + 0.5) / chunk_size) ** 2`` (default when the chunks overlap);
- ``"triangular"``: ``1 - |2 * (n + 0.5) / chunk_size - 1|``;
- ``"rectangular"`` or ``None``: ones (always used when ``hop == chunk_size``, no overlap).

Padding modes (valid for every length ``>= 1``, also when the padding is longer than the
signal): ``"reflect"`` mirrors the signal about its end samples without repeating them,
continued periodically with period ``2 * (num_samples - 1)`` when the padding is longer than the
signal (a 1-sample signal is repeated); ``"replicate"`` repeats the end samples;
``"constant"`` pads with zeros.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Iterator
from typing import NamedTuple

import torch
import torch.nn.functional as F
from einops import rearrange

from torchbss._validation import check_choice, check_positive_int, check_range, check_tensor
from torchbss.signal.stft import _check_audio

__all__ = [
    "PADDING_MODES",
    "WINDOWS",
    "ChunkInfo",
    "ChunkBatch",
    "chunk_info",
    "chunk",
    "iter_chunk_batches",
    "chunk_window",
    "overlap_add",
    "apply_chunked",
]

PADDING_MODES = ("reflect", "constant", "replicate")
WINDOWS = ("hann", "rectangular", "triangular")

# apply_chunked(progress=None) shows a bar from this many samples on (one minute at 44.1 kHz).
LONG_TRACK_SAMPLES = 60 * 44100


class ChunkInfo(NamedTuple):
    """How a signal was chunked; everything :func:`overlap_add` needs to undo it.

    Attributes:
        num_samples: length of the original signal.
        chunk_size: samples per chunk.
        hop: samples between the starts of consecutive chunks.
        pad_left: samples of padding before the signal (``chunk_size - hop``).
        pad_right: samples of padding after the signal.
        num_chunks: number of chunks.
        batch_ndim: number of leading batch dims before the chunk dim in :func:`chunk`'s output.
    """

    num_samples: int
    chunk_size: int
    hop: int
    pad_left: int
    pad_right: int
    num_chunks: int
    batch_ndim: int = 1


class ChunkBatch(NamedTuple):
    """A batch of chunks yielded by :func:`iter_chunk_batches`.

    Attributes:
        chunks: ``(b, channels, chunk_size)`` with ``b <= batch_size``.
        item: flat batch item of each chunk (index into the flattened leading dims).
        index: chunk index of each chunk within its item (its start is
            ``index * hop - pad_left`` in the original signal).
    """

    chunks: torch.Tensor
    item: tuple[int, ...]
    index: tuple[int, ...]


def _resolve_hop(chunk_size: object, hop: object, overlap: object) -> int:
    check_positive_int(chunk_size, "chunk_size")
    if hop is not None and overlap is not None:
        raise ValueError(f"give either hop or overlap, not both (got hop={hop}, overlap={overlap})")
    if hop is None:
        if overlap is None:
            return chunk_size
        if isinstance(overlap, bool) or not isinstance(overlap, (int, float)):
            raise TypeError(f"overlap must be a float in [0, 1), got {overlap!r}")
        check_range(overlap, "overlap", 0.0, 1.0)
        return max(1, round(chunk_size * (1.0 - overlap)))
    check_positive_int(hop, "hop")
    if hop > chunk_size:
        raise ValueError(f"hop must be <= chunk_size = {chunk_size}, got hop={hop}")
    return hop


def chunk_info(
    num_samples: int,
    chunk_size: int,
    hop: int | None = None,
    overlap: float | None = None,
    batch_ndim: int = 1,
) -> ChunkInfo:
    """Padding and number of chunks for a signal of ``num_samples`` samples.

    Args:
        num_samples: signal length (``>= 1``).
        chunk_size: samples per chunk (``>= 1``).
        hop: samples between chunk starts, ``1 <= hop <= chunk_size``; or give ``overlap``.
        overlap: fraction of a chunk shared by neighbours, in ``[0, 1)``;
            ``hop = round(chunk_size * (1 - overlap))``. Neither: no overlap (``hop=chunk_size``).
        batch_ndim: stored in the result for :func:`overlap_add`.

    Returns:
        The :class:`ChunkInfo`.
    """
    check_positive_int(num_samples, "num_samples")
    hop = _resolve_hop(chunk_size, hop, overlap)
    pad_left = chunk_size - hop
    tail = (-(num_samples + chunk_size)) % hop
    pad_right = chunk_size - hop + tail
    padded = pad_left + num_samples + pad_right
    num_chunks = (padded - chunk_size) // hop + 1
    return ChunkInfo(num_samples, chunk_size, hop, pad_left, pad_right, num_chunks, batch_ndim)


def _source_index(positions: torch.Tensor, num_samples: int, mode: str) -> torch.Tensor:
    """Map positions (any integers) to indices in ``[0, num_samples)`` for reflect/replicate."""
    if mode == "replicate" or num_samples == 1:
        return positions.clamp(0, num_samples - 1)
    period = 2 * (num_samples - 1)
    folded = torch.remainder(positions, period)
    return torch.where(folded < num_samples, folded, period - folded)


def _pad(audio: torch.Tensor, left: int, right: int, mode: str) -> torch.Tensor:
    """Pad the last dim of ``audio`` by ``left``/``right`` samples, for any signal length."""
    if left == 0 and right == 0:
        return audio
    if mode == "constant":
        return F.pad(audio, (left, right))
    n = audio.shape[-1]
    positions = torch.arange(-left, n + right, device=audio.device)
    return audio.index_select(-1, _source_index(positions, n, mode))


def chunk(
    audio: torch.Tensor,
    chunk_size: int,
    hop: int | None = None,
    overlap: float | None = None,
    padding_mode: str = "reflect",
) -> tuple[torch.Tensor, ChunkInfo]:
    """Cut a signal into overlapping chunks (``Tensor.unfold`` over the padded signal).

    Args:
        audio: ``(..., channels, samples)`` real, finite signal with ``samples >= 1``.
        chunk_size: samples per chunk.
        hop: samples between chunk starts (``1 <= hop <= chunk_size``); or give ``overlap``.
        overlap: fraction in ``[0, 1)`` shared by neighbouring chunks. Give at most one of
            ``hop``/``overlap``; neither means no overlap.
        padding_mode: ``"reflect"``, ``"constant"`` or ``"replicate"`` (module docstring).

    Returns:
        ``(chunks, info)``: ``chunks`` is ``(..., num_chunks, channels, chunk_size)``, a strided
        view of the padded signal (no copy per chunk); ``info`` is the :class:`ChunkInfo` to
        pass to :func:`overlap_add`.
    """
    _check_audio(audio, "audio")
    check_choice(padding_mode, "padding_mode", PADDING_MODES)
    info = chunk_info(audio.shape[-1], chunk_size, hop, overlap, batch_ndim=audio.ndim - 2)
    padded = _pad(audio, info.pad_left, info.pad_right, padding_mode)
    chunks = padded.unfold(-1, info.chunk_size, info.hop)  # (..., channels, n, chunk)
    return chunks.movedim(-2, -3), info


def _gather_chunk(audio: torch.Tensor, item: int, start: int, size: int, mode: str) -> torch.Tensor:
    """``(channels, size)`` samples ``[start, start + size)`` of ``audio[item]``, padded."""
    n = audio.shape[-1]
    if start >= 0 and start + size <= n:
        return audio[item, :, start : start + size]
    if mode == "constant":
        lo, hi = max(start, 0), min(start + size, n)
        piece = audio[item, :, lo:hi] if hi > lo else audio[item, :, :0]
        return F.pad(piece, (lo - start, start + size - max(hi, lo)))
    positions = torch.arange(start, start + size, device=audio.device)
    return audio[item].index_select(-1, _source_index(positions, n, mode))


def _iter_batches(
    audio: torch.Tensor, info: ChunkInfo, batch_size: int, padding_mode: str
) -> Iterator[ChunkBatch]:
    """Yield batches of chunks of ``audio`` ``(batch, channels, samples)`` (no padded copy)."""
    total = audio.shape[0] * info.num_chunks
    for first in range(0, total, batch_size):
        flat = range(first, min(first + batch_size, total))
        items = tuple(g // info.num_chunks for g in flat)
        indices = tuple(g % info.num_chunks for g in flat)
        starts = [k * info.hop - info.pad_left for k in indices]
        pieces = [
            _gather_chunk(audio, i, start, info.chunk_size, padding_mode)
            for i, start in zip(items, starts)
        ]
        chunks = torch.stack(pieces)
        del pieces
        yield ChunkBatch(chunks, items, indices)
        del chunks  # the caller may free the batch before asking for the next one


def iter_chunk_batches(
    audio: torch.Tensor,
    chunk_size: int,
    batch_size: int = 4,
    hop: int | None = None,
    overlap: float | None = None,
    padding_mode: str = "reflect",
) -> Iterator[ChunkBatch]:
    """Iterate over the chunks of :func:`chunk`, ``batch_size`` at a time.

    Chunks are built batch by batch from the unpadded signal, so memory stays bounded by one
    batch. Chunks are ordered item by item (flattened leading dims), then by time; a batch may
    span two items.

    Args:
        audio: ``(..., channels, samples)`` real, finite signal with ``samples >= 1``.
        chunk_size: samples per chunk.
        batch_size: maximum number of chunks per batch.
        hop: samples between chunk starts; or give ``overlap`` (neither: no overlap).
        overlap: fraction in ``[0, 1)`` shared by neighbouring chunks.
        padding_mode: ``"reflect"``, ``"constant"`` or ``"replicate"``.

    Yields:
        :class:`ChunkBatch` whose ``chunks`` are ``(b, channels, chunk_size)``, ``b <= batch_size``.
    """
    _check_audio(audio, "audio")
    check_choice(padding_mode, "padding_mode", PADDING_MODES)
    check_positive_int(batch_size, "batch_size")
    info = chunk_info(audio.shape[-1], chunk_size, hop, overlap)
    flat = audio.reshape(-1, *audio.shape[-2:])
    return _iter_batches(flat, info, batch_size, padding_mode)


def chunk_window(
    window: str | torch.Tensor | None,
    chunk_size: int,
    hop: int | None = None,
    *,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """The cross-fade window used by :func:`overlap_add` and :func:`apply_chunked`.

    Args:
        window: ``"hann"``, ``"triangular"``, ``"rectangular"``/``None``, or a ``(chunk_size,)``
            tensor of non-negative weights.
        chunk_size: window length.
        hop: if equal to ``chunk_size`` (no overlap) the window is rectangular whatever
            ``window`` says.
        dtype: floating point dtype of the result.
        device: device of the result.

    Returns:
        ``(chunk_size,)`` window.
    """
    check_positive_int(chunk_size, "chunk_size")
    if window is None:
        window = "rectangular"
    if isinstance(window, torch.Tensor):
        check_tensor(window, "window", layout=f"({chunk_size},)")
        if window.shape != (chunk_size,) or window.is_complex() or not window.is_floating_point():
            raise ValueError(
                f"window must be a real float tensor of shape (chunk_size,) = ({chunk_size},), "
                f"got shape {tuple(window.shape)} and dtype {window.dtype}"
            )
        if bool((window < 0).any()) or not bool(torch.isfinite(window).all()):
            raise ValueError("window must hold finite, non-negative weights")
        if hop != chunk_size:
            return window.to(dtype=dtype or window.dtype, device=device or window.device)
        window = "rectangular"
    if not isinstance(window, str):
        raise TypeError(f"window must be a str, a tensor or None, got {type(window).__name__}")
    check_choice(window, "window", WINDOWS)
    if window == "rectangular" or hop == chunk_size:
        return torch.ones(chunk_size, dtype=dtype, device=device)
    phase = (torch.arange(chunk_size, dtype=torch.float64, device=device) + 0.5) / chunk_size
    if window == "hann":
        values = torch.sin(math.pi * phase) ** 2
    else:
        values = 1.0 - (2.0 * phase - 1.0).abs()
    return values.to(dtype=dtype or torch.get_default_dtype())


def _window_sum(window: torch.Tensor, info: ChunkInfo) -> torch.Tensor:
    """Overlap-added window over the original samples, ``(num_samples,)``; raises if zero."""
    padded = info.chunk_size + info.hop * (info.num_chunks - 1)
    cols = window.reshape(1, -1, 1).expand(1, info.chunk_size, info.num_chunks)
    total = F.fold(
        cols, output_size=(1, padded), kernel_size=(1, info.chunk_size), stride=(1, info.hop)
    ).reshape(padded)
    total = total[info.pad_left : info.pad_left + info.num_samples]
    if bool((total <= torch.finfo(total.dtype).tiny).any()):
        raise ValueError(
            f"the overlap-added window is zero at some samples (hop={info.hop}, "
            f"chunk_size={info.chunk_size}); use a window without zeros, e.g. 'hann'"
        )
    return total


def _chunk_gain(window: torch.Tensor, hop: int) -> torch.Tensor:
    """``window / (summed windows)`` seen by every chunk, ``(chunk_size,)``.

    Thanks to the ``chunk_size - hop`` padding, the summed windows over the original samples are
    periodic with period ``hop`` and aligned with the chunk starts, so every chunk (edge chunks
    included) is weighted by the same ``window[j] / envelope[j % hop]``.
    """
    size = window.shape[0]
    envelope = F.pad(window, (0, (-size) % hop)).reshape(-1, hop).sum(0)
    if bool((envelope <= torch.finfo(envelope.dtype).tiny).any()):
        raise ValueError(
            f"the overlap-added window is zero at some samples (hop={hop}, chunk_size={size}); "
            "use a window without zeros, e.g. 'hann'"
        )
    return window / envelope.repeat(-(-size // hop))[:size]


def overlap_add(
    chunks: torch.Tensor,
    hop: int | None = None,
    window: str | torch.Tensor | None = "hann",
    target: ChunkInfo | int | None = None,
    *,
    chunk_dim: int | None = None,
) -> torch.Tensor:
    """Stitch chunks back into a signal by windowed overlap-add (``F.fold``).

    ``out = sum_k shift_k(w * chunk_k) / sum_k shift_k(w)``, trimmed to the original samples.

    Args:
        chunks: ``(*batch, num_chunks, *inner, chunk_size)`` real tensor, e.g. the output of
            :func:`chunk` ``(batch, num_chunks, channels, chunk_size)`` or a model's output
            ``(batch, num_chunks, sources, channels, chunk_size)``.
        hop: samples between chunk starts; may be omitted when ``target`` is a
            :class:`ChunkInfo`.
        window: ``"hann"`` (default), ``"triangular"``, ``"rectangular"``/``None`` or a
            ``(chunk_size,)`` tensor; rectangular when ``hop == chunk_size``.
        target: the :class:`ChunkInfo` from :func:`chunk`, or the original number of samples
            (the padding is then recomputed, and ``chunk_dim`` defaults to 1).
        chunk_dim: position of the ``num_chunks`` dim; default ``target.batch_ndim`` for a
            :class:`ChunkInfo`, else 1.

    Returns:
        ``(*batch, *inner, num_samples)`` signal with exactly ``num_samples`` samples.
    """
    check_tensor(chunks, "chunks", min_ndim=2, layout="(*batch, num_chunks, *inner, chunk_size)")
    if chunks.is_complex() or not chunks.is_floating_point():
        raise TypeError(f"chunks must be a real floating point tensor, got {chunks.dtype}")
    chunk_size = chunks.shape[-1]
    if isinstance(target, ChunkInfo):
        if hop is not None and hop != target.hop:
            raise ValueError(f"hop={hop} does not match the ChunkInfo's hop={target.hop}")
        if chunk_size != target.chunk_size:
            raise ValueError(
                f"chunks have {chunk_size} samples along the last dim, expected the ChunkInfo's "
                f"chunk_size={target.chunk_size}"
            )
        info = target
        if chunk_dim is None:
            chunk_dim = target.batch_ndim
    elif isinstance(target, int) and not isinstance(target, bool):
        if hop is None:
            raise ValueError("hop is required when target is a number of samples")
        info = chunk_info(target, chunk_size, hop)
        if chunk_dim is None:
            chunk_dim = 1
    else:
        raise TypeError(
            "target must be the ChunkInfo returned by chunk() or the original number of "
            f"samples (int), got {type(target).__name__}"
        )
    if not -chunks.ndim + 1 <= chunk_dim < chunks.ndim - 1:
        raise ValueError(
            f"chunk_dim={chunk_dim} is not a valid dim before the last one of chunks with "
            f"shape {tuple(chunks.shape)}"
        )
    if chunks.shape[chunk_dim] != info.num_chunks:
        raise ValueError(
            f"chunks have {chunks.shape[chunk_dim]} chunks along dim {chunk_dim} (shape "
            f"{tuple(chunks.shape)}), expected {info.num_chunks} for {info.num_samples} samples "
            f"with chunk_size={info.chunk_size} and hop={info.hop}"
        )
    weights = chunk_window(window, chunk_size, info.hop, dtype=chunks.dtype, device=chunks.device)
    norm = _window_sum(weights, info)
    moved = chunks.movedim(chunk_dim, -2)  # (*batch, *inner, num_chunks, chunk_size)
    lead = moved.shape[:-2]
    cols = rearrange(moved.reshape(-1, *moved.shape[-2:]) * weights, "m n k -> m k n")
    padded = info.chunk_size + info.hop * (info.num_chunks - 1)
    folded = F.fold(
        cols, output_size=(1, padded), kernel_size=(1, info.chunk_size), stride=(1, info.hop)
    )
    out = folded.reshape(-1, padded)[:, info.pad_left : info.pad_left + info.num_samples] / norm
    return out.reshape(*lead, info.num_samples)


def _check_model_output(
    y: object, chunks: torch.Tensor, expected_ndim: int | None
) -> tuple[torch.Tensor, int]:
    b, channels, size = chunks.shape
    expected = (
        f"(batch, sources, channels, chunk) = ({b}, S, {channels}, {size}) or "
        f"(batch, channels, chunk) = ({b}, {channels}, {size})"
    )
    if not isinstance(y, torch.Tensor):
        raise TypeError(f"model must return a tensor {expected}, got {type(y).__name__}")
    if (
        y.ndim not in (3, 4)
        or y.shape[0] != b
        or tuple(y.shape[-2:]) != (channels, size)
        or (expected_ndim is not None and y.ndim != expected_ndim)
    ):
        raise ValueError(
            f"model output has shape {tuple(y.shape)} for an input chunk batch of shape "
            f"{tuple(chunks.shape)}; expected {expected}, the same for every batch"
        )
    if y.is_complex() or not y.is_floating_point():
        raise TypeError(f"model must return a real floating point tensor, got {y.dtype}")
    return (y.unsqueeze(1) if y.ndim == 3 else y), y.ndim


def _progress_bar(total: int, enabled: bool) -> Callable[[int], None]:
    if not enabled:
        return lambda n: None
    try:
        from tqdm.auto import tqdm
    except ImportError:  # optional dependency
        return lambda n: None
    bar = tqdm(total=total, desc="apply_chunked", unit="batch", leave=False, file=sys.stderr)

    def update(n: int) -> None:
        bar.update(n)
        if bar.n >= total:
            bar.close()

    return update


def apply_chunked(
    model: Callable[[torch.Tensor], torch.Tensor],
    audio: torch.Tensor,
    chunk_size: int,
    overlap: float = 0.25,
    batch_size: int = 4,
    window: str | torch.Tensor | None = "hann",
    padding_mode: str = "reflect",
    progress: bool | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Run a separation model over a long track in overlapping chunks and cross-fade the outputs.

    The model sees ``(b, channels, chunk_size)`` batches (``b <= batch_size``) and returns
    ``(b, sources, channels, chunk_size)`` (or ``(b, channels, chunk_size)``, treated as one
    source and squeezed back). Each output batch is windowed and added into the output buffer
    right away, already divided by the summed windows (see :func:`overlap_add`; the summed
    windows are periodic in ``hop``, so one gain vector serves every chunk), so
    memory beyond the input and output buffers is bounded by one batch of chunks, whatever the
    track length. The model runs under the caller's grad mode: with gradients enabled the result
    is differentiable w.r.t. ``audio`` and the model's parameters (and the autograd graph then
    holds every chunk's activations); wrap the call in ``torch.inference_mode()`` otherwise.

    Args:
        model: callable ``(b, channels, chunk_size) -> (b, sources, channels, chunk_size)``.
        audio: track ``(channels, samples)`` or ``(batch, channels, samples)``, real and finite.
        chunk_size: samples per chunk.
        overlap: fraction in ``[0, 1)`` shared by neighbouring chunks.
        batch_size: chunks per model call.
        window: cross-fade window, see :func:`chunk_window` (rectangular when ``overlap`` is 0).
        padding_mode: ``"reflect"``, ``"constant"`` or ``"replicate"`` for the track ends.
        progress: show a tqdm bar (if tqdm is installed); ``None`` shows it for tracks of at
            least ``LONG_TRACK_SAMPLES`` samples (one minute at 44.1 kHz).
        device: device the chunks are sent to for the model (default: ``audio.device``);
            the output is accumulated on ``audio.device``.

    Returns:
        ``(sources, channels, samples)`` for a ``(channels, samples)`` track, or
        ``(batch, sources, channels, samples)``; without the sources dim when the model returns
        ``(b, channels, chunk_size)``. Dtype: the model's output dtype.

    Example:
        >>> def model(x):  # (b, channels, chunk) -> (b, 2 sources, channels, chunk)
        ...     return torch.stack([0.3 * x, 0.7 * x], dim=1)
        >>> track = torch.randn(2, 44100)
        >>> stems = apply_chunked(model, track, chunk_size=8192, overlap=0.25, progress=False)
        >>> stems.shape
        torch.Size([2, 2, 44100])
        >>> torch.allclose(stems[1], 0.7 * track, atol=1e-6)
        True
    """
    if not callable(model):
        raise TypeError(f"model must be callable, got {type(model).__name__}")
    layout = "(channels, samples) or (batch, channels, samples)"
    _check_audio(audio, "audio", layout)
    if audio.ndim > 3:
        raise ValueError(f"audio must be {layout}, got shape {tuple(audio.shape)}")
    check_choice(padding_mode, "padding_mode", PADDING_MODES)
    check_positive_int(batch_size, "batch_size")
    if progress is not None and not isinstance(progress, bool):
        raise TypeError(f"progress must be True, False or None, got {progress!r}")
    tracks = audio if audio.ndim == 3 else audio.unsqueeze(0)
    n_items, channels, num_samples = tracks.shape
    info = chunk_info(num_samples, chunk_size, overlap=overlap)
    out_device = audio.device
    run_device = torch.device(device) if device is not None else out_device
    weights = chunk_window(window, chunk_size, info.hop, dtype=torch.float64, device=out_device)
    gain = _chunk_gain(weights, info.hop)  # validates the window before any model call
    n_batches = -(-n_items * info.num_chunks // batch_size)
    show = progress if progress is not None else num_samples >= LONG_TRACK_SAMPLES
    advance = _progress_bar(n_batches, show)

    out: torch.Tensor | None = None
    out_ndim = None
    for batch in _iter_batches(tracks, info, batch_size, padding_mode):
        inputs = batch.chunks.to(run_device)
        estimates, out_ndim = _check_model_output(model(inputs), inputs, out_ndim)
        estimates = estimates.to(out_device)
        if out is None:
            n_sources = estimates.shape[1]
            out = torch.zeros(
                n_items, n_sources, channels, num_samples, dtype=estimates.dtype, device=out_device
            )
            gain = gain.to(estimates.dtype)
        elif estimates.shape[1] != out.shape[1]:
            raise ValueError(
                f"model returned {estimates.shape[1]} sources for one batch and {out.shape[1]} "
                "for an earlier one; expected the same number for every batch"
            )
        for j, (item, index) in enumerate(zip(batch.item, batch.index)):
            start = index * info.hop - info.pad_left
            lo, hi = max(start, 0), min(start + chunk_size, num_samples)
            valid = slice(lo - start, hi - start)
            out[item, :, :, lo:hi].addcmul_(estimates[j, :, :, valid], gain[valid])
        del batch, inputs, estimates  # free this batch before the next one is built
        advance(1)
    assert out is not None  # at least one chunk always exists
    if out_ndim == 3:
        out = out.squeeze(1)
    return out if audio.ndim == 3 else out.squeeze(0)
