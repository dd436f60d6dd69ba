"""End-to-end fine-tuning of online ILRMA: a smoke run of the training script (finite loss, the
saved parameters load and reproduce the trained model) and the shipped trained parameters."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from torchbss.cli.main import _default_data_dir
from torchbss.separators.online import OnlineILRMA
from torchbss.signal import STFT
from torchbss.training import online_ilrma as training

ASSET = Path(training.__file__).resolve().parents[1] / "assets" / "online_ilrma_2x2.pt"


@pytest.fixture(autouse=True, scope="module")
def _single_thread():
    """The frame loop is many tiny ops: one thread avoids oversubscription."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_training_smoke_saves_and_reloads(tmp_path):
    out, report, cache = tmp_path / "p.pt", tmp_path / "r.json", tmp_path / "cache"
    argv = [
        "--steps", "2", "--batch", "2", "--n-train", "2", "--n-heldout", "1", "--seconds", "1",
        "--n-fft", "512", "--hop", "128", "--n-basis", "4", "--threads", "1",
        "--cache", str(cache), "--out", str(out), "--report", str(report),
    ]  # fmt: skip
    assert training.main(argv) == 0
    summary = json.loads(report.read_text())
    assert math.isfinite(summary["final_train_loss"])
    assert math.isfinite(summary["heldout_si_sdri_after_db"])
    for key in ("steps", "train_time_s", "device", "threads", "heldout_si_sdri_before_db"):
        assert key in summary
    assert len(list(cache.glob("mixtures_*.pt"))) == 2  # train and held-out sets are cached

    sep = training.load_online_ilrma(out)
    assert not any(p.requires_grad for p in sep.parameters())
    assert sep.n_freq == 257 and sep.n_basis == 4
    # the reloaded model reproduces the trained model's held-out score (same cached mixtures)
    train_pool, held_pool, fs = training._speech_pool(_default_data_dir())
    held_mix, held_img = training.cached_mixtures(
        cache, held_pool, 1, n_src=2, n_mics=2, sample_rate=fs, seconds=1.0, seed=10_000
    )
    stft = STFT(n_fft=512, hop_length=128).double()
    score = training.evaluate(sep, stft, held_mix, held_img)
    assert score == pytest.approx(summary["heldout_si_sdri_after_db"], abs=6e-3)
    # and the parameters moved away from the plain algorithm
    plain = OnlineILRMA(n_src=2, n_freq=257, n_basis=4)
    X = stft(held_mix)
    assert not torch.allclose(sep(X), plain(X))


def test_shipped_parameters_load_and_differ_from_plain():
    assert ASSET.is_file(), f"trained parameters missing at {ASSET}"
    assert ASSET.stat().st_size < 200_000
    sep = training.load_online_ilrma(ASSET)
    assert (sep.n_src, sep.n_freq) == (2, 1025)
    g = torch.Generator().manual_seed(0)
    X = torch.randn(2, 1025, 12, generator=g, dtype=torch.complex128)
    Y = sep(X)
    plain = OnlineILRMA(n_src=2, n_freq=1025, n_basis=sep.n_basis)(X)
    assert Y.shape == (2, 1025, 12)
    assert torch.isfinite(torch.view_as_real(Y)).all()
    assert not torch.allclose(Y, plain)
