"""Export a trained LightningModule or checkpoint as a plain separator file.

The export holds the separator's ``state_dict`` and its resolved ``_target_`` config (see
:mod:`torchbss.export`), so inference (``torchbss separate --checkpoint FILE``,
:func:`torchbss.export.load_separator`) needs neither Lightning nor Hydra.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from torchbss.export import ExportError, instantiate, save_separator

__all__ = ["export_module", "export_checkpoint", "read_checkpoint", "separator_from_checkpoint"]

PREFIX = "model.separator."


def export_module(module, path: str | os.PathLike, metadata: Mapping[str, Any] | None = None):
    """Write the separator of a :class:`~torchbss.lightning.SeparationModule` to ``path``."""
    config = module.hparams.get("separator_config")
    if not config:
        raise ExportError(
            "the module has no separator_config (build it through the Hydra entry point, or "
            "pass separator_config=...) so the export could not be rebuilt"
        )
    return save_separator(
        path, module.separator, config, n_fft=module.hparams["n_fft"],
        hop_length=module.hparams["hop_length"], metadata=metadata,
    )  # fmt: skip


def read_checkpoint(checkpoint: str | os.PathLike) -> tuple[dict, dict[str, torch.Tensor]]:
    """``(checkpoint, separator state)`` of a :class:`~torchbss.lightning.SeparationModule`'s
    Lightning checkpoint (``.ckpt``): the whole file, and the separator's ``state_dict``
    (the module's keys under ``model.separator.``, without that prefix).

    Raises:
        ExportError: the file is not such a checkpoint.
    """
    ckpt = torch.load(checkpoint, map_location="cpu", weights_only=False)
    state = ckpt.get("state_dict") if isinstance(ckpt, dict) else None
    if not isinstance(state, dict) or not any(k.startswith(PREFIX) for k in state):
        raise ExportError(
            f"{checkpoint} is not a Lightning checkpoint of a torchbss SeparationModule (no "
            f"state_dict with {PREFIX}* keys)"
        )
    return ckpt, {k[len(PREFIX) :]: v for k, v in state.items() if k.startswith(PREFIX)}


def separator_from_checkpoint(checkpoint: str | os.PathLike) -> tuple[torch.nn.Module, dict]:
    """``(separator, checkpoint)``: the separator of a Lightning checkpoint, built from the
    ``separator_config`` in its hyper-parameters with its trained weights.

    Raises:
        ExportError: not such a checkpoint, or one of a module built without its config.
    """
    ckpt, state = read_checkpoint(checkpoint)
    config = (ckpt.get("hyper_parameters") or {}).get("separator_config")
    if not config:
        raise ExportError(f"{checkpoint} has no separator_config in its hyper-parameters")
    separator = instantiate(config)
    separator.load_state_dict(state)
    return separator, ckpt


def export_checkpoint(
    checkpoint: str | os.PathLike,
    path: str | os.PathLike,
    metadata: Mapping[str, Any] | None = None,
) -> Path:
    """Write the separator of a Lightning checkpoint (``.ckpt``) to ``path``."""
    separator, ckpt = separator_from_checkpoint(checkpoint)
    hparams, config = ckpt["hyper_parameters"], ckpt["hyper_parameters"]["separator_config"]
    meta = {"checkpoint": str(checkpoint), "epoch": ckpt.get("epoch"),
            "global_step": ckpt.get("global_step"), **(metadata or {})}  # fmt: skip
    return save_separator(
        path, separator, config, n_fft=hparams["n_fft"], hop_length=hparams["hop_length"],
        metadata=meta,
    )  # fmt: skip
