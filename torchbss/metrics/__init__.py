"""Separation metrics: ``metric(reference, estimate)``, in dB or as distances, batched.

Energy ratios (:mod:`torchbss.metrics.sdr`): :func:`sdr`, :func:`si_sdr`,
:func:`bss_eval_sdr` (SDR/SIR/SAR and permutation), :func:`framewise_si_sdr`,
:func:`sdr_improvement`, :func:`si_sdr_improvement`. Spectral distances
(:mod:`torchbss.metrics.spectral`): :func:`l1`, :func:`l1_freq`, :func:`mel_db_difference`,
:func:`bleedless`, :func:`fullness`.
"""

from torchbss.metrics.sdr import (
    SDR,
    SISDR,
    BSSEvalResult,
    BSSEvalSDR,
    FramewiseResult,
    bss_eval_sdr,
    framewise_si_sdr,
    linear_sum_assignment,
    sdr,
    sdr_improvement,
    si_sdr,
    si_sdr_improvement,
    solve_permutation,
)
from torchbss.metrics.spectral import (
    BleedlessFullness,
    bleedless,
    bleedless_fullness,
    fullness,
    l1,
    l1_freq,
    mel_db_difference,
    mel_filterbank,
    mel_spectrogram_db,
)

__all__ = [
    "sdr",
    "si_sdr",
    "bss_eval_sdr",
    "BSSEvalResult",
    "framewise_si_sdr",
    "FramewiseResult",
    "sdr_improvement",
    "si_sdr_improvement",
    "solve_permutation",
    "linear_sum_assignment",
    "l1",
    "l1_freq",
    "mel_filterbank",
    "mel_spectrogram_db",
    "mel_db_difference",
    "bleedless",
    "fullness",
    "bleedless_fullness",
    "BleedlessFullness",
    "SDR",
    "SISDR",
    "BSSEvalSDR",
]
