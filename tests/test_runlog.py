"""Run logs: per-iteration / per-block records, JSON-Lines writer and reader."""

from __future__ import annotations

import json
import math

import pytest
import torch

from torchbss import STFT, AuxIVA, OnlineAuxIVA
from torchbss.metrics import permutation_invariant_score, si_sdr
from torchbss.runlog import RunLogWriter, read_run_log, record, write_run_log


@pytest.fixture(scope="module")
def excerpt(data_dir):
    from conftest import load_mixture

    mix, ref, fs = load_mixture("2x2_00")
    return mix[:, 8000:24000], ref[:, 8000:24000], fs  # 1 s, float64


def test_batch_records_match_the_final_result(excerpt, tmp_path):
    """Every iteration is recorded; the last record's SI-SDR is the final output's, the costs
    are the separator's own and never increase, and the file holds the same records."""
    mix, ref, _ = excerpt
    stft = STFT(512, 128)
    X = stft(mix)
    path = tmp_path / "auxiva.jsonl"
    rec = record(path, ref, stft, fields={"method": "auxiva"})
    res = AuxIVA(n_iter=6)(X, callback=rec)
    records = rec.finish(res)
    assert [r["iteration"] for r in records] == list(range(6))
    assert all(r["method"] == "auxiva" for r in records)
    final = stft.inverse(res.sources, length=ref.shape[-1])
    expected = permutation_invariant_score(si_sdr, ref, final)
    assert records[-1]["si_sdr"] == pytest.approx(expected.values.tolist(), abs=1e-9)
    assert records[-1]["permutation"] == expected.permutation.tolist()
    costs = [r["cost"] for r in records]
    assert costs == pytest.approx(res.cost[1:].tolist())
    assert all(b <= a + 1e-9 for a, b in zip(costs, costs[1:]))
    times = [r["time_s"] for r in records]
    assert all(0 <= a <= b for a, b in zip(times, times[1:]))
    assert read_run_log(path) == json.loads(json.dumps(records))


def test_recorder_time_excludes_its_own_work(excerpt):
    """SI-SDR scoring is not charged to the method: time_s stays below the wall time by the
    recorder's overhead."""
    import time

    mix, ref, _ = excerpt
    stft = STFT(512, 128)
    X = stft(mix)
    rec = record(None, ref, stft)
    start = time.perf_counter()
    AuxIVA(n_iter=3)(X, callback=rec)
    wall = time.perf_counter() - start
    assert rec.overhead_s > 0
    assert rec.records[-1]["time_s"] <= wall - rec.overhead_s + 1e-3


def test_online_blocks_are_scored_on_the_samples_they_complete(excerpt):
    """Per-block records of an online separator: the blocks' sample ranges tile the output,
    and each SI-SDR is that of the streamed output over its range."""
    mix, ref, _ = excerpt
    stft = STFT(512, 128)
    X = stft(mix)
    sep = OnlineAuxIVA()
    whole = stft.inverse(sep(X).sources, length=ref.shape[-1])
    rec = record([], ref, stft)
    state = sep.init_state(X)
    for i, block in enumerate(X.split(30, dim=-1)):
        res = sep.step(block, state)
        state = res.state
        rec(i, res)
    ranges = [r["samples"] for r in rec.records]
    assert ranges[0][0] == 0
    assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:]))
    assert ranges[-1][1] <= ref.shape[-1]
    for r in rec.records[1:]:
        start, end = r["samples"]
        expected = permutation_invariant_score(si_sdr, ref[:, start:end], whole[:, start:end])
        assert r["si_sdr"] == pytest.approx(expected.values.tolist(), abs=1e-6)


def test_every_and_plain_list_target(generator):
    X = torch.randn(2, 33, 40, dtype=torch.complex128, generator=generator)
    log = []
    rec = record(log, every=2)
    res = AuxIVA(n_iter=5)(X, callback=rec)
    rec.finish(res)
    assert [r["iteration"] for r in log] == [0, 2, 4]
    assert [r["cost"] for r in log] == pytest.approx(res.cost[[1, 3, 5]].tolist())


def test_writer_reader_round_trip_and_nan(tmp_path):
    path = tmp_path / "log.jsonl"
    with RunLogWriter(path) as log:
        log.write({"iteration": 0, "si_sdr": torch.tensor([1.5, float("nan")])})
        log.write({"iteration": 1, "cost": float("inf"), "note": "x"})
    records = read_run_log(path)
    assert records == [
        {"iteration": 0, "si_sdr": [1.5, None]},
        {"iteration": 1, "cost": None, "note": "x"},
    ]
    write_run_log(path, [{"a": 1}], append=True)
    assert read_run_log(path)[-1] == {"a": 1}
    write_run_log(path, [{"b": math.pi}], overwrite=True)
    assert read_run_log(path) == [{"b": math.pi}]


def test_bad_input_is_named(tmp_path, excerpt):
    mix, ref, _ = excerpt
    path = tmp_path / "log.jsonl"
    path.write_text('{"a": 1}\n{"b": \n')
    with pytest.raises(ValueError, match="line 2 is not valid JSON"):
        read_run_log(path)
    path.write_text("[1, 2]\n")
    with pytest.raises(ValueError, match="line 1 is a JSON list"):
        read_run_log(path)
    with pytest.raises(FileNotFoundError, match="run log not found"):
        read_run_log(tmp_path / "missing.jsonl")
    with pytest.raises(FileExistsError, match="append=True"):
        write_run_log(path, [{"a": 1}])
    with pytest.raises(FileExistsError, match="overwrite=True"):
        record(path)
    with pytest.raises(ValueError, match="pass stft="):
        record(None, ref)
    with pytest.raises(TypeError, match="torchbss.STFT"):
        record(None, ref, stft=512)
    with pytest.raises(ValueError, match="every must be"):
        record(None, every=0)
    with pytest.raises(TypeError, match="cannot write a object"):
        write_run_log(tmp_path / "x.jsonl", [{"a": object()}])
    # the recorder's own keys in fields replaced the measured values; keys 1 and "1" kept one;
    # a NaN token was read although the writer writes strict JSON
    with pytest.raises(ValueError, match=r"fields \['cost', 'iteration'\] are written by"):
        record(None, fields={"iteration": 0, "cost": "n/a", "run": "a"})
    with pytest.raises(ValueError, match="collide as text"):
        write_run_log(tmp_path / "y.jsonl", [{1: "int", "1": "str"}])
    path.write_text('{"a": NaN}\n')
    with pytest.raises(ValueError, match="line 1 is not valid JSON"):
        read_run_log(path)
    rec = record(None, ref[:, :100], STFT(512, 128))
    X = STFT(512, 128)(mix)
    with pytest.raises(ValueError, match="references have 100 samples"):
        AuxIVA(n_iter=1)(X, callback=rec)
