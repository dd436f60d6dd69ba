"""One separated example of a listening report: mixture, estimates, optional references, metrics."""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch

from torchbss._validation import check_finite, check_real_float, check_tensor

__all__ = ["ReportExample"]

MetricValue = float | Sequence[float] | torch.Tensor


def _signal(x: object, what: str, layout: str) -> torch.Tensor:
    """A real, finite, non-empty ``(channels, samples)`` tensor (a 1-D signal gets one channel)."""
    check_tensor(x, what, min_ndim=1, layout=layout)
    check_real_float(x, what)
    if x.ndim == 1:
        x = x.unsqueeze(0)
    if x.ndim != 2:
        raise ValueError(f"{what} must have shape {layout}, got shape {tuple(x.shape)}")
    if x.shape[-1] == 0 or x.shape[0] == 0:
        raise ValueError(f"{what} is empty: got shape {tuple(x.shape)}, expected {layout}")
    check_finite(x, what)
    return x.detach()


@dataclass(frozen=True)
class ReportExample:
    """A separated example: what :func:`torchbss.report.write_report` shows and plays.

    Tensors are checked when the example is made (any device; they are moved to the CPU only
    when written). 1-D signals count as one channel.

    Attributes:
        name: display name (any text; it is escaped in the HTML and sanitised in file names).
        mixture: ``(mics, samples)`` mixture.
        estimates: ``(sources, samples)`` separated signals, aligned with ``references``.
        references: optional ``(sources, samples)`` reference signals.
        metrics: ``{metric name: value}``; a value is one number, or one number per source
            (a sequence or tensor of length ``sources``), e.g. ``{"si_sdr_improvement":
            tensor([9.1, 7.3])}``. Non-finite values are shown as ``n/a``.
        source_names: optional names of the sources (default ``source 0``, ...).
        ref_mic: mixture channel played as "the mixture" (all channels are linked too).

    Raises:
        ValueError / TypeError: wrong shapes, lengths, dtypes, NaN/inf values; the message names
            the example and the field.
    """

    name: str
    mixture: torch.Tensor
    estimates: torch.Tensor
    references: torch.Tensor | None = None
    metrics: Mapping[str, MetricValue] = field(default_factory=dict)
    source_names: Sequence[str] | None = None
    ref_mic: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise ValueError(f"ReportExample.name must be a non-empty string, got {self.name!r}")
        label = f"example {self.name!r}"
        mixture = _signal(self.mixture, f"{label}: mixture", "(mics, samples)")
        estimates = _signal(self.estimates, f"{label}: estimates", "(sources, samples)")
        if mixture.shape[-1] != estimates.shape[-1]:
            raise ValueError(
                f"{label}: mixture and estimates must have the same number of samples, got "
                f"{mixture.shape[-1]} and {estimates.shape[-1]}"
            )
        object.__setattr__(self, "mixture", mixture)
        object.__setattr__(self, "estimates", estimates)
        if self.references is not None:
            references = _signal(self.references, f"{label}: references", "(sources, samples)")
            if references.shape != estimates.shape:
                raise ValueError(
                    f"{label}: references and estimates must have the same shape (sources, "
                    f"samples), got {tuple(references.shape)} and {tuple(estimates.shape)}"
                )
            object.__setattr__(self, "references", references)
        n_src = estimates.shape[0]
        if self.source_names is not None:
            if isinstance(self.source_names, str) or len(self.source_names) != n_src:
                raise ValueError(
                    f"{label}: source_names must list {n_src} names (one per source), got "
                    f"{self.source_names!r}"
                )
            object.__setattr__(self, "source_names", tuple(str(n) for n in self.source_names))
        if (
            isinstance(self.ref_mic, bool)
            or not isinstance(self.ref_mic, int)
            or not 0 <= self.ref_mic < mixture.shape[0]
        ):
            raise ValueError(
                f"{label}: ref_mic must be an integer in [0, {mixture.shape[0]}), got "
                f"{self.ref_mic!r}"
            )
        if not isinstance(self.metrics, Mapping):
            raise TypeError(
                f"{label}: metrics must be a mapping, got {type(self.metrics).__name__}"
            )
        metrics = {}
        for key, value in self.metrics.items():
            metrics[str(key)] = _metric(value, f"{label}: metrics[{key!r}]", n_src)
        object.__setattr__(self, "metrics", metrics)

    @property
    def n_sources(self) -> int:
        """Number of sources (rows of ``estimates``)."""
        return self.estimates.shape[0]

    @property
    def names(self) -> tuple[str, ...]:
        """Source names, given or ``source 0``, ``source 1``, ..."""
        if self.source_names is not None:
            return tuple(self.source_names)
        return tuple(f"source {k}" for k in range(self.n_sources))

    def metric_mean(self, key: str) -> float:
        """The metric as one number: itself, or its mean over the finite per-source values."""
        value = self.metrics[key]
        if isinstance(value, float):
            return value
        finite = [v for v in value if math.isfinite(v)]
        return sum(finite) / len(finite) if finite else math.nan


def _metric(value: object, what: str, n_src: int) -> float | tuple[float, ...]:
    """A number, or a tuple of ``n_src`` numbers."""
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().reshape(-1).tolist() if value.ndim <= 1 else None
    if isinstance(value, Sequence) and not isinstance(value, str):
        items = list(value)
        if len(items) == 1 and n_src != 1:
            return _metric(items[0], what, n_src)
        if len(items) == n_src and all(
            isinstance(v, numbers.Real) and not isinstance(v, bool) for v in items
        ):
            return tuple(float(v) for v in items)
    if hasattr(value, "tolist"):  # numpy arrays and scalars
        return _metric(value.tolist(), what, n_src)
    raise ValueError(
        f"{what} must be a number or {n_src} numbers (one per source), got {value!r:.80}"
    )
