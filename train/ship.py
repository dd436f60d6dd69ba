"""Turn a training run's export into a separator shipped inside the package.

``python train/ship.py EXPORT --name NAME --out torchbss/assets/FILE.pt --description TEXT
[--set KEY=VALUE ...] [--training JSON]``

The weights are copied unchanged. ``--set`` changes arguments of the separator for inference
(what :func:`torchbss.export.load_separator`'s ``overrides`` take; e.g. ``trainable=false
checkpoint=false``: frozen parameters and no gradient checkpointing); the outputs are checked to
be the same as the export's on a short random mixture before anything is written. The metadata
keeps the export's epoch and step under ``export`` (not its local checkpoint path) and adds
``name``, ``description`` and ``training`` (how it was trained: a JSON object). Register the
file in ``torchbss.export.PRETRAINED`` and describe it in ``torchbss/assets/README.md``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
import yaml

from torchbss.export import ExportError, OverrideError, load_separator, save_separator


def _override(text: str) -> tuple[str, object]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"--set takes KEY=VALUE, got {text!r}")
    return key, yaml.safe_load(value)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("export", type=Path, help="a training run's export.pt")
    p.add_argument("--name", required=True, help="the name users select it by")
    p.add_argument("--out", type=Path, required=True, help="the file to write")
    p.add_argument("--description", required=True, help="one paragraph: what it is")
    p.add_argument("--set", type=_override, action="append", default=[], dest="overrides",
                   metavar="KEY=VALUE", help="change a top-level config argument")  # fmt: skip
    p.add_argument("--training", type=json.loads, default={}, help="JSON: how it was trained")
    args = p.parse_args(argv)

    if not args.export.is_file():
        p.error(f"{args.export} is not a file: give a training run's export.pt")
    try:  # validates the export (a Lightning .ckpt, a state dict... is refused by name)
        wsep, meta = load_separator(args.export)
    except (ExportError, ValueError, KeyError, RuntimeError) as err:
        p.error(f"{err} (give a training run's export.pt)")
    config = dict(torch.load(args.export, map_location="cpu", weights_only=True)["config"])
    overrides = dict(args.overrides)
    try:
        shipped = load_separator(args.export, overrides=overrides)[0]
    except OverrideError as err:
        p.error(f"--set: {err}")
    shipped.separator.eval()
    X = torch.randn(
        2, shipped.stft.n_fft // 2 + 1, 40, dtype=torch.complex64,
        generator=torch.Generator().manual_seed(0),
    )  # fmt: skip
    with torch.no_grad():
        same = torch.equal(shipped.separator(X).sources, wsep.separator(X).sources)
    if not same:
        p.error(f"the overrides {args.overrides} change the outputs; ship the export as trained")
    metadata = {
        "name": args.name,
        "description": args.description,
        "training": args.training,
        "export": {k: meta[k] for k in ("epoch", "global_step") if k in meta},
    }
    path = save_separator(args.out, shipped.separator, config | overrides,
                          n_fft=shipped.stft.n_fft, hop_length=shipped.stft.hop_length,
                          metadata=metadata)  # fmt: skip
    print(f"wrote {path} ({path.stat().st_size / 2**20:.2f} MiB)")


if __name__ == "__main__":
    main()
