"""Mel-RoFormer: band-split RoPE transformer with overlapping mel-scale bands.

Wang, Lu, Kong & Hung, "Mel-Band RoFormer for Music Source Separation", arXiv:2310.01809.

Same pipeline as BS-RoFormer (:mod:`torchbss.models._roformer_parts`), but the bands are the
supports of a mel filter bank: ``num_bands`` triangular filters on the Slaney mel scale
(Slaney, "Auditory Toolbox", Interval Research Technical Report 1998-010) with area
normalisation, as ``librosa.filters.mel`` builds them. A bin belongs to every band whose filter
is positive at it, so neighbouring bands overlap; the first and last bins are added to the
first and last band. Each band's mask covers its bins, and where bands overlap the complex
masks are averaged.

Constructor options, ``state_dict`` keys and outputs follow the community layout (lucidrains'
``bs-roformer`` 0.3.10 ``MelBandRoformer`` with the Music-Source-Separation-Training
extensions), so community checkpoints load with ``load_state_dict`` unchanged. Note the
community quirk kept here: the mask MLPs have ``mask_estimator_depth`` *hidden* layers (one
more linear layer than BS-RoFormer for the same value), and every transformer ends with an
RMSNorm while there is no final norm.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence

import numpy as np
import torch
from einops import rearrange, repeat

from torchbss.models._roformer_parts import DEFAULT_NORM_EPS, BandRoformer

__all__ = ["MelBandRoformer", "mel_band_membership"]

# Slaney mel scale: linear below 1 kHz (3 mels per 200 Hz), logarithmic above.
_F_SP = 200.0 / 3
_MIN_LOG_HZ = 1000.0
_MIN_LOG_MEL = _MIN_LOG_HZ / _F_SP


def _hz_to_mel(hz: float) -> np.float64:
    logstep = np.log(6.4) / 27.0
    if hz >= _MIN_LOG_HZ:
        return _MIN_LOG_MEL + np.log(np.float64(hz) / _MIN_LOG_HZ) / logstep
    return np.float64(hz) / _F_SP


def _mel_to_hz(mels: np.ndarray) -> np.ndarray:
    logstep = np.log(6.4) / 27.0
    hz = _F_SP * mels
    log_region = mels >= _MIN_LOG_MEL
    hz[log_region] = _MIN_LOG_HZ * np.exp(logstep * (mels[log_region] - _MIN_LOG_MEL))
    return hz


def mel_band_membership(sample_rate: int, n_fft: int, num_bands: int) -> torch.Tensor:
    """Which STFT bins belong to which mel band.

    Band ``i`` spans the open interval between mel points ``i`` and ``i + 2`` of
    ``num_bands + 2`` points equally spaced on the Slaney mel scale from 0 Hz to
    ``sample_rate / 2`` (the support of the ``i``-th triangular filter); bin ``k`` sits at
    ``k * sample_rate / n_fft`` Hz. Bin 0 is added to band 0 and the last bin to the last
    band. Consecutive intervals overlap, so every bin is in at least one band. Computed in
    float64 NumPy exactly as ``librosa.filters.mel`` (the community
    reference) so that boundary bins agree.

    Args:
        sample_rate: sampling rate in Hz.
        n_fft: STFT size.
        num_bands: number of mel bands.

    Returns:
        ``(num_bands, n_fft // 2 + 1)`` boolean tensor.
    """
    for name, value in (("sample_rate", sample_rate), ("n_fft", n_fft), ("num_bands", num_bands)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    bin_hz = np.arange(n_fft // 2 + 1) * (1.0 / (n_fft * (1.0 / sample_rate)))
    mels = np.linspace(_hz_to_mel(0.0), _hz_to_mel(sample_rate / 2.0), num_bands + 2)
    edges = _mel_to_hz(mels)  # (num_bands + 2,)
    above_lower = edges[:-2, None] < bin_hz[None, :]
    below_upper = bin_hz[None, :] < edges[2:, None]
    member = torch.from_numpy(above_lower & below_upper)
    member[0, 0] = True
    member[-1, -1] = True
    return member


class MelBandRoformer(BandRoformer):
    """Mel-band RoPE transformer (Mel-RoFormer) for music source separation.

    Args:
        dim: model width (features per band token).
        depth: number of axial (time, band) transformer blocks.
        stereo: two input channels (``True``) or one.
        num_stems: number of separated outputs (one mask estimator each).
        time_transformer_depth: (attention, feed-forward) pairs per time transformer.
        freq_transformer_depth: pairs per band transformer.
        linear_transformer_depth: pairs of an extra linear-attention transformer run over all
            tokens before each block (Music-Source-Separation-Training option; 0: none).
        num_bands: number of mel bands.
        dim_head: features per attention head.
        heads: attention heads.
        attn_dropout: attention dropout (training only).
        ff_dropout: feed-forward dropout (training only).
        flash_attn: kept for config compatibility; attention always runs through
            ``scaled_dot_product_attention`` (same result).
        dim_freqs_in: kept for config compatibility (the bin count follows ``stft_n_fft``).
        sample_rate: sampling rate the mel bands are laid out for.
        stft_n_fft: FFT size.
        stft_hop_length: STFT hop in samples.
        stft_win_length: window length (``<= stft_n_fft``).
        stft_normalized: ``torch.stft``'s ``normalized`` flag.
        stft_window_fn: ``win_length -> window`` (default: periodic Hann).
        mask_estimator_depth: hidden layers per band mask MLP (community semantics, see the
            module docstring).
        multi_stft_resolution_loss_weight, multi_stft_resolutions_window_sizes,
            multi_stft_hop_size, multi_stft_normalized, multi_stft_window_fn: settings of the
            community training loss, stored in :attr:`loss_options`; they do not change the
            model.
        match_input_audio_length: kept for config compatibility; outputs always have the
            input's length.
        mlp_expansion_factor: hidden width multiplier of the mask MLPs.
        use_torch_checkpoint: gradient checkpointing (see :class:`~torchbss.models.BSRoformer`).
        skip_connection: add the outputs of all earlier blocks before each block.
        sage_attention: accepted for config compatibility; exact attention is used (warns).
        rms_norm_eps: eps of every RMSNorm (default ``1e-12``).

    Shapes:
        ``forward``: ``(batch, channels, samples) -> (batch, num_stems, channels, samples)``.

    Example:
        >>> model = MelBandRoformer(32, depth=1, stereo=True, num_bands=16)
        >>> model(torch.randn(1, 2, 4096)).shape
        torch.Size([1, 1, 2, 4096])
    """

    freq_indices: torch.Tensor
    num_bands_per_freq: torch.Tensor

    def __init__(
        self,
        dim: int,
        *,
        depth: int,
        stereo: bool = False,
        num_stems: int = 1,
        time_transformer_depth: int = 2,
        freq_transformer_depth: int = 2,
        linear_transformer_depth: int = 0,
        num_bands: int = 60,
        dim_head: int = 64,
        heads: int = 8,
        attn_dropout: float = 0.1,
        ff_dropout: float = 0.1,
        flash_attn: bool = True,
        dim_freqs_in: int = 1025,
        sample_rate: int = 44100,
        stft_n_fft: int = 2048,
        stft_hop_length: int = 512,
        stft_win_length: int = 2048,
        stft_normalized: bool = False,
        stft_window_fn: Callable[[int], torch.Tensor] | None = None,
        mask_estimator_depth: int = 1,
        multi_stft_resolution_loss_weight: float = 1.0,
        multi_stft_resolutions_window_sizes: Sequence[int] = (4096, 2048, 1024, 512, 256),
        multi_stft_hop_size: int = 147,
        multi_stft_normalized: bool = False,
        multi_stft_window_fn: Callable[..., torch.Tensor] = torch.hann_window,
        match_input_audio_length: bool = False,
        mlp_expansion_factor: int = 4,
        use_torch_checkpoint: bool = False,
        skip_connection: bool = False,
        sage_attention: bool = False,
        rms_norm_eps: float | None = None,
    ) -> None:
        super().__init__()
        if sage_attention:
            warnings.warn(
                "sage_attention=True is ignored: torchbss computes exact attention with "
                "scaled_dot_product_attention (SageAttention is a quantised approximation)",
                stacklevel=2,
            )
        if isinstance(mask_estimator_depth, bool) or mask_estimator_depth < 0:
            raise ValueError(f"mask_estimator_depth must be >= 0, got {mask_estimator_depth!r}")
        self.num_bands = num_bands
        self.sample_rate = sample_rate
        channels = 2 if stereo else 1
        member = mel_band_membership(sample_rate, stft_n_fft, num_bands)  # (bands, freqs)
        bins = repeat(torch.arange(member.shape[1]), "f -> b f", b=num_bands)[member]
        # index into the (f s) axis of the STFT, channels interleaved per bin
        freq_indices = rearrange(bins[:, None] * channels + torch.arange(channels), "f s -> (f s)")
        self.register_buffer("freq_indices", freq_indices, persistent=False)
        self.register_buffer("num_bands_per_freq", member.sum(0), persistent=False)
        band_inputs = tuple(2 * channels * int(n) for n in member.sum(1))
        self.loss_options = {
            "weight": multi_stft_resolution_loss_weight,
            "window_sizes": tuple(multi_stft_resolutions_window_sizes),
            "hop_size": multi_stft_hop_size,
            "normalized": multi_stft_normalized,
            "window_fn": multi_stft_window_fn,
            "n_fft": stft_n_fft,
        }
        self._build(
            dim=dim,
            depth=depth,
            stereo=stereo,
            num_stems=num_stems,
            time_transformer_depth=time_transformer_depth,
            freq_transformer_depth=freq_transformer_depth,
            linear_transformer_depth=linear_transformer_depth,
            dim_head=dim_head,
            heads=heads,
            attn_dropout=attn_dropout,
            ff_dropout=ff_dropout,
            stft_n_fft=stft_n_fft,
            stft_hop_length=stft_hop_length,
            stft_win_length=stft_win_length,
            stft_normalized=stft_normalized,
            stft_window_fn=stft_window_fn,
            band_inputs=band_inputs,
            mask_hidden_layers=mask_estimator_depth,
            mlp_expansion_factor=mlp_expansion_factor,
            norm_output=True,
            final_norm=False,
            use_torch_checkpoint=use_torch_checkpoint,
            skip_connection=skip_connection,
            norm_eps=DEFAULT_NORM_EPS if rms_norm_eps is None else rms_norm_eps,
        )

    def _select_bins(self, spec: torch.Tensor) -> torch.Tensor:
        # gather every band's bins (overlapping bands repeat bins), band after band
        picked = spec.index_select(1, self.freq_indices)  # (b, band_bins, t, c)
        return rearrange(picked, "b f t c -> b t (f c)")

    def _merge_masks(self, masks: torch.Tensor) -> torch.Tensor:
        # sum each bin's masks over the bands that contain it, then average
        b, n, _, t = masks.shape
        n_bins = self.num_bands_per_freq.shape[0] * self.audio_channels
        summed = masks.new_zeros(b, n, n_bins, t).index_add(2, self.freq_indices, masks)
        counts = repeat(self.num_bands_per_freq, "f -> (f s) 1", s=self.audio_channels)
        return summed / counts.to(summed.real.dtype)
