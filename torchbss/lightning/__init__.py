"""Training with Lightning (``pip install 'torchbss[train]'``): data modules."""

from torchbss.lightning.datamodule import DynamicMixingDataModule, SeparationDataModule

__all__ = ["SeparationDataModule", "DynamicMixingDataModule"]
