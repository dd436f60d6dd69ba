"""Methods of the benchmark engine: recipe names -> separator classes.

A recipe's ``methods`` node maps a label to a method and its arguments::

    methods:
      auxiva_ip2_laplace:
        method: auxiva                      # a name of METHODS
        params: {update: ip2, source_model: laplace, n_iter: 50}
        grid: {n_iter: [20, 50]}            # optional: every combination is a variant
      my_model:
        separator: {_target_: my_package.MySeparator, depth: 4}   # any class of the contract

Only the arguments written in the recipe are passed; everything else keeps the class's own
default. Two arguments are filled in when the class needs them and the recipe does not set
them: ``n_freq`` (from the STFT; online ILRMA / IS-NMF) and ``n_src`` (the number of references
of the example, so that an overdetermined mixture gives as many estimates as references).
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from torch import nn

__all__ = [
    "Method",
    "METHODS",
    "register_method",
    "known_methods",
    "method_target",
    "build_separator",
]


@dataclass(frozen=True)
class Method:
    """A registered method.

    Attributes:
        target: import path of the separator class.
        mono: the separator takes one channel (the reference mic), e.g. online IS-NMF.
    """

    target: str
    mono: bool = False


#: ``method:`` names of a recipe and the classes they build.
METHODS: dict[str, Method] = {
    "auxiva": Method("torchbss.separators.AuxIVA"),
    "ilrma": Method("torchbss.separators.ILRMA"),
    "online_auxiva": Method("torchbss.separators.OnlineAuxIVA"),
    "online_ilrma": Method("torchbss.separators.OnlineILRMA"),
    "online_isnmf": Method("torchbss.separators.OnlineISNMF", mono=True),
}


def register_method(name: str, target: str, *, mono: bool = False) -> None:
    """Make ``method: name`` in a recipe build the class at import path ``target``."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"a method name must be a non-empty string, got {name!r}")
    if not isinstance(target, str) or "." not in target:
        raise ValueError(f"target must be an import path 'package.module.Class', got {target!r}")
    METHODS[name] = Method(target, mono)


def known_methods() -> list[str]:
    """The registered method names, sorted."""
    return sorted(METHODS)


def method_target(name: str, label: str) -> Method:
    """The registered method ``name`` (``-`` and ``_`` are the same), or a clear error."""
    key = str(name).replace("-", "_")
    if key not in METHODS:
        raise ValueError(
            f"methods.{label}: unknown method {name!r}; known methods: "
            f"{', '.join(known_methods())} (or give a `separator:` node with a _target_ "
            "instead of `method:`)"
        )
    return METHODS[key]


def _resolve_class(target: str) -> type:
    module_name, _, attr = target.rpartition(".")
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError, ValueError) as err:
        raise ValueError(f"cannot import separator class {target!r}: {err}") from None


def _required(cls: type) -> set[str]:
    params = inspect.signature(cls.__init__).parameters
    return {n for n, p in params.items() if p.default is inspect.Parameter.empty and n != "self"
            and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}  # fmt: skip


def _accepts(cls: type, name: str) -> bool:
    params = inspect.signature(cls.__init__).parameters
    return name in params or any(p.kind == p.VAR_KEYWORD for p in params.values())


def build_separator(node: Mapping[str, Any], *, n_fft: int, n_src: int | None = None) -> nn.Module:
    """Build a separator from its ``_target_`` node, filling ``n_freq`` / ``n_src`` as needed.

    Args:
        node: ``{"_target_": "...", **arguments}`` (nested ``_target_`` nodes are built too).
        n_fft: FFT size of the benchmark's STFT (``n_freq = n_fft // 2 + 1``).
        n_src: number of sources of the example, passed when the class takes ``n_src`` and the
            node does not set it (``None``: never).

    Returns:
        The module.

    Raises:
        ValueError: a class that cannot be imported, or arguments the class refuses.
    """
    node = dict(node)
    cls = _resolve_class(node.pop("_target_"))
    if "n_freq" not in node and "n_freq" in _required(cls):
        node["n_freq"] = n_fft // 2 + 1
    if n_src is not None and node.get("n_src") is None and _accepts(cls, "n_src"):
        node["n_src"] = n_src
    args = {k: _instantiate(v) for k, v in node.items()}
    try:
        module = cls(**args)
    except TypeError as err:
        raise ValueError(f"{cls.__name__}: {err}") from None
    if not isinstance(module, nn.Module):
        raise ValueError(f"{cls.__name__} is not an nn.Module separator")
    return module


def _instantiate(value: Any) -> Any:
    if isinstance(value, Mapping):
        if "_target_" in value:
            inner = dict(value)
            cls = _resolve_class(inner.pop("_target_"))
            return cls(**{k: _instantiate(v) for k, v in inner.items()})
        return {k: _instantiate(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_instantiate(v) for v in value]
    return value
