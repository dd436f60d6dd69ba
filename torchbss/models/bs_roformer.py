"""BS-RoFormer: band-split RoPE transformer with fixed, contiguous frequency bands.

Lu, Wang, Kong & Hung, "Music Source Separation with Band-Split RoPE Transformer",
ICASSP 2024, arXiv:2309.02612.

The STFT bins are cut into contiguous bands of ``freqs_per_bands[i]`` bins; each band's real
and imaginary parts (of every channel) become one token per frame. Axial transformers alternate
between time and bands, and one mask estimator per stem predicts a complex mask for every bin.
The shared pipeline lives in :mod:`torchbss.models._roformer_parts`.

Constructor options, ``state_dict`` keys and outputs follow the community layout (lucidrains'
``bs-roformer`` 0.3.10 and the Music-Source-Separation-Training extensions
``linear_transformer_depth``, ``mlp_expansion_factor``, ``use_torch_checkpoint``,
``skip_connection``), so community checkpoints load with ``load_state_dict`` unchanged.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence

import torch
from einops import rearrange

from torchbss.models._roformer_parts import DEFAULT_NORM_EPS, BandRoformer

__all__ = ["BSRoformer", "DEFAULT_FREQS_PER_BANDS"]

# 62 bands for n_fft = 2048 (1025 bins), as in the paper and the community models.
DEFAULT_FREQS_PER_BANDS: tuple[int, ...] = (
    (2,) * 24 + (4,) * 12 + (12,) * 8 + (24,) * 8 + (48,) * 8 + (128, 129)
)


def check_freqs_per_bands(freqs_per_bands: Sequence[int], n_fft: int) -> tuple[int, ...]:
    """Check that ``freqs_per_bands`` are >= 2 positive integers summing to ``n_fft // 2 + 1``.

    Args:
        freqs_per_bands: bins per band, low to high frequency.
        n_fft: STFT size.

    Returns:
        The bands as a tuple.
    """
    bands = tuple(freqs_per_bands)
    if len(bands) < 2 or any(isinstance(f, bool) or not isinstance(f, int) or f < 1 for f in bands):
        raise ValueError(
            f"freqs_per_bands must be at least two positive integers, got {freqs_per_bands!r}"
        )
    n_freqs = n_fft // 2 + 1
    if sum(bands) != n_freqs:
        raise ValueError(
            f"freqs_per_bands must cover the {n_freqs} STFT bins of stft_n_fft={n_fft} exactly, "
            f"but they sum to {sum(bands)}"
        )
    return bands


class BSRoformer(BandRoformer):
    """Band-split RoPE transformer (BS-RoFormer) for music source separation.

    Args:
        dim: model width (features per band token).
        depth: number of axial (time, band) transformer blocks.
        stereo: two input channels (``True``) or one.
        num_stems: number of separated outputs (one mask estimator each).
        time_transformer_depth: (attention, feed-forward) pairs per time transformer.
        freq_transformer_depth: pairs per band transformer.
        linear_transformer_depth: pairs of an extra linear-attention transformer run over all
            tokens before each block (Music-Source-Separation-Training option; 0: none).
        freqs_per_bands: STFT bins per band, summing to ``stft_n_fft // 2 + 1``.
        dim_head: features per attention head.
        heads: attention heads.
        attn_dropout: attention dropout (training only).
        ff_dropout: feed-forward dropout (training only).
        flash_attn: kept for config compatibility; attention always runs through
            ``scaled_dot_product_attention``, which picks an exact kernel (same result).
        dim_freqs_in: kept for config compatibility (the bin count follows ``stft_n_fft``).
        stft_n_fft: FFT size.
        stft_hop_length: STFT hop in samples.
        stft_win_length: window length (``<= stft_n_fft``).
        stft_normalized: ``torch.stft``'s ``normalized`` flag.
        stft_window_fn: ``win_length -> window`` (default: periodic Hann).
        mask_estimator_depth: linear layers per band mask MLP (``mask_estimator_depth - 1``
            hidden layers of width ``dim * mlp_expansion_factor``).
        multi_stft_resolution_loss_weight, multi_stft_resolutions_window_sizes,
            multi_stft_hop_size, multi_stft_normalized, multi_stft_window_fn: settings of the
            community training loss, stored in :attr:`loss_options` for the training stack; they
            do not change the model.
        mlp_expansion_factor: hidden width multiplier of the mask MLPs.
        use_torch_checkpoint: gradient checkpointing of every transformer, the band split and
            the mask estimators when gradients are enabled (less memory, more compute).
        skip_connection: before each block, add the outputs of all earlier blocks (the
            Music-Source-Separation-Training option of that name; no parameters).
        sage_attention: accepted for config compatibility; SageAttention (a quantised
            approximation) is not used, exact attention is computed instead (warns).
        rms_norm_eps: eps of every RMSNorm (default ``1e-12``; a few community models use
            ``5.96e-8``).

    Shapes:
        ``forward``: ``(batch, channels, samples) -> (batch, num_stems, channels, samples)``,
        channels 2 if ``stereo`` else 1, ``samples >= stft_n_fft // 2 + 1``.

    Example:
        >>> model = BSRoformer(32, depth=1, stereo=True, num_stems=2)
        >>> model(torch.randn(1, 2, 4096)).shape
        torch.Size([1, 2, 2, 4096])
    """

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
        freqs_per_bands: Sequence[int] = DEFAULT_FREQS_PER_BANDS,
        dim_head: int = 64,
        heads: int = 8,
        attn_dropout: float = 0.0,
        ff_dropout: float = 0.0,
        flash_attn: bool = True,
        dim_freqs_in: int = 1025,
        stft_n_fft: int = 2048,
        stft_hop_length: int = 512,
        stft_win_length: int = 2048,
        stft_normalized: bool = False,
        stft_window_fn: Callable[[int], torch.Tensor] | None = None,
        mask_estimator_depth: int = 2,
        multi_stft_resolution_loss_weight: float = 1.0,
        multi_stft_resolutions_window_sizes: Sequence[int] = (4096, 2048, 1024, 512, 256),
        multi_stft_hop_size: int = 147,
        multi_stft_normalized: bool = False,
        multi_stft_window_fn: Callable[..., torch.Tensor] = torch.hann_window,
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
        if isinstance(mask_estimator_depth, bool) or mask_estimator_depth < 1:
            raise ValueError(f"mask_estimator_depth must be >= 1, got {mask_estimator_depth!r}")
        self.freqs_per_bands = check_freqs_per_bands(freqs_per_bands, stft_n_fft)
        channels = 2 if stereo else 1
        band_inputs = tuple(2 * channels * f for f in self.freqs_per_bands)
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
            mask_hidden_layers=mask_estimator_depth - 1,
            mlp_expansion_factor=mlp_expansion_factor,
            norm_output=False,
            final_norm=True,
            use_torch_checkpoint=use_torch_checkpoint,
            skip_connection=skip_connection,
            norm_eps=DEFAULT_NORM_EPS if rms_norm_eps is None else rms_norm_eps,
        )

    def _select_bins(self, spec: torch.Tensor) -> torch.Tensor:
        # contiguous bands: the band-split input is every bin in order
        return rearrange(spec, "b f t c -> b t (f c)")

    def _merge_masks(self, masks: torch.Tensor) -> torch.Tensor:
        return masks  # one mask value per bin already
