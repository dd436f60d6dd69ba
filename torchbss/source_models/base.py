"""The source-model interface shared by AuxIVA, ILRMA and user (e.g. neural) source models.

A source model maps the current source estimates ``Y`` to the weights ``phi`` of the auxiliary
function used by the spatial updates (IP1/IP2/ISS), and gives the source part of the cost
(negative log-likelihood). Any ``nn.Module`` implementing this interface can be passed to a
separator as ``source_model=``:

* ``init_state(Y, frame_mask=None, generator=None) -> state``: initial explicit state
  (``None`` for stateless models; an :class:`~torchbss.source_models.nmf.NMFState` for NMF).
* ``forward(Y, state=None, frame_mask=None) -> (weights, state)``: ``weights`` real, positive,
  ``(..., sources, freq, frames)`` (broadcastable over ``freq``); the returned state is used on
  the next iteration. Gradients flow through it, so a trainable model (for instance a small
  network on ``|Y|``) learns through the unrolled separator.
* ``cost(Y, state=None, frame_mask=None) -> (...)``: source term of the cost, summed over
  sources and frequencies and averaged over (valid) frames. The default is the Gaussian
  negative log-likelihood with variance ``1 / phi``: ``sum_{k,f} mean_t (phi |y|^2 - log phi)``.
* ``rescale(state, scale) -> state``: called when the separator rescales the amplitude of each
  source by ``scale`` ``(..., sources)`` (ILRMA normalisation); variances scale by ``scale**2``.

State is never stored on ``self``: it is returned and passed back in, so separators stay
batchable, checkpointable and compilable.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

__all__ = ["SourceModel", "masked_frame_mean", "power"]


def power(Y: torch.Tensor) -> torch.Tensor:
    """``|Y|^2`` as a real tensor (cheaper and better behaved under autograd than ``abs()**2``)."""
    re, im = Y.real, Y.imag
    return (re * re).addcmul_(im, im)


def masked_frame_mean(x: torch.Tensor, frame_mask: torch.Tensor | None) -> torch.Tensor:
    """Mean over the last (frames) axis, counting only valid frames.

    Args:
        x: ``(..., frames)`` real.
        frame_mask: optional ``(batch..., frames)`` {0, 1} mask broadcastable to ``x`` after
            inserting the missing middle axes; ``None`` averages over all frames.

    Returns:
        ``x`` averaged over its last axis, shape ``x.shape[:-1]``.
    """
    if frame_mask is None:
        return x.mean(-1)
    m = frame_mask.to(x.dtype)
    m = m.reshape(m.shape[:-1] + (1,) * (x.ndim - m.ndim) + m.shape[-1:])
    return (x * m).sum(-1) / m.sum(-1).clamp_min(1.0)


class SourceModel(nn.Module):
    """Base class of the source models: estimates ``Y`` -> auxiliary weights ``phi``.

    Subclasses implement :meth:`forward`; :meth:`init_state`, :meth:`cost` and :meth:`rescale`
    have sensible defaults (stateless model, Gaussian cost with variance ``1/phi``, scale-free
    state). See the module docstring for the full contract.
    """

    def init_state(
        self,
        Y: torch.Tensor,
        frame_mask: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> Any:
        """Initial state for estimates ``Y`` ``(..., sources, freq, frames)`` (default ``None``)."""
        return None

    def forward(
        self, Y: torch.Tensor, state: Any = None, frame_mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, Any]:
        """Weights ``(..., sources, freq, frames)`` and the new state."""
        raise NotImplementedError

    def cost(
        self, Y: torch.Tensor, state: Any = None, frame_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Source term of the cost, ``(...)``; default: Gaussian NLL with variance ``1/phi``."""
        weights, _ = self.forward(Y, state, frame_mask)
        weights = weights.expand(Y.shape)
        nll = weights * power(Y) - torch.log(weights)
        return masked_frame_mean(nll.sum(-2), frame_mask).sum(-1)

    def rescale(self, state: Any, scale: torch.Tensor) -> Any:
        """State after each source's amplitude is multiplied by ``scale`` ``(..., sources)``."""
        return state
