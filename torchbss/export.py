"""Exported separators: a ``state_dict`` and the config that builds the module, in one file.

An export is a plain ``torch.save`` of a dict of tensors, strings and numbers (loaded with
``torch.load(weights_only=True)``, so a file cannot run code)::

    {"format": "torchbss.separator", "version": 1,
     "config": {"_target_": "torchbss.OnlineILRMA", "n_freq": 1025, ...},
     "stft": {"n_fft": 2048, "hop_length": 512},
     "state_dict": {...}, "metadata": {...}}

``config`` is a Hydra-style node (``_target_`` plus arguments, nested nodes for nested modules,
as in the project's ``configs/``) restricted to torchbss classes: modules and spatial updates
(and :func:`pretrained`, which loads a shipped file); a target naming any other function or
class is refused before it is called. Loading needs neither Lightning nor Hydra:
:func:`instantiate` builds the node with its plain arguments.
"""

from __future__ import annotations

import importlib
import inspect
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from torchbss._validation import check_positive_int

__all__ = [
    "instantiate",
    "save_separator",
    "load_separator",
    "pretrained",
    "pretrained_path",
    "load_pretrained",
    "PRETRAINED",
    "PRETRAINED_SETTINGS",
    "PRETRAINED_SAMPLE_RATE",
    "ExportError",
    "OverrideError",
    "FORMAT",
]

FORMAT = "torchbss.separator"
VERSION = 1


#: trained separators shipped inside the package (``torchbss/assets``): name -> file. Each is
#: described (training data, steps, held-out figures) in ``torchbss/assets/README.md``.
PRETRAINED = {
    "neural-auxiva": "neural_auxiva_2x2.pt",
    "online-ilrma-tuned": "online_ilrma_tuned.pt",
}
#: inference settings of the shipped separators, chosen on the validation rooms after their
#: training (attributes set on the loaded separator; the file keeps the training config):
#: neural-auxiva aligns its permutations after iteration 10 too (mean SI-SDRi on the 60 `val`
#: rooms per case 6.40 -> 6.61 dB: 3x3 5.53 -> 6.12, 2x2 +0.07, 2s4m -0.02;
#: validation_neural_midalign_val in BENCHMARKS.md)
PRETRAINED_SETTINGS: dict[str, dict[str, Any]] = {"neural-auxiva": {"align_every": 10}}


#: the sample rate the shipped separators were trained at (their STFT bins are those of this
#: rate; ``torchbss separate`` refuses files at another rate rather than separate them with a
#: model that never saw those frequencies)
PRETRAINED_SAMPLE_RATE: dict[str, int] = {"neural-auxiva": 16000, "online-ilrma-tuned": 16000}


class ExportError(ValueError):
    """An exported file that cannot be loaded (its message says why)."""


class OverrideError(ExportError):
    """An override (:func:`load_separator`) that the file's separator does not take."""


def _resolve(target: str) -> Any:
    if not isinstance(target, str) or not (target == "torchbss" or target.startswith("torchbss.")):
        raise ExportError(
            f"_target_ must name a torchbss class (torchbss....), got {target!r}; exported "
            "files only build torchbss modules"
        )
    module_name, _, attr = target.rpartition(".")
    try:
        obj = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as err:
        raise ExportError(f"unknown _target_ {target!r}: {err}") from err
    from torchbss.updates.base import SpatialUpdate

    if obj is pretrained or (inspect.isclass(obj) and issubclass(obj, (nn.Module, SpatialUpdate))):
        return obj
    raise ExportError(
        f"_target_ {target!r} is not a torchbss module or spatial update class; exported files "
        "only build those (nothing else is called)"
    )


def instantiate(node: Any) -> Any:
    """Build a Hydra-style config node: a dict with ``_target_`` becomes ``target(**args)``.

    Nested nodes are built first; lists and plain values are kept. Only torchbss targets are
    allowed. For configs with interpolations or partials, use ``hydra.utils.instantiate``.
    """
    if isinstance(node, Mapping):
        args = {k: instantiate(v) for k, v in node.items() if k != "_target_"}
        if "_target_" not in node:
            return args
        cls = _resolve(node["_target_"])
        try:
            return cls(**args)
        except TypeError as err:
            raise ExportError(f"cannot build {node['_target_']} from the config: {err}") from err
    if isinstance(node, (list, tuple)):
        return [instantiate(v) for v in node]
    return node


def save_separator(
    path: str | os.PathLike,
    separator: nn.Module,
    config: Mapping[str, Any],
    *,
    n_fft: int = 2048,
    hop_length: int = 512,
    metadata: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``separator``'s weights and the config that builds it (atomically).

    Args:
        path: output file (``.pt``).
        separator: the trained module.
        config: its ``_target_`` config (plain values only), e.g. the ``separator`` node of a
            resolved Hydra config.
        n_fft, hop_length: the STFT the separator was trained with.
        metadata: anything JSON-like worth keeping (training data, scores, commit).

    Returns:
        The path written. The config is checked by building a module from it and loading the
        weights into it before anything is written.
    """
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{str(path)!r} is a folder; give the export's file name (.pt)")
    config = _plain(dict(config))
    state = {k: v.detach().cpu() for k, v in separator.state_dict().items()}
    stft = {"n_fft": check_positive_int(n_fft, "n_fft"),
            "hop_length": check_positive_int(hop_length, "hop_length")}  # fmt: skip
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "config": config,
        "stft": stft,
        "state_dict": state,
        "metadata": _plain(dict(metadata or {})),
    }
    built = _build(payload, str(path)).separator  # refuse to write what could not be loaded
    if repr(built) != repr(separator):  # e.g. a config of another class, or other settings
        raise ExportError(
            f"the config does not rebuild the separator given: it builds {built!r}, the "
            f"separator is {separator!r}; pass the config the separator was built from"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        torch.save(payload, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _plain(value: Any) -> Any:
    """Check that a config holds only plain values (what ``weights_only`` loading accepts)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise ExportError(
        f"config values must be plain (numbers, strings, lists, dicts), got {type(value).__name__}"
    )


def _build(payload: Mapping[str, Any], name: str, overrides: Mapping[str, Any] | None = None):
    from torchbss.inference import WaveformSeparator

    if not isinstance(payload["config"], Mapping) or "_target_" not in payload["config"]:
        raise ExportError(f"{name}: its 'config' must be a mapping with a _target_")
    stft = payload["stft"]
    if not (
        isinstance(stft, Mapping)
        and all(isinstance(stft.get(k), int) and stft[k] > 0 for k in ("n_fft", "hop_length"))
    ):
        raise ExportError(f"{name}: its 'stft' must give positive integers n_fft and hop_length")
    weights = payload["state_dict"]
    if not isinstance(weights, Mapping) or not all(
        isinstance(v, torch.Tensor) for v in weights.values()
    ):
        raise ExportError(f"{name}: its 'state_dict' must map names to tensors")
    config = dict(payload["config"])
    target = config.get("_target_")
    if overrides:
        accepted = inspect.signature(_resolve(target)).parameters
        unknown = sorted(k for k in overrides if k not in accepted)
        if unknown:
            raise OverrideError(
                f"{name}: its separator ({target}) takes no argument {unknown}; the file "
                f"builds it from {sorted(k for k in config if k != '_target_')}"
            )
        config.update(overrides)
    module = instantiate(config)
    if not isinstance(module, nn.Module):
        raise ExportError(f"{name}: the config builds a {type(module).__name__}, not a module")
    own = module.state_dict()
    missing, unexpected = sorted(set(own) - set(weights)), sorted(set(weights) - set(own))
    shapes = [
        f"{k}: {tuple(weights[k].shape)} vs {tuple(own[k].shape)}"
        for k in sorted(set(own) & set(weights))
        if tuple(weights[k].shape) != tuple(own[k].shape)
    ]
    if missing or unexpected or shapes:
        raise ExportError(
            f"{name}: the weights do not fit the module the config builds ({target}): "
            f"missing keys {missing}, unexpected keys {unexpected}, shape mismatches {shapes}"
        )
    module.load_state_dict(weights)
    return WaveformSeparator(module, n_fft=stft["n_fft"], hop_length=stft["hop_length"])


def load_separator(
    path: str | os.PathLike,
    map_location: str | torch.device = "cpu",
    overrides: Mapping[str, Any] | None = None,
):
    """Load an exported separator as a :class:`~torchbss.inference.WaveformSeparator`.

    Args:
        path: a file written by :func:`save_separator` (or the Lightning export).
        map_location: device of the loaded weights.
        overrides: top-level arguments of the separator's config replaced before it is built,
            for settings that do not change the weights (e.g. ``{"compile": True}``); an
            argument the separator does not take raises :class:`OverrideError`.

    Returns:
        ``(waveform_separator, metadata)``.

    Raises:
        FileNotFoundError: no such file.
        ExportError: not an export, another format version, or weights that do not fit.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"exported separator not found: {str(path)!r}")
    try:  # the device first: a device this machine lacks is not a fault of the file
        torch.empty(0, device=map_location)
    except (RuntimeError, AssertionError, TypeError) as err:
        raise ValueError(
            f"map_location={map_location!r} is not a device this machine can use "
            f"({type(err).__name__}: {(str(err).splitlines() or [''])[0][:200]})"
        ) from None
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # any unpickling / zip error: not a torch file we can read safely
        raise ExportError(
            f"{str(path)!r} is not a torchbss export (torch.load failed: "
            f"{type(err).__name__}: {(str(err).splitlines() or [''])[0][:200]})"
        ) from err
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        keys = sorted(payload)[:8] if isinstance(payload, dict) else type(payload).__name__
        raise ExportError(
            f"{str(path)!r} is not a torchbss export (expected a dict with format={FORMAT!r}, "
            f"got {keys}); export trained models with torchbss.export.save_separator or "
            "`torchbss export`"
        )
    if payload.get("version") != VERSION:
        raise ExportError(f"{str(path)!r} has export version {payload.get('version')}, "
                          f"this torchbss reads version {VERSION}")  # fmt: skip
    for key in ("config", "stft", "state_dict"):
        if key not in payload:
            raise ExportError(f"{str(path)!r} has no {key!r} entry")
    return _build(payload, str(path), overrides), payload.get("metadata", {})


def pretrained_path(name: str) -> Path:
    """The file of the shipped separator ``name`` (a key of :data:`PRETRAINED`)."""
    if name not in PRETRAINED:
        raise ValueError(f"unknown pretrained separator {name!r}; choose from {sorted(PRETRAINED)}")
    return Path(__file__).resolve().parent / "assets" / PRETRAINED[name]


def load_pretrained(
    name: str,
    map_location: str | torch.device = "cpu",
    overrides: Mapping[str, Any] | None = None,
):
    """A shipped trained separator with its STFT and its :data:`PRETRAINED_SETTINGS`.

    Args:
        name: a key of :data:`PRETRAINED`.
        map_location: device of the weights.
        overrides: as in :func:`load_separator` (e.g. ``{"compile": True}`` for
            ``online-ilrma-tuned``).

    Returns:
        ``(waveform_separator, metadata)`` as :func:`load_separator`.
    """
    settings = {**PRETRAINED_SETTINGS.get(name, {}), **(overrides or {})}  # the caller's win
    return load_separator(pretrained_path(name), map_location, settings or None)


def pretrained(name: str, n_src: int | None = None, map_location: str | torch.device = "cpu"):
    """A shipped trained separator (STFT domain), e.g. for a config's ``separator`` node.

    ``_target_: torchbss.export.pretrained`` with ``name: neural-auxiva`` selects it in a config;
    :func:`load_pretrained` gives it with its STFT as a
    :class:`~torchbss.inference.WaveformSeparator` (what ``torchbss separate --method
    neural-auxiva`` uses). Both apply its :data:`PRETRAINED_SETTINGS`.

    Args:
        name: a key of :data:`PRETRAINED`.
        n_src: number of sources (``None``: as trained, i.e. the number of mics).
        map_location: device of the weights.

    Returns:
        The separator module (``X (..., mics, freq, frames)`` -> :class:`SeparationResult`).
    """
    if n_src is not None:
        check_positive_int(n_src, "n_src")
    sep = load_pretrained(name, map_location=map_location)[0].separator
    if n_src is not None:
        if not hasattr(sep, "n_src"):
            raise ValueError(f"pretrained separator {name!r} has a fixed number of sources")
        sep.n_src = n_src
    return sep
