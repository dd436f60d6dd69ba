"""Evaluate a separator: ``python train/eval.py checkpoint=PATH data=dynamic_mixing_2x2 ...``.

The same as ``torchbss eval ...``; the configs are the repository's ``configs/`` folder.
"""

import hydra
from omegaconf import DictConfig

from torchbss.lightning.entry import evaluate


@hydra.main(version_base="1.3", config_path="../configs", config_name="eval")
def main(cfg: DictConfig) -> None:
    evaluate(cfg)


if __name__ == "__main__":
    main()
