"""Waveform in, waveform out: any separator of the contract behind one wrapper.

:class:`WaveformSeparator` runs ``waveform -> STFT -> separator -> inverse STFT -> waveform``
for an STFT-domain separator (AuxIVA, ILRMA, the online separators, neural mask models) and
calls a waveform-domain model (``input_domain == "waveform"``) directly. The CLI, the demo and
the Lightning module all separate through it.

Online separators can also be streamed (:meth:`WaveformSeparator.stream`): blocks of samples in,
blocks of separated samples out, through :class:`~torchbss.signal.StreamingSTFT` and the
separator's ``step``; the output equals the whole-signal call and memory stays bounded by one
block, so a file of any length separates with flat memory (:func:`separate_file`).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from torchbss._validation import check_finite, check_positive, check_real_float, check_tensor
from torchbss.separators.base import SeparationResult
from torchbss.separators.online.base import OnlineSeparator
from torchbss.signal.stft import STFT, num_frames
from torchbss.signal.streaming import StreamingSTFT

__all__ = ["WaveformSeparator", "WaveformResult", "separate_file", "frames_needed"]


@dataclass
class WaveformResult:
    """Output of :class:`WaveformSeparator`.

    Attributes:
        sources: ``(..., sources, samples)`` separated waveforms (same dtype as the input).
        separation: the separator's own :class:`~torchbss.separators.SeparationResult`
            (STFT-domain sources, demixing, state, cost) or ``None`` for waveform models.
    """

    sources: torch.Tensor
    separation: SeparationResult | None = None


def frames_needed(separator: nn.Module, n_channels: int) -> int:
    """Fewest STFT frames the separator accepts for ``n_channels`` mics (batch BSS: mics)."""
    return n_channels if not isinstance(separator, OnlineSeparator) else 1


class WaveformSeparator(nn.Module):
    """Separate waveforms with any separator: STFT -> separator -> inverse STFT.

    Args:
        separator: a :class:`~torchbss.separators.Separator` (or any module returning a
            :class:`~torchbss.separators.SeparationResult`), STFT-domain or waveform-domain.
        n_fft: FFT size of the STFT (STFT-domain separators).
        hop_length: hop of the STFT.

    Shapes:
        ``mixture``: ``(..., mics, samples)`` real -> ``sources``: ``(..., sources, samples)``.

    Example:
        >>> from torchbss import AuxIVA
        >>> sep = WaveformSeparator(AuxIVA(n_iter=5), n_fft=256, hop_length=64)
        >>> sep(torch.randn(2, 4000)).sources.shape
        torch.Size([2, 4000])
    """

    def __init__(self, separator: nn.Module, n_fft: int = 2048, hop_length: int = 512) -> None:
        super().__init__()
        if not isinstance(separator, nn.Module):
            raise TypeError(f"separator must be an nn.Module, got {type(separator).__name__}")
        self.separator = separator
        self.stft = STFT(n_fft=n_fft, hop_length=hop_length)

    @property
    def input_domain(self) -> str:
        return getattr(self.separator, "input_domain", "stft")

    def _check_mixture(self, mixture: object) -> torch.Tensor:
        layout = "(..., mics, samples)"
        check_tensor(mixture, "mixture", min_ndim=2, layout=layout)
        check_real_float(mixture, "mixture")
        check_finite(mixture, "mixture")
        n_samples = mixture.shape[-1]
        if self.input_domain == "stft":
            need = frames_needed(self.separator, mixture.shape[-2])
            have = num_frames(max(n_samples, 1), self.stft.n_fft, self.stft.hop_length)
            if n_samples < 1 or have < need:
                shortest = 1 + (need - 1) * self.stft.hop_length
                raise ValueError(
                    f"mixture of {n_samples} samples gives {have if n_samples else 0} STFT "
                    f"frame(s) (n_fft={self.stft.n_fft}, hop_length={self.stft.hop_length}); "
                    f"{type(self.separator).__name__} needs at least {need} frames for "
                    f"{mixture.shape[-2]} mics, i.e. about {shortest} samples or more"
                )
        return mixture

    def forward(
        self,
        mixture: torch.Tensor,
        state: Any = None,
        *,
        lengths: torch.Tensor | None = None,
    ) -> WaveformResult:
        """Separate ``mixture`` ``(..., mics, samples)`` into ``(..., sources, samples)``.

        Args:
            mixture: real waveforms.
            state: passed on to the separator (e.g. to continue an online stream).
            lengths: optional ``(...,)`` valid lengths in samples of zero-padded items of a
                batch; batch separators then ignore the padded frames (``frame_mask``; an
                online separator's trailing padding cannot change its earlier outputs).

        Returns:
            :class:`WaveformResult`.
        """
        mixture = self._check_mixture(mixture)
        n_samples = mixture.shape[-1]
        if self.input_domain == "waveform":
            out = self.separator(mixture)
            if isinstance(out, SeparationResult):
                return WaveformResult(out.sources, out)
            return WaveformResult(out, None)
        X = self.stft(mixture)
        kwargs = {}
        if lengths is not None and not isinstance(self.separator, OnlineSeparator):
            kwargs["frame_mask"] = self.frame_mask(lengths, X.shape[-1])
        result = self.separator(X, state, **kwargs)
        sources = self.stft.inverse(result.sources, length=n_samples)
        return WaveformResult(sources.to(mixture.dtype), result)

    def frame_mask(self, lengths: torch.Tensor, n_frames: int) -> torch.Tensor:
        """``(..., frames)`` mask of the frames whose centre lies inside each valid length."""
        centres = torch.arange(n_frames, device=lengths.device) * self.stft.hop_length
        return centres < lengths[..., None]

    def stream(self, blocks: Iterable[torch.Tensor], state: Any = None) -> Iterator[torch.Tensor]:
        """Separate a stream of sample blocks with an online separator.

        Args:
            blocks: iterable of ``(..., mics, n)`` real blocks (any sizes).
            state: optional separator state to continue from.

        Yields:
            ``(..., sources, n')`` blocks of separated samples; all of them concatenated equal
            the whole-signal :meth:`forward` (to float rounding). The last block is yielded
            once the input is exhausted.
        """
        if not isinstance(self.separator, OnlineSeparator):
            raise TypeError(
                f"stream() needs an online separator (OnlineAuxIVA, OnlineILRMA, OnlineISNMF), "
                f"got {type(self.separator).__name__}; call the wrapper on the whole signal"
            )
        streaming = StreamingSTFT(self.stft)
        analysis = synthesis = stream = None
        total = 0
        sep = self.separator
        first: torch.Tensor | None = None
        for i, block in enumerate(blocks):
            check_tensor(block, "block", min_ndim=2, layout="(..., mics, samples)")
            check_real_float(block, "block")
            if block.dtype == torch.float16 or block.dtype == torch.bfloat16:
                raise TypeError(f"block {i}: {block.dtype} is not supported (float32 or float64)")
            if first is None:
                first = block
            elif block.shape[:-1] != first.shape[:-1] or block.dtype != first.dtype:
                raise ValueError(
                    f"block {i} has shape {tuple(block.shape)} and dtype {block.dtype}, but the "
                    f"stream started with {tuple(first.shape[:-1])} + (samples,) and "
                    f"{first.dtype}: every block needs the same (..., mics) and dtype"
                )
            check_finite(block, f"block {i}")  # forward() refuses it too; the frame was skipped
            if analysis is None:
                analysis = streaming.init_analysis(block)
            total += block.shape[-1]
            frames, analysis = streaming.analyze(block, analysis)
            if frames.shape[-1] == 0:
                continue
            if stream is None:  # the state stays in the frame loop's layout between blocks
                stream = sep.open_stream(frames, state)
            sources = stream.step(frames)
            if synthesis is None:
                synthesis = streaming.init_synthesis(sources)
            out, synthesis = streaming.synthesize(sources, synthesis)
            yield out.to(block.dtype)
        if analysis is None or total == 0:
            raise ValueError("the stream is empty: no samples were given")
        frames = streaming.flush_analysis(analysis)
        if stream is None:
            stream = sep.open_stream(frames, state)
        sources = stream.step(frames)
        if synthesis is None:
            synthesis = streaming.init_synthesis(sources)
        out, synthesis = streaming.synthesize(sources, synthesis, length=total)
        tail = streaming.flush_synthesis(synthesis, total)
        yield torch.cat([out, tail], -1).to(frames.real.dtype)


def separate_file(
    separator: WaveformSeparator,
    path: str | os.PathLike,
    outputs: list[str | os.PathLike],
    *,
    block_seconds: float = 10.0,
    subtype: str = "float",
    overwrite: bool = False,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> int:
    """Stream a file through an online separator into one file per source (flat memory).

    Every output is written to a temporary file next to it and renamed when complete, so an
    error never leaves a partial output behind. A NaN or inf sample in the file is an error,
    as for the whole-file methods (the online separators themselves would skip its frame).

    Args:
        separator: a :class:`WaveformSeparator` around an online separator.
        path: input audio file (``(samples, mics)`` on disk).
        outputs: one output path per source.
        block_seconds: seconds read per block.
        subtype: output sample format (see :data:`torchbss.io.SUBTYPES`).
        overwrite: replace existing outputs.
        device: device of the computation.
        dtype: real dtype of the computation (float32 or float64).

    Returns:
        The sample rate of the file.
    """
    from torchbss import io

    if not isinstance(separator, WaveformSeparator):
        raise TypeError(
            f"separator must be a WaveformSeparator around an online separator, got "
            f"{type(separator).__name__} (wrap it: WaveformSeparator(sep, n_fft, hop_length))"
        )
    if isinstance(outputs, (str, os.PathLike)):
        raise TypeError(f"outputs must be a list of paths, one per source, got {outputs!r}")
    check_positive(block_seconds, "block_seconds")
    info = io.info(path)
    n_src = separator.separator.num_sources(info.channels)
    if len(outputs) != n_src:
        raise ValueError(f"expected {n_src} output paths for {n_src} sources, got {len(outputs)}")
    block = max(1, int(block_seconds * info.sample_rate))
    reader = io.iter_blocks(path, block, dtype=dtype)

    def blocks():  # each block checked as a whole-file input is (no output is left on failure)
        for i, b in enumerate(reader):
            yield check_finite(b, f"{str(path)!r} (block {i}, from sample {i * block})").to(device)

    with io.MultiWriter(
        [Path(p) for p in outputs], info.sample_rate, subtype=subtype, overwrite=overwrite
    ) as writer:
        with torch.inference_mode():
            for out in separator.stream(blocks()):
                writer.write(out.cpu())
    return info.sample_rate
