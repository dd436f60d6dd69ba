"""Hydra entry points of the training stack: ``torchbss train`` / ``torchbss eval``.

The configs live in the top-level ``configs/`` folder of the repository (the layout the
project follows, next to ``train/``) and ship in the wheel; :func:`torchbss.configs.config_dir`
finds them (see :mod:`torchbss.configs`).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

try:
    import hydra
    from omegaconf import DictConfig, OmegaConf
except ImportError as err:  # pragma: no cover - depends on the environment
    raise ImportError(
        "the training entry points need hydra-core: pip install 'torchbss[train]'"
    ) from err

__all__ = ["config_dir", "train", "evaluate", "run", "build_module"]

from torchbss.configs import config_dir  # noqa: E402 (re-exported)

OmegaConf.register_new_resolver("torchbss.n_freq", lambda n_fft: int(n_fft) // 2 + 1, replace=True)


def build_module(cfg: DictConfig):
    """The :class:`SeparationModule` of a composed config (separator, loss, optimizer)."""
    from hydra.utils import instantiate

    from torchbss.lightning.module import SeparationModule

    separator_config = OmegaConf.to_container(cfg.separator, resolve=True)
    scheduler = instantiate(cfg.scheduler) if cfg.get("scheduler") else None
    separator = instantiate(cfg.separator)
    if cfg.get("init_checkpoint"):  # fine-tune: start from trained weights
        from torchbss.models.music import load_checkpoint

        weights = cfg.init_checkpoint
        if str(weights).endswith(".ckpt"):  # a training run's checkpoint: its separator's keys
            from torchbss.lightning.export import read_checkpoint

            weights = read_checkpoint(weights)[1]
        load_checkpoint(separator, weights, new=cfg.get("init_checkpoint_new") or ())
    return SeparationModule(
        separator=separator,
        loss=instantiate(cfg.loss),
        optimizer=instantiate(cfg.optimizer) if cfg.get("optimizer") else None,
        scheduler=scheduler,
        n_fft=cfg.stft.n_fft,
        hop_length=cfg.stft.hop_length,
        separator_config=separator_config,
        **cfg.get("module", {}),
    )


def _trainer(cfg: DictConfig):
    from hydra.utils import instantiate
    from lightning.pytorch.callbacks import LearningRateMonitor

    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values()]
    logger = instantiate(cfg.logger) if cfg.get("logger") else False
    if logger is False:  # nothing to log the learning rate to
        callbacks = [c for c in callbacks if not isinstance(c, LearningRateMonitor)]
    return instantiate(cfg.trainer, callbacks=callbacks, logger=logger)


def _first_process() -> bool:
    """Whether this is the first (or only) process of a run: Lightning's DDP children and the
    other ranks of a cluster job find the folder their first process has just written."""
    import os

    return all(os.environ.get(v, "0") == "0" for v in ("RANK", "LOCAL_RANK", "SLURM_PROCID"))


def _check_fresh_output(cfg: DictConfig, outputs: tuple[str, ...], resumable: bool) -> None:
    """Refuse to run into the folder of an earlier run (its ``outputs`` would be replaced)
    unless a training run resumes from a checkpoint (``ckpt_path``)."""
    out = Path(cfg.paths.output_dir)
    earlier = [name for name in outputs if (out / name).exists()]
    if earlier and not (resumable and cfg.get("ckpt_path")) and _first_process():
        raise ValueError(
            f"the run folder {str(out)!r} already holds an earlier run ({', '.join(earlier)}), "
            "which this one would replace; choose another folder (hydra.run.dir=...)"
            + (" or resume it with ckpt_path=<its checkpoint>" if resumable else "")
        )


def _save_config(cfg: DictConfig) -> None:
    """The resolved config next to the run's outputs (Hydra keeps the unresolved one)."""
    out = Path(cfg.paths.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config_resolved.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))


def train(cfg: DictConfig) -> dict[str, float]:
    """Train (and test, and export) the separator of ``cfg``; returns the final metrics."""
    import lightning.pytorch as pl
    from hydra.utils import instantiate

    from torchbss.lightning.export import export_module

    pl.seed_everything(cfg.seed, workers=True)
    _check_fresh_output(cfg, ("export.pt", "config_resolved.yaml"), resumable=True)
    _save_config(cfg)
    datamodule = instantiate(cfg.data)
    module = build_module(cfg)
    trainer = _trainer(cfg)
    trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
    if trainer.global_step == 0:  # nothing learned: no export of the initial weights
        skipped = int(module.skipped_batches)
        raise ValueError(
            "no training step ran (trainer.max_epochs / max_steps of 0, no training batch"
            + (f", or all {skipped} batch(es) skipped as non-finite" if skipped else "")
            + "), so nothing was tested or exported; check the trainer and data settings"
        )
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
    has_test = getattr(datamodule, "has_split", lambda split: True)("test")
    if cfg.get("test") and datamodule is not None and has_test:
        results = trainer.test(module, datamodule=datamodule, ckpt_path=best or None)
        metrics.update({k: float(v) for r in results for k, v in r.items()})
    if cfg.get("export") and trainer.is_global_zero:
        if best:
            from torchbss.lightning.export import export_checkpoint

            export_checkpoint(best, Path(cfg.paths.output_dir) / "export.pt",
                              metadata={"metrics": metrics})  # fmt: skip
        else:
            export_module(module, Path(cfg.paths.output_dir) / "export.pt",
                          metadata={"metrics": metrics})  # fmt: skip
    return metrics


def evaluate(cfg: DictConfig) -> dict[str, float]:
    """Test an exported / checkpointed separator (or the configured one) on ``cfg.data``."""
    import lightning.pytorch as pl
    from hydra.utils import instantiate

    pl.seed_everything(cfg.seed, workers=True)
    _check_fresh_output(cfg, ("csv/metrics.csv",), resumable=False)  # the logger would replace it
    module = build_module(cfg)
    checkpoint = cfg.get("checkpoint")
    if checkpoint:
        from torchbss.inference import WaveformSeparator

        if str(checkpoint).endswith(".ckpt"):  # its separator and STFT, as in its export
            from torchbss.export import ExportError
            from torchbss.lightning.export import read_checkpoint, separator_from_checkpoint

            try:
                separator, ckpt = separator_from_checkpoint(checkpoint)
                hparams = ckpt["hyper_parameters"]
                wsep = WaveformSeparator(
                    separator, n_fft=hparams["n_fft"], hop_length=hparams["hop_length"]
                )
            except ExportError:  # a module built without its config: the configured one
                module.model.separator.load_state_dict(read_checkpoint(checkpoint)[1])
                wsep = module.model
        else:
            from torchbss.export import load_separator

            wsep, _ = load_separator(checkpoint)
        stft = getattr(wsep, "stft", None)
        given = (cfg.stft.n_fft, cfg.stft.hop_length)
        if stft is not None and (stft.n_fft, stft.hop_length) != given:
            import warnings

            warnings.warn(
                f"{checkpoint} was trained with the STFT n_fft={stft.n_fft}, hop_length="
                f"{stft.hop_length} and is evaluated with it, not with the config's "
                f"{given[0]}/{given[1]}",
                stacklevel=2,
            )
        module.model = wsep
    datamodule = instantiate(cfg.data)
    trainer = _trainer(cfg)
    results = trainer.test(module, datamodule=datamodule)
    return {k: float(v) for r in results for k, v in r.items()}


TASKS = {"train": train, "eval": evaluate}


def run(command: str, overrides: list[str]) -> int:
    """``torchbss train|eval [overrides]``: run the Hydra app with the packaged configs."""
    bad = [o for o in overrides if o.startswith("--") and o not in _HYDRA_FLAGS]
    if bad:
        raise ValueError(
            f"torchbss {command} takes Hydra overrides (key=value), e.g. trainer.max_epochs=2 "
            f"experiment=neural_auxiva; got {bad[0]!r} (see `torchbss {command} --help`)"
        )
    task = TASKS[command]
    if not any(o.startswith("-") for o in overrides):  # (Hydra's flags: its own handling)
        _check_overrides(command, overrides)
    failed: list[BaseException] = []

    @hydra.main(version_base="1.3", config_path=str(config_dir()), config_name=command)
    def app(cfg: DictConfig) -> Any:
        try:
            return task(cfg)
        except (ValueError, TypeError, OSError) as err:  # a user error: one line, after Hydra
            failed.append(err)
            return None

    argv = sys.argv
    sys.argv = [f"torchbss {command}", *overrides]
    try:
        app()
    finally:
        sys.argv = argv
    if failed:
        raise failed[0]
    return 0


def _check_overrides(command: str, overrides: list[str]) -> None:
    """Compose the config once, so that an unknown option or a misspelt key is one line (a
    ``ValueError``) rather than Hydra's report and exit status 1."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException

    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(str(config_dir()), version_base="1.3"):
            compose(command, overrides=list(overrides), return_hydra_config=True)
    except HydraException as err:
        raise ValueError(f"torchbss {command}: " + " ".join(str(err).split())) from None
    finally:
        GlobalHydra.instance().clear()


_HYDRA_FLAGS = {
    "--help", "--hydra-help", "--version", "--cfg", "--resolve", "--package", "--run",
    "--multirun", "--shell-completion", "--config-path", "--config-name", "--config-dir",
    "--experimental-rerun", "--info",
}  # fmt: skip
