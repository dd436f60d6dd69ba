"""Online IS-NMF of one channel with ratio-mask separation.

References:
    A. Lefevre, F. Bach and C. Fevotte, "Online algorithms for nonnegative matrix factorization
    with the Itakura-Saito divergence", WASPAA 2011.
"""

from __future__ import annotations

import math

import torch
from einops import einsum
from torch import nn

from torchbss._validation import check_bool, check_positive_int, check_range, check_tensor
from torchbss.separators.base import SeparationResult
from torchbss.separators.online.base import OnlineSeparator, State, config_repr, inverse_softplus
from torchbss.separators.online.ilrma import decayed, minibatch_due, update_bases_where
from torchbss.source_models.nmf import nmf_activation_update, nmf_basis_statistics

__all__ = ["OnlineISNMF"]


class OnlineISNMF(OnlineSeparator):
    """Online IS-NMF of one channel (Lefevre, Bach & Fevotte 2011) with ratio-mask separation.

    Per frame ``x_t``: ``p = |x_t|^2``; ``inner_iter`` multiplicative updates of the frame's
    activations ``h`` with the bases fixed (exponent ``exponent``; 1 as Lefevre et al., 1/2 the
    MM step); decayed basis statistics; every ``minibatch`` frames the bases become
    ``sqrt(A / B)`` (the same functions as online and batch ILRMA,
    :mod:`torchbss.source_models.nmf`). The ``n_basis`` components are assigned to ``n_src``
    sources by a (soft) assignment matrix ``G`` ``(n_src, n_basis)`` (columns sum to one); the
    sources are Wiener-like masks ``m_s = sum_c G_sc T_c h_c / sum_c T_c h_c`` applied to
    ``x_t``. The result carries the masks (``result.masks``).

    Args:
        n_freq: number of frequency bins.
        n_src: number of sources.
        n_basis: number of NMF components (default assignment: split evenly and contiguously).
        forget: forgetting factor of the statistics in ``(0, 1]``.
        minibatch: update the bases every ``minibatch`` frames.
        inner_iter: activation updates per frame.
        assignment: optional ``(n_src, n_basis)`` nonnegative assignment (nested lists or a
            tensor; normalised per column).
        learn_assignment: learn the assignment as ``softmax`` over sources of a logit parameter
            (initialised from ``assignment`` / the even split, scaled by ``assignment_temp``).
        assignment_temp: logit scale of the learned assignment initialisation.
        exponent: exponent of the activation updates in ``(0, 1]``.
        eps: floor of variances, activations and bases.
        seed: seed of the initial bases.
        trainable: learn the forgetting factor and the initial bases.
        forget_per_freq, tbptt, checkpoint, checkpoint_block: see
            :class:`~torchbss.separators.OnlineAuxIVA`.

    Shapes:
        ``X``: ``(..., freq, frames)`` (or ``(..., 1, freq, frames)``) complex ->
        ``sources`` and ``masks``: ``(..., n_src, freq, frames)``.
    """

    block_ndim = 2

    def __init__(
        self,
        n_freq: int,
        n_src: int = 2,
        n_basis: int = 10,
        forget: float = 0.99,
        minibatch: int = 2,
        inner_iter: int = 2,
        assignment: list | torch.Tensor | None = None,
        learn_assignment: bool = False,
        assignment_temp: float = 5.0,
        exponent: float = 1.0,
        eps: float = 1e-10,
        seed: int = 0,
        trainable: bool = False,
        forget_per_freq: bool = False,
        tbptt: int | None = None,
        checkpoint: bool = False,
        checkpoint_block: int = 32,
    ) -> None:
        check_positive_int(n_freq, "n_freq")
        super().__init__(
            forget, eps, trainable, forget_per_freq, n_freq, tbptt, checkpoint, checkpoint_block
        )
        self.n_src = check_positive_int(n_src, "n_src")
        self.n_basis = check_positive_int(n_basis, "n_basis")
        self.minibatch = check_positive_int(minibatch, "minibatch")
        self.inner_iter = check_positive_int(inner_iter, "inner_iter")
        self.exponent = check_range(exponent, "exponent", 0.0, 1.0, low_inclusive=False,
                                    high_inclusive=True)  # fmt: skip
        check_range(assignment_temp, "assignment_temp", 0.0, math.inf, low_inclusive=False)
        if n_basis < n_src and assignment is None:
            raise ValueError(f"n_basis={n_basis} must be >= n_src={n_src} to split the components")
        if assignment is None:
            owner = torch.arange(n_basis) * n_src // n_basis
            assignment = nn.functional.one_hot(owner, n_src).T.to(torch.float64)
        else:
            if not isinstance(assignment, torch.Tensor):
                assignment = torch.tensor(assignment, dtype=torch.float64)
            assignment = check_tensor(assignment, "assignment", min_ndim=2).to(torch.float64)
            if tuple(assignment.shape) != (n_src, n_basis) or bool((assignment < 0).any()):
                raise ValueError(
                    f"assignment must be a nonnegative (n_src, n_basis) = ({n_src}, {n_basis}) "
                    f"matrix, got shape {tuple(assignment.shape)}"
                )
            assignment = assignment / assignment.sum(0, keepdim=True).clamp_min(1e-12)
        self.learn_assignment = check_bool(learn_assignment, "learn_assignment")
        if learn_assignment:
            self.assignment_logits = nn.Parameter((assignment_temp * assignment).float())
        else:
            self.register_buffer("assignment", assignment.float())
        self.seed = check_positive_int(seed, "seed", minimum=0)
        gen = torch.Generator().manual_seed(seed)
        basis = 0.1 + 0.9 * torch.rand(n_freq, n_basis, generator=gen, dtype=torch.float64)
        self.register_trainable("basis_raw", inverse_softplus(basis))

    def parameters_for(self, rdtype):
        params = super().parameters_for(rdtype)
        if self.learn_assignment:
            params["assignment"] = torch.softmax(self.assignment_logits.to(rdtype), dim=0)
        else:
            params["assignment"] = self.assignment.to(rdtype)
        return params

    def prepare_block(self, X):
        X = super().prepare_block(X)
        if X.ndim >= 3 and X.shape[-3] == 1:
            X = X[..., 0, :, :]
        return X

    def state_block_shape(self, state: State) -> tuple[int, ...] | None:
        T = state.get("basis")
        if not isinstance(T, torch.Tensor) or T.ndim < 2:
            return None
        return tuple(T.shape[:-1])

    def num_sources(self, n_channels: int) -> int:
        return self.n_src

    def init_state(self, X: torch.Tensor, frame_mask: torch.Tensor | None = None) -> State:
        """Initial state for single-channel streams shaped like ``X``.

        Args:
            X: ``(..., freq, frames)`` or ``(..., 1, freq, frames)`` complex (only the shape,
                dtype and device are read).

        Returns:
            dict with ``basis`` ``(..., freq, n_basis)``, ``activation`` ``(..., n_basis)``,
            ``stat_num``, ``stat_den`` ``(..., freq, n_basis)`` and ``frame`` ``(...,)``.
        """
        X = self.prepare_block(X)
        if X.shape[-2] != self.n_freq:
            raise ValueError(
                f"X has {X.shape[-2]} frequency bins but the model was built with "
                f"n_freq={self.n_freq}"
            )
        batch, rdtype, dev = X.shape[:-2], X.real.dtype, X.device
        shape = batch + (self.n_freq, self.n_basis)
        basis = nn.functional.softplus(self.basis_raw.to(device=dev, dtype=rdtype))
        return {
            "basis": basis.expand(shape),
            "activation": torch.ones(batch + (self.n_basis,), dtype=rdtype, device=dev),
            "stat_num": torch.zeros(shape, dtype=rdtype, device=dev),
            "stat_den": torch.zeros(shape, dtype=rdtype, device=dev),
            "frame": torch.zeros(batch, dtype=torch.int64, device=dev),
        }

    def frame(self, x, state, params, beta, count):
        T, h = state["basis"], state["activation"].unsqueeze(-1)  # (..., F, B), (..., B, 1)
        p = (x.real.square() + x.imag.square()).unsqueeze(-1)  # (..., F, 1)
        for _ in range(self.inner_iter):
            h = nmf_activation_update(p, T, h, self.exponent, self.eps)
        r = (T @ h).clamp_min(self.eps)[..., 0]  # (..., F)
        num, den = nmf_basis_statistics(p, T, h, self.eps)
        num = decayed(state["stat_num"], num, params["forget"])
        den = decayed(state["stat_den"], den, params["forget"])
        components = T * h[..., 0].unsqueeze(-2)  # (..., F, B)
        source_power = einsum(params["assignment"], components, "s b, ... f b -> ... s f")
        masks = source_power / r.unsqueeze(-2)
        T = update_bases_where(T, num, den, minibatch_due(state, count, self.minibatch), self.eps)
        out = torch.stack([masks * x.unsqueeze(-2), masks.to(x.dtype)], dim=-3)  # (..., 2, S, F)
        new = {"basis": T, "activation": h[..., 0], "stat_num": num, "stat_den": den}
        return out, new

    def make_result(self, out: torch.Tensor, state: State) -> SeparationResult:
        masks = out[..., 1, :, :, :].real
        return SeparationResult(sources=self.block_sources(out), state=state, masks=masks)

    def block_sources(self, out: torch.Tensor) -> torch.Tensor:
        return out[..., 0, :, :, :]  # (the masks are out[..., 1, :, :, :])

    def extra_repr(self) -> str:
        return config_repr(n_freq=self.n_freq, n_src=self.n_src, n_basis=self.n_basis)
