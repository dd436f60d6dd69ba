"""Music separation metrics as the field reports them: global SDR (MDX) and museval (BSS-Eval v4).

* :func:`global_sdr`: the SDR of the Music Demixing Challenge 2021 (Mitsufuji et al., "Music
  Demixing Challenge 2021", Frontiers in Signal Processing 2022), one value per stem over all
  its channels and samples; the "SDR" (or "nSDR", "uSDR") of most recent papers.
* :func:`museval_sdr`: SDR, ISR, SIR and SAR of BSS-Eval v4 as ``museval`` computes them
  (Stöter, Liutkus, Ito, "The 2018 Signal Separation Evaluation Campaign", LVA/ICA 2018;
  Vincent, Gribonval, Févotte, "Performance measurement in blind audio source separation",
  IEEE TASLP 2006): per stem and per 1 s frame, and the median over the frames, the SiSEC 2018
  figure of merit.

Inputs are stems ``(..., sources, channels, samples)`` (MUSDB18: 4 stems, stereo, 44.1 kHz).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from einops import rearrange

from torchbss._validation import (
    check_bool,
    check_eps,
    check_positive_int,
    check_sample_rate,
    check_signal_pair,
)
from torchbss.metrics.bss_eval import _next_fast_len, _toeplitz
from torchbss.metrics.framewise import framewise_summary
from torchbss.metrics.sdr import energy_ratio_db

__all__ = ["global_sdr", "museval_sdr", "MusevalResult", "MusevalFrames", "MDX_EPS"]

_STEMS_LAYOUT = "(..., sources, channels, samples)"
_COMPUTE_DTYPE = torch.float64

#: The guard of the MDX 2021 challenge's SDR (its evaluation code adds 1e-7 to both energies).
MDX_EPS = 1e-7

#: Diagonal loading museval adds to the Gram matrix before solving for the distortion filters:
#: float64's machine epsilon, absolute (the Gram matrix is in units of signal energy).
_MUSEVAL_LOADING = float(torch.finfo(torch.float64).eps)

#: Guard of museval_sdr's ratios: an absolute energy far below that of any audible frame (the
#: 16-bit quantisation noise of a 1 s stereo frame has about 1e-5), so it only changes frames
#: that are exact to the last bit (about +300 dB instead of museval's +inf).
_MUSEVAL_EPS = 1e-30

#: FFT size of the segmented correlations (blocks of ``_CORRELATION_FFT - 2 * max_lag``
#: samples) and number of blocks transformed at once: memory independent of the length.
_CORRELATION_FFT = 16384
_BLOCKS_PER_STEP = 32
_FRAMES_PER_STEP = 8


def global_sdr(
    reference: torch.Tensor, estimate: torch.Tensor, eps: float | None = MDX_EPS
) -> torch.Tensor:
    """Global SDR of the Music Demixing Challenge 2021, in dB: one value per stem.

    Mitsufuji et al., "Music Demixing Challenge 2021", Frontiers in Signal Processing 2022::

        SDR = 10 log10((sum_{c,t} s_c(t)^2 + eps) / (sum_{c,t} (s_c(t) - ŝ_c(t))^2 + eps))

    summed over all channels ``c`` and samples ``t`` of the stem (the whole song, not frames).
    A song's score in the challenge is the mean of its stems' values, the final score the mean
    over songs. No filter is allowed: a rescaled or delayed estimate is penalised.

    ``eps`` is **absolute** (an energy); the default 1e-7 is the challenge's (its reference code
    adds ``delta = 1e-7`` to both energies), so values equal the challenge's to rounding. It
    sets the value of degenerate stems: a silent estimate of a non-silent stem scores about
    0 dB, a silent stem with a non-silent estimate ``10 log10(1e-7 / (|ŝ|^2 + 1e-7))`` (very
    negative), a silent stem with a silent estimate 0 dB. None uses the dtype's machine
    epsilon, as :func:`torchbss.metrics.sdr`. Computed in the inputs' dtype; differentiable.

    Args:
        reference: true stems ``s``, shape ``(..., channels, samples)``, typically
            ``(batch, sources, channels, samples)``.
        estimate: estimated stems ``ŝ``, same shape.
        eps: absolute guard added to both energies (default :data:`MDX_EPS` = 1e-7).

    Returns:
        SDR in dB, shape ``(...)`` (``(batch, sources)`` for the typical layout), the promoted
        dtype of the inputs.

    Example:
        >>> s = torch.randn(4, 2, 44100)
        >>> global_sdr(s, s + 0.1 * torch.randn_like(s)).shape
        torch.Size([4])
    """
    reference, estimate = check_signal_pair(reference, estimate, "(..., channels, samples)", 2)
    eps = check_eps(eps, reference.dtype)
    signal = reference.square().sum((-2, -1))
    error = (reference - estimate).square().sum((-2, -1))
    return energy_ratio_db(signal, error, eps)


class MusevalFrames(NamedTuple):
    """Frame-wise BSS-Eval v4 metrics of :func:`museval_sdr`, in dB.

    Each field has shape ``(..., sources, frames)``; a frame where any reference stem or any
    estimate is silent is NaN for every stem (as museval). ``isr``, ``sir`` and ``sar`` are None
    when they were not computed.
    """

    sdr: torch.Tensor
    isr: torch.Tensor | None
    sir: torch.Tensor | None
    sar: torch.Tensor | None


class MusevalResult(NamedTuple):
    """Output of :func:`museval_sdr`: medians over frames and the frame-wise values.

    Attributes:
        sdr: median over the valid frames of each stem's SDR, ``(..., sources)`` (NaN when no
            frame is valid); the figure museval reports per track and target.
        isr: median image-to-spatial-distortion ratio, ``(..., sources)`` (or None).
        sir: median source-to-interference ratio, ``(..., sources)`` (or None).
        sar: median source-to-artifacts ratio, ``(..., sources)`` (or None).
        framewise: :class:`MusevalFrames`, the values of every frame.
    """

    sdr: torch.Tensor
    isr: torch.Tensor | None
    sir: torch.Tensor | None
    sar: torch.Tensor | None
    framewise: MusevalFrames


def _seconds_to_samples(value: object, name: str, sample_rate: float) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"{name} must be a positive number of seconds, got {value!r}")
    return max(1, round(value * sample_rate))


def _correlation_lags(x: torch.Tensor, y: torch.Tensor, max_lag: int) -> torch.Tensor:
    """Cross-correlations ``r_ab(m) = sum_t x_a(t) y_b(t + m)`` for lags ``|m| <= max_lag``.

    Exact (linear, not circular) correlations of whole signals, computed block by block
    (overlap-save): ``x`` is cut into blocks of ``B`` samples and each is correlated with the
    matching stretch of ``y`` extended by ``max_lag`` samples on both sides, with FFTs of
    ``B + 2 max_lag`` points; the products are summed over blocks in the frequency domain
    (one matrix product per frequency bin), so memory does not grow with the length.

    Args:
        x: signals ``(..., A, samples)``.
        y: signals ``(..., B, samples)``, same leading dimensions and samples.
        max_lag: largest lag.

    Returns:
        ``(..., A, B, 2 max_lag + 1)``, lag ``m`` at position ``m + max_lag``.
    """
    n_samples = x.shape[-1]
    n_fft = max(_CORRELATION_FFT, 1 << (8 * max_lag).bit_length())
    n_fft = min(n_fft, _next_fast_len(n_samples + 2 * max_lag))  # short signals: one block
    block = n_fft - 2 * max_lag
    n_blocks = -(-n_samples // block)
    x = torch.nn.functional.pad(x, (0, n_blocks * block - n_samples))
    y = torch.nn.functional.pad(y, (max_lag, n_blocks * block - n_samples + max_lag))
    x_blocks = x.unfold(-1, block, block)  # (..., A, blocks, block)
    y_blocks = y.unfold(-1, block + 2 * max_lag, block)  # (..., B, blocks, block + 2 max_lag)
    total = None
    for start in range(0, n_blocks, _BLOCKS_PER_STEP):
        part = slice(start, start + _BLOCKS_PER_STEP)
        x_f = torch.fft.rfft(x_blocks[..., part, :], n=n_fft)
        y_f = torch.fft.rfft(y_blocks[..., part, :], n=n_fft)
        # sum over blocks n of conj(X_a) Y_b, per frequency bin: (f, A, n) @ (f, n, B)
        product = rearrange(x_f.conj(), "... a n f -> ... f a n") @ rearrange(
            y_f, "... b n f -> ... f n b"
        )
        total = product if total is None else total + product
    assert total is not None
    # irfft index i holds the lag i - max_lag: block sample t meets y(t + i - max_lag)
    lags = torch.fft.irfft(rearrange(total, "... f a b -> ... a b f"), n=n_fft)
    return lags[..., : 2 * max_lag + 1]


def _solve_gram(blocks: torch.Tensor, rhs: torch.Tensor, loading: float) -> torch.Tensor:
    """Solve ``(G + loading I) X = rhs`` for a Gram matrix given by blocks, by Cholesky.

    ``G[(a, k), (b, l)] = blocks[..., a, b, k, l]`` (symmetric positive semi-definite). It is
    written straight into one buffer; sizes that are multiples of 64 are solved as the
    block-diagonal ``[[G, 0], [0, 1]]`` (the same solution; MKL's CPU Cholesky is several
    times slower on such sizes, see ``bss_eval._whiten``). A matrix whose factorisation fails
    (a stem silent over the whole signal, stems that are filtered copies of each other) gets
    ``1e-10`` times its mean diagonal added (museval falls back to least squares there; the
    frames concerned are mostly NaN anyway).

    Args:
        blocks: ``(..., A, A, taps, taps)``.
        rhs: ``(..., A * taps, columns)``.
        loading: added to the diagonal.

    Returns:
        ``X``, ``(..., A * taps, columns)``.
    """
    n_blocks, taps = blocks.shape[-4], blocks.shape[-1]
    n = n_blocks * taps
    size = n + 1 if n % 64 == 0 and blocks.device.type == "cpu" else n
    matrix = blocks.new_zeros(*blocks.shape[:-4], size, size)
    matrix[..., :n, :n].unflatten(-1, (n_blocks, taps)).unflatten(-3, (n_blocks, taps)).copy_(
        rearrange(blocks, "... a b k l -> ... a k b l")
    )
    diagonal = matrix.diagonal(dim1=-2, dim2=-1)
    diagonal[..., :n] += loading
    if size > n:
        diagonal[..., n] = 1.0
        rhs = torch.nn.functional.pad(rhs, (0, 0, 0, size - n))
    factor, info = torch.linalg.cholesky_ex(matrix)
    failed = info != 0
    if bool(failed.any()):
        scale = diagonal.mean(-1).clamp_min(torch.finfo(matrix.dtype).tiny)
        load = torch.where(failed, 1e-10 * scale, torch.zeros_like(scale))
        diagonal += load[..., None]
        factor, _ = torch.linalg.cholesky_ex(matrix)
    return torch.cholesky_solve(rhs, factor)[..., :n, :]


def _distortion_filters(
    reference: torch.Tensor, estimate: torch.Tensor, taps: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Time-invariant distortion filters of BSS-Eval v4, estimated over the whole signals.

    For estimate ``e``, the least-squares filters that best rebuild each of its channels from
    ``taps``-tap filtered copies of every channel of (i) all reference stems, and (ii) its own
    reference stem only. The normal equations ``(G + eps I) C = D`` use the Gram matrix ``G``
    of the delayed reference channels (block Toeplitz, from their correlations) and their
    correlations ``D`` with the estimate's channels; ``eps`` is museval's absolute loading.

    Args:
        reference: ``(..., sources, channels, samples)`` float64.
        estimate: same shape.
        taps: filter length.

    Returns:
        ``(filters_all, filters_own)``: ``(..., est, sources, ch_in, ch_out, taps)`` and
        ``(..., est, ch_in, ch_out, taps)``.
    """
    n_src, n_chan = reference.shape[-3], reference.shape[-2]
    n_ref = n_src * n_chan
    references = reference.flatten(-3, -2)  # (..., (j c), t)
    signals = torch.cat([references, estimate.flatten(-3, -2)], dim=-2)
    lags = _correlation_lags(references, signals, taps - 1)  # (..., (j c), (j c) + (e d), lags)
    # G[(a, k), (b, l)] = <a delayed by k, b delayed by l> = r_ab(k - l)
    blocks = _toeplitz(lags[..., :n_ref, :], taps)  # (..., a, b, k, l)
    # D[(a, k), f] = <a delayed by k, estimate channel f> = r_af(k), k = 0 .. taps-1
    cross = lags[..., n_ref:, taps - 1 :]  # (..., a, f, k)
    filters_all = rearrange(
        _solve_gram(blocks, rearrange(cross, "... a f k -> ... (a k) f"), _MUSEVAL_LOADING),
        "... (j c k) (e d) -> ... e j c d k",
        j=n_src,
        c=n_chan,
        e=n_src,
    )
    # own stem: the diagonal blocks of the Gram matrix, the estimate's own columns of D
    own_blocks = rearrange(
        blocks.unflatten(-4, (n_src, n_chan)).unflatten(-3, (n_src, n_chan)),
        "... i c j d k l -> ... k l c d i j",
    ).diagonal(dim1=-2, dim2=-1)
    own_blocks = rearrange(own_blocks, "... k l c d e -> ... e c d k l")
    own_cross = rearrange(
        cross.unflatten(-3, (n_src, n_chan)).unflatten(-2, (n_src, n_chan)),
        "... j c e d k -> ... c k d j e",
    ).diagonal(dim1=-2, dim2=-1)
    own_cross = rearrange(own_cross, "... c k d e -> ... e (c k) d")
    filters_own = rearrange(
        _solve_gram(own_blocks, own_cross, _MUSEVAL_LOADING),
        "... e (c k) d -> ... e c d k",
        c=n_chan,
    )
    return filters_all, filters_own


def _parseval_energy(spectrum: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Energy ``sum_{c,t} x_c(t)^2`` of real signals from their rfft ``(..., c, bins)``.

    ``weight`` holds ``w_k / n_fft`` per bin, twice (real and imaginary parts), with ``w_k = 2``
    for the bins that stand for two (conjugate) bins of the full FFT and 1 for the DC and
    Nyquist bins.
    """
    parts = torch.view_as_real(spectrum).flatten(-2)  # (..., c, (bins re/im))
    return (parts.square() @ weight).sum(-1)


def _framewise_projections(
    reference_frames: torch.Tensor,
    estimate_frames: torch.Tensor,
    filters_all: torch.Tensor,
    filters_own: torch.Tensor,
    eps: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """ISR, SIR and SAR of every frame with the whole-signal filters, ``(..., frames, est)``.

    In each frame the reference stems (zero before and after the frame) are filtered with the
    filters of :func:`_distortion_filters`, giving ``s_own`` (own stem) and ``s_all`` (all
    stems), ``window + taps - 1`` samples long; with ``s`` and ``ŝ`` the frame's reference and
    estimate (zero-padded to that length)::

        ISR = 10 log10(|s|^2 / |s_own - s|^2)
        SIR = 10 log10(|s_own|^2 / |s_all - s_own|^2)
        SAR = 10 log10(|s_all|^2 / |ŝ - s_all|^2)

    The filtering is a product of FFTs long enough for the full convolution, so the energies
    are sums over the spectra (Parseval) and no inverse FFT is needed.
    """
    window, taps = reference_frames.shape[-1], filters_all.shape[-1]
    n_src, n_chan = filters_all.shape[-5], filters_all.shape[-3]
    n_fft = _next_fast_len(window + taps - 1)
    # filters as spectra, ordered (input stem, input channel, estimate, output channel, bin)
    spectra_all = torch.fft.rfft(rearrange(filters_all, "... e j c d k -> ... j c e d k"), n=n_fft)
    spectra_own = torch.fft.rfft(rearrange(filters_own, "... e c d k -> ... c e d k"), n=n_fft)
    n_bins = n_fft // 2 + 1
    weight = torch.full((n_bins,), 2.0 / n_fft, dtype=_COMPUTE_DTYPE, device=filters_all.device)
    weight[0] = 1.0 / n_fft
    if n_fft % 2 == 0:
        weight[-1] = 1.0 / n_fft
    weight = weight.repeat_interleave(2)  # real and imaginary parts
    n_frames = reference_frames.shape[-4]
    results = []
    for start in range(0, n_frames, _FRAMES_PER_STEP):
        part = slice(start, start + _FRAMES_PER_STEP)
        ref_f = torch.fft.rfft(reference_frames[..., part, :, :, :], n=n_fft)  # (..., t, j, c, f)
        est_f = torch.fft.rfft(estimate_frames[..., part, :, :, :], n=n_fft)
        # s_all[t, e, d] = sum_{j, c} ref[t, j, c] * filter_all[j, c, e, d]
        # s_own[t, e, d] = sum_c ref[t, e, c] * filter_own[c, e, d]
        shape = (*ref_f.shape[:-3], n_src, n_chan, n_bins)  # (..., t, e, d, f)
        proj_all = ref_f.new_zeros(shape)
        proj_own = ref_f.new_zeros(shape)
        for c in range(n_chan):
            for j in range(n_src):
                proj_all.addcmul_(
                    ref_f[..., :, j, c, None, None, :], spectra_all[..., None, j, c, :, :, :]
                )
            proj_own.addcmul_(ref_f[..., :, :, c, None, :], spectra_own[..., None, c, :, :, :])
        isr = energy_ratio_db(
            _parseval_energy(ref_f, weight), _parseval_energy(proj_own - ref_f, weight), eps
        )
        sir = energy_ratio_db(
            _parseval_energy(proj_own, weight),
            _parseval_energy(proj_all - proj_own, weight),
            eps,
        )
        sar = energy_ratio_db(
            _parseval_energy(proj_all, weight), _parseval_energy(est_f - proj_all, weight), eps
        )
        results.append(torch.stack([isr, sir, sar]))
    isr, sir, sar = torch.cat(results, dim=-2).unbind(0)
    return isr, sir, sar


def museval_sdr(
    reference: torch.Tensor,
    estimate: torch.Tensor,
    sample_rate: float,
    window_s: float = 1.0,
    hop_s: float = 1.0,
    filter_length: int = 512,
    compute_isr_sir_sar: bool = True,
) -> MusevalResult:
    """BSS-Eval v4 SDR, ISR, SIR and SAR per stem and frame, and their medians, as museval.

    The metrics of ``museval.evaluate(references, estimates, win, hop, mode="v4")`` (the SiSEC
    2018 evaluation of MUSDB18; Stöter, Liutkus, Ito, "The 2018 Signal Separation Evaluation
    Campaign", LVA/ICA 2018) with the image decomposition of Vincent, Gribonval, Févotte,
    "Performance measurement in blind audio source separation", IEEE TASLP 2006:

    * **v4's change from v3**: the distortion filters are estimated once over the whole
      signals (not anew in every frame): for each estimate ``ŝ_e``, the least-squares
      ``filter_length``-tap multichannel filters that rebuild it from all reference stems
      (``C_all``) and from its own stem only (``C_own``). In each frame, the frame's
      references (zero outside it) are filtered with them, giving ``s_own`` and ``s_all``.
    * With ``s`` and ``ŝ`` the frame of the true and estimated stem, summed over channels::

        SDR = 10 log10(|s|^2 / |ŝ - s|^2)              (no filter: an SNR)
        ISR = 10 log10(|s|^2 / |s_own - s|^2)
        SIR = 10 log10(|s_own|^2 / |s_all - s_own|^2)
        SAR = 10 log10(|s_all|^2 / |ŝ - s_all|^2)

      The three error terms ``s_own - s`` (spatial distortion), ``s_all - s_own``
      (interference) and ``ŝ - s_all`` (artifacts) sum to ``ŝ - s``.
    * Frames of ``round(window_s * sample_rate)`` samples every ``round(hop_s *
      sample_rate)``; the samples after the last whole frame are not scored, and a signal
      shorter than one window is one frame. A frame where **any** reference stem or **any**
      estimate is silent (its channels sum to zero at every sample) is NaN for **every** stem,
      as museval (which evaluates all stems of a track jointly).
    * The medians ignore NaN frames and average the two middle values of an even count
      (``numpy.nanmedian``, museval's aggregate); a stem without a valid frame gets NaN.

    Agreement with museval 0.4.1 on the shared songs: within 1e-6 dB on every frame value and
    median (see ``tests/test_metrics_music.py``). Differences: museval stores values rounded to
    1e-5 dB and reports a frame exact to the last bit as +inf (then left out of its median);
    here every ratio is ``10 log10((num + 1e-30) / (den + 1e-30))`` (absolute energies), so
    such a frame scores about +300 dB. Singular Gram matrices (a stem silent over the whole
    signal, stems that are filtered copies of each other) get a small diagonal loading where
    museval solves by least squares.

    Everything is computed in float64 (results cast back to the inputs' dtype). Cost: one
    Cholesky solve of size ``sources * channels * filter_length`` (4096 for MUSDB18) and the
    correlations of all channels over the whole signals (FFT blocks: memory independent of
    the length); ``compute_isr_sir_sar=False`` skips them (SDR only, as cheap as an SNR). A
    metric for evaluation: use :func:`global_sdr` or :mod:`torchbss.losses` to train.

    Args:
        reference: true stems ``(..., sources, channels, samples)``.
        estimate: estimated stems, same shape; estimate ``j`` is scored against stem ``j``.
        sample_rate: sampling rate in Hz.
        window_s: frame length in seconds (museval: 1 s).
        hop_s: hop between frames in seconds (museval: 1 s).
        filter_length: taps of the distortion filters (museval: 512).
        compute_isr_sir_sar: also compute ISR, SIR and SAR (else they are None).

    Returns:
        :class:`MusevalResult` ``(sdr, isr, sir, sar, framewise)``: medians ``(..., sources)``
        and :class:`MusevalFrames` of ``(..., sources, frames)``, in the promoted dtype of the
        inputs.

    Example:
        >>> ref = torch.randn(4, 2, 3 * 8000, dtype=torch.float64)
        >>> est = ref + 0.1 * torch.randn_like(ref)
        >>> result = museval_sdr(ref, est, sample_rate=8000, filter_length=64)
        >>> result.framewise.sdr.shape, bool((result.sdr - 20).abs().max() < 0.5)
        (torch.Size([4, 3]), True)
    """
    reference, estimate = check_signal_pair(reference, estimate, _STEMS_LAYOUT, 3)
    sample_rate = check_sample_rate(sample_rate)
    window = _seconds_to_samples(window_s, "window_s", sample_rate)
    hop = _seconds_to_samples(hop_s, "hop_s", sample_rate)
    check_positive_int(filter_length, "filter_length")
    check_bool(compute_isr_sir_sar, "compute_isr_sir_sar")
    out_dtype = reference.dtype
    reference = reference.to(_COMPUTE_DTYPE)
    estimate = estimate.to(_COMPUTE_DTYPE)
    window = min(window, reference.shape[-1])

    # (..., frames, sources, channels, window)
    ref_frames = rearrange(reference.unfold(-1, window, hop), "... j c t w -> ... t j c w")
    est_frames = rearrange(estimate.unfold(-1, window, hop), "... j c t w -> ... t j c w")

    def audible(frames: torch.Tensor) -> torch.Tensor:  # every stem has a nonzero channel sum
        return (frames.sum(-2) != 0).any(-1).all(-1)

    valid = audible(ref_frames) & audible(est_frames)  # (..., frames)
    signal = ref_frames.square().sum((-2, -1))  # (..., frames, sources)
    values = {
        "sdr": energy_ratio_db(
            signal, (est_frames - ref_frames).square().sum((-2, -1)), _MUSEVAL_EPS
        )
    }
    if compute_isr_sir_sar:
        filters_all, filters_own = _distortion_filters(reference, estimate, filter_length)
        values["isr"], values["sir"], values["sar"] = _framewise_projections(
            ref_frames, est_frames, filters_all, filters_own, _MUSEVAL_EPS
        )
    frames, medians = {}, {}
    for name, value in values.items():
        value = rearrange(value, "... t j -> ... j t")
        mask = valid[..., None, :].expand_as(value)
        medians[name] = framewise_summary(value, mask).median.to(out_dtype)
        frames[name] = torch.where(mask, value, torch.nan).to(out_dtype)
    framewise = MusevalFrames(
        frames["sdr"], frames.get("isr"), frames.get("sir"), frames.get("sar")
    )
    return MusevalResult(
        medians["sdr"], medians.get("isr"), medians.get("sir"), medians.get("sar"), framewise
    )
