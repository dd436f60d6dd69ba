"""Train a separator: ``python train/train.py experiment=neural_auxiva trainer=cpu ...``.

The same as ``torchbss train ...``; the configs are the repository's ``configs/`` folder.
"""

import hydra
from omegaconf import DictConfig

from torchbss.lightning.entry import train


@hydra.main(version_base="1.3", config_path="../configs", config_name="train")
def main(cfg: DictConfig) -> None:
    train(cfg)


if __name__ == "__main__":
    main()
