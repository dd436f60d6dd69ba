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

__all__ = ["export_module", "export_checkpoint"]

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


def export_checkpoint(
    checkpoint: str | os.PathLike,
    path: str | os.PathLike,
    metadata: Mapping[str, Any] | None = None,
) -> Path:
    """Write the separator of a Lightning checkpoint (``.ckpt``) to ``path``."""
    ckpt = torch.load(checkpoint, map_location="cpu", weights_only=False)
    hparams = ckpt.get("hyper_parameters", {})
    config = hparams.get("separator_config")
    if not config:
        raise ExportError(f"{checkpoint} has no separator_config in its hyper-parameters")
    separator = instantiate(config)
    state = {k[len(PREFIX) :]: v for k, v in ckpt["state_dict"].items() if k.startswith(PREFIX)}
    separator.load_state_dict(state)
    meta = {"checkpoint": str(checkpoint), "epoch": ckpt.get("epoch"),
            "global_step": ckpt.get("global_step"), **(metadata or {})}  # fmt: skip
    return save_separator(
        path, separator, config, n_fft=hparams["n_fft"], hop_length=hparams["hop_length"],
        metadata=meta,
    )  # fmt: skip
