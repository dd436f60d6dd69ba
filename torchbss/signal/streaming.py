"""Streaming STFT and inverse STFT: blocks of samples in, exactly the whole-signal frames out.

A signal processed block by block through :class:`StreamingSTFT` gives the same frames as
:func:`torchbss.signal.stft` on the whole signal (same centring, zero padding and frame
count), and the inverse gives the same samples as :func:`torchbss.signal.istft` (equal to float
rounding). Memory is bounded by one block plus one FFT frame, whatever the signal length, so an
online separator can process a file of any length with flat memory.

The state is explicit (a dict of tensors); nothing is kept on the module:

* analysis: ``{"buffer": (..., channels, n) samples not yet framed, "seen": samples read}``;
* synthesis: ``{"acc": (..., channels, n_fft) overlap-add accumulator, "norm": (n_fft,)
  window-square accumulator, "emitted": samples written, "frames": frames added}``.

Frame ``t`` covers the samples ``[t hop - n_fft // 2, t hop - n_fft // 2 + n_fft)`` of the
signal (zeros outside), as :func:`torch.stft` with ``center=True`` and constant padding.
"""

from __future__ import annotations

import torch
from torch import nn

from torchbss._validation import check_complex, check_positive_int, check_tensor
from torchbss.signal.stft import STFT, num_frames

__all__ = ["StreamingSTFT"]


class StreamingSTFT(nn.Module):
    """Block-wise STFT / inverse STFT equal to the whole-signal transforms of an :class:`STFT`.

    Args:
        stft: the transform to reproduce (its ``n_fft``, ``hop_length`` and window).

    Example:
        >>> tf = STFT(n_fft=512, hop_length=128)
        >>> stream = StreamingSTFT(tf)
        >>> x = torch.randn(2, 3000, dtype=torch.float64)
        >>> state = stream.init_analysis(x)
        >>> parts = []
        >>> for block in x.split(700, dim=-1):
        ...     frames, state = stream.analyze(block, state)
        ...     parts.append(frames)
        >>> parts.append(stream.flush_analysis(state))
        >>> torch.allclose(torch.cat(parts, -1), tf(x))
        True
    """

    def __init__(self, stft: STFT) -> None:
        super().__init__()
        if not isinstance(stft, STFT):
            raise TypeError(f"stft must be a torchbss.STFT, got {type(stft).__name__}")
        self.stft = stft

    @property
    def n_fft(self) -> int:
        return self.stft.n_fft

    @property
    def hop_length(self) -> int:
        return self.stft.hop_length

    # ----- analysis ---------------------------------------------------------------------------
    def init_analysis(self, like: torch.Tensor) -> dict[str, torch.Tensor]:
        """Analysis state for signals shaped like ``like`` ``(..., channels, samples)``."""
        check_tensor(like, "like", min_ndim=1, layout="(..., channels, samples)")
        half = self.n_fft // 2
        buffer = like.new_zeros(like.shape[:-1] + (half,))  # the centring zeros
        return {"buffer": buffer, "seen": torch.zeros((), dtype=torch.int64)}

    def _frames(self, buffer: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """All complete frames of ``buffer`` and what remains for the next ones."""
        n_fft, hop = self.n_fft, self.hop_length
        count = 0 if buffer.shape[-1] < n_fft else 1 + (buffer.shape[-1] - n_fft) // hop
        window = self.stft.window.to(dtype=buffer.dtype, device=buffer.device)
        if count == 0:
            n_freq = n_fft // 2 + 1
            empty = torch.zeros(
                buffer.shape[:-1] + (n_freq, 0), dtype=window.dtype.to_complex(),
                device=buffer.device,
            )  # fmt: skip
            return empty, buffer
        segments = buffer.unfold(-1, n_fft, hop)[..., :count, :]  # (..., frames, n_fft)
        spec = torch.fft.rfft(segments * window, dim=-1).transpose(-1, -2)  # (..., freq, frames)
        return spec, buffer[..., count * hop :]

    def analyze(
        self, block: torch.Tensor, state: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Frames completed by a block of samples.

        Args:
            block: ``(..., channels, n)`` real samples (any ``n >= 0``).
            state: from :meth:`init_analysis` or the previous call.

        Returns:
            ``(frames, state)``: ``(..., channels, freq, k)`` complex frames (``k >= 0``).
        """
        check_tensor(block, "block", min_ndim=1, layout="(..., channels, samples)")
        buffer = torch.cat([state["buffer"], block.to(state["buffer"].dtype)], dim=-1)
        spec, rest = self._frames(buffer)
        return spec, {"buffer": rest, "seen": state["seen"] + block.shape[-1]}

    def flush_analysis(self, state: dict[str, torch.Tensor]) -> torch.Tensor:
        """The last frames, once the whole signal has been given to :meth:`analyze`."""
        total = int(state["seen"])
        if total < 1:
            raise ValueError("the stream is empty: no samples were given to analyze()")
        # frames already emitted: the buffer starts at that frame's first sample
        emitted = (total + self.n_fft // 2 - state["buffer"].shape[-1]) // self.hop_length
        remaining = num_frames(total, self.n_fft, self.hop_length) - emitted
        needed = (remaining - 1) * self.hop_length + self.n_fft - state["buffer"].shape[-1]
        buffer = nn.functional.pad(state["buffer"], (0, max(needed, 0)))
        spec, _ = self._frames(buffer)
        return spec[..., :remaining]

    # ----- synthesis --------------------------------------------------------------------------
    def init_synthesis(self, like: torch.Tensor) -> dict[str, torch.Tensor]:
        """Synthesis state for frames shaped like ``like`` ``(..., channels, freq, frames)``."""
        check_tensor(like, "like", min_ndim=2, layout="(..., channels, freq, frames)")
        check_complex(like, "like")
        real = like.real.dtype
        n_fft = self.n_fft
        return {
            "acc": torch.zeros(like.shape[:-2] + (n_fft,), dtype=real, device=like.device),
            "norm": torch.zeros(n_fft, dtype=real, device=like.device),
            "emitted": torch.zeros((), dtype=torch.int64),
            "frames": torch.zeros((), dtype=torch.int64),
        }

    def synthesize(
        self,
        frames: torch.Tensor,
        state: dict[str, torch.Tensor],
        length: int | None = None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Samples completed by a block of frames (weighted overlap-add).

        Args:
            frames: ``(..., channels, freq, k)`` complex (``k >= 0``).
            state: from :meth:`init_synthesis` or the previous call.
            length: the signal's length when known (the last frames cover samples past the
                end): no sample at or after ``length`` is returned.

        Returns:
            ``(samples, state)``: ``(..., channels, n)`` samples of the original signal (the
            centring samples are dropped), final: no later frame changes them.
        """
        n_fft, hop = self.n_fft, self.hop_length
        acc, norm = state["acc"], state["norm"]
        window = self.stft.window.to(dtype=acc.dtype, device=acc.device)
        segments = torch.fft.irfft(frames.transpose(-1, -2), n=n_fft, dim=-1) * window
        outs = []
        for t in range(frames.shape[-1]):
            acc = acc + segments[..., t, :]
            norm = norm + window * window
            outs.append(acc[..., :hop] / norm[:hop])
            acc = nn.functional.pad(acc[..., hop:], (0, hop))
            norm = nn.functional.pad(norm[hop:], (0, hop))
        done = torch.cat(outs, -1) if outs else acc[..., :0]
        emitted = int(state["emitted"])
        skip = max(0, self.n_fft // 2 - emitted)  # the centring samples are not output
        new = {
            "acc": acc,
            "norm": norm,
            "emitted": state["emitted"] + done.shape[-1],
            "frames": state["frames"] + frames.shape[-1],
        }
        done = done[..., skip:]
        if length is not None:
            written = max(0, emitted - self.n_fft // 2)
            done = done[..., : max(0, length - written)]
        return done, new

    def flush_synthesis(self, state: dict[str, torch.Tensor], length: int) -> torch.Tensor:
        """The last samples, up to a total of ``length`` output samples.

        Args:
            state: after the last :meth:`synthesize`.
            length: the length of the original signal.

        Returns:
            ``(..., channels, n)`` the remaining samples.
        """
        check_positive_int(length, "length")
        half = self.n_fft // 2
        written = max(0, int(state["emitted"]) - half)
        remaining = max(0, length - written)
        start = max(0, half - int(state["emitted"]))
        tail = state["acc"][..., start : start + remaining]
        norm = state["norm"][start : start + remaining]
        if remaining > tail.shape[-1] or bool((norm <= 1e-11).any()):
            raise ValueError(
                f"length={length} asks for samples that no frame covers ({int(state['frames'])} "
                f"frames, hop_length={self.hop_length}); pass the length of the signal given to "
                "the analysis"
            )
        return tail / norm
