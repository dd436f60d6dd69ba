"""The command line: separate, evaluate, demo (simulated fallback) and bad input."""

from __future__ import annotations

import json

import pytest
import torch

from torchbss import io
from torchbss.cli.main import main


@pytest.fixture
def short_mixture(tmp_path, data_dir):
    mix, fs = io.load(data_dir / "mixtures" / "2x2_00_mix.flac", num_frames=48000)
    ref, _ = io.load(data_dir / "mixtures" / "2x2_00_ref.flac", num_frames=48000)
    io.save(tmp_path / "mix.wav", mix, fs, subtype="float")
    io.save(tmp_path / "ref.wav", ref, fs, subtype="float")
    return tmp_path


@pytest.mark.parametrize("method", ["auxiva", "ilrma", "online-auxiva"])
def test_separate_then_evaluate(short_mixture, method, capsys):
    d = short_mixture
    sep = ["separate", str(d / "mix.wav"), "--method", method, "--out", str(d / "out")]
    assert main([*sep, "--n-iter", "30"]) == 0
    outs = sorted((d / "out").glob("mix_source*.wav"))
    assert len(outs) == 2
    est, fs = io.load(outs[0])
    assert fs == 16000 and est.shape == (1, 48000) and torch.isfinite(est).all()
    capsys.readouterr()
    args = ["evaluate", "--reference", str(d / "ref.wav"), "--estimates", *map(str, outs)]
    assert main([*args, "--mixture", str(d / "mix.wav"), "--json", str(d / "s.json")]) == 0
    scores = json.loads((d / "s.json").read_text())
    assert sorted(scores["permutation"]) == [0, 1]
    if method != "online-auxiva":  # batch methods separate this excerpt clearly
        assert sum(scores["si_sdri_db"]) / 2 > 1.0


def test_demo_simulated_fallback(tmp_path, capsys):
    code = main(
        [
            "demo",
            "--data",
            str(tmp_path / "missing"),
            "--methods",
            "auxiva",
            "--out",
            str(tmp_path / "demo"),
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "simulated room" in out and "mean SI-SDRi" in out
    assert (tmp_path / "demo" / "auxiva" / "source1.wav").is_file()


def test_bad_input_messages(tmp_path, capsys):
    assert main(["separate", str(tmp_path / "nope.wav")]) == 2
    assert "audio file not found" in capsys.readouterr().err
    io.save(tmp_path / "mono.wav", torch.zeros(1, 1000), 16000)
    with pytest.raises(SystemExit, match="needs >= 2 mics"):
        main(["separate", str(tmp_path / "mono.wav")])
