"""Figures for looking at separations: spectrograms, NMF factors, convergence, beam patterns.

Every plotting function takes tensors on any device (or numpy arrays), returns a
``matplotlib.figure.Figure`` drawn on its own Agg canvas (no pyplot, no global backend change)
and writes a PNG of exactly ``figsize * dpi`` pixels when given ``save=path``. Inputs with NaN or
inf values raise a ``ValueError`` that names the input.

matplotlib is an optional dependency: ``pip install 'torchbss[plot]'``. This package imports
without it (and :func:`demixing_response` works without it); the plotting functions raise an
``ImportError`` saying what to install.

Functions:
    :func:`spectrogram_grid`: mixture channels, references and estimates on one dB scale.
    :func:`nmf_factors`: bases, activations and model spectrogram per source.
    :func:`convergence`: cost per iteration of several methods.
    :func:`si_sdr_over_time`: frame-wise SI-SDR per source.
    :func:`beam_pattern` / :func:`demixing_response`: spatial response of demixing rows.
    :func:`benchmark_summary`, :func:`quality_vs_speed`: method x metric spread; SI-SDRi vs
    real-time factor.
"""

from torchbss.plot.beam import (
    SPEED_OF_SOUND,
    beam_pattern,
    demixing_response,
    linear_array_steering,
)
from torchbss.plot.benchmark import benchmark_summary, collect_results, quality_vs_speed
from torchbss.plot.curves import convergence, si_sdr_over_time
from torchbss.plot.nmf import nmf_factors
from torchbss.plot.spectrogram import power_spectrogram_db, spectrogram_grid

__all__ = [
    "spectrogram_grid",
    "power_spectrogram_db",
    "nmf_factors",
    "convergence",
    "si_sdr_over_time",
    "beam_pattern",
    "demixing_response",
    "linear_array_steering",
    "SPEED_OF_SOUND",
    "benchmark_summary",
    "quality_vs_speed",
    "collect_results",
]
