"""A compact neural mask separator for multichannel (or single-channel) STFT mixtures.

Features per frame: the log power of every mic and, with more than one mic, the cosine and
sine of each mic's phase difference to the reference mic (the spatial cue BSS exploits), for
every frequency bin. A stack of bidirectional LSTM layers over frames maps them to one mask
per source and bin; the masks are a softmax over the sources (they sum to one) and multiply
the reference mic: ``sources = masks * X[ref_mic]``. A causal variant (``bidirectional=False``)
runs frame by frame in principle; here it is applied to whole signals.

This is the "neural mask model" of the separator contract: ``MaskNet(...)(X)`` returns a
:class:`~torchbss.separators.SeparationResult` with ``sources`` and ``masks``, so it drops into
the waveform wrapper, the Lightning module and the CLI like any separator.

Reference:
    Z.-Q. Wang and D. Wang, "Combining spectral and spatial features for deep learning based
    blind speaker separation", IEEE/ACM TASLP 27(2), 2019 (log-power and inter-channel phase
    features for mask estimation).
"""

from __future__ import annotations

import torch
from einops import rearrange
from torch import nn

from torchbss._validation import check_complex, check_positive_int, check_tensor
from torchbss.separators.base import Callback, SeparationResult, Separator

__all__ = ["MaskNet"]


class MaskNet(Separator):
    """BLSTM mask estimator on log-power and inter-channel phase features.

    Args:
        n_freq: frequency bins of the STFT.
        n_mics: microphones of the input (``1`` for single-channel).
        n_src: number of sources (masks).
        hidden: LSTM units per direction.
        n_layers: LSTM layers.
        bidirectional: bidirectional (offline) or forward-only (causal) LSTM.
        ref_mic: the mic the masks are applied to.
        eps: floor inside the log power.

    Shapes:
        ``X``: ``(..., n_mics, n_freq, frames)`` complex -> ``sources``, ``masks``:
        ``(..., n_src, n_freq, frames)``.
    """

    def __init__(
        self,
        n_freq: int,
        n_mics: int = 2,
        n_src: int = 2,
        hidden: int = 128,
        n_layers: int = 2,
        bidirectional: bool = True,
        ref_mic: int = 0,
        eps: float = 1e-8,
    ) -> None:
        super().__init__()
        self.n_freq = check_positive_int(n_freq, "n_freq")
        self.n_mics = check_positive_int(n_mics, "n_mics")
        self.n_src = check_positive_int(n_src, "n_src")
        self.ref_mic = check_positive_int(ref_mic, "ref_mic", minimum=0)
        if ref_mic >= n_mics:
            raise ValueError(f"ref_mic={ref_mic} must be < n_mics={n_mics}")
        self.eps = float(eps)
        n_features = n_freq * (n_mics + 2 * (n_mics - 1))
        self.norm = nn.LayerNorm(n_features)
        self.rnn = nn.LSTM(
            n_features, hidden, num_layers=n_layers, batch_first=True,
            bidirectional=bidirectional,
        )  # fmt: skip
        self.head = nn.Linear(hidden * (2 if bidirectional else 1), n_src * n_freq)

    def features(self, X: torch.Tensor) -> torch.Tensor:
        """``(b, mics, freq, frames)`` -> ``(b, frames, features)``, real."""
        logp = torch.log(X.real.square() + X.imag.square() + self.eps)  # (b, m, f, t)
        parts = [logp]
        if self.n_mics > 1:
            ref = X[:, self.ref_mic : self.ref_mic + 1]
            others = torch.cat([X[:, : self.ref_mic], X[:, self.ref_mic + 1 :]], 1)
            cross = others * ref.conj()
            unit = cross / (cross.abs() + self.eps)
            parts += [unit.real, unit.imag]
        return rearrange(torch.cat(parts, 1), "b c f t -> b t (c f)")

    def forward(
        self,
        X: torch.Tensor,
        state: object = None,
        *,
        frame_mask: torch.Tensor | None = None,
        callback: Callback | None = None,
    ) -> SeparationResult:
        """Masks and masked sources for ``X`` ``(..., mics, freq, frames)``."""
        layout = "(..., mics, freq, frames)"
        check_tensor(X, "X", min_ndim=3, layout=layout)
        check_complex(X, "X")
        if X.shape[-3] != self.n_mics or X.shape[-2] != self.n_freq:
            raise ValueError(
                f"MaskNet was built for {self.n_mics} mics and {self.n_freq} bins {layout}, "
                f"got X of shape {tuple(X.shape)}"
            )
        lead = X.shape[:-3]
        Xb = X.reshape(-1, *X.shape[-3:])
        dtype = self.head.weight.dtype
        h, _ = self.rnn(self.norm(self.features(Xb).to(dtype)))
        logits = rearrange(self.head(h), "b t (k f) -> b k f t", k=self.n_src)
        masks = torch.softmax(logits.to(X.real.dtype), dim=1)  # (b, k, f, t)
        sources = masks * Xb[:, self.ref_mic : self.ref_mic + 1]
        result = SeparationResult(
            sources=sources.reshape(*lead, *sources.shape[1:]),
            masks=masks.reshape(*lead, *masks.shape[1:]),
        )
        if callback is not None:
            callback(0, result)
        return result

    def num_sources(self, n_channels: int) -> int:
        return self.n_src

    def extra_repr(self) -> str:
        return f"n_freq={self.n_freq}, n_mics={self.n_mics}, n_src={self.n_src}"
