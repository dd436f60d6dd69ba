"""Per-item loudness normalisation of mixtures and its inverse for the separated estimates.

The statistics are those of the mono downmix (the mean over channels), one mean and one
standard deviation per batch item, as is common practice for music separation networks
(e.g. Défossez et al., "Music Source Separation in the Waveform Domain", arXiv:1911.13254,
which normalise the input by the mean and std of its mono mix and undo it on the outputs).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from torchbss._validation import check_tensor
from torchbss.signal.stft import _check_audio

__all__ = ["NormalizationStats", "normalize", "denormalize", "Normalize"]


class NormalizationStats(NamedTuple):
    """Mean and standard deviation of the mono downmix, each ``(..., 1, 1)``.

    The leading dims are the batch dims of the normalised signal ``(..., channels, samples)``.
    """

    mean: torch.Tensor
    std: torch.Tensor


def normalize(x: torch.Tensor, eps: float = 1e-8) -> tuple[torch.Tensor, NormalizationStats]:
    """Zero-mean, unit-std normalisation using the statistics of the mono downmix.

    ``mono = x.mean(channels)``, ``mean = mono.mean(samples)``,
    ``std = sqrt(max(var(mono), eps**2))`` (population variance), and
    ``x_norm = (x - mean) / std``. Every channel gets the same shift and scale, so the stereo
    image is kept. A silent (all-zero or constant) item has ``std = eps`` and a finite (zero)
    output; the clamp also keeps the gradient finite there. The variance is formed in ``x``'s
    dtype: audio beyond ``~1e19`` (float32) overflows it (``std = inf``, a zero output). A
    signal whose channels cancel in the downmix (e.g. stereo with ``R = -L``) also has
    ``std = eps``: its output is scaled up by ``1 / eps`` (exactly undone by :func:`denormalize`,
    but far outside the range a network was trained on).

    Args:
        x: real signal ``(..., channels, samples)``, float32 or float64, finite.
        eps: lower bound on the standard deviation (``> 0``).

    Returns:
        ``(x_norm, stats)``: ``x_norm`` has the shape of ``x``; ``stats.mean`` and ``stats.std``
        are ``(..., 1, 1)`` tensors (broadcastable against ``x``).
    """
    _check_audio(x, "x")
    _check_eps(eps)
    mono = x.mean(dim=-2, keepdim=True)  # (..., 1, samples)
    mean = mono.mean(dim=-1, keepdim=True)  # (..., 1, 1)
    var = (mono - mean).square().mean(dim=-1, keepdim=True)
    std = var.clamp_min(eps**2).sqrt()
    return (x - mean) / std, NormalizationStats(mean, std)


def denormalize(y: torch.Tensor, stats: NormalizationStats) -> torch.Tensor:
    """Undo :func:`normalize` on a signal or on separated estimates.

    The stats of a ``(*batch, channels, samples)`` input have shape ``(*batch, 1, 1)``. ``y``
    may carry extra dims between the batch dims and ``(channels, samples)``, e.g. a sources dim:
    ``y`` of shape ``(*batch, sources, channels, samples)`` is denormalised source by source with
    the stats of its batch item. (Extra dims are inserted after the ``len(batch)`` leading dims.)

    Args:
        y: ``(*batch, *extra, channels, samples)`` real tensor.
        stats: the :class:`NormalizationStats` returned by :func:`normalize`.

    Returns:
        ``y * std + mean`` with the shape of ``y``.
    """
    check_tensor(y, "y", min_ndim=2, layout="(*batch, *extra, channels, samples)")
    if not isinstance(stats, tuple) or len(stats) != 2:
        raise TypeError(
            f"stats must be the NormalizationStats (mean, std) returned by normalize, got "
            f"{type(stats).__name__}"
        )
    mean, std = stats
    check_tensor(mean, "stats.mean", min_ndim=2, layout="(*batch, 1, 1)")
    check_tensor(std, "stats.std", min_ndim=2, layout="(*batch, 1, 1)")
    if mean.shape[-2:] != (1, 1) or std.shape != mean.shape:
        raise ValueError(
            f"stats.mean and stats.std must both have shape (*batch, 1, 1), got "
            f"{tuple(mean.shape)} and {tuple(std.shape)}"
        )
    batch = mean.shape[:-2]
    n_extra = y.ndim - mean.ndim
    if n_extra < 0 or tuple(y.shape[: len(batch)]) != tuple(batch):
        raise ValueError(
            f"y of shape {tuple(y.shape)} does not match stats of batch shape {tuple(batch)}: "
            "expected y of shape (*batch, *extra, channels, samples)"
        )
    view = (*batch, *([1] * n_extra), 1, 1)
    return y * std.reshape(view) + mean.reshape(view)


def _check_eps(eps: float) -> None:
    if not isinstance(eps, (int, float)) or isinstance(eps, bool) or not 0 < eps < 1e15:
        raise ValueError(f"eps must be a positive float below 1e15 (a std floor), got {eps!r}")


class Normalize(nn.Module):
    """Module form of :func:`normalize` / :func:`denormalize` (holds ``eps`` only; no state).

    Args:
        eps: lower bound on the standard deviation.

    Example:
        >>> norm = Normalize()
        >>> x = torch.randn(4, 2, 1000)
        >>> x_norm, stats = norm(x)
        >>> estimates = torch.stack([x_norm, x_norm], dim=1)  # (4, 2 sources, 2, 1000)
        >>> torch.allclose(norm.inverse(estimates, stats)[:, 0], x, atol=1e-5)
        True
    """

    def __init__(self, eps: float = 1e-8) -> None:
        super().__init__()
        _check_eps(eps)
        self.eps = eps

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, NormalizationStats]:
        """Normalise ``x`` ``(..., channels, samples)``; returns ``(x_norm, stats)``."""
        return normalize(x, self.eps)

    def inverse(self, y: torch.Tensor, stats: NormalizationStats) -> torch.Tensor:
        """Undo the normalisation on ``y`` ``(*batch, *extra, channels, samples)``."""
        return denormalize(y, stats)

    def extra_repr(self) -> str:
        return f"eps={self.eps}"
