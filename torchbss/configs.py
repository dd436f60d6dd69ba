"""Where the Hydra configs are: the repository's top-level ``configs/`` folder, which the wheel
carries as ``torchbss/_configs`` (``[tool.hatch.build.targets.wheel.force-include]``), so an
installed package finds the same files as a clone. One copy in git, one source of truth.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["config_dir"]


def config_dir() -> Path:
    """The configs folder: packaged (``torchbss/_configs``) or the repository's ``configs/``."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "_configs", here.parent / "configs"):
        if (candidate / "train.yaml").is_file():
            return candidate
    raise FileNotFoundError(
        f"torchbss configs not found (looked in {here / '_configs'} and {here.parent / 'configs'})"
    )
