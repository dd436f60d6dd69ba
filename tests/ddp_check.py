"""Helper of the slow DDP test: train neural AuxIVA for a few steps, once on one process with
batch 4 and once on 2 gloo CPU processes with batch 2 each, and save the final weights.

Usage: python tests/ddp_check.py OUT_DIR DATA_DIR single|ddp [PRECISION (32-true, 64-true)]
"""

import sys
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import open_dict

from torchbss.lightning.entry import build_module, config_dir


def run(out: Path, data_dir: str, ddp: bool, precision: str) -> None:
    import lightning.pytorch as pl

    overrides = [
        "experiment=neural_auxiva", "separator.n_iter=2", "stft.n_fft=256", "stft.hop_length=64",
        "data.num_workers=0", "data.dataset.segment_s=1.0", "data.train.length=16",
        "+data.shuffle=false", f"data.batch_size={2 if ddp else 4}", "trainer.max_steps=3",
        "trainer.enable_progress_bar=false", "trainer.limit_val_batches=0",
        f"trainer={'ddp' if ddp else 'cpu'}", "optimizer=sgd", f"+trainer.precision={precision}",
    ]  # fmt: skip
    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        cfg = compose("train", overrides=overrides, return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        cfg.paths.output_dir = str(out / ("ddp" if ddp else "single"))
        cfg.paths.data_dir = data_dir
    pl.seed_everything(0, workers=True)
    module = build_module(cfg)
    trainer = instantiate(cfg.trainer, logger=False, enable_checkpointing=False)
    trainer.fit(module, datamodule=instantiate(cfg.data))
    if trainer.is_global_zero:
        state = {k: v.detach().cpu() for k, v in module.separator.state_dict().items()}
        torch.save(state, out / ("ddp.pt" if ddp else "single.pt"))


if __name__ == "__main__":
    torch.set_num_threads(1)
    out, data, mode = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
    run(out, data, ddp=mode == "ddp", precision=sys.argv[4] if len(sys.argv) > 4 else "32-true")
