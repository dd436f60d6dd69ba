"""A trainable (neural) source model for AuxIVA / ILRMA, learned through the unrolled updates.

The surrogate-source-model idea of Scheibler & Togami: the auxiliary weights of the spatial
updates need not come from a fixed prior; a small network maps the current estimates to the
weights, and it is trained end to end through a fixed number of unrolled IP/ISS iterations
with a separation loss.

The model is a Gaussian one: the network predicts the log-variance ``log lambda_kft`` of each
source from its normalised log-power spectrogram, and the weights are ``1 / lambda``. It is
scale-equivariant (a source scaled by ``c`` gets its variance scaled by ``c^2``) and starts,
with its output layer at zero, as the time-varying Gauss model with a geometric mean over
frequency: ``lambda_kt = exp(mean_f log |y_kft|^2)``, so an untrained model already separates.

References:
    R. Scheibler and M. Togami, "Surrogate source model learning for determined source
    separation", ICASSP 2021.
    N. Makishima, S. Mogami, N. Takamune, D. Kitamura, H. Sumino, S. Takamichi,
    H. Saruwatari and N. Ono, "Independent deeply learned matrix analysis for determined audio
    source separation", IEEE/ACM TASLP 27(10), 2019.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from torchbss._validation import check_positive_int
from torchbss.source_models.base import SourceModel, power

__all__ = ["FrameCorrection", "NeuralSourceModel"]


def relative_log_power(
    P: torch.Tensor, dims: int | tuple[int, ...], floor: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(log(P / mean P + floor), mean P)``: the level-free log-power features of the learned
    source models, the mean over ``dims`` (kept, floored at the dtype's ``tiny``)."""
    mean = P.mean(dims, keepdim=True).clamp_min(torch.finfo(P.dtype).tiny)
    return torch.log(P / mean + floor), mean


def mean_of_others(x: torch.Tensor, dim: int) -> torch.Tensor:
    """Per entry of the sources' ``dim``, the mean of ``x`` over the other sources (what leaks
    between the estimates; zeros for a single source)."""
    return (x.sum(dim, keepdim=True) - x) / max(x.shape[dim] - 1, 1)


class _ResidualBlock(nn.Module):
    """``x + conv(gelu(norm(x)))``, a dilated 1-D convolution over frames."""

    def __init__(self, channels: int, kernel_size: int, dilation: int) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(1, channels)
        self.conv = nn.Conv1d(
            channels, channels, kernel_size, dilation=dilation,
            padding=dilation * (kernel_size - 1) // 2,
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(nn.functional.gelu(self.norm(x)))


class NeuralSourceModel(SourceModel):
    """Learned source variances for AuxIVA / ILRMA (Scheibler & Togami, ICASSP 2021).

    ``forward(Y)``: ``P = |Y|^2`` per source ``(..., sources, freq, frames)``, normalised by its
    mean; ``x = log(P / mean P + floor)``; a 1-D convolutional network over frames (frequency
    bins as channels: ``n_freq -> hidden``, ``n_layers`` residual dilated blocks,
    ``hidden -> n_freq``) predicts a correction ``z`` (bounded by ``max_correction``);
    ``log lambda = mean_f x + z`` (plus the log of the mean); weights ``phi = 1 / lambda``.
    Stateless; every source goes through the same network.

    Args:
        n_freq: number of frequency bins of the STFT it runs on.
        hidden: channels of the hidden layers.
        n_layers: residual blocks (dilations 1, 2, 4, ...).
        kernel_size: odd kernel size over frames.
        floor: relative floor of the normalised power inside the log.
        joint: also feed each source's network the mean log-power of the *other* sources (a
            permutation-equivariant, DeepSets-style input), so that the model can see what
            leaks between the estimates, as in independent deeply-learned matrix analysis
            (Makishima et al., IEEE/ACM TASLP 2019); ``False``: each source alone.
        max_correction: bound of the learned log-variance correction (``max * tanh(z / max)``),
            so the weights stay within ``exp(+-max)`` of the Gauss model's whatever the
            network outputs (an unbounded output makes the unrolled updates overflow).

    Shapes:
        ``Y``: ``(..., sources, n_freq, frames)`` complex -> weights of the same shape (real).
    """

    def __init__(
        self,
        n_freq: int,
        hidden: int = 64,
        n_layers: int = 3,
        kernel_size: int = 3,
        floor: float = 1e-4,
        joint: bool = True,
        max_correction: float = 5.0,
    ) -> None:
        super().__init__()
        self.n_freq = check_positive_int(n_freq, "n_freq")
        check_positive_int(hidden, "hidden")
        check_positive_int(n_layers, "n_layers", minimum=0)
        if check_positive_int(kernel_size, "kernel_size") % 2 == 0:
            raise ValueError(f"kernel_size must be odd, got {kernel_size}")
        if not floor > 0:
            raise ValueError(f"floor must be > 0, got {floor!r}")
        self.floor = float(floor)
        if not max_correction > 0:
            raise ValueError(f"max_correction must be > 0, got {max_correction!r}")
        self.max_correction = float(max_correction)
        self.joint = bool(joint)
        self.encoder = nn.Conv1d(n_freq * (2 if self.joint else 1), hidden, 1)
        self.blocks = nn.Sequential(
            *[_ResidualBlock(hidden, kernel_size, 2**i) for i in range(n_layers)]
        )
        self.decoder = nn.Conv1d(hidden, n_freq, 1)
        nn.init.zeros_(self.decoder.weight)
        nn.init.zeros_(self.decoder.bias)

    def log_variance(self, Y: torch.Tensor) -> torch.Tensor:
        """``log lambda`` ``(..., sources, freq, frames)`` (real, Y's real dtype), floored at
        ``log(tiny) / 2`` of the dtype (silent input: finite weights)."""
        if Y.shape[-2] != self.n_freq:
            raise ValueError(
                f"NeuralSourceModel was built for n_freq={self.n_freq} bins, got estimates of "
                f"shape {tuple(Y.shape)} (..., sources, freq, frames)"
            )
        P = power(Y)
        x, mean = relative_log_power(P, (-1, -2), self.floor)  # (..., K, F, T)
        lead = x.shape[:-2]
        features = x
        if self.joint:
            others = mean_of_others(x, -3)
            features = torch.cat([x, others], dim=-2)  # (..., K, 2 F, T)
        weight_dtype = self.encoder.weight.dtype
        h = self.encoder(features.reshape(-1, *features.shape[-2:]).to(weight_dtype))
        z = self.decoder(self.blocks(h)).reshape(*lead, *x.shape[-2:]).to(x.dtype)
        z = self.max_correction * torch.tanh(z / self.max_correction)
        log_var = x.mean(-2, keepdim=True) + z + torch.log(mean)
        # floored at half the log of the dtype's tiny: a silent source (mean at tiny) would
        # get weights beyond the dtype's range (inf, and NaN covariances); no usual level is
        # near it (-43.7 in float32: powers of 1e-19)
        return log_var.clamp_min(0.5 * math.log(torch.finfo(x.dtype).tiny))

    def forward(
        self, Y: torch.Tensor, state: Any = None, frame_mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, Any]:
        """Weights ``1 / lambda`` ``(..., sources, freq, frames)``."""
        return torch.exp(-self.log_variance(Y)), state

    def extra_repr(self) -> str:
        return (
            f"n_freq={self.n_freq}, floor={self.floor}, joint={self.joint}, "
            f"max_correction={self.max_correction}"
        )


class FrameCorrection(nn.Module):
    """A learned, causal correction of an online source model's weights, one frame at a time.

    The frame-wise counterpart of :class:`NeuralSourceModel` for the online separators (each
    frame's weights may depend on that frame only): from the frame's power of the estimates
    ``p`` and the model's weights ``phi = 1 / lambda`` (e.g. online ILRMA's NMF), a network
    predicts a log-variance correction ``z``; the weights become ``phi exp(-z)``. Features per
    source: ``log(p / mean_f p + floor)``, ``log(lambda / mean_f lambda + floor)`` and the mean
    of the first over the other sources (what leaks between the estimates); a two-layer MLP over
    the frequency bins (``3 freq -> hidden -> hidden -> freq``, GELU); ``z`` bounded by
    ``max_correction`` (``max tanh(z / max)``). Scale-equivariant (the features are relative
    powers) and, with its output layer at zero, the identity: an untrained correction leaves
    the separator exactly as it was.

    Args:
        n_freq: frequency bins.
        hidden: width of the hidden layers.
        floor: relative floor inside the logs.
        max_correction: bound of ``|z|``.

    Shapes:
        ``p``, ``phi``: ``(..., sources, freq)`` real non-negative -> ``(..., sources, freq)``.
    """

    def __init__(
        self, n_freq: int, hidden: int = 128, floor: float = 1e-4, max_correction: float = 3.0
    ) -> None:
        super().__init__()
        self.n_freq = check_positive_int(n_freq, "n_freq")
        check_positive_int(hidden, "hidden")
        if not floor > 0:
            raise ValueError(f"floor must be > 0, got {floor!r}")
        if not max_correction > 0:
            raise ValueError(f"max_correction must be > 0, got {max_correction!r}")
        self.floor, self.max_correction = float(floor), float(max_correction)
        self.net = nn.Sequential(
            nn.Linear(3 * n_freq, hidden), nn.GELU(), nn.Linear(hidden, hidden), nn.GELU(),
            nn.Linear(hidden, n_freq),
        )  # fmt: skip
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    def forward(self, p: torch.Tensor, phi: torch.Tensor) -> torch.Tensor:
        """The corrected weights ``phi exp(-z)`` ``(..., sources, freq)``."""
        if p.shape[-1] != self.n_freq:
            raise ValueError(
                f"FrameCorrection was built for n_freq={self.n_freq} bins, got a frame of shape "
                f"{tuple(p.shape)} (..., sources, freq)"
            )
        own = relative_log_power(p, -1, self.floor)[0]
        model = relative_log_power(phi.reciprocal(), -1, self.floor)[0]
        features = torch.cat([own, model, mean_of_others(own, -2)], -1)
        dtype = self.net[0].weight.dtype
        z = self.net(features.to(dtype)).to(phi.dtype)
        z = self.max_correction * torch.tanh(z / self.max_correction)
        return phi * torch.exp(-z)

    def extra_repr(self) -> str:
        return f"n_freq={self.n_freq}, floor={self.floor}, max_correction={self.max_correction}"
