"""Short-time Fourier transform with perfect reconstruction for any signal length.

Shapes follow the library convention: time-domain signals are ``(..., channels, samples)`` and
STFTs are ``(..., channels, freq, frames)`` with ``freq = n_fft // 2 + 1``. Any number of
leading batch dims is accepted.

Padding: frames are centred (``torch.stft(center=True)``) and the signal is padded with zeros
(``pad_mode="constant"``) by ``n_fft // 2`` on both sides. Zero padding, unlike reflect padding,
works for every length, including signals shorter than ``n_fft``. The frame count is
``torch.stft``'s, ``1 + (samples + 2 * (n_fft // 2) - n_fft) // hop_length``, except when
``hop_length > n_fft // 4`` and the last sample would lie more than ``n_fft // 4`` samples past
the last frame centre: there it would be covered only by the low tail of the window (or not at
all when ``hop_length > n_fft // 2``), which amplifies round-off and any processing error of the
STFT; the signal is then zero-padded on the right by the few samples needed for one more frame.
:func:`num_frames` gives the count. So ``istft(stft(x), length=n)`` reconstructs ``x`` for every
length ``n >= 1`` and every ``hop_length`` for which the window satisfies NOLA.

Reconstruction is the weighted overlap-add of Griffin & Lim, "Signal estimation from modified
short-time Fourier transform", IEEE Trans. ASSP 32(2), 1984, as implemented by ``torch.istft``;
it requires the window to satisfy the NOLA (nonzero overlap-add) condition for ``hop_length``,
which is checked up front.
"""

from __future__ import annotations

import functools

import torch
from torch import nn

from torchbss._validation import (
    check_complex,
    check_finite,
    check_positive_int,
    check_real_float,
    check_tensor,
)

__all__ = ["STFT", "stft", "istft", "num_frames", "hann_window"]

_FLOAT_DTYPES = (torch.float32, torch.float64)
_NOLA_TOL = 1e-11  # the threshold torch.istft uses for the window envelope


def _check_audio(x: object, name: str, layout: str = "(..., channels, samples)") -> torch.Tensor:
    """Check a real, finite, non-empty ``(..., channels, samples)`` float32/float64 signal."""
    if isinstance(x, torch.Tensor) and x.ndim == 1:
        raise ValueError(
            f"{name} must have at least 2 dimensions {layout}, got shape {tuple(x.shape)}; "
            f"for a single-channel signal use {name}.unsqueeze(0)"
        )
    check_tensor(x, name, min_ndim=2, layout=layout)
    check_real_float(x, name)
    if x.dtype not in _FLOAT_DTYPES:
        raise TypeError(f"{name} must be float32 or float64, got {x.dtype}")
    if x.shape[-1] == 0:
        raise ValueError(
            f"{name} is empty: got shape {tuple(x.shape)}; expected at least 1 sample {layout}"
        )
    if x.numel() == 0:
        raise ValueError(
            f"{name} has an empty batch or channel dimension (shape {tuple(x.shape)}): there is "
            f"nothing to transform; expected at least one channel {layout}"
        )
    check_finite(x, name)
    return x


def hann_window(
    n_fft: int, *, dtype: torch.dtype | None = None, device: torch.device | str | None = None
) -> torch.Tensor:
    """Periodic Hann window of length ``n_fft`` (the STFT default).

    Args:
        n_fft: window length.
        dtype: floating point dtype (default: torch's default dtype).
        device: device of the window.

    Returns:
        Window of shape ``(n_fft,)``.
    """
    return torch.hann_window(n_fft, periodic=True, dtype=dtype, device=device)


def _check_config(n_fft: object, hop_length: object) -> None:
    check_positive_int(n_fft, "n_fft")
    check_positive_int(hop_length, "hop_length")
    if hop_length > n_fft:
        raise ValueError(f"hop_length must be <= n_fft = {n_fft}, got hop_length={hop_length}")


def _check_window(window: object, n_fft: int, hop_length: int) -> torch.Tensor:
    """Check the window's shape and the NOLA condition (nonzero overlap-add of ``window**2``)."""
    if not isinstance(window, torch.Tensor):
        raise TypeError(
            f"window must be a torch.Tensor of shape ({n_fft},) or None, "
            f"got {type(window).__name__}"
        )
    if window.shape != (n_fft,):
        raise ValueError(
            f"window must have shape (n_fft,) = ({n_fft},), got shape {tuple(window.shape)}"
        )
    check_real_float(window, "window")
    check_finite(window, "window")
    # Interior envelope: sum_k w[m + k * hop]^2 for every phase m in [0, hop).
    power = window.detach().double() ** 2
    pad = (-n_fft) % hop_length
    envelope = torch.nn.functional.pad(power, (0, pad)).reshape(-1, hop_length).sum(0)
    if bool((envelope <= _NOLA_TOL).any()):
        raise ValueError(
            f"window violates the NOLA condition for hop_length={hop_length} (its squared "
            f"overlap-add is zero at some samples) so the STFT is not invertible; use a smaller "
            f"hop_length (e.g. n_fft // 4 = {max(1, n_fft // 4)}) or a window without zeros"
        )
    return window


@functools.lru_cache(maxsize=64)
def _check_default_window(n_fft: int, hop_length: int) -> None:
    _check_window(hann_window(n_fft, dtype=torch.float64), n_fft, hop_length)


def _extra_right_padding(num_samples: int, n_fft: int, hop_length: int) -> int:
    """Zeros to append so that the last sample sits at most ``n_fft // 4`` past a frame centre."""
    half = n_fft // 2
    padded = num_samples + 2 * half - n_fft  # torch.stft gives 1 + padded // hop frames
    last_centre = (padded // hop_length) * hop_length  # in samples of the unpadded signal
    needed_centre = num_samples - 1 - n_fft // 4
    if last_centre >= needed_centre:
        return 0
    steps = -(-needed_centre // hop_length)  # ceil division
    return steps * hop_length - padded


def num_frames(num_samples: int, n_fft: int = 2048, hop_length: int = 512) -> int:
    """Number of STFT frames :func:`stft` returns for a signal of ``num_samples`` samples.

    Args:
        num_samples: signal length (``>= 1``).
        n_fft: FFT size.
        hop_length: hop between frames.

    Returns:
        ``1 + (num_samples + extra + 2 * (n_fft // 2) - n_fft) // hop_length`` where ``extra`` is
        the right padding described in the module docstring (always zero when
        ``hop_length <= n_fft // 4``).
    """
    check_positive_int(num_samples, "num_samples")
    _check_config(n_fft, hop_length)
    extra = _extra_right_padding(num_samples, n_fft, hop_length)
    return 1 + (num_samples + extra + 2 * (n_fft // 2) - n_fft) // hop_length


def stft(
    x: torch.Tensor,
    n_fft: int = 2048,
    hop_length: int = 512,
    window: torch.Tensor | None = None,
) -> torch.Tensor:
    """Short-time Fourier transform of a real multichannel signal.

    Centred frames over a zero-padded signal (see the module docstring), one-sided spectrum,
    no normalisation: ``X[..., f, t] = sum_m w[m] x_pad[t * hop + m] exp(-2j pi f m / n_fft)``.

    Args:
        x: real signal ``(..., channels, samples)``, float32 or float64, finite, >= 1 sample.
        n_fft: FFT size (and window length).
        hop_length: hop between frames, ``1 <= hop_length <= n_fft``.
        window: ``(n_fft,)`` analysis window; ``None`` gives a periodic Hann window. It is cast
            to ``x``'s dtype and device.

    Returns:
        Complex STFT ``(..., channels, n_fft // 2 + 1, frames)``, complex64 for float32 input
        and complex128 for float64 input, with ``frames = num_frames(samples, n_fft, hop_length)``.
    """
    _check_audio(x, "x")
    _check_config(n_fft, hop_length)
    if window is None:
        _check_default_window(n_fft, hop_length)
    else:
        _check_window(window, n_fft, hop_length)
    return _stft(x, n_fft, hop_length, window)


def _stft(
    x: torch.Tensor, n_fft: int, hop_length: int, window: torch.Tensor | None
) -> torch.Tensor:
    """:func:`stft` without the input checks."""
    if window is None:
        window = hann_window(n_fft, dtype=x.dtype, device=x.device)
    else:
        window = window.to(dtype=x.dtype, device=x.device)
    num_samples = x.shape[-1]
    extra = _extra_right_padding(num_samples, n_fft, hop_length)
    if extra:
        x = torch.nn.functional.pad(x, (0, extra))
    lead = x.shape[:-1]
    spec = torch.stft(
        x.reshape(-1, x.shape[-1]),
        n_fft=n_fft,
        hop_length=hop_length,
        window=window,
        center=True,
        pad_mode="constant",
        normalized=False,
        onesided=True,
        return_complex=True,
    )
    return spec.reshape(*lead, *spec.shape[-2:])


def _check_spec(spec: object, n_fft: int, hop_length: int, length: int | None) -> None:
    """Check a complex, finite ``(..., channels, freq, frames)`` STFT matching ``n_fft``."""
    check_tensor(spec, "spec", min_ndim=3, layout="(..., channels, freq, frames)")
    check_complex(spec, "spec")
    if spec.dtype not in (torch.complex64, torch.complex128):
        raise TypeError(f"spec must be complex64 or complex128, got {spec.dtype}")
    _check_config(n_fft, hop_length)
    n_freq = n_fft // 2 + 1
    if spec.shape[-2] != n_freq:
        raise ValueError(
            f"spec must have n_fft // 2 + 1 = {n_freq} frequency bins for n_fft={n_fft} "
            f"(layout (..., channels, freq, frames)), got shape {tuple(spec.shape)}"
        )
    if spec.shape[-1] == 0:
        raise ValueError(f"spec has no frames: got shape {tuple(spec.shape)}")
    if spec.numel() == 0:
        raise ValueError(
            f"spec has an empty batch or channel dimension (shape {tuple(spec.shape)}): there "
            "is nothing to invert"
        )
    check_finite(spec, "spec")
    if length is not None:
        check_positive_int(length, "length")
    elif spec.shape[-1] < 2:
        raise ValueError(
            "spec has 1 frame: the default length hop_length * (frames - 1) is 0 samples; "
            "pass length (the signal's number of samples)"
        )


def istft(
    spec: torch.Tensor,
    n_fft: int = 2048,
    hop_length: int = 512,
    window: torch.Tensor | None = None,
    length: int | None = None,
) -> torch.Tensor:
    """Inverse of :func:`stft` by weighted overlap-add (Griffin & Lim, 1984).

    Args:
        spec: complex STFT ``(..., channels, freq, frames)`` with ``freq = n_fft // 2 + 1``.
        n_fft: FFT size used by :func:`stft`.
        hop_length: hop used by :func:`stft`.
        window: the ``(n_fft,)`` analysis window used by :func:`stft` (``None``: periodic Hann).
        length: number of output samples; pass the original length for exact reconstruction.
            ``None`` gives ``hop_length * (frames - 1)`` samples.

    Returns:
        Real signal ``(..., channels, samples)``, float32 for complex64 input and float64 for
        complex128 input.
    """
    _check_spec(spec, n_fft, hop_length, length)
    if window is None:
        _check_default_window(n_fft, hop_length)
    else:
        _check_window(window, n_fft, hop_length)
    return _istft(spec, n_fft, hop_length, window, length)


def _istft(
    spec: torch.Tensor,
    n_fft: int,
    hop_length: int,
    window: torch.Tensor | None,
    length: int | None,
) -> torch.Tensor:
    """:func:`istft` without the input checks."""
    real_dtype = torch.float32 if spec.dtype == torch.complex64 else torch.float64
    if window is None:
        window = hann_window(n_fft, dtype=real_dtype, device=spec.device)
    else:
        window = window.to(dtype=real_dtype, device=spec.device)
    lead = spec.shape[:-2]
    try:
        out = torch.istft(
            spec.reshape(-1, *spec.shape[-2:]),
            n_fft=n_fft,
            hop_length=hop_length,
            window=window,
            center=True,
            normalized=False,
            onesided=True,
            length=length,
        )
    except RuntimeError as err:
        if "window overlap add min" not in str(err):
            raise
        raise ValueError(
            f"the window's overlap-add is zero inside the requested output (length={length}, "
            f"{spec.shape[-1]} frames, hop_length={hop_length}); pass the length of the signal "
            "given to stft, or use a window without zeros"
        ) from err
    return out.reshape(*lead, out.shape[-1])


class STFT(nn.Module):
    """STFT module holding ``n_fft``, ``hop_length`` and the window (a non-persistent buffer).

    ``forward`` maps ``(..., channels, samples)`` to ``(..., channels, n_fft // 2 + 1, frames)``
    and ``inverse`` maps it back; see :func:`stft` and :func:`istft` for padding and shapes.

    Args:
        n_fft: FFT size and window length.
        hop_length: hop between frames.
        window: ``(n_fft,)`` window tensor, or ``None`` for a periodic Hann window.

    Example:
        >>> tf = STFT(n_fft=512, hop_length=128)
        >>> x = torch.randn(2, 1000)
        >>> X = tf(x)  # (2, 257, 8)
        >>> torch.allclose(tf.inverse(X, length=1000), x, atol=1e-6)
        True
    """

    window: torch.Tensor

    def __init__(
        self, n_fft: int = 2048, hop_length: int = 512, window: torch.Tensor | None = None
    ) -> None:
        super().__init__()
        _check_config(n_fft, hop_length)
        if window is None:
            window = hann_window(n_fft)
        _check_window(window, n_fft, hop_length)
        self.n_fft = n_fft
        self.hop_length = hop_length
        self.register_buffer("window", window.detach().clone(), persistent=False)

    @property
    def n_freq(self) -> int:
        """Number of frequency bins, ``n_fft // 2 + 1``."""
        return self.n_fft // 2 + 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """STFT of ``x`` ``(..., channels, samples)`` -> ``(..., channels, freq, frames)``."""
        _check_audio(x, "x")
        return _stft(x, self.n_fft, self.hop_length, self.window)

    def inverse(self, spec: torch.Tensor, length: int | None = None) -> torch.Tensor:
        """Inverse STFT ``(..., channels, freq, frames)`` -> ``(..., channels, length)``."""
        _check_spec(spec, self.n_fft, self.hop_length, length)
        return _istft(spec, self.n_fft, self.hop_length, self.window, length)

    def extra_repr(self) -> str:
        return f"n_fft={self.n_fft}, hop_length={self.hop_length}"
