"""All the usual separation metrics in one call: :func:`compute_metrics` -> :class:`MetricBundle`.

One BSS-Eval pass gives SDR, SIR, SAR and the permutation (chosen by SIR, as BSS-Eval); the
estimates are then aligned with the references and scored with SI-SDR, against the mixture
(improvements) and frame by frame. The bundle serialises to plain JSON (:meth:`to_dict`) and
back (:meth:`from_dict`) exactly.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import torch

from torchbss._validation import (
    check_bool,
    check_positive_int,
    check_sample_rate,
    check_signal,
)
from torchbss.metrics.bss_eval import bss_eval_sdr
from torchbss.metrics.framewise import framewise_si_sdr, framewise_summary
from torchbss.metrics.improvement import mixture_baseline
from torchbss.metrics.permutation import apply_permutation
from torchbss.metrics.sdr import si_sdr

__all__ = ["compute_metrics", "MetricBundle", "METRIC_NAMES"]

#: Metric fields of :class:`MetricBundle`, in the order of :meth:`MetricBundle.to_dict`.
METRIC_NAMES = (
    "sdr",
    "sir",
    "sar",
    "si_sdr",
    "input_sdr",
    "input_si_sdr",
    "sdr_improvement",
    "si_sdr_improvement",
    "framewise_si_sdr_mean",
    "framewise_si_sdr_median",
    "framewise_si_sdr_min",
    "framewise_si_sdr_second_half_mean",
)
_SETTINGS = ("filter_length", "ref_mic", "sample_rate", "window_s", "hop_s")
_FORMAT = "torchbss.MetricBundle/1"


@dataclass(eq=False)
class MetricBundle:
    """Result of :func:`compute_metrics`: per-source metrics in dB, ordered by reference.

    Every metric is a tensor of shape ``(..., sources)`` (the leading batch dimensions of the
    inputs), or None when it was not computed (improvements without a mixture, frame-wise
    summaries without a sample rate). The estimate scored against reference ``j`` is
    ``estimate[..., permutation[..., j], :]``.

    Attributes:
        sdr: BSS-Eval SDR (``filter_length``-tap distortion filter).
        sir: BSS-Eval SIR.
        sar: BSS-Eval SAR.
        si_sdr: SI-SDR of the aligned estimates.
        permutation: estimate matched to each reference, ``(..., sources)`` int64.
        input_sdr: BSS-Eval SDR of the mixture at ``ref_mic`` (the unprocessed baseline).
        input_si_sdr: SI-SDR of the mixture at ``ref_mic``.
        sdr_improvement: ``sdr - input_sdr`` (SDRi).
        si_sdr_improvement: ``si_sdr - input_si_sdr`` (SI-SDRi).
        framewise_si_sdr_mean: mean of the frame-wise SI-SDR over the valid frames.
        framewise_si_sdr_median: median over the valid frames.
        framewise_si_sdr_min: worst valid frame.
        framewise_si_sdr_second_half_mean: mean over the valid frames of the second half (how
            an online method does once adapted).
        filter_length: BSS-Eval filter taps used.
        ref_mic: reference microphone of the mixture.
        sample_rate: sampling rate in Hz (None: no frame-wise metrics).
        window_s: frame length of the frame-wise SI-SDR in seconds.
        hop_s: frame hop in seconds.

    Frame-wise summaries are NaN for a source whose reference is silent in every frame (in
    every frame of the second half for ``framewise_si_sdr_second_half_mean``); they are None in
    :meth:`to_dict` and in means.
    """

    sdr: torch.Tensor
    sir: torch.Tensor
    sar: torch.Tensor
    si_sdr: torch.Tensor
    permutation: torch.Tensor
    input_sdr: torch.Tensor | None = None
    input_si_sdr: torch.Tensor | None = None
    sdr_improvement: torch.Tensor | None = None
    si_sdr_improvement: torch.Tensor | None = None
    framewise_si_sdr_mean: torch.Tensor | None = None
    framewise_si_sdr_median: torch.Tensor | None = None
    framewise_si_sdr_min: torch.Tensor | None = None
    framewise_si_sdr_second_half_mean: torch.Tensor | None = None
    filter_length: int = 512
    ref_mic: int = 0
    sample_rate: float | None = None
    window_s: float = 1.0
    hop_s: float = 1.0

    @property
    def names(self) -> tuple[str, ...]:
        """Names of the metrics present (not None), in :data:`METRIC_NAMES` order."""
        return tuple(name for name in METRIC_NAMES if getattr(self, name) is not None)

    @property
    def n_sources(self) -> int:
        """Number of references (the last dimension of every metric)."""
        return self.sdr.shape[-1]

    @property
    def batch_shape(self) -> torch.Size:
        """Leading batch dimensions of the inputs."""
        return self.sdr.shape[:-1]

    def mean(self) -> dict[str, float | None]:
        """Mean of each metric over batch and sources, NaN entries left out (None if all NaN)."""
        return {name: _nanmean(getattr(self, name)) for name in self.names}

    def to_dict(self) -> dict[str, Any]:
        """Plain-Python, JSON-serialisable form: per-source (nested) lists and means.

        Returns:
            ``{"format", "dtype", "batch_shape", "n_sources", "settings", "permutation",
            "per_source": {metric: list}, "mean": {metric: float | None}}``; per-source lists
            have shape ``(*batch_shape, n_sources)`` and NaN is written as None. ``json.dumps``
            of it is strict JSON, and :meth:`from_dict` of it gives this bundle back exactly
            (floats are written with all their digits).
        """
        return {
            "format": _FORMAT,
            "dtype": str(self.sdr.dtype).removeprefix("torch."),
            "batch_shape": list(self.batch_shape),
            "n_sources": self.n_sources,
            "settings": {name: getattr(self, name) for name in _SETTINGS},
            "permutation": self.permutation.tolist(),
            "per_source": {name: _nan_to_none(getattr(self, name).tolist()) for name in self.names},
            "mean": self.mean(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MetricBundle:
        """Rebuild a bundle from :meth:`to_dict`'s output (e.g. after a JSON round trip).

        Args:
            data: the dictionary; ``"mean"`` is recomputed, not read.

        Returns:
            The bundle, with CPU tensors of the recorded dtype.
        """
        if not isinstance(data, dict) or data.get("format") != _FORMAT:
            found = data.get("format") if isinstance(data, dict) else type(data).__name__
            raise ValueError(
                f"not a MetricBundle dictionary: expected format {_FORMAT!r}, got {found!r}"
            )
        dtype = getattr(torch, data["dtype"], None)
        if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
            raise ValueError(f"unknown metric dtype {data['dtype']!r} in the bundle dictionary")
        unknown = set(data["per_source"]) - set(METRIC_NAMES)
        if unknown:
            raise ValueError(
                f"unknown metric(s) {sorted(unknown)} in the bundle dictionary; known: "
                f"{list(METRIC_NAMES)}"
            )
        metrics = {
            name: torch.tensor(_none_to_nan(values), dtype=dtype)
            for name, values in data["per_source"].items()
        }
        permutation = torch.tensor(data["permutation"], dtype=torch.int64)
        return cls(permutation=permutation, **metrics, **data["settings"])

    def __eq__(self, other: object) -> bool:
        """Same settings and bit-identical metrics of the same dtype (NaN equal to NaN)."""
        if not isinstance(other, MetricBundle):
            return NotImplemented
        for field in dataclasses.fields(self):
            a, b = getattr(self, field.name), getattr(other, field.name)
            if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
                if not _tensors_equal(a, b):
                    return False
            elif a != b:
                return False
        return True


def _tensors_equal(a: object, b: object) -> bool:
    if not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)):
        return False
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    a, b = a.detach().cpu(), b.detach().cpu()
    return bool(((a == b) | (torch.isnan(a) & torch.isnan(b))).all())


def _nanmean(x: torch.Tensor) -> float | None:
    x = x.detach().double()
    defined = ~torch.isnan(x)
    if not bool(defined.any()):
        return None
    return float(x[defined].mean())


def _nan_to_none(values: Any) -> Any:
    if isinstance(values, list):
        return [_nan_to_none(v) for v in values]
    return None if isinstance(values, float) and math.isnan(values) else values


def _none_to_nan(values: Any) -> Any:
    if isinstance(values, list):
        return [_none_to_nan(v) for v in values]
    return float("nan") if values is None else values


@torch.no_grad()
def compute_metrics(
    reference: torch.Tensor,
    estimate: torch.Tensor,
    mixture: torch.Tensor | None = None,
    *,
    sample_rate: float | None = None,
    ref_mic: int = 0,
    framewise: bool | None = None,
    filter_length: int = 512,
    window_s: float = 1.0,
    hop_s: float = 1.0,
) -> MetricBundle:
    """SDR, SIR, SAR, SI-SDR, improvements, permutation and frame-wise SI-SDR in one call.

    1. :func:`torchbss.metrics.bss_eval_sdr` (``filter_length`` taps) gives SDR, SIR, SAR and
       the permutation (the matching that maximises the mean SIR, as BSS-Eval);
    2. the matched estimates are scored with :func:`torchbss.metrics.si_sdr`;
    3. with a ``mixture``, the mixture at ``ref_mic`` is scored the same way (``input_sdr``,
       ``input_si_sdr``) and the improvements are the differences (SDRi, SI-SDRi);
    4. with a ``sample_rate`` (unless ``framewise=False``), the frame-wise SI-SDR
       (:func:`torchbss.metrics.framewise_si_sdr`, ``window_s`` frames every ``hop_s``) of
       each matched estimate is summarised by its mean, median, minimum and second-half mean
       (:func:`torchbss.metrics.framewise_summary`).

    This is an evaluation helper: it runs without gradient (use the functions to train).

    Args:
        reference: reference signals (e.g. the source images at the reference microphone),
            ``(..., sources, samples)``.
        estimate: estimates, ``(..., n_est, samples)`` with ``n_est >= sources``, same
            leading dimensions and samples (trim or pad first: lengths must match).
        mixture: the mixture, ``(..., mics, samples)``, or None (no improvements).
        sample_rate: sampling rate in Hz; needed for the frame-wise metrics.
        ref_mic: microphone of ``mixture`` the references are images at.
        framewise: compute the frame-wise summaries; None (default): when ``sample_rate`` is
            given. True without ``sample_rate`` is an error.
        filter_length: BSS-Eval distortion filter taps (512 as in BSS-Eval; at most the number
            of samples).
        window_s: frame length of the frame-wise SI-SDR, in seconds.
        hop_s: frame hop, in seconds.

    Returns:
        :class:`MetricBundle` whose metrics have shape ``(..., sources)``, in the promoted
        dtype of the inputs.

    Example:
        >>> ref = torch.randn(2, 16000, dtype=torch.float64)
        >>> mix = ref.sum(0, keepdim=True).expand(2, -1)
        >>> out = compute_metrics(ref, ref.flip(0) + 0.01 * mix, mix, sample_rate=16000)
        >>> out.permutation.tolist(), out.names[:4]
        ([1, 0], ('sdr', 'sir', 'sar', 'si_sdr'))
    """
    reference = check_signal(reference, "reference", "(..., sources, samples)", 2)
    estimate = check_signal(estimate, "estimate", "(..., n_est, samples)", 2)
    if reference.shape[:-2] != estimate.shape[:-2] or reference.shape[-1] != estimate.shape[-1]:
        raise ValueError(
            "reference (..., sources, samples) and estimate (..., n_est, samples) must share "
            f"their leading dimensions and number of samples, got {tuple(reference.shape)} and "
            f"{tuple(estimate.shape)} (trim or pad the signals to one length first)"
        )
    check_positive_int(filter_length, "filter_length")
    if framewise is not None:
        check_bool(framewise, "framewise")
    if sample_rate is not None:
        sample_rate = check_sample_rate(sample_rate)
    elif framewise:
        raise ValueError("framewise=True needs sample_rate (in Hz) to cut 1 s frames")
    do_framewise = sample_rate is not None and framewise is not False
    dtype = torch.promote_types(reference.dtype, estimate.dtype)
    reference, estimate = reference.to(dtype), estimate.to(dtype)
    baseline = None if mixture is None else mixture_baseline(reference, mixture, ref_mic)

    bss = bss_eval_sdr(reference, estimate, filter_length)
    aligned = apply_permutation(estimate, bss.permutation)
    values: dict[str, torch.Tensor] = {
        "sdr": bss.sdr,
        "sir": bss.sir,
        "sar": bss.sar,
        "si_sdr": si_sdr(reference, aligned),
    }
    if baseline is not None:
        values["input_sdr"] = bss_eval_sdr(
            reference, baseline, filter_length, return_permutation=False, compute_sir_sar=False
        ).sdr
        values["input_si_sdr"] = si_sdr(reference, baseline)
        values["sdr_improvement"] = values["sdr"] - values["input_sdr"]
        values["si_sdr_improvement"] = values["si_sdr"] - values["input_si_sdr"]
    if do_framewise:
        frames = framewise_si_sdr(reference, aligned, sample_rate, window_s=window_s, hop_s=hop_s)
        summary = framewise_summary(*frames)
        for name, value in summary._asdict().items():
            values[f"framewise_si_sdr_{name}"] = value
    return MetricBundle(
        permutation=bss.permutation,
        filter_length=filter_length,
        ref_mic=ref_mic,
        sample_rate=sample_rate,
        window_s=window_s,
        hop_s=hop_s,
        **values,
    )
