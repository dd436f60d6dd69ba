"""One LightningModule for every separator of the contract.

:class:`SeparationModule` trains any separator (an unrolled AuxIVA / ILRMA with a neural source
model, a trainable online ILRMA / AuxIVA, a neural mask or waveform model) through the waveform
wrapper (:class:`~torchbss.inference.WaveformSeparator`): mixture waveforms in, separated
waveforms out, a loss from :mod:`torchbss.losses` against the reference waveforms.

Batches are dicts: ``mixture`` ``(batch, mics, samples)``, ``reference`` ``(batch, sources,
samples)`` (or ``(batch, stems, channels, samples)`` for music) and optionally ``length``
``(batch,)`` (valid samples of zero-padded items).

Optimisation is manual (``automatic_optimization = False``) so that the module can guard it:

* a batch whose loss is not finite, or whose gradients are not, is skipped (no parameter or
  optimizer-state change) and counted (``train/skipped_batches``); under DDP the decision is
  taken on all ranks together;
* gradients are clipped by norm (``gradient_clip_norm``);
* a batch ``{set name: batch}`` (the data module's ``train_extra``) averages the sets' losses;
* the scheduler steps every ``scheduler_interval`` ("step" or "epoch").

Logged: ``train/loss``, ``train/skipped_batches``, ``val/loss``, ``val/si_sdr``,
``val/si_sdr_improvement``, ``val/sdr`` (accumulated over the epoch by the torchmetrics
modules of :mod:`torchbss.metrics.modules`, DDP-synchronised), and ``test/...`` likewise.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from torchbss._validation import check_choice, check_positive
from torchbss.inference import WaveformSeparator
from torchbss.losses import PITLoss, PITResult
from torchbss.metrics.modules import SDR, SISDR, SISDRImprovement

try:
    import lightning.pytorch as pl
except ImportError as err:  # pragma: no cover - depends on the environment
    raise ImportError(
        "torchbss.lightning needs the 'lightning' package: pip install 'torchbss[train]'"
    ) from err

__all__ = ["SeparationModule"]

OptimizerFactory = Callable[..., torch.optim.Optimizer]


class SeparationModule(pl.LightningModule):
    """Train and evaluate a separator on waveform batches.

    Args:
        separator: any separator module (STFT- or waveform-domain).
        loss: ``loss(estimate, reference)``: a tensor loss (minimised), or a
            :class:`~torchbss.losses.PITLoss` whose result carries the permutation.
        optimizer: a factory ``optimizer(params) -> Optimizer`` (a Hydra ``_partial_`` node).
        scheduler: optional factory ``scheduler(optimizer) -> LRScheduler``.
        scheduler_interval: ``"step"`` or ``"epoch"``.
        n_fft, hop_length: the STFT of STFT-domain separators.
        ref_mic: mixture channel of the SI-SDR improvement baseline.
        gradient_clip_norm: clip the gradient norm to this (``None``: no clipping).
        permutation_invariant_metrics: solve the source permutation in the validation metrics
            (speech; ``False`` for fixed-order stems).
        separator_config: the separator's ``_target_`` config, kept in the checkpoint so that
            :func:`torchbss.lightning.export.export_checkpoint` can rebuild it without Hydra.
        stem_names: names of the sources in a fixed order (music stems): the validation and
            test metrics are then also logged per stem (``val/sdr/vocals``, ...).
    """

    def __init__(
        self,
        separator: nn.Module,
        loss: nn.Module,
        optimizer: OptimizerFactory | None = None,
        scheduler: Callable[[torch.optim.Optimizer], Any] | None = None,
        scheduler_interval: str = "epoch",
        n_fft: int = 1024,
        hop_length: int = 256,
        ref_mic: int = 0,
        gradient_clip_norm: float | None = 5.0,
        permutation_invariant_metrics: bool = True,
        separator_config: Mapping[str, Any] | None = None,
        stem_names: list[str] | None = None,
    ) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.save_hyperparameters(
            {
                "n_fft": n_fft,
                "hop_length": hop_length,
                "ref_mic": ref_mic,
                "gradient_clip_norm": gradient_clip_norm,
                "scheduler_interval": scheduler_interval,
                "separator_config": dict(separator_config) if separator_config else None,
            }
        )
        self.model = WaveformSeparator(separator, n_fft=n_fft, hop_length=hop_length)
        self.loss = loss
        self.optimizer_factory = optimizer or (lambda params: torch.optim.Adam(params, 1e-3))
        self.scheduler_factory = scheduler
        self.scheduler_interval = check_choice(scheduler_interval, "scheduler_interval",
                                               ("step", "epoch"))  # fmt: skip
        if gradient_clip_norm is not None:  # (Lightning takes 0 or less as "no clipping")
            check_positive(gradient_clip_norm, "gradient_clip_norm (None: no clipping)")
        self.gradient_clip_norm = gradient_clip_norm
        self.ref_mic = ref_mic
        pit = permutation_invariant_metrics
        self.metrics = nn.ModuleDict(
            {
                f"{stage}_{name}": metric
                for stage in ("val", "test")
                for name, metric in (
                    ("si_sdr", SISDR(permutation_invariant=pit)),
                    (
                        "si_sdr_improvement",
                        SISDRImprovement(ref_mic=ref_mic, permutation_invariant=pit),
                    ),
                    ("sdr", SDR(permutation_invariant=pit)),
                )  # fmt: skip
            }
        )
        self.stem_names = list(stem_names) if stem_names else []
        if self.stem_names and pit:  # named outputs are not permuted; the averages would be
            raise ValueError(
                "stem_names name fixed outputs (e.g. a music model's stems) and their metrics "
                "compare output k with reference k: use permutation_invariant_metrics=False, or "
                "no stem_names for permutation-free sources"
            )
        self.stem_metrics = nn.ModuleDict(
            {
                f"{stage}_{name}_{stem}": metric_cls()
                for stage in ("val", "test")
                for name, metric_cls in (("sdr", SDR), ("si_sdr", SISDR))
                for stem in self.stem_names
            }
        )
        self.register_buffer("skipped_batches", torch.zeros((), dtype=torch.int64))

    @property
    def separator(self) -> nn.Module:
        return self.model.separator

    # ------------------------------------------------------------------ forward and loss
    def forward(self, mixture: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Separated waveforms ``(batch, sources, samples)`` of ``mixture``."""
        return self.model(mixture, lengths=lengths).sources

    def _loss(self, estimate: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        if not isinstance(self.loss, PITLoss) and estimate.shape[1:] != reference.shape[1:]:
            raise ValueError(  # e.g. nn.L1Loss broadcasts the mismatch with a warning
                f"the separator's estimates {tuple(estimate.shape)} and the references "
                f"{tuple(reference.shape)} differ (batch, sources, ...), and the loss "
                f"{type(self.loss).__name__} does not match sources by permutation; use a "
                "PITLoss or data with as many references as estimates"
            )
        out = self.loss(estimate, reference)
        return out.loss if isinstance(out, PITResult) else out

    def _shared_step(self, batch: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        mixture, reference = batch["mixture"], batch["reference"]
        estimate = self(mixture, batch.get("length"))
        if estimate.shape[-1] != reference.shape[-1]:
            raise ValueError(
                f"the separator returned {estimate.shape[-1]} samples for references of "
                f"{reference.shape[-1]}"
            )
        return estimate, self._loss(estimate, reference)

    # ------------------------------------------------------------------ training
    def _all_ranks(self, flag: bool) -> bool:
        """``flag`` and-reduced over the DDP ranks (the same decision everywhere)."""
        if self.trainer is None or self.trainer.world_size == 1:
            return flag
        gathered = self.all_gather(torch.tensor(float(flag), device=self.device))
        return bool(gathered.min() > 0)

    def _grads_finite(self) -> bool:
        grads = [p.grad for p in self.parameters() if p.grad is not None]
        return all(bool(torch.isfinite(g).all()) for g in grads)

    def training_step(self, batch: Mapping[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        opt = self.optimizers()
        opt.zero_grad(set_to_none=True)
        if _is_combined(batch):  # train_extra: one batch per training set, losses averaged
            losses = [self._shared_step(b)[1] for b in batch.values()]
            loss = torch.stack(losses).mean()
            size = sum(b["mixture"].shape[0] for b in batch.values())
        else:
            _, loss = self._shared_step(batch)
            size = batch["mixture"].shape[0]
        ok = self._all_ranks(bool(torch.isfinite(loss)))
        if ok:
            self.manual_backward(loss)
            ok = self._all_ranks(self._grads_finite())
        if ok:
            if self.gradient_clip_norm is not None:
                self.clip_gradients(opt, gradient_clip_val=self.gradient_clip_norm,
                                    gradient_clip_algorithm="norm")  # fmt: skip
            opt.step()
            scheduler = self.lr_schedulers()
            if scheduler is not None and self.scheduler_interval == "step":
                scheduler.step()
        else:
            opt.zero_grad(set_to_none=True)
            self.skipped_batches += 1
        self.log("train/loss", loss.detach(), prog_bar=True, batch_size=size, sync_dist=True)
        self.log("train/skipped_batches", self.skipped_batches.float(), batch_size=size)
        return loss.detach()

    def on_train_epoch_end(self) -> None:
        scheduler = self.lr_schedulers()
        if scheduler is not None and self.scheduler_interval == "epoch":
            scheduler.step()

    # ------------------------------------------------------------------ evaluation
    def _evaluate(self, batch: Mapping[str, torch.Tensor], stage: str) -> torch.Tensor:
        estimate, loss = self._shared_step(batch)
        reference, mixture = batch["reference"], batch["mixture"]
        size = mixture.shape[0]
        self.log(f"{stage}/loss", loss, batch_size=size, sync_dist=True)
        for name in ("si_sdr", "si_sdr_improvement", "sdr"):
            metric = self.metrics[f"{stage}_{name}"]
            if name == "si_sdr_improvement":
                if reference.ndim != 3:  # multichannel stems: no mixture baseline per mic
                    continue
                metric.update(reference, estimate, mixture)
            else:
                metric.update(reference, estimate)
            self.log(f"{stage}/{name}", metric, batch_size=size, prog_bar=name == "si_sdr")
        if self.stem_names:
            if reference.shape[1] != len(self.stem_names):
                raise ValueError(
                    f"stem_names has {len(self.stem_names)} names for {reference.shape[1]} "
                    "reference sources"
                )
            for k, stem in enumerate(self.stem_names):
                for name in ("sdr", "si_sdr"):
                    metric = self.stem_metrics[f"{stage}_{name}_{stem}"]
                    metric.update(reference[:, k], estimate[:, k])
                    self.log(f"{stage}/{name}/{stem}", metric, batch_size=size)
        return loss

    def validation_step(self, batch: Mapping[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self._evaluate(batch, "val")

    def test_step(self, batch: Mapping[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self._evaluate(batch, "test")

    # ------------------------------------------------------------------ optimizers
    def configure_optimizers(self):
        params = [p for p in self.parameters() if p.requires_grad]
        if not params:
            raise ValueError(
                f"{type(self.separator).__name__} has no trainable parameters: pass a trainable "
                "separator (e.g. a neural source model, trainable=True for online separators)"
            )
        optimizer = self.optimizer_factory(params)
        if self.scheduler_factory is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": self.scheduler_factory(optimizer)}


def _is_combined(batch: Mapping[str, Any]) -> bool:
    """Whether ``batch`` is ``{set name: batch}`` (the data module's ``train_extra``)."""
    return bool(batch) and all(isinstance(v, Mapping) for v in batch.values())
