"""Opt-in ``torch.compile`` of pure kernels, shared by the modules with a ``compile`` flag
(online AuxIVA / ILRMA, the NMF source model)."""

from __future__ import annotations

from collections.abc import Callable

import torch

__all__ = ["CompiledKernels"]


class CompiledKernels:
    """Mixin: :meth:`kernel` gives a pure function itself, or with ``self.compile`` its
    ``torch.compile`` (``fullgraph=True``), cached per instance and left out of pickles and
    deep copies (recompiled on first use)."""

    compile: bool

    def kernel(self, fn: Callable) -> Callable:
        """``fn``, or its cached compiled version when ``self.compile``.

        ``dynamic=None``: a second input shape recompiles with symbolic sizes, so a process that
        serves several shapes stays within dynamo's recompile limit.
        """
        if not self.compile:
            return fn
        kernels = self.__dict__.setdefault("_kernels", {})
        if fn.__name__ not in kernels:
            kernels[fn.__name__] = torch.compile(fn, fullgraph=True)
        return kernels[fn.__name__]

    def __getstate__(self) -> dict:
        """The instance's state without the compiled kernels."""
        state = dict(self.__dict__)
        state["_kernels"] = {}
        return state
