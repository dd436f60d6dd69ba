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


def test_float_is_never_clipped_integer_overflow_is_handled(tmp_path):
    loud = torch.tensor([[0.5, -3.0, 2.0, 0.1]])
    io.save(tmp_path / "f.wav", loud, 16000, subtype="float")
    torch.testing.assert_close(io.load(tmp_path / "f.wav")[0], loud)
    with pytest.warns(io.ClippingWarning, match="scaled by 0.3330"):
        io.save(tmp_path / "r.wav", loud, 16000, subtype="int16")
    back = io.load(tmp_path / "r.wav")[0]
    torch.testing.assert_close(back, loud * 0.333, atol=1e-4, rtol=0)  # the shape is kept
    with pytest.warns(io.ClippingWarning, match="2 samples beyond full scale were clipped"):
        io.save(tmp_path / "c.wav", loud, 16000, subtype="int16", overflow="clip")
    with pytest.raises(ValueError, match="exceeds full scale"):
        io.save(tmp_path / "e.wav", loud, 16000, subtype="int16", overflow="error")
    assert not (tmp_path / "e.wav").exists()


def test_writes_are_atomic_and_respect_overwrite(tmp_path, monkeypatch):
    path = tmp_path / "a.wav"
    io.save(path, torch.zeros(1, 10), 16000)
    assert oct(path.stat().st_mode & 0o777) != oct(0o600)  # the usual mode, not mkstemp's
    with pytest.raises(FileExistsError, match="already exists"):
        io.save(path, torch.ones(1, 10) * 0.5, 16000, overwrite=False)
    import soundfile

    def broken_write(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(soundfile, "write", broken_write)
    with pytest.raises(RuntimeError, match="disk full"):
        io.save(path, torch.ones(1, 10) * 0.5, 16000)
    # the old file is intact and no temporary file is left behind
    assert io.load(path)[0].abs().max() == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.wav"]


def test_check_output_paths(tmp_path):
    (tmp_path / "file").write_text("x")
    (tmp_path / "dir.wav").mkdir()
    with pytest.raises(NotADirectoryError, match="is a file, not a folder"):
        io.check_output_paths([tmp_path / "file" / "a.wav"])
    with pytest.raises(IsADirectoryError, match="existing folder"):
        io.check_output_paths([tmp_path / "dir.wav"])
    with pytest.raises(ValueError, match="distinct"):
        io.check_output_paths([tmp_path / "x.wav", tmp_path / "." / "x.wav"])
    assert io.check_output_paths([tmp_path / "new" / "deep" / "x.wav"])  # created on write


def test_multi_writer_streams_and_commits_only_on_success(tmp_path):
    paths = [tmp_path / "s0.wav", tmp_path / "s1.wav"]
    blocks = [torch.randn(2, 100) * 0.1 for _ in range(3)]
    with io.MultiWriter(paths, 16000, subtype="float") as writer:
        for b in blocks:
            writer.write(b)
    torch.testing.assert_close(io.load(paths[1])[0][0], torch.cat(blocks, -1)[1])
    with pytest.raises(RuntimeError, match="boom"):
        with io.MultiWriter([tmp_path / "t0.wav", tmp_path / "t1.wav"], 16000) as writer:
            writer.write(blocks[0])
            raise RuntimeError("boom")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s0.wav", "s1.wav"]
    with pytest.warns(io.ClippingWarning, match="1 samples beyond full scale were clipped"):
        with io.MultiWriter([tmp_path / "i.wav"], 16000, subtype="int16") as writer:
            writer.write(torch.tensor([[0.5, 1.5, 0.2]]))


def test_blocks_and_info(tmp_path):
    x = torch.randn(3, 1000) * 0.1
    io.save(tmp_path / "b.wav", x, 8000, subtype="float")
    meta = io.info(tmp_path / "b.wav")
    assert (meta.sample_rate, meta.channels, meta.frames) == (8000, 3, 1000)
    blocks = list(io.iter_blocks(tmp_path / "b.wav", 300))
    assert [b.shape[-1] for b in blocks] == [300, 300, 300, 100]
    torch.testing.assert_close(torch.cat(blocks, -1), x)


def test_reading_and_streaming_arguments_are_checked(tmp_path):
    """iter_blocks(path, 0) yielded empty blocks forever; load took a negative offset as from
    the end and a negative count as the whole file; a NaN block was written by MultiWriter
    (as -1.0 full-scale clicks in integer files)."""
    x = torch.randn(2, 1000) * 0.1
    path = io.save(tmp_path / "a.wav", x, 16000, subtype="float")
    with pytest.raises(ValueError, match="block_samples must be an integer >= 1"):
        next(io.iter_blocks(path, 0))
    with pytest.raises(TypeError, match="dtype must be torch.float32 or torch.float64"):
        next(io.iter_blocks(path, 100, dtype=torch.float16))
    with pytest.raises(ValueError, match="frame_offset must be an integer >= 0"):
        io.load(path, frame_offset=-100)
    with pytest.raises(ValueError, match="num_frames must be an int >= 0, or -1"):
        io.load(path, num_frames=-5)
    assert io.load(path, frame_offset=900)[0].shape == (2, 100)
    out = tmp_path / "nan.wav"
    with pytest.raises(ValueError, match="block contains 1 NaN/inf"):
        with io.MultiWriter([out], 16000, subtype="int16") as writer:
            writer.write(x[:1, :10])
            writer.write(torch.tensor([[0.0, float("nan")]]))
    assert not out.exists() and not list(tmp_path.glob(".nan*"))
    with pytest.raises(ValueError, match="unknown subtype 'int8'"):
        io.check_output_paths([tmp_path / "b.wav"], subtype="int8")


def test_writing_checks_the_layout_and_the_rate(tmp_path):
    """A transposed (samples, channels) tensor failed in libsndfile naming a temporary file; a
    zero rate in MultiWriter failed with 'SF_INFO struct incomplete'."""
    with pytest.raises(ValueError, match=r"16000 channels and 2 samples.*transposed"):
        io.save(tmp_path / "t.wav", torch.randn(16000, 2) * 0.1, 16000)
    for rate in (0, 10**10, 16000.0):
        with pytest.raises(ValueError, match="sample_rate must be a positive integer"):
            io.MultiWriter([tmp_path / "m.wav"], rate)
    assert not list(tmp_path.iterdir())
