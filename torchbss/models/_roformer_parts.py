"""Building blocks shared by the band-split RoPE transformers (BS-RoFormer and Mel-RoFormer).

Both models (Lu et al., "Music Source Separation with Band-Split RoPE Transformer",
arXiv:2309.02612; Wang et al., "Mel-Band RoFormer for Music Source Separation",
arXiv:2310.01809) run the same pipeline, implemented once here by :class:`BandRoformer`:

1. STFT of every channel; real and imaginary parts of the bins of each band are concatenated
   and projected to ``dim`` features (:class:`BandSplit`);
2. ``depth`` axial blocks, each a transformer over time (one sequence per band) followed by a
   transformer over bands (one sequence per frame), with rotary position embeddings
   (Su et al., "RoFormer", arXiv:2104.09864) and gated multi-head attention;
3. one :class:`MaskEstimator` per stem maps each band's features to a complex mask for the
   band's bins; the masked STFT is inverted.

The two models differ only in how bins are grouped into bands (contiguous fixed bands vs.
overlapping mel bands whose masks are averaged), which their own files define.

Module and parameter names follow the community checkpoint layout, so ``state_dict`` keys match
without renaming: lucidrains' ``bs-roformer`` 0.3.10 as vendored and extended by
Music-Source-Separation-Training (MSST), which trained the shared checkpoints. 0.3.10 is the
last release with that layout: 0.4.0 puts an empty slot for the linear-attention transformer
in every Mel-RoFormer block (its time/band transformers move from keys ``layers.i.0/1`` to
``layers.i.1/2``), 0.5.0 adds value-residual projections and 0.6.0 hyper-connections (new and
renamed weights). MSST adds its linear-attention transformer in front only when
``linear_transformer_depth > 0``; this module does the same.

Einops axis letters: ``b`` batch, ``s`` audio channel, ``f`` frequency bin or band, ``t`` STFT
frame, ``c`` real/imaginary, ``n`` stem, ``h`` head, ``d`` feature.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from einops import rearrange
from einops.layers.torch import Rearrange
from torch import nn
from torch.utils.checkpoint import checkpoint

__all__ = [
    "RMSNorm",
    "RotaryEmbedding",
    "Attention",
    "LinearAttention",
    "FeedForward",
    "Transformer",
    "BandSplit",
    "MaskEstimator",
    "BandRoformer",
    "apply_rotary",
]

# On CPU, transformers run on groups of sequences whose largest intermediate tensor stays
# below this many bytes (see BandRoformer._transform); None disables the grouping.
CPU_BLOCK_BYTES = 4 * 2**20
# F.normalize's default: RMSNorm divides by max(||x||, eps).
DEFAULT_NORM_EPS = 1e-12


class RMSNorm(nn.Module):
    """Root-mean-square normalisation over the last dim: ``x / max(||x||, eps) * sqrt(d) * gamma``.

    Args:
        dim: feature size ``d``.
        eps: lower bound on the L2 norm (``1e-12`` as in the community models).

    Shapes: ``(..., dim) -> (..., dim)``.
    """

    def __init__(self, dim: int, eps: float = DEFAULT_NORM_EPS) -> None:
        super().__init__()
        self.scale = dim**0.5
        self.eps = eps
        self.gamma = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        norm = torch.linalg.vector_norm(x, dim=-1, keepdim=True).clamp_min(self.eps)
        return x * ((self.gamma * self.scale) / norm)


def apply_rotary(x: torch.Tensor, freqs: torch.Tensor) -> torch.Tensor:
    """Rotate consecutive feature pairs of ``x`` by position-dependent angles (RoPE).

    Feature pair ``(x[2i], x[2i+1])`` at sequence position ``p`` is rotated by the angle
    ``p * freqs[i]`` (Su et al., arXiv:2104.09864, eq. 34, with interleaved pairs as in the
    community models), computed as one complex multiplication of ``x[2i] + j x[2i+1]`` by
    ``exp(j p freqs[i])``. Angles are computed in float32 whatever the dtype of ``x``.

    Args:
        x: ``(..., seq, d)`` queries or keys, ``d = 2 * len(freqs)``; any leading dims, e.g.
            queries and keys stacked to rotate both at once.
        freqs: ``(d / 2,)`` rotation frequencies.

    Returns:
        Rotated tensor, same shape and dtype as ``x``.
    """
    positions = torch.arange(x.shape[-2], device=x.device, dtype=torch.float32)
    angles = torch.outer(positions, freqs.float())  # (seq, d/2)
    work = x if x.dtype in (torch.float32, torch.float64) else x.float()
    rotation = torch.polar(torch.ones_like(angles), angles).to(
        torch.complex128 if work.dtype == torch.float64 else torch.complex64
    )
    pairs = torch.view_as_complex(work.unflatten(-1, (-1, 2)))  # (..., seq, d/2)
    return torch.view_as_real(pairs * rotation).flatten(-2).to(x.dtype)


class RotaryEmbedding(nn.Module):
    """Holds the RoPE frequencies ``theta ** (-2i / d)`` as the buffer ``freqs``.

    The buffer is persistent because community checkpoints store it (as
    ``...rotary_embed.freqs``); a state dict without it (e.g. splifft's layout) loads too, the
    computed default is then kept.

    Args:
        dim_head: feature size per head ``d`` (even).
        theta: base of the frequencies.
    """

    freqs: torch.Tensor

    def __init__(self, dim_head: int, theta: float = 10000.0) -> None:
        super().__init__()
        if dim_head % 2:
            raise ValueError(f"dim_head must be even for rotary embeddings, got {dim_head}")
        exponents = torch.arange(0, dim_head, 2).float() / dim_head
        self.register_buffer("freqs", 1.0 / theta**exponents)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Rotate ``x`` ``(..., seq, dim_head)``; see :func:`apply_rotary`."""
        return apply_rotary(x, self.freqs)

    def _load_from_state_dict(
        self,
        state_dict: dict,
        prefix: str,
        local_metadata: dict,
        strict: bool,
        missing_keys: list[str],
        unexpected_keys: list[str],
        error_msgs: list[str],
    ) -> None:
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )
        if prefix + "freqs" in missing_keys:  # derived constant: keep the computed one
            missing_keys.remove(prefix + "freqs")


class Attention(nn.Module):
    """Pre-norm multi-head self-attention with RoPE and a sigmoid gate per head.

    ``out = W_out [sigmoid(W_gate x_n)_h * softmax(q_h k_h^T / sqrt(d)) v_h]_h`` with
    ``x_n = RMSNorm(x)`` and ``q, k`` rotated by RoPE; attention runs through
    ``torch.nn.functional.scaled_dot_product_attention``.

    Args:
        dim: model width.
        heads: number of heads.
        dim_head: features per head.
        dropout: attention-weight and output dropout (training only).
        rotary_embed: shared :class:`RotaryEmbedding` or ``None``.
        norm_eps: :class:`RMSNorm` eps.

    Shapes: ``(batch, seq, dim) -> (batch, seq, dim)``.
    """

    def __init__(
        self,
        dim: int,
        heads: int = 8,
        dim_head: int = 64,
        dropout: float = 0.0,
        rotary_embed: RotaryEmbedding | None = None,
        norm_eps: float = DEFAULT_NORM_EPS,
    ) -> None:
        super().__init__()
        self.heads = heads
        self.dropout = dropout
        self.rotary_embed = rotary_embed
        self.norm = RMSNorm(dim, norm_eps)
        self.to_qkv = nn.Linear(dim, 3 * heads * dim_head, bias=False)
        self.to_gates = nn.Linear(dim, heads)
        self.to_out = nn.Sequential(
            nn.Linear(heads * dim_head, dim, bias=False), nn.Dropout(dropout)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm(x)
        qkv = rearrange(self.to_qkv(x), "b n (qkv h d) -> qkv b h n d", qkv=3, h=self.heads)
        if self.rotary_embed is None:
            q, k, v = qkv.unbind(0)
        else:
            q, k = self.rotary_embed(qkv[:2]).unbind(0)  # queries and keys in one pass
            v = qkv[2]
        out = F.scaled_dot_product_attention(
            q, k, v, dropout_p=self.dropout if self.training else 0.0
        )
        gates = self.to_gates(x).sigmoid()  # (b, n, h)
        out = rearrange(out, "b h n d -> b n h d") * gates.unsqueeze(-1)
        return self.to_out(rearrange(out, "b n h d -> b n (h d)"))


class LinearAttention(nn.Module):
    """Cross-covariance attention over features (El-Nouby et al., "XCiT", arXiv:2106.09681).

    Queries and keys are L2-normalised along the sequence, queries scaled by
    ``exp(temperature)`` per head, and the softmax runs over the ``d x d`` feature
    covariance with scale ``scale``; cost is linear in the sequence length. Used by the
    optional ``linear_transformer_depth`` blocks of Music-Source-Separation-Training.

    Shapes: ``(batch, seq, dim) -> (batch, seq, dim)``.
    """

    def __init__(
        self,
        dim: int,
        heads: int = 8,
        dim_head: int = 64,
        dropout: float = 0.0,
        scale: float = 8.0,
        norm_eps: float = DEFAULT_NORM_EPS,
    ) -> None:
        super().__init__()
        self.dropout = dropout
        self.scale = scale
        self.norm = RMSNorm(dim, norm_eps)
        self.to_qkv = nn.Sequential(
            nn.Linear(dim, 3 * heads * dim_head, bias=False),
            Rearrange("b n (qkv h d) -> qkv b h d n", qkv=3, h=heads),
        )
        self.temperature = nn.Parameter(torch.ones(heads, 1, 1))
        self.to_out = nn.Sequential(
            Rearrange("b h d n -> b n (h d)"), nn.Linear(heads * dim_head, dim, bias=False)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.to_qkv(self.norm(x))  # each (b, h, d, n)
        q = F.normalize(q, dim=-1) * self.temperature.exp()
        k = F.normalize(k, dim=-1)
        out = F.scaled_dot_product_attention(
            q, k, v, dropout_p=self.dropout if self.training else 0.0, scale=self.scale
        )
        return self.to_out(out)


class FeedForward(nn.Module):
    """Pre-norm MLP ``Linear(dim, mult*dim) -> GELU -> Linear(mult*dim, dim)`` with dropout.

    Shapes: ``(..., dim) -> (..., dim)``.
    """

    def __init__(
        self, dim: int, mult: int = 4, dropout: float = 0.0, norm_eps: float = DEFAULT_NORM_EPS
    ) -> None:
        super().__init__()
        inner = int(dim * mult)
        self.net = nn.Sequential(
            RMSNorm(dim, norm_eps),
            nn.Linear(dim, inner),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(inner, dim),
            nn.Dropout(dropout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Transformer(nn.Module):
    """``depth`` residual (attention, feed-forward) pairs, optionally followed by an RMSNorm.

    Args:
        dim: model width.
        depth: number of (attention, feed-forward) pairs.
        heads, dim_head: attention shape.
        attn_dropout, ff_dropout: dropout rates.
        ff_mult: feed-forward expansion.
        norm_output: end with an :class:`RMSNorm` (Mel-RoFormer) or not (BS-RoFormer).
        rotary_embed: shared RoPE module for the attention layers.
        linear_attn: use :class:`LinearAttention` instead of :class:`Attention`.
        norm_eps: :class:`RMSNorm` eps.

    Shapes: ``(batch, seq, dim) -> (batch, seq, dim)``.
    """

    def __init__(
        self,
        *,
        dim: int,
        depth: int,
        heads: int = 8,
        dim_head: int = 64,
        attn_dropout: float = 0.0,
        ff_dropout: float = 0.0,
        ff_mult: int = 4,
        norm_output: bool = True,
        rotary_embed: RotaryEmbedding | None = None,
        linear_attn: bool = False,
        norm_eps: float = DEFAULT_NORM_EPS,
    ) -> None:
        super().__init__()
        self.layers = nn.ModuleList()
        for _ in range(depth):
            if linear_attn:
                attn: nn.Module = LinearAttention(
                    dim, heads, dim_head, attn_dropout, norm_eps=norm_eps
                )
            else:
                attn = Attention(dim, heads, dim_head, attn_dropout, rotary_embed, norm_eps)
            ff = FeedForward(dim, ff_mult, ff_dropout, norm_eps)
            self.layers.append(nn.ModuleList([attn, ff]))
        self.norm = RMSNorm(dim, norm_eps) if norm_output else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for attn, ff in self.layers:
            x = attn(x) + x
            x = ff(x) + x
        return self.norm(x)


class BandSplit(nn.Module):
    """Project each band's ``dim_inputs[i]`` input features to ``dim`` (RMSNorm + Linear).

    Shapes: ``(batch, frames, sum(dim_inputs)) -> (batch, frames, bands, dim)``.
    """

    def __init__(self, dim: int, dim_inputs: Sequence[int], norm_eps: float = DEFAULT_NORM_EPS):
        super().__init__()
        self.dim_inputs = tuple(dim_inputs)
        self.to_features = nn.ModuleList(
            nn.Sequential(RMSNorm(dim_in, norm_eps), nn.Linear(dim_in, dim))
            for dim_in in self.dim_inputs
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bands = x.split(self.dim_inputs, dim=-1)
        return torch.stack([net(band) for band, net in zip(bands, self.to_features)], dim=-2)


def _mlp(dim_in: int, dim_out: int, dim_hidden: int, hidden_layers: int) -> nn.Sequential:
    """``Linear -> Tanh`` ``hidden_layers`` times, then a last ``Linear`` to ``dim_out``."""
    dims = (dim_in, *(dim_hidden,) * hidden_layers, dim_out)
    layers: list[nn.Module] = []
    for i, (d_in, d_out) in enumerate(zip(dims[:-1], dims[1:])):
        layers.append(nn.Linear(d_in, d_out))
        if i < len(dims) - 2:
            layers.append(nn.Tanh())
    return nn.Sequential(*layers)


class MaskEstimator(nn.Module):
    """Per-band MLP + GLU mapping ``dim`` features to the band's ``dim_inputs[i]`` mask values.

    Args:
        dim: model width.
        dim_inputs: output size per band (``2 * channels * bins``: real and imaginary parts).
        hidden_layers: number of hidden ``Linear -> Tanh`` layers of width
            ``dim * mlp_expansion_factor``. The community BS-RoFormer uses
            ``mask_estimator_depth - 1`` and the Mel-RoFormer ``mask_estimator_depth``.
        mlp_expansion_factor: hidden width multiplier.

    Shapes: ``(batch, frames, bands, dim) -> (batch, frames, sum(dim_inputs))``.
    """

    def __init__(
        self, dim: int, dim_inputs: Sequence[int], hidden_layers: int, mlp_expansion_factor: int = 4
    ) -> None:
        super().__init__()
        self.dim_inputs = tuple(dim_inputs)
        hidden = dim * mlp_expansion_factor
        self.to_freqs = nn.ModuleList(
            nn.Sequential(_mlp(dim, 2 * dim_in, hidden, hidden_layers), nn.GLU(dim=-1))
            for dim_in in self.dim_inputs
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([net(band) for band, net in zip(x.unbind(-2), self.to_freqs)], dim=-1)


def _check_common_options(
    dim: int, depth: int, heads: int, dim_head: int, stft_n_fft: int, stft_hop_length: int
) -> None:
    for name, value in (
        ("dim", dim),
        ("depth", depth),
        ("heads", heads),
        ("dim_head", dim_head),
        ("stft_n_fft", stft_n_fft),
        ("stft_hop_length", stft_hop_length),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")


class BandRoformer(nn.Module):
    """Shared body of :class:`~torchbss.models.BSRoformer` and
    :class:`~torchbss.models.MelBandRoformer` (see the module docstring).

    Subclasses call :meth:`_build` with the per-band input sizes and implement
    :meth:`_select_bins` (STFT -> band inputs) and :meth:`_merge_masks` (band masks -> one
    complex mask per STFT bin).

    Forward: ``(batch, channels, samples)`` waveform -> ``(batch, stems, channels, samples)``
    waveforms, always with the input's length and a stems dim (the community code drops the
    stems dim when there is one stem and, for BS-RoFormer, may return fewer samples when the
    length is not a multiple of the hop).
    """

    #: the separator contract's input domain: these models take waveforms
    #: (:class:`torchbss.inference.WaveformSeparator` calls them directly)
    input_domain = "waveform"
    stft_window: torch.Tensor
    final_norm: RMSNorm | None

    def num_sources(self, n_channels: int) -> int:
        """Number of stems the model returns (whatever the channels)."""
        return self.num_stems

    def _build(
        self,
        *,
        dim: int,
        depth: int,
        stereo: bool,
        num_stems: int,
        time_transformer_depth: int,
        freq_transformer_depth: int,
        linear_transformer_depth: int,
        dim_head: int,
        heads: int,
        attn_dropout: float,
        ff_dropout: float,
        stft_n_fft: int,
        stft_hop_length: int,
        stft_win_length: int,
        stft_normalized: bool,
        stft_window_fn: Callable[[int], torch.Tensor] | None,
        band_inputs: Sequence[int],
        mask_hidden_layers: int,
        mlp_expansion_factor: int,
        norm_output: bool,
        final_norm: bool,
        use_torch_checkpoint: bool,
        skip_connection: bool,
        norm_eps: float,
    ) -> None:
        _check_common_options(dim, depth, heads, dim_head, stft_n_fft, stft_hop_length)
        if isinstance(num_stems, bool) or not isinstance(num_stems, int) or num_stems < 1:
            raise ValueError(f"num_stems must be a positive integer, got {num_stems!r}")
        if stft_win_length > stft_n_fft:
            raise ValueError(
                f"stft_win_length={stft_win_length} must be <= stft_n_fft={stft_n_fft}"
            )
        self.stereo = bool(stereo)
        self.audio_channels = 2 if stereo else 1
        self.num_stems = num_stems
        self.n_fft = stft_n_fft
        self.hop_length = stft_hop_length
        self.win_length = stft_win_length
        self.stft_normalized = bool(stft_normalized)
        self.use_torch_checkpoint = bool(use_torch_checkpoint)
        self.skip_connection = bool(skip_connection)
        # widest per-token intermediate of a transformer layer (qkv or feed-forward hidden)
        self._widest = max(3 * heads * dim_head, 4 * dim)
        self.cpu_block_bytes: int | None = CPU_BLOCK_BYTES
        window = (stft_window_fn or torch.hann_window)(stft_win_length)
        self.register_buffer("stft_window", window.float(), persistent=False)

        common = dict(
            dim=dim,
            heads=heads,
            dim_head=dim_head,
            attn_dropout=attn_dropout,
            ff_dropout=ff_dropout,
            norm_output=norm_output,
            norm_eps=norm_eps,
        )
        time_rotary = RotaryEmbedding(dim_head)
        freq_rotary = RotaryEmbedding(dim_head)
        self.layers = nn.ModuleList()
        for _ in range(depth):
            block = []
            if linear_transformer_depth > 0:
                block.append(
                    Transformer(depth=linear_transformer_depth, linear_attn=True, **common)
                )
            block.append(
                Transformer(depth=time_transformer_depth, rotary_embed=time_rotary, **common)
            )
            block.append(
                Transformer(depth=freq_transformer_depth, rotary_embed=freq_rotary, **common)
            )
            self.layers.append(nn.ModuleList(block))
        self.final_norm = RMSNorm(dim, norm_eps) if final_norm else None
        self.band_split = BandSplit(dim, band_inputs, norm_eps)
        self.mask_estimators = nn.ModuleList(
            MaskEstimator(dim, band_inputs, mask_hidden_layers, mlp_expansion_factor)
            for _ in range(num_stems)
        )

    # -- subclass hooks -------------------------------------------------------------------
    def _select_bins(self, spec: torch.Tensor) -> torch.Tensor:
        """``(b, (f s), t, c)`` STFT -> ``(b, t, band_features)`` band-split input."""
        raise NotImplementedError

    def _merge_masks(self, masks: torch.Tensor) -> torch.Tensor:
        """``(b, n, band_bins, t)`` complex band masks -> ``(b, n, (f s), t)`` bin masks."""
        raise NotImplementedError

    # -- pipeline -------------------------------------------------------------------------
    @property
    def min_samples(self) -> int:
        """Shortest input the model accepts (reflect padding needs ``> n_fft // 2`` samples)."""
        return self.n_fft // 2 + 1

    def _check_input(self, audio: object) -> torch.Tensor:
        if not isinstance(audio, torch.Tensor):
            raise TypeError(
                "audio must be a torch.Tensor (batch, channels, samples), got "
                f"{type(audio).__name__}"
            )
        if audio.ndim != 3:
            raise ValueError(
                f"audio must be (batch, channels, samples) = (b, {self.audio_channels}, n), "
                f"got shape {tuple(audio.shape)}"
            )
        if audio.is_complex() or not audio.is_floating_point():
            raise TypeError(f"audio must be a real floating point tensor, got {audio.dtype}")
        channels = audio.shape[1]
        if channels != self.audio_channels:
            kind = "stereo" if self.stereo else "mono"
            hint = (
                "; for a mono signal repeat it on both channels, e.g. audio.expand(-1, 2, -1)"
                if self.stereo and channels == 1
                else "; downmix with audio.mean(1, keepdim=True)"
                if not self.stereo
                else ""
            )
            raise ValueError(
                f"this model is {kind} and expects {self.audio_channels} channel(s), got "
                f"{channels} (audio of shape {tuple(audio.shape)}){hint}"
            )
        if audio.shape[-1] < self.min_samples:
            raise ValueError(
                f"audio has {audio.shape[-1]} samples, shorter than the model's STFT needs "
                f"(at least n_fft // 2 + 1 = {self.min_samples} samples for n_fft={self.n_fft})"
            )
        return audio

    def _checkpointed(self, fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor):
        if self.use_torch_checkpoint and torch.is_grad_enabled():
            return checkpoint(fn, x, use_reentrant=False)
        return fn(x)

    def _stft(self, audio: torch.Tensor) -> torch.Tensor:
        """``(b, s, samples)`` -> real view ``(b, (f s), t, c)`` of the centred, reflect-padded
        STFT (``torch.stft`` defaults, as the community models use)."""
        b = audio.shape[0]
        spec = torch.stft(
            audio.reshape(-1, audio.shape[-1]),
            n_fft=self.n_fft,
            hop_length=self.hop_length,
            win_length=self.win_length,
            window=self.stft_window.to(audio.dtype),
            normalized=self.stft_normalized,
            center=True,
            pad_mode="reflect",
            return_complex=True,
        )
        spec = torch.view_as_real(spec)  # ((b s), f, t, c)
        return rearrange(spec, "(b s) f t c -> b (f s) t c", b=b)

    def _istft(self, spec: torch.Tensor, channels: int, length: int) -> torch.Tensor:
        """``(b, n, (f s), t)`` complex -> ``(b, n, s, length)`` waveforms."""
        b, n = spec.shape[:2]
        frames = rearrange(spec, "b n (f s) t -> (b n s) f t", s=channels)
        audio = torch.istft(
            frames,
            n_fft=self.n_fft,
            hop_length=self.hop_length,
            win_length=self.win_length,
            window=self.stft_window.to(frames.real.dtype),
            normalized=self.stft_normalized,
            center=True,
            length=length,
        )
        return rearrange(audio, "(b n s) t -> b n s t", b=b, n=n)

    def _transform(self, transformer: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """Run ``transformer`` on ``(sequences, length, d)``; on CPU, in groups of sequences
        whose largest intermediate tensor stays below ``cpu_block_bytes`` (same result, but
        the intermediates stay in cache and in the allocator's heap instead of being mapped
        and unmapped, with page faults, at every call)."""
        if self.cpu_block_bytes is None or x.device.type != "cpu":
            return self._checkpointed(transformer, x)
        per_sequence = x.shape[1] * self._widest * x.element_size()
        group = max(1, self.cpu_block_bytes // per_sequence)
        if group >= x.shape[0]:
            return self._checkpointed(transformer, x)
        return torch.cat([self._checkpointed(transformer, part) for part in x.split(group)])

    def _axial(self, x: torch.Tensor) -> torch.Tensor:
        """The ``depth`` axial blocks on ``(b, t, bands, d)`` features."""
        b, t = x.shape[:2]
        previous: list[torch.Tensor] = []
        for block in self.layers:
            if len(block) == 3:
                linear, time_transformer, freq_transformer = block
                shape = x.shape
                x = self._transform(linear, x.reshape(b, -1, shape[-1])).reshape(shape)
            else:
                time_transformer, freq_transformer = block
            if self.skip_connection:  # adds every earlier block's output (MSST semantics)
                for earlier in previous:
                    x = x + earlier
            x = rearrange(x, "b t f d -> (b f) t d")
            x = self._transform(time_transformer, x)
            x = rearrange(x, "(b f) t d -> (b t) f d", b=b)
            x = self._transform(freq_transformer, x)
            x = rearrange(x, "(b t) f d -> b t f d", b=b, t=t)
            if self.skip_connection:
                previous.append(x)
        return x

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        """Separate a batch of waveforms.

        Args:
            audio: ``(batch, channels, samples)`` with ``channels`` 2 for a stereo model and 1
                for a mono one, and ``samples >= n_fft // 2 + 1``.

        Returns:
            ``(batch, stems, channels, samples)`` separated waveforms, float32 (float64 for a
            float64 model and input).
        """
        audio = self._check_input(audio)
        if audio.dtype in (torch.float16, torch.bfloat16):
            audio = audio.float()  # the STFT runs in float32 at least
        channels, length = audio.shape[1], audio.shape[-1]
        spec = self._stft(audio)  # (b, (f s), t, c)
        x = self._select_bins(spec)  # (b, t, band_features)
        if not torch.is_autocast_enabled(x.device.type):
            x = x.to(self.band_split.to_features[0][1].weight.dtype)
        x = self._checkpointed(self.band_split, x)  # (b, t, bands, d)
        x = self._axial(x)
        if self.final_norm is not None:
            x = self.final_norm(x)
        masks = torch.stack([self._checkpointed(est, x) for est in self.mask_estimators], dim=1)
        masks = rearrange(masks.to(spec.dtype), "b n t (f c) -> b n f t c", c=2)
        masks = self._merge_masks(torch.view_as_complex(masks.contiguous()))  # (b, n, (f s), t)
        separated = torch.view_as_complex(spec.contiguous()).unsqueeze(1) * masks
        return self._istft(separated, channels, length)
