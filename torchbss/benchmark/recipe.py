"""Recipes -> tasks: expand methods x parameter grid x examples, and key every task.

A *task* is one separator variant on one example. Its *spec* is the fully resolved config of
that run (plain JSON: the separator's ``_target_`` node with the grid values applied, the data
node, the example name, the STFT, the metric settings, dtype and device) and its *key* is the
first 16 hex digits of the SHA-256 of the spec written as canonical JSON. The key names the
task's files (``tasks/<key>.json``, ``results/<key>.json``, ``audio/<key>/``): the same
config always gives the same key, so a re-run finds what is finished, and changing anything
that changes the numbers (a parameter, the data settings, the STFT, the metric settings) gives
a new task. Settings that do not change the numbers (workers, threads, what is saved) are not
part of the spec. The data's files are not: a folder whose audio was replaced keeps its keys,
so rerun it with ``overwrite=true`` (or into a new ``out_dir``). The selection is: narrowing
``data.items`` or changing ``n_items`` gives new keys, and those tasks run again.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from torchbss._validation import check_bool, check_positive_int, check_range
from torchbss.benchmark.methods import build_separator, method_target
from torchbss.benchmark.sources import build_source, resolve_data_node

__all__ = ["Task", "expand", "task_key", "DTYPES"]

DTYPES = ("float32", "float64")
METRIC_DEFAULTS = {"ref_mic": 0, "filter_length": 512, "framewise": True, "window_s": 1.0,
                   "hop_s": 1.0}  # fmt: skip


@dataclass(frozen=True)
class Task:
    """One run of the benchmark.

    Attributes:
        key: 16 hex digits, the hash of ``spec``.
        spec: the resolved config of the run (plain JSON).
    """

    key: str
    spec: dict[str, Any]

    @property
    def variant(self) -> str:
        return self.spec["variant"]

    @property
    def item(self) -> str:
        return self.spec["item"]


def canonical_json(value: Any) -> str:
    """JSON with sorted keys and no spaces: the text a key is the hash of."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)


def task_key(spec: Mapping[str, Any]) -> str:
    """The key of a task spec: ``sha256(canonical JSON)[:16]``."""
    return hashlib.sha256(canonical_json(spec).encode()).hexdigest()[:16]


def _plain(value: Any, where: str) -> Any:
    from omegaconf import DictConfig, ListConfig, OmegaConf

    if isinstance(value, (DictConfig, ListConfig)):
        value = OmegaConf.to_container(value, resolve=True)
    if isinstance(value, Mapping):
        return {str(k): _plain(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v, where) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise ValueError(f"{where}: only plain values are allowed in a recipe, got {value!r}")


def _format_value(value: Any) -> str:
    return (
        json.dumps(value, separators=(",", ":")) if isinstance(value, (list, dict)) else str(value)
    )


def _grid(grid: Any, label: str) -> list[dict[str, Any]]:
    """The combinations of a ``grid`` node ``{param: [values]}`` (a single value counts as one)."""
    if grid is None:
        return [{}]
    if not isinstance(grid, Mapping):
        raise ValueError(f"methods.{label}.grid must map parameter names to lists of values, "
                         f"got {grid!r}")  # fmt: skip
    names, choices = [], []
    for name, values in grid.items():
        values = values if isinstance(values, list) else [values]
        if not values:
            raise ValueError(
                f"methods.{label}.grid.{name} is an empty list; give at least one value"
            )
        names.append(str(name))
        choices.append(values)
    return [dict(zip(names, combo)) for combo in itertools.product(*choices)]


def _variants(label: str, entry: Any, n_fft: int) -> list[tuple[str, dict[str, Any], bool]]:
    """``(variant label, separator node, mono)`` for every grid point of one method entry."""
    if not isinstance(entry, Mapping):
        raise ValueError(
            f"methods.{label} must be a mapping with `method:` (or `separator:`), `params:` and "
            f"optionally `grid:`, got {entry!r}"
        )
    unknown = sorted(set(entry) - {"method", "separator", "params", "grid"})
    if unknown:
        raise ValueError(
            f"methods.{label} has unknown key(s) {unknown}; expected method (or separator), "
            "params, grid"
        )
    if ("method" in entry) == ("separator" in entry):
        raise ValueError(
            f"methods.{label} needs exactly one of `method:` (a registered name) or "
            "`separator:` (a node with _target_)"
        )
    mono = False
    if "method" in entry:
        method = method_target(entry["method"], label)
        base = {"_target_": method.target}
        mono = method.mono
    else:
        base = dict(entry["separator"] or {})
        if "_target_" not in base:
            raise ValueError(f"methods.{label}.separator needs a _target_ (the class to build)")
    params = entry.get("params") or {}
    if not isinstance(params, Mapping):
        raise ValueError(f"methods.{label}.params must be a mapping, got {params!r}")
    out = []
    for point in _grid(entry.get("grid"), label):
        node = {**base, **params, **point}
        name = label
        if point:
            name += "[" + ",".join(f"{k}={_format_value(v)}" for k, v in point.items()) + "]"
        try:  # build once now, so that a bad argument is reported before any task runs
            build_separator(node, n_fft=n_fft)
        except Exception as err:  # any error of a constructor: named, before anything runs
            raise ValueError(f"methods.{label}: {type(err).__name__}: {err}") from None
        out.append((name, node, mono))
    return out


def _check_settings(stft: dict[str, int], metrics: dict[str, Any], device: str) -> None:
    """The recipe's STFT, metric settings and device, as the tasks would check them."""
    from torchbss.signal.stft import STFT

    try:
        STFT(stft["n_fft"], stft["hop_length"])
    except (TypeError, ValueError) as err:
        raise ValueError(f"stft: {err}") from None
    check_positive_int(metrics["ref_mic"], "metrics.ref_mic", minimum=0)
    check_positive_int(metrics["filter_length"], "metrics.filter_length")
    check_bool(metrics["framewise"], "metrics.framewise")
    for key in ("window_s", "hop_s"):
        check_range(metrics[key], f"metrics.{key}", 0.0, math.inf, low_inclusive=False)
    try:
        dev = torch.device(device)
    except RuntimeError as err:
        raise ValueError(f"unknown device {device!r}: {err}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={device}: this torch build has no usable CUDA device")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device={device}: MPS is not available on this machine")


def expand(recipe: Mapping[str, Any]) -> list[Task]:
    """Every task of a recipe: method variants x examples, in recipe order.

    Args:
        recipe: the composed recipe (``methods``, ``data``, ``stft``, ``metrics``, ``dtype``,
            ``device``; a DictConfig or plain dict).

    Returns:
        The tasks, grouped by variant (methods in recipe order, grid points in order), examples
        in the source's order within each variant.

    Raises:
        ValueError: an empty or malformed recipe, an unknown method (the message lists the
            known ones), an unknown data source, arguments a separator refuses, duplicate
            variant names.
    """
    recipe = _plain(recipe, "recipe")
    name = recipe.get("name", "recipe")
    methods = recipe.get("methods")
    if not isinstance(methods, Mapping) or not methods:
        raise ValueError(f"recipe {name!r}: `methods` must map labels to methods, got {methods!r}")
    stft = recipe.get("stft") or {}
    if not isinstance(stft, Mapping) or set(stft) - {"n_fft", "hop_length", "n_freq"}:
        raise ValueError(f"recipe {name!r}: stft must be {{n_fft, hop_length}}, got {stft!r}")
    if "n_freq" in stft and stft["n_freq"] != stft.get("n_fft", 2048) // 2 + 1:
        raise ValueError(f"recipe {name!r}: stft.n_freq must be n_fft // 2 + 1, got {stft!r}")
    stft = {
        "n_fft": check_positive_int(stft.get("n_fft", 2048), "stft.n_fft"),
        "hop_length": check_positive_int(stft.get("hop_length", 512), "stft.hop_length"),
    }
    metrics = dict(METRIC_DEFAULTS)
    unknown = sorted(set(recipe.get("metrics") or {}) - set(METRIC_DEFAULTS))
    if unknown:
        raise ValueError(
            f"recipe {name!r}: unknown metric setting(s) {unknown}; known: "
            f"{sorted(METRIC_DEFAULTS)}"
        )
    metrics.update(recipe.get("metrics") or {})
    dtype = recipe.get("dtype", "float64")
    if dtype not in DTYPES:
        raise ValueError(f"recipe {name!r}: dtype must be one of {DTYPES}, got {dtype!r}")
    device = str(recipe.get("device", "cpu"))
    try:  # what every task would refuse, refused once before any task runs
        _check_settings(stft, metrics, device)
    except (TypeError, ValueError) as err:
        raise ValueError(f"recipe {name!r}: {err}") from None
    data = resolve_data_node(recipe.get("data"))
    items = build_source(data).items()
    variants = []
    for label, entry in methods.items():
        try:
            variants += _variants(str(label), entry, stft["n_fft"])
        except ValueError as err:
            raise ValueError(f"recipe {name!r}: {err}") from None
    seen: set[str] = set()
    for variant, _, _ in variants:
        if variant in seen:
            raise ValueError(f"recipe {name!r}: two methods give the variant {variant!r}")
        seen.add(variant)
    tasks = []
    for variant, node, mono in variants:
        method = variant.split("[", 1)[0]
        for item in items:
            spec = {
                "method": method,
                "variant": variant,
                "separator": node,
                "mono": mono,
                "data": data,
                "item": item,
                "stft": stft,
                "metrics": metrics,
                "dtype": dtype,
                "device": device,
            }
            tasks.append(Task(task_key(spec), spec))
    return tasks
