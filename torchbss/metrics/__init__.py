"""Separation metrics: ``metric(reference, estimate)``, in dB or as distances, batched.

* :mod:`~torchbss.metrics.sdr`: :func:`sdr`, :func:`si_sdr` (and the guarded ratio
  :func:`energy_ratio_db` every dB metric uses; its conventions for silent signals and the
  absolute ``eps`` are in that module's docstring).
* :mod:`~torchbss.metrics.bss_eval`: :func:`bss_eval_sdr` (SDR/SIR/SAR and permutation,
  computed in float64 whatever the input dtype).
* :mod:`~torchbss.metrics.permutation`: :func:`solve_permutation`,
  :func:`linear_sum_assignment`, :func:`apply_permutation`,
  :func:`permutation_invariant_score`.
* :mod:`~torchbss.metrics.framewise`: :func:`framewise_si_sdr`, :func:`framewise_summary`.
* :mod:`~torchbss.metrics.improvement`: :func:`sdr_improvement`, :func:`si_sdr_improvement`.
* :mod:`~torchbss.metrics.spectral`: :func:`l1`, :func:`l1_freq`, :func:`mel_db_difference`,
  :func:`bleedless`, :func:`fullness`.
* :mod:`~torchbss.metrics.music`: :func:`global_sdr` (the MDX challenge's SDR),
  :func:`museval_sdr` (BSS-Eval v4 SDR/ISR/SIR/SAR per frame and their medians, as museval);
  their accumulating classes :class:`GlobalSDR` and :class:`MusevalSDR` are in ``modules``.
* :mod:`~torchbss.metrics.bundle`: :func:`compute_metrics` -> :class:`MetricBundle`, everything
  at once, JSON-serialisable.
* :mod:`~torchbss.metrics.modules`: accumulating torchmetrics ``Metric`` classes for validation
  loops (:class:`SDR`, :class:`SISDR`, :class:`SDRImprovement`, :class:`SISDRImprovement`,
  :class:`BSSEvalSDR`, :class:`FramewiseSISDR`, :class:`Bleedless`, :class:`Fullness`,
  :class:`L1Freq`). They need torchmetrics (the ``train`` extra) and are imported on first
  access, so ``import torchbss.metrics`` works without it.
"""

from __future__ import annotations

import importlib
from typing import Any

from torchbss.metrics.bss_eval import BSSEvalResult, bss_eval_sdr
from torchbss.metrics.bundle import METRIC_NAMES, MetricBundle, compute_metrics
from torchbss.metrics.framewise import (
    FramewiseResult,
    FramewiseSummary,
    framewise_si_sdr,
    framewise_summary,
)
from torchbss.metrics.improvement import mixture_baseline, sdr_improvement, si_sdr_improvement
from torchbss.metrics.music import MDX_EPS, MusevalFrames, MusevalResult, global_sdr, museval_sdr
from torchbss.metrics.permutation import (
    PermutationScore,
    apply_permutation,
    linear_sum_assignment,
    pairwise_scores,
    permutation_invariant_score,
    solve_permutation,
)
from torchbss.metrics.sdr import energy_ratio_db, sdr, si_sdr
from torchbss.metrics.spectral import (
    BleedlessFullness,
    bleedless,
    bleedless_fullness,
    fullness,
    hz_to_mel,
    l1,
    l1_freq,
    mel_db_difference,
    mel_filterbank,
    mel_spectrogram_db,
    mel_to_hz,
    stft_magnitude,
)

__all__ = [
    "sdr",
    "si_sdr",
    "energy_ratio_db",
    "bss_eval_sdr",
    "BSSEvalResult",
    "framewise_si_sdr",
    "FramewiseResult",
    "framewise_summary",
    "FramewiseSummary",
    "sdr_improvement",
    "si_sdr_improvement",
    "mixture_baseline",
    "solve_permutation",
    "linear_sum_assignment",
    "apply_permutation",
    "pairwise_scores",
    "permutation_invariant_score",
    "PermutationScore",
    "compute_metrics",
    "MetricBundle",
    "METRIC_NAMES",
    "l1",
    "l1_freq",
    "stft_magnitude",
    "hz_to_mel",
    "mel_to_hz",
    "mel_filterbank",
    "mel_spectrogram_db",
    "mel_db_difference",
    "bleedless",
    "fullness",
    "bleedless_fullness",
    "BleedlessFullness",
    "global_sdr",
    "museval_sdr",
    "MusevalResult",
    "MusevalFrames",
    "MDX_EPS",
]

#: Accumulating metric classes of :mod:`torchbss.metrics.modules` (need torchmetrics), resolved
#: on first attribute access. They are left out of ``__all__`` so that ``import *`` works
#: without torchmetrics.
MODULE_METRICS = (
    "SDR",
    "SISDR",
    "SDRImprovement",
    "SISDRImprovement",
    "BSSEvalSDR",
    "FramewiseSISDR",
    "Bleedless",
    "Fullness",
    "L1Freq",
    "GlobalSDR",
    "MusevalSDR",
)


def __getattr__(name: str) -> Any:
    if name not in MODULE_METRICS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    try:
        modules = importlib.import_module("torchbss.metrics.modules")
    except ImportError as error:
        if "torchmetrics" not in str(error):
            raise
        raise ImportError(
            f"torchbss.metrics.{name} (an accumulating torchmetrics Metric) needs torchmetrics, "
            "which is not installed: pip install 'torchbss[train]' (or torchmetrics); the "
            f"functions (e.g. torchbss.metrics.{_FUNCTION_OF.get(name, 'si_sdr')}) work without it"
        ) from error
    value = getattr(modules, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(MODULE_METRICS))


_FUNCTION_OF = {
    "SDR": "sdr",
    "SISDR": "si_sdr",
    "SDRImprovement": "sdr_improvement",
    "SISDRImprovement": "si_sdr_improvement",
    "BSSEvalSDR": "bss_eval_sdr",
    "FramewiseSISDR": "framewise_si_sdr",
    "Bleedless": "bleedless",
    "Fullness": "fullness",
    "L1Freq": "l1_freq",
    "GlobalSDR": "global_sdr",
    "MusevalSDR": "museval_sdr",
}
