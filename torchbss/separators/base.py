"""The separator contract shared by every separator: batch, online and neural.

Every separator is an ``nn.Module`` with the same three methods and the same result type::

    sep = AuxIVA()                       # or ILRMA(), OnlineILRMA(n_freq=1025), MaskNet(...)
    res = sep(X)                         # SeparationResult: res.sources, res.state, ...
    state = sep.init_state(X)            # explicit state (None for stateless models)
    res = sep.step(X_block, state)       # one unit of work from a state; res.state continues it
    res = sep(X, state=res.state)        # forward(X, state=None) = init_state + the whole run

* ``forward(X, state=None, *, frame_mask=None, callback=None) -> SeparationResult``: separate
  ``X``, continuing from ``state`` when given.
* ``init_state(X, frame_mask=None)``: the starting state for input shaped like ``X``.
* ``step(X, state, frame_mask=None) -> SeparationResult``: one unit of work. Batch separators:
  one iteration on the whole signal; online separators: the frames of the block ``X``
  (feeding blocks one after the other gives exactly the whole-signal result); stateless
  models: the same as ``forward``.
* intermediate results: ``callback(index, result)`` is called after every iteration (batch) or
  every ``step`` (online, neural) with a :class:`SeparationResult` of that moment.

What a separator takes (``input_domain``): ``"stft"`` (``(..., mics, freq, frames)`` complex)
or ``"waveform"`` (``(..., mics, samples)`` real). :class:`torchbss.inference.WaveformSeparator`
adapts either to waveforms in and out.

Constructors take plain, config-friendly arguments (numbers, strings, nested modules) and
reject unknown ones, so that every separator can be built directly or by
``hydra.utils.instantiate`` from a ``_target_`` config. Defaults live in the classes only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

__all__ = ["SeparationResult", "Separator", "Callback"]


@dataclass
class SeparationResult:
    """What every separator returns.

    Attributes:
        sources: ``(..., sources, freq, frames)`` complex separated STFT (scaled), or
            ``(..., sources, samples)`` for waveform models.
        state: the state to continue from (pass it back as ``state=``); ``None`` when the
            separator is stateless.
        demixing: ``(..., freq, mics, mics)`` demixing matrices for the original mixture
            (before scaling; their first ``sources`` rows give the unscaled sources), where the
            separator has them.
        cost: ``(..., n_iter + 1)`` negative log-likelihood per frame before the first and
            after every iteration (batch separators with ``track_cost=True``; detached).
        masks: ``(..., sources, freq, frames)`` real masks of mask-based separators.
    """

    sources: torch.Tensor
    state: Any = None
    demixing: torch.Tensor | None = None
    cost: torch.Tensor | None = None
    masks: torch.Tensor | None = None


#: ``callback(index, result)``: called with the result after iteration / step ``index``
Callback = Callable[[int, SeparationResult], None]


class Separator(nn.Module):
    """Base class of every separator (see the module docstring for the contract)."""

    #: what ``forward`` takes: ``"stft"`` or ``"waveform"``
    input_domain: ClassVar[str] = "stft"

    def init_state(self, X: torch.Tensor, frame_mask: torch.Tensor | None = None) -> Any:
        """Starting state for input shaped like ``X`` (default: stateless, ``None``)."""
        return None

    def step(
        self, X: torch.Tensor, state: Any, frame_mask: torch.Tensor | None = None
    ) -> SeparationResult:
        """One unit of work from ``state`` (default: the whole ``forward``)."""
        return self.forward(X, state, frame_mask=frame_mask)

    def forward(
        self,
        X: torch.Tensor,
        state: Any = None,
        *,
        frame_mask: torch.Tensor | None = None,
        callback: Callback | None = None,
    ) -> SeparationResult:
        raise NotImplementedError

    def num_sources(self, n_channels: int) -> int:
        """How many sources this separator returns for an input with ``n_channels`` mics."""
        n_src = getattr(self, "n_src", None)
        return n_channels if n_src is None else int(n_src)
