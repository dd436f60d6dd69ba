"""Accumulating metric modules for validation loops (torchmetrics ``Metric`` classes).

Each class wraps one function of :mod:`torchbss.metrics`: ``update(reference, estimate)``
scores a batch and adds it to sum states, ``compute()`` returns the mean over every scored
signal since the last ``reset()``, and calling the module (``forward``) returns the mean of the
current batch while accumulating it. The states are sums and counts reduced with
``dist_reduce_fx="sum"``, so under DDP the mean over all processes is exactly the mean over the
union of their data, and ``merge_state`` combines metrics updated separately.

Argument order follows torchbss, ``(reference, estimate)``, not torchmetrics'
``(preds, target)``: keep that in mind when mixing them in one ``MetricCollection``.

Every metric that scores sources takes ``permutation_invariant``: with True, the inputs are
``(..., sources, samples)`` and each reference is scored against the estimate of the best
one-to-one matching (:func:`torchbss.metrics.permutation_invariant_score`); with False
(default), estimate ``j`` is scored against reference ``j``.

This module needs torchmetrics (``pip install torchbss[train]``); ``import torchbss.metrics``
does not, and resolves ``torchbss.metrics.SDR`` and the other classes lazily.

Example:
    >>> from torchbss.metrics import SISDR
    >>> metric = SISDR(permutation_invariant=True)
    >>> ref = torch.randn(4, 2, 8000)
    >>> for batch in ref.split(2):
    ...     metric.update(batch, batch.flip(1))  # estimates in the other order
    >>> bool(metric.compute() > 100)
    True
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torchmetrics import Metric

from torchbss._validation import (
    check_bool,
    check_choice,
    check_positive_int,
    check_sample_rate,
    check_signal,
)
from torchbss.metrics.bss_eval import bss_eval_sdr
from torchbss.metrics.framewise import framewise_si_sdr, framewise_summary
from torchbss.metrics.improvement import mixture_baseline
from torchbss.metrics.music import MDX_EPS, global_sdr, museval_sdr
from torchbss.metrics.permutation import apply_permutation, permutation_invariant_score
from torchbss.metrics.sdr import sdr, si_sdr
from torchbss.metrics.spectral import bleedless_fullness, l1_freq

__all__ = [
    "SDR",
    "SISDR",
    "SDRImprovement",
    "SISDRImprovement",
    "BSSEvalSDR",
    "FramewiseSISDR",
    "Bleedless",
    "Fullness",
    "L1Freq",
]

_SOURCES_LAYOUT = "(..., sources, samples)"


class _MeanMetric(Metric):
    """Mean of a per-signal score over every signal seen; subclasses define :meth:`score`."""

    full_state_update = False
    is_differentiable = True
    higher_is_better = True
    signal_ndim = 1  # trailing dimensions of one signal (2 with pooled channels)

    def __init__(
        self, permutation_invariant: bool = False, max_exhaustive: int = 4, **kwargs: object
    ) -> None:
        super().__init__(**kwargs)
        self.permutation_invariant = check_bool(permutation_invariant, "permutation_invariant")
        self.max_exhaustive = check_positive_int(max_exhaustive, "max_exhaustive")
        self.add_state("total", default=torch.tensor(0.0), dist_reduce_fx="sum")
        self.add_state("count", default=torch.tensor(0), dist_reduce_fx="sum")

    def score(self, reference: torch.Tensor, estimate: torch.Tensor) -> torch.Tensor:
        """Per-signal score of aligned signals, ``(..., samples) -> (...)``."""
        raise NotImplementedError

    def matched(self, reference: torch.Tensor, estimate: torch.Tensor) -> torch.Tensor:
        """Per-signal scores, after the best matching if ``permutation_invariant``."""
        if not self.permutation_invariant:
            return self.score(reference, estimate)
        layout = "(..., sources, channels, samples)" if self.signal_ndim == 2 else _SOURCES_LAYOUT
        check_signal(reference, "reference", layout, self.signal_ndim + 1)
        check_signal(estimate, "estimate", layout, self.signal_ndim + 1)
        return permutation_invariant_score(
            self.score,
            reference,
            estimate,
            maximize=bool(self.higher_is_better),
            signal_ndim=self.signal_ndim,
            max_exhaustive=self.max_exhaustive,
        ).values

    def accumulate(self, values: torch.Tensor) -> None:
        """Add per-signal values to the states."""
        self.total += values.sum().to(self.total.dtype)
        self.count += values.numel()

    def update(self, reference: torch.Tensor, estimate: torch.Tensor) -> None:
        """Score a batch: reference and estimate ``(..., samples)`` (``(..., sources,
        samples)`` with ``permutation_invariant``)."""
        self.accumulate(self.matched(reference, estimate))

    def compute(self) -> torch.Tensor:
        """Mean over every scored signal (NaN before the first update)."""
        return self.total / self.count


class SDR(_MeanMetric):
    """Mean SDR (plain SNR form, :func:`torchbss.metrics.sdr`) over batches, in dB.

    Args:
        eps: absolute guard of :func:`torchbss.metrics.sdr`.
        permutation_invariant: score each reference against its best-matched estimate.
        max_exhaustive: largest number of sources matched by exhaustive search.
        **kwargs: torchmetrics ``Metric`` options (``dist_sync_on_step``, ...).
    """

    def __init__(self, eps: float | None = None, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.eps = eps

    def score(self, reference: torch.Tensor, estimate: torch.Tensor) -> torch.Tensor:
        return sdr(reference, estimate, eps=self.eps)


class SISDR(_MeanMetric):
    """Mean SI-SDR (:func:`torchbss.metrics.si_sdr`) over batches, in dB.

    Args:
        zero_mean: subtract each signal's mean first.
        eps: absolute guard of :func:`torchbss.metrics.si_sdr`.
        permutation_invariant: score each reference against its best-matched estimate.
        max_exhaustive: largest number of sources matched by exhaustive search.
        **kwargs: torchmetrics ``Metric`` options.
    """

    def __init__(self, zero_mean: bool = False, eps: float | None = None, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.zero_mean = check_bool(zero_mean, "zero_mean")
        self.eps = eps

    def score(self, reference: torch.Tensor, estimate: torch.Tensor) -> torch.Tensor:
        return si_sdr(reference, estimate, zero_mean=self.zero_mean, eps=self.eps)


class SISDRImprovement(SISDR):
    """Mean SI-SDR improvement over the mixture at ``ref_mic`` (SI-SDRi), in dB.

    ``update(reference, estimate, mixture)`` with reference/estimate ``(..., sources,
    samples)`` and mixture ``(..., mics, samples)``; see
    :func:`torchbss.metrics.si_sdr_improvement`. With ``permutation_invariant`` the matching
    maximises the SI-SDR (the baseline does not depend on it).

    Args:
        ref_mic: index of the reference microphone in the mixture.
        zero_mean: subtract each signal's mean first.
        eps: absolute guard of :func:`torchbss.metrics.si_sdr`.
        permutation_invariant: score each reference against its best-matched estimate.
        max_exhaustive: largest number of sources matched by exhaustive search.
        **kwargs: torchmetrics ``Metric`` options.
    """

    def __init__(self, ref_mic: int = 0, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.ref_mic = check_positive_int(ref_mic, "ref_mic", minimum=0)

    def update(  # type: ignore[override]
        self, reference: torch.Tensor, estimate: torch.Tensor, mixture: torch.Tensor
    ) -> None:
        """Score a batch ``(..., sources, samples)`` against its mixture ``(..., mics, samples)``.

        Args:
            reference: reference source images, ``(..., sources, samples)``.
            estimate: estimates, same shape.
            mixture: the mixture, ``(..., mics, samples)``.
        """
        check_signal(reference, "reference", _SOURCES_LAYOUT, 2)
        baseline = mixture_baseline(reference, mixture, self.ref_mic)
        self.accumulate(self.matched(reference, estimate) - self.score(reference, baseline))


class SDRImprovement(_MeanMetric):
    """Mean SDR improvement over the mixture at ``ref_mic`` (SDRi), in dB.

    ``update(reference, estimate, mixture)`` as :class:`SISDRImprovement`; see
    :func:`torchbss.metrics.sdr_improvement`.

    Args:
        ref_mic: index of the reference microphone in the mixture.
        metric: ``"sdr"`` (plain SNR form, :func:`torchbss.metrics.sdr`) or
            ``"bss_eval_sdr"`` (BSS-Eval SDR with a distortion filter; its matching, with
            ``permutation_invariant``, maximises the SDR).
        filter_length: BSS-Eval filter taps (default 512); only with
            ``metric="bss_eval_sdr"``.
        eps: guard of the metric.
        permutation_invariant: score each reference against its best-matched estimate.
        max_exhaustive: largest number of sources matched by exhaustive search.
        **kwargs: torchmetrics ``Metric`` options.
    """

    def __init__(
        self,
        ref_mic: int = 0,
        metric: str = "sdr",
        filter_length: int | None = None,
        eps: float | None = None,
        **kwargs: object,
    ) -> None:
        super().__init__(**kwargs)
        self.ref_mic = check_positive_int(ref_mic, "ref_mic", minimum=0)
        self.metric = check_choice(metric, "metric", ("sdr", "bss_eval_sdr"))
        if filter_length is not None and metric != "bss_eval_sdr":
            raise ValueError(
                f"filter_length is a BSS-Eval option; it needs metric='bss_eval_sdr', got "
                f"metric={metric!r}"
            )
        self.filter_length = 512 if filter_length is None else filter_length
        check_positive_int(self.filter_length, "filter_length")
        self.eps = eps

    def score(self, reference: torch.Tensor, estimate: torch.Tensor) -> torch.Tensor:
        if self.metric == "sdr":
            return sdr(reference, estimate, eps=self.eps)
        return bss_eval_sdr(
            reference,
            estimate,
            self.filter_length,
            return_permutation=False,
            compute_sir_sar=False,
            eps=self.eps,
        ).sdr

    def update(  # type: ignore[override]
        self, reference: torch.Tensor, estimate: torch.Tensor, mixture: torch.Tensor
    ) -> None:
        """Score a batch ``(..., sources, samples)`` against its mixture ``(..., mics, samples)``.

        Args:
            reference: reference source images, ``(..., sources, samples)``.
            estimate: estimates, same shape.
            mixture: the mixture, ``(..., mics, samples)``.
        """
        check_signal(reference, "reference", _SOURCES_LAYOUT, 2)
        baseline = mixture_baseline(reference, mixture, self.ref_mic)
        if self.metric == "bss_eval_sdr" and self.permutation_invariant:
            values = bss_eval_sdr(
                reference,
                estimate,
                self.filter_length,
                compute_sir_sar=False,
                max_exhaustive=self.max_exhaustive,
                eps=self.eps,
            ).sdr
        else:
            values = self.matched(reference, estimate)
        self.accumulate(values - self.score(reference, baseline))


class BSSEvalSDR(Metric):
    """Mean BSS-Eval SDR, SIR and SAR (:func:`torchbss.metrics.bss_eval_sdr`) over batches.

    ``update(reference, estimate)`` with ``(..., sources, samples)`` inputs; ``compute()``
    returns ``{"sdr": ..., "sir": ..., "sar": ...}`` (only ``"sdr"`` when
    ``compute_sir_sar`` is False), each the mean over every scored source, in dB.

    Args:
        filter_length: taps of the allowed distortion filter.
        permutation_invariant: match estimates to references (by SIR, or by SDR without
            SIR/SAR, as BSS-Eval); False scores estimate j against reference j.
        compute_sir_sar: also compute SIR and SAR.
        zero_mean: subtract each signal's mean first.
        clamp_db: clamp every value to ``[-clamp_db, clamp_db]`` dB.
        load_diag: diagonal loading of the correlation matrices.
        max_exhaustive: largest number of sources matched by exhaustive search.
        eps: guard of the ratios.
        **kwargs: torchmetrics ``Metric`` options.
    """

    full_state_update = False
    is_differentiable = True
    higher_is_better = True

    def __init__(
        self,
        filter_length: int = 512,
        permutation_invariant: bool = False,
        compute_sir_sar: bool = True,
        zero_mean: bool = False,
        clamp_db: float | None = None,
        load_diag: float | None = None,
        max_exhaustive: int = 4,
        eps: float | None = None,
        **kwargs: object,
    ) -> None:
        super().__init__(**kwargs)
        self.options = dict(
            filter_length=check_positive_int(filter_length, "filter_length"),
            return_permutation=check_bool(permutation_invariant, "permutation_invariant"),
            compute_sir_sar=check_bool(compute_sir_sar, "compute_sir_sar"),
            zero_mean=check_bool(zero_mean, "zero_mean"),
            clamp_db=clamp_db,
            load_diag=load_diag,
            max_exhaustive=check_positive_int(max_exhaustive, "max_exhaustive"),
            eps=eps,
        )
        self.names = ("sdr", "sir", "sar") if compute_sir_sar else ("sdr",)
        for name in self.names:
            self.add_state(f"{name}_total", default=torch.tensor(0.0), dist_reduce_fx="sum")
        self.add_state("count", default=torch.tensor(0), dist_reduce_fx="sum")

    def update(self, reference: torch.Tensor, estimate: torch.Tensor) -> None:
        """Score a batch of ``(..., sources, samples)`` signals."""
        result = bss_eval_sdr(reference, estimate, **self.options)
        for name in self.names:
            total = getattr(self, f"{name}_total")
            total += getattr(result, name).sum().to(total.dtype)
        self.count += result.sdr.numel()

    def compute(self) -> dict[str, torch.Tensor]:
        """Mean of each metric over every scored source (NaN before the first update)."""
        return {name: getattr(self, f"{name}_total") / self.count for name in self.names}


class FramewiseSISDR(Metric):
    """Frame-wise SI-SDR summaries, averaged over signals.

    Each signal's frames (:func:`torchbss.metrics.framewise_si_sdr`) are summarised by
    :func:`torchbss.metrics.framewise_summary` (mean, median, minimum and second-half mean over
    its valid frames); ``compute()`` returns the mean of each summary over the signals where it
    is defined, ``{"mean", "median", "min", "second_half_mean"}``. With
    ``permutation_invariant`` the matching maximises the whole-signal SI-SDR.

    Args:
        sample_rate: sampling rate in Hz.
        window_s: frame length in seconds.
        hop_s: frame hop in seconds.
        zero_mean: subtract each frame's mean first.
        silence_threshold: reference mean square at or below which a frame is left out.
        permutation_invariant: score each reference against its best-matched estimate.
        max_exhaustive: largest number of sources matched by exhaustive search.
        **kwargs: torchmetrics ``Metric`` options.
    """

    full_state_update = False
    is_differentiable = True
    higher_is_better = True
    summaries = ("mean", "median", "min", "second_half_mean")

    def __init__(
        self,
        sample_rate: float,
        window_s: float = 1.0,
        hop_s: float = 1.0,
        zero_mean: bool = False,
        silence_threshold: float = 1e-10,
        permutation_invariant: bool = False,
        max_exhaustive: int = 4,
        **kwargs: object,
    ) -> None:
        super().__init__(**kwargs)
        self.options = dict(
            sample_rate=check_sample_rate(sample_rate),
            window_s=window_s,
            hop_s=hop_s,
            zero_mean=check_bool(zero_mean, "zero_mean"),
            silence_threshold=silence_threshold,
        )
        self.permutation_invariant = check_bool(permutation_invariant, "permutation_invariant")
        self.max_exhaustive = check_positive_int(max_exhaustive, "max_exhaustive")
        for name in self.summaries:
            self.add_state(f"{name}_total", default=torch.tensor(0.0), dist_reduce_fx="sum")
            self.add_state(f"{name}_count", default=torch.tensor(0), dist_reduce_fx="sum")

    def update(self, reference: torch.Tensor, estimate: torch.Tensor) -> None:
        """Score a batch ``(..., samples)`` (``(..., sources, samples)`` if permutation
        invariant)."""
        if self.permutation_invariant:
            check_signal(reference, "reference", _SOURCES_LAYOUT, 2)
            zero_mean = self.options["zero_mean"]
            permutation = permutation_invariant_score(
                lambda r, e: si_sdr(r, e, zero_mean=zero_mean),
                reference,
                estimate,
                max_exhaustive=self.max_exhaustive,
            ).permutation
            estimate = apply_permutation(estimate, permutation)
        summary = framewise_summary(*framewise_si_sdr(reference, estimate, **self.options))
        for name in self.summaries:
            values = getattr(summary, name)
            defined = ~torch.isnan(values)
            total = getattr(self, f"{name}_total")
            total += torch.where(defined, values, torch.zeros_like(values)).sum().to(total.dtype)
            count = getattr(self, f"{name}_count")
            count += defined.sum()

    def compute(self) -> dict[str, torch.Tensor]:
        """Mean of each per-signal summary over the signals where it is defined."""
        return {
            name: getattr(self, f"{name}_total") / getattr(self, f"{name}_count")
            for name in self.summaries
        }


class _BleedlessFullnessScore(_MeanMetric):
    """Shared options of :class:`Bleedless` and :class:`Fullness`."""

    field: str = ""

    def __init__(
        self,
        sample_rate: float,
        n_fft: int = 4096,
        hop_length: int = 1024,
        n_mels: int = 512,
        top_db: float = 80.0,
        pool_channels: bool = False,
        **kwargs: object,
    ) -> None:
        super().__init__(**kwargs)
        self.sample_rate = check_sample_rate(sample_rate)
        self.options = dict(
            n_fft=n_fft,
            hop_length=hop_length,
            n_mels=n_mels,
            top_db=top_db,
            pool_channels=check_bool(pool_channels, "pool_channels"),
        )
        self.signal_ndim = 2 if pool_channels else 1

    def score(self, reference: torch.Tensor, estimate: torch.Tensor) -> torch.Tensor:
        result = bleedless_fullness(reference, estimate, self.sample_rate, **self.options)
        return getattr(result, self.field)


class Bleedless(_BleedlessFullnessScore):
    """Mean bleedless score (:func:`torchbss.metrics.bleedless`, higher is better).

    Args:
        sample_rate: sampling rate in Hz.
        n_fft: FFT size.
        hop_length: hop between frames.
        n_mels: number of mel bands.
        top_db: dynamic range of each spectrogram.
        pool_channels: score the channels (dimension -2) of each signal jointly; inputs are
            then ``(..., channels, samples)`` (``(..., sources, channels, samples)`` if
            permutation invariant).
        permutation_invariant: score each reference against its best-matched estimate.
        max_exhaustive: largest number of sources matched by exhaustive search.
        **kwargs: torchmetrics ``Metric`` options.
    """

    field = "bleedless"


class Fullness(_BleedlessFullnessScore):
    """Mean fullness score (:func:`torchbss.metrics.fullness`, higher is better).

    Args: as :class:`Bleedless`.
    """

    field = "fullness"


class L1Freq(_MeanMetric):
    """Mean STFT-magnitude L1 distance (:func:`torchbss.metrics.l1_freq`, lower is better).

    Args:
        n_fft: FFT size.
        hop_length: hop between frames.
        permutation_invariant: score each reference against its closest matched estimate.
        max_exhaustive: largest number of sources matched by exhaustive search.
        **kwargs: torchmetrics ``Metric`` options.
    """

    higher_is_better = False

    def __init__(self, n_fft: int = 2048, hop_length: int = 512, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.n_fft = check_positive_int(n_fft, "n_fft", minimum=2)
        self.hop_length = check_positive_int(hop_length, "hop_length")

    def score(self, reference: torch.Tensor, estimate: torch.Tensor) -> torch.Tensor:
        return l1_freq(reference, estimate, self.n_fft, self.hop_length)


# --------------------------------------------------------------------------------------------
# Music: the MDX global SDR and museval's median-over-frames SDR (torchbss.metrics.music)
# --------------------------------------------------------------------------------------------

__all__ += ["GlobalSDR", "MusevalSDR"]


def _check_stems(stems: object) -> tuple[str, ...] | None:
    """Check optional stem names: None, or a sequence of distinct strings."""
    if stems is None:
        return None
    if isinstance(stems, str) or not isinstance(stems, Sequence):
        raise TypeError(f"stems must be a sequence of stem names or None, got {stems!r}")
    if not all(isinstance(name, str) for name in stems):
        raise TypeError(f"stems must be a sequence of stem names or None, got {stems!r}")
    names = tuple(stems)
    if not names or len(set(names)) != len(names):
        raise ValueError(f"stems must be distinct names, at least one, got {stems!r}")
    return names


def _per_stem(values: torch.Tensor, stems: tuple[str, ...]) -> torch.Tensor:
    """Per-source values ``(..., sources)`` as ``(items, sources)``, checking the count."""
    if values.ndim == 0 or values.shape[-1] != len(stems):
        raise ValueError(
            f"expected {len(stems)} stems {list(stems)} along the sources dimension, got "
            f"scores of shape {tuple(values.shape)}"
        )
    return values.reshape(-1, len(stems))


class GlobalSDR(_MeanMetric):
    """Mean global SDR of the MDX challenge (:func:`torchbss.metrics.global_sdr`), in dB.

    ``update(reference, estimate)`` with ``(..., channels, samples)`` stems, typically
    ``(batch, sources, channels, samples)``: each stem's SDR is taken over all its channels and
    samples, and ``compute()`` returns the mean over every stem of every song seen (with the
    same stems in every song, the MDX score: the mean over songs of the song's mean over
    stems). With ``stems`` the inputs are ``(..., len(stems), channels, samples)`` and
    ``compute()`` returns ``{"sdr": overall mean, "sdr_<stem>": mean of that stem}``.

    Args:
        stems: names of the sources, in order (e.g. ``("bass", "drums", "other",
            "vocals")``) for per-stem means; None: the overall mean only (a tensor).
        eps: absolute guard of :func:`torchbss.metrics.global_sdr` (MDX: 1e-7).
        permutation_invariant: score each stem against its best-matched estimate.
        max_exhaustive: largest number of sources matched by exhaustive search.
        **kwargs: torchmetrics ``Metric`` options.

    Example:
        >>> metric = GlobalSDR(stems=("bass", "vocals"))
        >>> ref = torch.randn(3, 2, 2, 4410)
        >>> metric.update(ref, ref + 0.1 * torch.randn_like(ref))
        >>> sorted(metric.compute())
        ['sdr', 'sdr_bass', 'sdr_vocals']
    """

    signal_ndim = 2

    def __init__(
        self,
        stems: tuple[str, ...] | list[str] | None = None,
        eps: float | None = MDX_EPS,
        **kwargs: object,
    ) -> None:
        super().__init__(**kwargs)
        self.stems = _check_stems(stems)
        self.eps = eps
        if self.stems is not None:
            n_stems = len(self.stems)
            self.add_state("stem_total", default=torch.zeros(n_stems), dist_reduce_fx="sum")
            self.add_state("stem_count", default=torch.zeros(n_stems), dist_reduce_fx="sum")

    def score(self, reference: torch.Tensor, estimate: torch.Tensor) -> torch.Tensor:
        return global_sdr(reference, estimate, eps=self.eps)

    def update(self, reference: torch.Tensor, estimate: torch.Tensor) -> None:
        """Score a batch of stems ``(..., channels, samples)`` (``(..., sources, channels,
        samples)`` with ``stems`` or ``permutation_invariant``)."""
        values = self.matched(reference, estimate)
        if self.stems is not None:
            per_stem = _per_stem(values, self.stems)
            self.stem_total += per_stem.sum(0).to(self.stem_total.dtype)
            self.stem_count += per_stem.shape[0]
        self.accumulate(values)

    def compute(self) -> torch.Tensor | dict[str, torch.Tensor]:  # type: ignore[override]
        """Mean over every scored stem; with ``stems`` also the mean of each stem."""
        mean = self.total / self.count
        if self.stems is None:
            return mean
        per_stem = self.stem_total / self.stem_count
        return {"sdr": mean, **{f"sdr_{name}": per_stem[i] for i, name in enumerate(self.stems)}}


class MusevalSDR(Metric):
    """Mean over tracks of museval's median-over-frames SDR (:func:`torchbss.metrics.museval_sdr`).

    ``update(reference, estimate)`` with ``(..., sources, channels, samples)``: each leading
    index is one track, all its stems scored jointly (BSS-Eval v4, ``window_s`` frames; a frame
    where any stem is silent does not count). ``compute()`` returns ``{"sdr": ...}`` (and
    ``"isr"``, ``"sir"``, ``"sar"`` with ``compute_isr_sir_sar``): the mean over tracks and
    stems of each track's median over frames, and with ``stems`` also ``"sdr_<stem>"``, the
    mean over tracks for that stem. A track whose stem has no valid frame (median NaN) is left
    out of that stem's means.

    The states are sums and counts, so the DDP result is exact; that is why this reports the
    *mean* over tracks of the per-track medians. museval's own summary of a data set is the
    *median* over tracks, which sum states cannot reduce: for it, keep each track's
    ``museval_sdr(...).sdr`` and take the median.

    The SDR alone is cheap (an SNR per frame); ``compute_isr_sir_sar=True`` solves BSS-Eval's
    distortion filters for every track (seconds per track on a CPU).

    Args:
        sample_rate: sampling rate in Hz.
        stems: names of the sources, in order, for per-stem means; None: overall means only.
        window_s: frame length in seconds (museval: 1 s).
        hop_s: hop between frames in seconds (museval: 1 s).
        filter_length: taps of the distortion filters (museval: 512).
        compute_isr_sir_sar: also the ISR, SIR and SAR.
        **kwargs: torchmetrics ``Metric`` options.
    """

    full_state_update = False
    is_differentiable = False
    higher_is_better = True

    def __init__(
        self,
        sample_rate: float,
        stems: tuple[str, ...] | list[str] | None = None,
        window_s: float = 1.0,
        hop_s: float = 1.0,
        filter_length: int = 512,
        compute_isr_sir_sar: bool = False,
        **kwargs: object,
    ) -> None:
        super().__init__(**kwargs)
        self.options = dict(
            sample_rate=check_sample_rate(sample_rate),
            window_s=window_s,
            hop_s=hop_s,
            filter_length=check_positive_int(filter_length, "filter_length"),
            compute_isr_sir_sar=check_bool(compute_isr_sir_sar, "compute_isr_sir_sar"),
        )
        self.stems = _check_stems(stems)
        self.names = ("sdr", "isr", "sir", "sar") if compute_isr_sir_sar else ("sdr",)
        n_slots = 1 if self.stems is None else len(self.stems)
        for name in self.names:
            self.add_state(f"{name}_total", default=torch.zeros(n_slots), dist_reduce_fx="sum")
            self.add_state(f"{name}_count", default=torch.zeros(n_slots), dist_reduce_fx="sum")

    def update(self, reference: torch.Tensor, estimate: torch.Tensor) -> None:
        """Score a batch of tracks ``(..., sources, channels, samples)``."""
        result = museval_sdr(reference, estimate, **self.options)
        for name in self.names:
            values = getattr(result, name)
            values = values.reshape(-1, 1) if self.stems is None else _per_stem(values, self.stems)
            defined = ~torch.isnan(values)
            total = getattr(self, f"{name}_total")
            total += torch.where(defined, values, 0.0).sum(0).to(total.dtype)
            count = getattr(self, f"{name}_count")
            count += defined.sum(0).to(count.dtype)

    def compute(self) -> dict[str, torch.Tensor]:
        """Mean of each metric's per-track medians (and per stem with ``stems``)."""
        out = {}
        for name in self.names:
            total, count = getattr(self, f"{name}_total"), getattr(self, f"{name}_count")
            out[name] = total.sum() / count.sum()
            if self.stems is not None:
                for i, stem in enumerate(self.stems):
                    out[f"{name}_{stem}"] = total[i] / count[i]
        return out
