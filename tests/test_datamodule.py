"""Lightning data modules: batches, determinism, fresh epochs, configs, Trainer integration."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import pytest
import torch
from conftest import DATA_DIR

pytest.importorskip("lightning")
sf = pytest.importorskip("soundfile")

from lightning.fabric.utilities.distributed import DistributedSamplerWrapper  # noqa: E402

from torchbss.data.datasets import EpochSampler  # noqa: E402
from torchbss.data.dynamic_mixing import DynamicMixingDataset  # noqa: E402
from torchbss.data.folders import WavFolderDataset  # noqa: E402
from torchbss.lightning import DynamicMixingDataModule, SeparationDataModule  # noqa: E402

FS = 16000
CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "data"


def _write(path: Path, audio: torch.Tensor, fs: int = FS) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), audio.T.double().numpy(), fs, subtype="PCM_16")


@pytest.fixture
def speech_dir(tmp_path: Path) -> Path:
    """6 speakers x 2 noise utterances of 0.4 s, one folder per speaker."""
    g = torch.Generator().manual_seed(0)
    for k in range(6):
        for u in range(2):
            _write(tmp_path / f"spk{k}" / f"u{u}.wav", 0.1 * torch.randn(1, 6400, generator=g))
    return tmp_path


def _module(root: Path, **kwargs) -> SeparationDataModule:
    shared = dict(segment_s=0.25, rt60=(0.1, 0.2), split_fractions=(0.5, 0.25, 0.25))
    args = dict(
        dataset=partial(DynamicMixingDataset, root, **shared),
        train={"split": "train", "length": 6},
        val={"split": "val", "length": 3},
        batch_size=2,
        seed=7,
    )
    args.update(kwargs)
    return SeparationDataModule(**args)


def _same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)


def test_batches_are_the_sampled_examples(speech_dir):
    dm = _module(speech_dir)
    dm.setup("fit")
    train = dm.datasets["train"]
    assert train.seed == 7 and train.split == "train"  # the module's seed reached the factory
    loader = dm.train_dataloader()
    order = list(loader.sampler)
    batches = list(loader)
    assert len(batches) == 3
    assert batches[0]["mixture"].shape == (2, 2, 4000)
    assert batches[0]["reference"].shape == (2, 2, 4000)
    for b, batch in enumerate(batches):
        for j in range(2):
            ex = train[order[2 * b + j]]
            for key, value in ex.items():
                torch.testing.assert_close(batch[key][j], value, rtol=0, atol=0)
    val = list(dm.val_dataloader())
    assert [len(v["index"]) for v in val] == [2, 1]  # no drop_last for evaluation
    assert torch.cat([v["index"] for v in val]).tolist() == [0, 1, 2]


def test_workers_do_not_change_the_batches(speech_dir):
    serial = list(_module(speech_dir, num_workers=0).train_dataloader())
    parallel = list(_module(speech_dir, num_workers=2).train_dataloader())
    for a, b in zip(serial, parallel):
        _same(a, b)


def test_every_epoch_sees_new_training_mixtures(speech_dir):
    dm = _module(speech_dir)
    loader = dm.train_dataloader()
    first = torch.cat([b["index"] for b in loader])
    loader.sampler.set_epoch(1)  # what Lightning does at each epoch start
    second = torch.cat([b["index"] for b in loader])
    assert sorted(first.tolist()) == list(range(6))
    assert sorted(second.tolist()) == list(range(6, 12))
    fixed = _module(speech_dir, fresh_examples=False).train_dataloader()
    fixed.sampler.set_epoch(1)
    assert sorted(torch.cat([b["index"] for b in fixed]).tolist()) == list(range(6))
    val_a = next(iter(dm.val_dataloader()))
    val_b = next(iter(dm.val_dataloader()))
    _same(val_a, val_b)


def test_dynamic_mixing_module_splits_by_speaker(speech_dir):
    dm = DynamicMixingDataModule(
        str(speech_dir),
        train_length=4,
        val_length=2,
        test_length=0,
        batch_size=2,
        segment_s=0.25,
        rt60=0.15,
        n_mics=3,
        split_fractions=(0.5, 0.25, 0.25),
        snr_db=None,
    )
    dm.setup()
    train, val = dm.datasets["train"], dm.datasets["val"]
    assert dm.datasets["test"] is None
    assert not set(train.speakers) & set(val.speakers)
    batch = next(iter(dm.train_dataloader()))
    assert batch["mixture"].shape == (2, 3, 4000) and batch["reference"].shape == (2, 2, 4000)
    torch.testing.assert_close(batch["mixture"][:, 0], batch["reference"].sum(1), atol=2e-6, rtol=0)
    with pytest.raises(ValueError, match="no test dataset"):
        dm.test_dataloader()


def test_pad_collate_batches_unequal_lengths(tmp_path):
    for name, n in (("a", 3000), ("b", 5000)):
        _write(tmp_path / f"{name}_mix.flac", 0.1 * torch.ones(2, n))
        _write(tmp_path / f"{name}_ref.flac", 0.05 * torch.ones(2, n))
    ds = WavFolderDataset(tmp_path)
    dm = SeparationDataModule(val=ds, eval_batch_size=2, collate="pad")
    batch = next(iter(dm.val_dataloader()))
    assert batch["mixture"].shape == (2, 2, 5000) and batch["length"].tolist() == [3000, 5000]
    assert bool((batch["mixture"][0, :, 3000:] == 0).all())
    torch.testing.assert_close(
        batch["mixture"][0, :, :3000], torch.full((2, 3000), 0.1), atol=1e-4, rtol=0
    )


def test_data_module_errors_are_specific(speech_dir):
    with pytest.raises(ValueError, match="no 'dataset' factory"):
        SeparationDataModule(train={"split": "train"})
    with pytest.raises(ValueError, match="collate must be one of"):
        SeparationDataModule(collate="zip")
    with pytest.raises(ValueError, match="batch_size"):
        SeparationDataModule(batch_size=0)
    with pytest.raises(TypeError, match="map-style dataset"):
        SeparationDataModule(train=3)
    with pytest.raises(TypeError, match="_partial_"):
        SeparationDataModule(dataset="DynamicMixingDataset")
    with pytest.raises(ValueError, match="no val dataset"):
        _module(speech_dir, val=None).val_dataloader()


def test_epoch_sampler_under_the_distributed_wrapper():
    s = EpochSampler(12, seed=0)
    ranks = [DistributedSamplerWrapper(s, num_replicas=2, rank=r, shuffle=False) for r in (0, 1)]
    for epoch in (0, 3):
        for w in ranks:
            w.set_epoch(epoch)  # forwarded to the EpochSampler
        shards = [list(w) for w in ranks]
        assert sorted(shards[0] + shards[1]) == list(range(12 * epoch, 12 * epoch + 12))


@pytest.mark.parametrize(
    "name, mixture, reference",
    [
        ("dynamic_mixing_2x2", (2, 2, 64000), (2, 2, 64000)),
        ("dynamic_mixing_3x3", (2, 3, 64000), (2, 3, 64000)),
        ("dynamic_mixing_2s4m", (2, 4, 64000), (2, 2, 64000)),
        ("wav_folder", (2, 2, 64000), (2, 2, 64000)),
        ("musdb", (2, 2, 264600), (2, 4, 2, 264600)),
    ],
)
def test_data_configs_instantiate_and_batch(name, mixture, reference):
    omegaconf = pytest.importorskip("omegaconf")
    hydra_utils = pytest.importorskip("hydra.utils")
    if not DATA_DIR.is_dir():
        pytest.skip("shared data not found")
    cfg = omegaconf.OmegaConf.create(
        {
            "paths": {"data_dir": str(DATA_DIR)},
            "data": omegaconf.OmegaConf.load(CONFIGS / f"{name}.yaml"),
        }
    )
    cfg.data.batch_size, cfg.data.num_workers = 2, 0
    if name.startswith("dynamic"):
        cfg.data.dataset.rt60 = [0.15, 0.25]  # keep the test fast; the ranges are checked above
    dm = hydra_utils.instantiate(cfg.data)
    assert isinstance(dm, SeparationDataModule)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert tuple(batch["mixture"].shape) == mixture
    assert tuple(batch["reference"].shape) == reference
    assert batch["mixture"].dtype == torch.float32 and bool(batch["mixture"].isfinite().all())
    assert float(batch["mixture"].abs().max()) > 0.01  # audio, not silence
    if name.startswith("dynamic"):
        assert not set(dm.datasets["train"].speakers) & set(dm.datasets["val"].speakers)
        ref_sum = batch["reference"].sum(1)
        noise = batch["mixture"][:, 0] - ref_sum
        assert float(noise.square().mean() / ref_sum.square().mean()) < 0.1  # SNR >= 20 dB


def test_trainer_runs_on_the_data_module(speech_dir, tmp_path):
    import lightning.pytorch as pl

    class Gain(pl.LightningModule):
        """Learns one gain so that gain * mixture[ref] approaches the sum of the references."""

        def __init__(self):
            super().__init__()
            self.gain = torch.nn.Parameter(torch.tensor(0.5))
            self.seen: list[int] = []

        def training_step(self, batch, _):
            self.seen += batch["index"].tolist()
            est = self.gain * batch["mixture"][:, 0]
            return (est - batch["reference"].sum(1)).square().mean()

        def validation_step(self, batch, _):
            self.log("val/loss", (batch["mixture"][:, 0] - batch["reference"].sum(1)).abs().mean())

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.0)

    model = Gain()
    trainer = pl.Trainer(
        max_epochs=2,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(model, datamodule=_module(speech_dir))
    # two epochs of 6 examples: the second epoch drew new mixtures (indices 6..11)
    assert sorted(model.seen) == list(range(12))


def test_train_extra_gives_one_batch_of_each_set_per_step(speech_dir):
    """``train_extra``: mixtures of another source count, a batch of each set per step (dict of
    loaders -> Lightning's CombinedLoader); each set's batches are its own sampled examples."""
    from lightning.pytorch.utilities import CombinedLoader

    extra = {"3x3": {"split": "train", "length": 6, "n_sources": 3, "n_mics": 3}}
    dm = _module(speech_dir, train_extra=extra)
    dm.setup("fit")
    loaders = dm.train_dataloader()
    assert list(loaders) == ["train", "3x3"]
    combined = CombinedLoader(loaders, mode="max_size_cycle")
    steps = list(iter(combined))
    assert len(steps) == 3
    for batch, _, _ in steps:
        assert batch["train"]["mixture"].shape[:2] == (2, 2)
        assert batch["3x3"]["mixture"].shape[:2] == (2, 3)
        assert batch["3x3"]["reference"].shape[:2] == (2, 3)
    # the main set's batches are those of the same module without the extra set
    plain = _module(speech_dir)
    plain.setup("fit")
    for (batch, _, _), alone in zip(steps, plain.train_dataloader()):
        _same(batch["train"], alone)
    with pytest.raises(ValueError, match="must differ from"):
        _module(speech_dir, train_extra={"val": extra["3x3"]})
    with pytest.raises(ValueError, match="needs a main train"):
        _module(speech_dir, train=None, train_extra=extra)
