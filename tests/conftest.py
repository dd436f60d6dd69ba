"""Shared fixtures: the audio in ../shared/data (skipped when absent) and seeded generators."""

from __future__ import annotations

import json
import os
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

DATA_DIR = Path(
    os.environ.get("TORCHBSS_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")
)


def _need_data() -> Path:
    if not DATA_DIR.is_dir():
        pytest.skip(f"shared data folder not found at {DATA_DIR}")
    return DATA_DIR


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """Root of the shared audio data (``../shared/data``)."""
    return _need_data()


def load_mixture(name: str, folder: str = "mixtures") -> tuple[torch.Tensor, torch.Tensor, int]:
    """Load ``<name>_mix.flac`` and ``<name>_ref.flac`` as float64 ``(channels, samples)``."""
    import soundfile as sf

    root = _need_data() / folder
    mix, fs = sf.read(root / f"{name}_mix.flac", dtype="float64", always_2d=True)
    ref, _ = sf.read(root / f"{name}_ref.flac", dtype="float64", always_2d=True)
    return torch.from_numpy(mix.T.copy()), torch.from_numpy(ref.T.copy()), fs


def reference_figures() -> dict:
    """The pyroomacoustics reference figures of ``reference_figures.json``."""
    return json.loads((_need_data() / "reference_figures.json").read_text())


@pytest.fixture
def generator() -> torch.Generator:
    """A seeded CPU generator so that random test inputs are reproducible."""
    return torch.Generator().manual_seed(0)


@contextmanager
def single_threaded():
    """Run a block with one intra-op thread, restoring the previous count afterwards.

    Needed around torchmetrics' SDR, which solves batches of 512 x 512 Toeplitz systems with
    ``torch.linalg.solve``: with this torch build (2.13.0, MKL) and more than one thread, once
    ``torch.set_num_threads`` has been called (by any earlier test, with any value), MKL's
    threaded LU inside torch's parallel loop over the batch prints "Parameter 6 was incorrect on
    entry to DLASWP" and spins forever (reproduced with two lines: ``set_num_threads(2)`` then a
    batch of 64 512 x 512 solves). torchbss itself only factorises tiny matrices or uses Cholesky.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@pytest.fixture
def one_thread():
    """One intra-op thread for the test (many small ops: a second core would only be waited
    on); the count is restored after it. Files use it as ``pytestmark``."""
    with single_threaded():
        yield
