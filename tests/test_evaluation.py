"""Scoring files and folders of estimates (what `torchbss evaluate` runs)."""

from __future__ import annotations

import csv
import io as _io
import json

import pytest
import torch

from torchbss import io
from torchbss.evaluation import evaluate_files, evaluate_folders
from torchbss.metrics import compute_metrics

FS = 8000
N = 8000


def _example(seed: int):
    g = torch.Generator().manual_seed(seed)
    ref = torch.randn(2, N, generator=g, dtype=torch.float64) * 0.1
    mix = torch.stack([ref.sum(0), ref[0] + 0.5 * ref[1]])
    est = ref.flip(0) + 0.05 * torch.randn(2, N, generator=g, dtype=torch.float64)
    return mix, ref, est


@pytest.fixture
def folders(tmp_path):
    """Two examples: 'a' with per-source estimates as `torchbss separate` writes them, 'b' with
    one multichannel estimate; shared-data style references and mixtures."""
    d = {k: tmp_path / k for k in ("est", "ref", "mix")}
    signals = {}
    for seed, name in enumerate(("a", "b")):
        mix, ref, est = _example(seed)
        signals[name] = (mix, ref, est)
        io.save(d["ref"] / f"{name}_ref.wav", ref, FS, subtype="float64")
        io.save(d["mix"] / f"{name}_mix.wav", mix, FS, subtype="float64")
    mix, ref, est = signals["a"]
    for k in range(2):
        io.save(d["est"] / f"a_mix_source{k}.wav", est[k : k + 1], FS, subtype="float64")
    io.save(d["est"] / "b.wav", signals["b"][2], FS, subtype="float64")
    return d, signals


def test_folders_match_by_name_and_score_like_compute_metrics(folders):
    d, signals = folders
    ev = evaluate_folders(d["est"], d["ref"], d["mix"])
    assert [f.name for f in ev.files] == ["a", "b"]
    for f in ev.files:
        mix, ref, est = signals[f.name]
        assert f.metrics == compute_metrics(ref, est, mix, sample_rate=FS)
        assert f.metrics.permutation.tolist() == [1, 0]
        assert f.samples == N and not f.truncated
    mean = ev.mean()
    for key in ("sdr", "si_sdr_improvement"):
        per_file = [f.mean()[key] for f in ev.files]
        assert mean[key] == pytest.approx(sum(per_file) / 2)
    assert ev.files[0].files["estimates"][1].endswith("a_mix_source1.wav")
    # JSON and CSV for machines
    data = json.loads(json.dumps(ev.to_dict()))
    assert data["mean"]["sdr"] == pytest.approx(mean["sdr"])
    assert [f["name"] for f in data["files"]] == ["a", "b"]
    rows = list(csv.DictReader(_io.StringIO(ev.to_csv(d["est"].parent / "scores.csv"))))
    assert len(rows) == 2 * 2 + 2 + 1  # per source, per-file means, mean over files
    assert rows[-1]["file"] == "mean" and float(rows[-1]["sdr"]) == pytest.approx(mean["sdr"])
    assert (d["est"].parent / "scores.csv").is_file()


def test_table_is_readable(folders):
    d, _ = folders
    ev = evaluate_folders(d["est"], d["ref"], d["mix"])
    table = ev.table()
    lines = table.splitlines()
    assert lines[0].startswith("| file") and "SI-SDRi (dB)" in lines[0]
    assert [line.split("|")[1].strip() for line in lines[2:]] == ["a", "b", "mean"]
    assert len({len(line) for line in lines}) == 1  # aligned columns
    detailed = ev.table(per_source=True)
    assert "| a    | 0      | 1        |" in detailed
    one = evaluate_files(d["ref"] / "a_ref.wav",
                         [d["est"] / "a_mix_source0.wav", d["est"] / "a_mix_source1.wav"],
                         d["mix"] / "a_mix.wav")  # fmt: skip
    assert one.files[0].name == "a" and one.files[0].metrics == ev.files[0].metrics
    assert "| a    | mean   |" in one.table()  # per source by default for one file


def test_lengths_are_refused_unless_truncate(folders, tmp_path):
    d, signals = folders
    io.save(d["est"] / "b.wav", signals["b"][2][:, : N - 100], FS, subtype="float64")
    with pytest.raises(ValueError, match=r"b: lengths differ .* pass truncate=True"):
        evaluate_folders(d["est"], d["ref"], d["mix"])
    ev = evaluate_folders(d["est"], d["ref"], d["mix"], truncate=True)
    assert ev.files[1].samples == N - 100 and ev.files[1].truncated
    assert "truncated to the common length: b" in ev.table()
    mix, ref, est = signals["b"]
    n = N - 100
    assert ev.files[1].metrics == compute_metrics(ref[:, :n], est[:, :n], mix[:, :n],
                                                  sample_rate=FS)  # fmt: skip


def test_sample_rates_are_always_refused(folders):
    d, signals = folders
    io.save(d["est"] / "b.wav", signals["b"][2], 16000, subtype="float64")
    for truncate in (False, True):
        with pytest.raises(ValueError, match="at 16000 Hz but the reference .* at 8000 Hz"):
            evaluate_folders(d["est"], d["ref"], truncate=truncate)


def test_unmatched_and_empty_folders_are_named(folders, tmp_path):
    d, signals = folders
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="estimates folder .*empty.* is empty"):
        evaluate_folders(empty, d["ref"])
    with pytest.raises(FileNotFoundError, match="references folder not found"):
        evaluate_folders(d["est"], tmp_path / "nope")
    io.save(d["est"] / "c.wav", signals["b"][2], FS, subtype="float64")
    with pytest.raises(ValueError, match=r"estimates without a reference .*\['c'\]"):
        evaluate_folders(d["est"], d["ref"])
    (d["est"] / "c.wav").unlink()
    (d["est"] / "b.wav").unlink()
    with pytest.raises(ValueError, match=r"references without estimates .*\['b'\]"):
        evaluate_folders(d["est"], d["ref"])
    io.save(d["est"] / "b_source1.wav", signals["b"][2][:1], FS, subtype="float64")
    with pytest.raises(ValueError, match=r"estimates of 'b' lack source file\(s\) \[0\]"):
        evaluate_folders(d["est"], d["ref"])
    io.save(d["est"] / "b.wav", signals["b"][2], FS, subtype="float64")
    with pytest.raises(ValueError, match="both a whole estimate file"):
        evaluate_folders(d["est"], d["ref"])
    (d["est"] / "b_source1.wav").unlink()
    (d["mix"] / "b_mix.wav").unlink()
    with pytest.raises(ValueError, match=r"examples without a mixture .*\['b'\]"):
        evaluate_folders(d["est"], d["ref"], d["mix"])


def test_too_few_estimates_and_bad_ref_mic(folders):
    d, _ = folders
    ref = d["ref"] / "a_ref.wav"
    with pytest.raises(ValueError, match="1 estimated channel"):
        evaluate_files(ref, [d["est"] / "a_mix_source0.wav"])
    with pytest.raises(ValueError, match="ref_mic=5 but the mixture"):
        evaluate_files(ref, [d["est"] / "b.wav"], d["mix"] / "a_mix.wav", ref_mic=5)
    with pytest.raises(ValueError, match="no estimate files"):
        evaluate_files(ref, [])
    # a stereo per-source file was taken as two estimates: both references matched to it
    with pytest.raises(ValueError, match="each must hold one channel.*b.wav' has 2"):
        evaluate_files(ref, [d["est"] / "b.wav", d["est"] / "a_mix_source1.wav"])
