"""The Lightning training stack: fast_dev_run per experiment, exact resume, export -> separate,
non-finite guard, the CLI forwarding, and DDP on 2 CPU processes (slow)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

pl = pytest.importorskip("lightning.pytorch")
pytest.importorskip("hydra")
from test_configs import EXPERIMENTS, _compose  # noqa: E402

from torchbss.export import load_separator  # noqa: E402
from torchbss.lightning.entry import build_module, evaluate, train  # noqa: E402
from torchbss.lightning.module import SeparationModule  # noqa: E402

SMALL = [
    "data.batch_size=2",
    "data.num_workers=0",
    "data.dataset.segment_s=1.0",
    "data.train.length=4",
    "data.val.length=2",
    "data.test.length=2",
    "stft.n_fft=256",
    "stft.hop_length=64",
    "trainer.log_every_n_steps=1",
    "trainer.enable_progress_bar=false",
]


pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.one_thread


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_fast_dev_run_of_every_experiment(experiment, tmp_path, data_dir):
    small = SMALL
    if experiment.startswith("music"):  # stem folders: shorter chunks, one validation track
        small = [o for o in SMALL if not o.startswith(("data.dataset", "data.val", "data.test"))]
        small += ["data.train.segment_s=1.0", "data.val.segment_s=1.0", "data.train.length=2"]
    overrides = [f"experiment={experiment}", *small, "+trainer.fast_dev_run=true", "export=false"]
    if experiment.startswith("neural"):
        overrides.append("separator.n_iter=3")
    if experiment == "neural_auxiva_tts":  # its voices and start are made locally (see config)
        overrides += ["data.train.root=${paths.data_dir}/speech", "init_checkpoint=null"]
    cfg = _compose(overrides, tmp_path)
    metrics = train(cfg)
    assert math.isfinite(metrics["train/loss"]), metrics
    stage = "val" if experiment.startswith("music") else "test"  # musdb.yaml has no test split
    assert math.isfinite(metrics[f"{stage}/si_sdr"]), metrics
    if experiment.startswith("music"):
        assert math.isfinite(metrics["val/sdr/vocals"]), metrics


def _fit(tmp_path, epochs, ckpt_path=None, name="run"):
    overrides = [
        "experiment=neural_auxiva", *SMALL, "separator.n_iter=3",
        f"trainer.max_epochs={epochs}", "trainer.limit_val_batches=1", "test=false",
        "export=true", "callbacks.model_checkpoint.save_top_k=-1",
        "~callbacks.learning_rate_monitor",
    ]  # fmt: skip
    if ckpt_path is not None:
        overrides.append(f"ckpt_path={ckpt_path}")
    out = tmp_path / name
    cfg = _compose(overrides, out)
    losses = []

    class Record(pl.Callback):
        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            losses.append(float(outputs["loss"] if isinstance(outputs, dict) else outputs))

    from hydra.utils import instantiate

    # the entry point with one extra callback that records every training loss
    pl.seed_everything(cfg.seed, workers=True)
    datamodule = instantiate(cfg.data)
    module = build_module(cfg)
    callbacks = [instantiate(c) for c in cfg.callbacks.values()] + [Record()]
    trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=False)
    trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
    return losses, module, out


def test_resume_continues_identically(tmp_path, data_dir):
    full, _, _ = _fit(tmp_path, epochs=2, name="full")
    first, _, out = _fit(tmp_path, epochs=1, name="first")
    ckpt = out / "checkpoints" / "last.ckpt"
    assert ckpt.is_file()
    resumed, _, _ = _fit(tmp_path, epochs=2, ckpt_path=ckpt, name="resumed")
    assert len(full) == 4 and first == full[:2]
    assert resumed == pytest.approx(full[2:], rel=1e-6, abs=1e-7)


def test_train_writes_a_run_folder_and_an_export_that_separates_alike(tmp_path, data_dir):
    cfg = _compose(
        ["experiment=neural_auxiva", *SMALL, "separator.n_iter=3", "trainer.max_epochs=1",
         "trainer.limit_val_batches=1"],
        tmp_path,
    )  # fmt: skip
    metrics = train(cfg)
    assert {"val/si_sdr", "val/si_sdr_improvement", "val/sdr", "test/si_sdr"} <= set(metrics)
    assert (tmp_path / "config_resolved.yaml").is_file()
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file()
    assert list((tmp_path / "csv").glob("metrics.csv"))
    wsep, meta = load_separator(tmp_path / "export.pt")
    assert "metrics" in meta
    # the export (no Lightning, no Hydra) separates like the best checkpoint's module
    ckpt = next(p for p in (tmp_path / "checkpoints").glob("epoch*.ckpt"))
    module = SeparationModule.load_from_checkpoint(
        ckpt, separator=build_module(cfg).separator, loss=build_module(cfg).loss
    )
    x = torch.randn(2, 4000, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(wsep(x).sources, module(x[None])[0], rtol=1e-5, atol=1e-6)
    # `torchbss eval checkpoint=<.ckpt>` scores the checkpoint's separator with its own STFT
    # (it used the eval config's silently; the export always used its own), with a warning
    test_data = ["data.num_workers=0", "data.dataset.segment_s=1.0", "data.test.length=2",
                 "separator.n_iter=3", "experiment=neural_auxiva"]  # fmt: skip
    scores = []
    for i, model in enumerate((ckpt, tmp_path / "export.pt")):
        overrides = [*test_data, f"checkpoint={model}", "stft.n_fft=512", "stft.hop_length=128"]
        eval_cfg = _compose(overrides, tmp_path / f"eval{i}", config="eval")
        with pytest.warns(UserWarning, match="trained with the STFT n_fft=256"):
            scores.append(evaluate(eval_cfg)["test/si_sdr"])
    assert scores[0] == pytest.approx(scores[1], abs=1e-4)
    with pytest.raises(ValueError, match=r"already holds an earlier run \(csv/metrics.csv\)"):
        evaluate(eval_cfg)  # its metrics would be deleted by the logger
    # and a run's checkpoint is a valid init_checkpoint (its prefix and buffers were refused)
    init_cfg = ["experiment=neural_auxiva", "stft.n_fft=256", "stft.hop_length=64",
                f"init_checkpoint={ckpt}"]  # fmt: skip
    init = build_module(_compose(init_cfg, tmp_path / "init"))
    for key, value in module.separator.state_dict().items():
        torch.testing.assert_close(init.separator.state_dict()[key], value, rtol=0, atol=0)
    # a second run into this folder would replace its export: refused before it starts
    with pytest.raises(ValueError, match="already holds an earlier run"):
        train(cfg)


def test_no_training_step_is_an_error_not_an_export(tmp_path, data_dir):
    """max_epochs=0 (or a training set smaller than one batch) exported the initial weights,
    tested them, and exited 0."""
    base = ["experiment=neural_auxiva", *SMALL, "separator.n_iter=2"]
    with pytest.raises(ValueError, match="no training step ran"):
        train(_compose([*base, "trainer.max_epochs=0"], tmp_path / "zero"))
    assert not (tmp_path / "zero" / "export.pt").exists()
    with pytest.raises(ValueError, match="fewer than one batch of batch_size=2"):
        train(_compose([*base, "data.train.length=1"], tmp_path / "short"))


def test_init_checkpoint_starts_from_the_shipped_weights(tmp_path):
    """``init_checkpoint=`` loads trained weights (here the shipped neural-auxiva asset) into
    the separator before training; a checkpoint of another architecture is refused by name."""
    from torchbss.export import pretrained_path

    asset = pretrained_path("neural-auxiva")
    cfg = _compose(["experiment=neural_auxiva", f"init_checkpoint={asset}"], tmp_path)
    module = build_module(cfg)
    shipped = torch.load(asset, map_location="cpu", weights_only=True)["state_dict"]
    own = module.separator.state_dict()
    assert shipped.keys() == own.keys()
    for key, value in shipped.items():
        torch.testing.assert_close(own[key], value, rtol=0, atol=0)
    cfg = _compose(["experiment=neural_auxiva", "source_model.hidden=16",
                    f"init_checkpoint={asset}"], tmp_path)  # fmt: skip
    with pytest.raises(ValueError, match="shape"):
        build_module(cfg)


def test_init_checkpoint_new_starts_a_new_branch(tmp_path):
    """``init_checkpoint_new=[prefix.]``: online ILRMA with a weight correction starts from the
    weights of one without it (the correction keeps its initial values, every other weight is
    loaded); without it the missing keys are refused by name."""
    plain = build_module(_compose(["experiment=online_ilrma_neural",
                                   "separator.correction_hidden=0"], tmp_path))  # fmt: skip
    with torch.no_grad():  # as if trained
        plain.separator.basis_raw.mul_(0.5)
    path = tmp_path / "plain.pt"
    torch.save({"state_dict": plain.separator.state_dict()}, path)
    base = ["experiment=online_ilrma_neural", f"init_checkpoint={path}"]
    module = build_module(_compose([*base, "init_checkpoint_new=[correction.]"], tmp_path))
    own = module.separator.state_dict()
    for key, value in plain.separator.state_dict().items():
        torch.testing.assert_close(own[key], value, rtol=0, atol=0)
    assert float(own["correction.net.4.weight"].abs().sum()) == 0.0  # still the identity
    with pytest.raises(ValueError, match=r"missing key.*correction\.net"):
        build_module(_compose(base, tmp_path))


class _Exploding(torch.nn.Module):
    """A loss that is NaN on the second call (to test the guard)."""

    def __init__(self):
        super().__init__()
        self.calls = 0

    def forward(self, estimate, reference):
        self.calls += 1
        loss = (estimate - reference).abs().mean()
        return loss * float("nan") if self.calls == 2 else loss


def test_non_finite_batches_are_skipped_and_counted(tmp_path):
    from torchbss.separators import AuxIVA
    from torchbss.source_models import NeuralSourceModel

    torch.manual_seed(0)
    sep = AuxIVA(n_iter=2, update="iss", source_model=NeuralSourceModel(129, hidden=8))
    module = SeparationModule(sep, _Exploding(), n_fft=256, hop_length=64)
    g = torch.Generator().manual_seed(1)
    data = [{"mixture": torch.randn(2, 2, 2000, generator=g),
             "reference": torch.randn(2, 2, 2000, generator=g)} for _ in range(3)]  # fmt: skip
    before = {k: v.clone() for k, v in module.state_dict().items()}
    snapshots = []

    class Snap(pl.Callback):
        def on_train_batch_end(self, trainer, m, outputs, batch, batch_idx):
            snapshots.append({k: v.clone() for k, v in m.state_dict().items()})

    trainer = pl.Trainer(max_steps=3, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, callbacks=[Snap()])  # fmt: skip
    trainer.fit(module, torch.utils.data.DataLoader(data, batch_size=None))
    assert int(module.skipped_batches) == 1
    weight = "model.separator.source_model.decoder.weight"
    assert not torch.equal(snapshots[0][weight], before[weight])  # step 1 updated
    torch.testing.assert_close(snapshots[1][weight], snapshots[0][weight], rtol=0, atol=0)
    assert all(
        torch.isfinite(v).all() for v in module.state_dict().values() if v.is_floating_point()
    )


def test_module_refuses_a_clip_that_means_none_and_mismatched_stems():
    """gradient_clip_norm 0 or -1 was no clipping at all (Lightning's rule); a non-PIT loss
    (nn.L1Loss) broadcast 4 estimated stems against 1 reference with only a warning."""
    from torchbss.separators import AuxIVA

    for bad in (0, -1.0, float("inf"), "5"):
        with pytest.raises(ValueError, match=r"gradient_clip_norm .* must be a finite number > 0"):
            SeparationModule(AuxIVA(n_iter=1), torch.nn.L1Loss(), gradient_clip_norm=bad)
    # per-stem metrics compare output k with reference k, while the averages were solved for
    # the permutation: a swapped separation logged 105 dB overall and -49 dB per stem
    with pytest.raises(ValueError, match="use permutation_invariant_metrics=False"):
        SeparationModule(AuxIVA(n_iter=1), torch.nn.L1Loss(), stem_names=["a", "b"])
    module = SeparationModule(AuxIVA(n_iter=1), torch.nn.L1Loss(), gradient_clip_norm=None)
    with pytest.raises(ValueError, match="does not match sources by permutation"):
        module._loss(torch.zeros(2, 4, 2, 100), torch.zeros(2, 1, 2, 100))
    assert float(module._loss(torch.ones(2, 1, 100), torch.zeros(2, 1, 100))) == 1.0


def test_cli_forwards_overrides_and_refuses_flags(tmp_path, data_dir, capsys, monkeypatch):
    from torchbss.cli.main import main

    monkeypatch.chdir(tmp_path)
    assert main(["train", "--steps", "200"]) == 2
    assert "takes Hydra overrides (key=value)" in capsys.readouterr().err
    code = main(["train", "experiment=neural_auxiva", *SMALL, "separator.n_iter=2",
                 "+trainer.fast_dev_run=true", f"paths.data_dir={data_dir}",
                 f"paths.log_dir={tmp_path / 'logs'}", "export=false"])  # fmt: skip
    assert code == 0
    assert list(Path(tmp_path / "logs" / "neural_auxiva" / "runs").iterdir())
    # an unknown option, a misspelt key and an error inside the job are one line, status 2
    # (Hydra printed 7-13 lines or a traceback, and exited 1)
    for args, message in ((["train", "model=nonexistent"], "Could not find 'model/nonexistent'"),
                          (["train", "trainer.max_epoch=1"], "+trainer.max_epoch=1"),
                          (["eval", "checkpoint=/nonexistent.pt",
                            f"paths.log_dir={tmp_path / 'logs'}"], "not found")):  # fmt: skip
        capsys.readouterr()
        assert main(args) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert err[-1].startswith("error: ") and message in err[-1], err


@pytest.mark.slow
def test_ddp_two_cpu_processes_match_one_process_with_the_same_global_batch(tmp_path, data_dir):
    """2 gloo processes x batch 2 == 1 process x batch 4 (same examples, same updates).

    Run in float64 (``trainer.precision=64-true``): unrolled IP2 at initialisation is so sharp
    that float32 rounding alone (splitting a batch of 4 into 2 + 2 in one process, no DDP)
    grows from 1e-11 to 1e-4 in the weights over 3 SGD steps; in float64 the DDP run equals the
    single process to 6e-10.
    """
    import subprocess
    import sys

    script = Path(__file__).resolve().parent / "ddp_check.py"
    for mode in ("single", "ddp"):
        out = subprocess.run(
            [sys.executable, str(script), str(tmp_path), str(data_dir), mode, "64-true"],
            capture_output=True, text=True, timeout=900,
        )  # fmt: skip
        assert out.returncode == 0, out.stderr[-3000:]
    one = torch.load(tmp_path / "single.pt")
    two = torch.load(tmp_path / "ddp.pt")
    for key in one:
        assert one[key].dtype == torch.float64
        # SGD: only the summation order differs (all-reduce of two halves)
        torch.testing.assert_close(two[key], one[key], rtol=1e-7, atol=1e-8)


def test_ship_refuses_what_is_not_an_export(tmp_path, capsys):
    """train/ship.py took a run folder, a Lightning .ckpt or a missing path to a bare
    IsADirectoryError / KeyError: 'config' / torch's FileNotFoundError."""
    import importlib.util

    from torchbss.export import pretrained_path

    spec = importlib.util.spec_from_file_location(
        "ship", Path(__file__).resolve().parents[1] / "train" / "ship.py"
    )
    ship = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ship)
    torch.save({"state_dict": {"model.separator.x": torch.zeros(1)}}, tmp_path / "last.ckpt")
    out = ["--name", "x", "--out", str(tmp_path / "x.pt"), "--description", "d"]
    for bad, message in ((tmp_path, "is not a file"), (tmp_path / "missing.pt", "is not a file"),
                         (tmp_path / "last.ckpt", "is not a torchbss export")):  # fmt: skip
        with pytest.raises(SystemExit) as err:
            ship.main([str(bad), *out])
        assert err.value.code == 2 and message in capsys.readouterr().err
    ship.main([str(pretrained_path("neural-auxiva")), *out])  # an export ships
    assert load_separator(tmp_path / "x.pt")[1]["name"] == "x"
