"""Audio I/O: round trips per format/subtype and the errors for bad input."""

from __future__ import annotations

import pytest
import torch

from torchbss import io


@pytest.mark.parametrize(
    ("suffix", "subtype", "tol"),
    [
        (".wav", "int16", 1 / 32768),
        (".wav", "int24", 1 / 2**23),
        (".wav", "float", 1e-7),
        (".flac", "int16", 1 / 32768),
        (".flac", "int24", 1 / 2**23),
    ],
)
def test_round_trip(tmp_path, suffix, subtype, tol):
    x = 0.5 * torch.sin(torch.linspace(0, 200, 1601)).repeat(2, 1)
    x[1] *= -0.3
    path = io.save(tmp_path / f"a{suffix}", x, 16000, subtype=subtype)
    y, fs = io.load(path)
    assert fs == 16000
    assert y.dtype == torch.float32 and y.shape == x.shape
    assert (y - x).abs().max() <= tol


def test_ogg_round_trip_is_close(tmp_path):
    t = torch.arange(16000) / 16000
    x = (0.3 * torch.sin(2 * torch.pi * 440 * t)).unsqueeze(0)
    y, fs = io.load(io.save(tmp_path / "a.ogg", x, 16000))
    assert fs == 16000 and y.shape[0] == 1
    n = min(y.shape[-1], x.shape[-1])
    err = (y[..., :n] - x[..., :n]).pow(2).mean() / x.pow(2).mean()
    assert err < 0.05  # lossy codec, but the tone survives


def test_partial_read_and_float64(tmp_path):
    x = torch.rand(3, 1000) - 0.5
    path = io.save(tmp_path / "a.wav", x, 8000, subtype="float")
    y, _ = io.load(path, frame_offset=100, num_frames=50, dtype=torch.float64)
    assert y.dtype == torch.float64
    torch.testing.assert_close(y.float(), x[:, 100:150])


def test_reads_shared_mixture(data_dir):
    y, fs = io.load(data_dir / "mixtures" / "2x2_00_mix.flac")
    assert fs == 16000 and y.shape == (2, 128000)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="audio file not found"):
        io.load(tmp_path / "nope.wav")


def test_unreadable_file(tmp_path):
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"this is not a wav file")
    with pytest.raises(ValueError, match="could not decode"):
        io.load(bad)


@pytest.mark.parametrize("name", ["a.mp4", "a.txt"])
def test_unsupported_format(tmp_path, name):
    p = tmp_path / name
    p.write_bytes(b"xx")
    with pytest.raises(ValueError, match="unsupported audio format"):
        io.load(p)
    with pytest.raises(ValueError, match="unsupported audio format"):
        io.save(p, torch.zeros(1, 10), 16000)


@pytest.mark.parametrize("fs", [0, -16000, 16000.0])
def test_bad_sample_rate(tmp_path, fs):
    with pytest.raises(ValueError, match="sample_rate must be a positive integer"):
        io.save(tmp_path / "a.wav", torch.zeros(1, 10), fs)


def test_bad_tensors(tmp_path):
    with pytest.raises(ValueError, match=r"\(channels, samples\)"):
        io.save(tmp_path / "a.wav", torch.zeros(10), 16000)
    with pytest.raises(TypeError, match="int16"):
        io.save(tmp_path / "a.wav", torch.zeros(1, 10, dtype=torch.int16), 16000)
    with pytest.raises(ValueError, match="NaN/inf"):
        io.save(tmp_path / "a.wav", torch.tensor([[0.0, float("nan")]]), 16000)
    with pytest.raises(ValueError, match="empty"):
        io.save(tmp_path / "a.wav", torch.zeros(1, 0), 16000)
    with pytest.raises(ValueError, match="unknown subtype"):
        io.save(tmp_path / "a.wav", torch.zeros(1, 10), 16000, subtype="int12")
    with pytest.raises(ValueError, match="FLAC stores"):
        io.save(tmp_path / "a.flac", torch.zeros(1, 10), 16000, subtype="float")
