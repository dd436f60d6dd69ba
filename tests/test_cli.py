"""The command line: separate, evaluate, demo, benchmark, and one-line errors for bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys

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


def _error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err, err
    return err


@pytest.mark.parametrize("method", ["auxiva", "ilrma", "online-auxiva", "online-ilrma"])
def test_separate_then_evaluate(short_mixture, method, capsys):
    d = short_mixture
    sep = ["separate", str(d / "mix.wav"), "--method", method, "--out", str(d / "out")]
    if not method.startswith("online"):
        sep += ["--n-iter", "30"]
    assert main(sep) == 0
    assert ("streamed" in capsys.readouterr().out) == method.startswith("online")
    outs = sorted((d / "out").glob("mix_source*.wav"))
    assert len(outs) == 2
    est, fs = io.load(outs[0])
    assert fs == 16000 and est.shape == (1, 48000) and torch.isfinite(est).all()
    args = ["evaluate", "--reference", str(d / "ref.wav"), "--estimates", *map(str, outs)]
    assert main([*args, "--mixture", str(d / "mix.wav"), "--output", str(d / "s.json")]) == 0
    table = capsys.readouterr().out
    assert "| mean" in table and "SI-SDRi (dB)" in table
    scores = json.loads((d / "s.json").read_text())
    assert len(scores["files"]) == 1
    if not method.startswith("online"):  # batch methods separate this excerpt clearly
        assert scores["mean"]["si_sdr_improvement"] > 1.0, scores["mean"]
    # refuses to overwrite, unless asked
    assert main(sep) == 2
    assert "already exists; pass overwrite (--overwrite)" in _error(capsys)
    assert main([*sep, "--overwrite"]) == 0


def test_streamed_online_output_equals_the_whole_file(short_mixture):
    """``separate`` streams online methods block by block; the result is the whole-file one."""
    from torchbss import OnlineAuxIVA
    from torchbss.inference import WaveformSeparator

    d = short_mixture
    cmd = ["separate", str(d / "mix.wav"), "--method", "online-auxiva", "--out", str(d / "o")]
    assert main([*cmd, "--block-seconds", "0.37"]) == 0
    mix, _ = io.load(d / "mix.wav")
    whole = WaveformSeparator(OnlineAuxIVA())(mix).sources
    for k in range(2):
        est, _ = io.load(d / "o" / f"mix_source{k}.wav")
        torch.testing.assert_close(est[0], whole[k], rtol=1e-4, atol=1e-4)


def test_float_output_is_never_clipped_and_int_output_is_rescaled(short_mixture, capsys):
    d = short_mixture
    mix, fs = io.load(d / "mix.wav")
    io.save(d / "loud.wav", 8.0 * mix, fs, subtype="float")
    cmd = ["separate", str(d / "loud.wav"), "--method", "auxiva", "--n-iter", "5"]
    assert main([*cmd, "--out", str(d / "f")]) == 0  # float is the default
    est, _ = io.load(d / "f" / "loud_source0.wav")
    assert est.abs().max() > 1.5  # kept beyond full scale
    assert main([*cmd, "--out", str(d / "i"), "--subtype", "int16"]) == 0
    assert "scaled by" in capsys.readouterr().err
    est, _ = io.load(d / "i" / "loud_source0.wav")
    assert 0.9 < est.abs().max() <= 1.0


def test_output_location_errors_are_checked_before_separating(short_mixture, capsys):
    d = short_mixture
    (d / "file").write_text("x")
    cmd = ["separate", str(d / "mix.wav"), "--method", "ilrma", "--n-iter", "500"]
    # an existing file as the output folder: one line, and no time spent on 500 iterations
    assert main([*cmd, "--out", str(d / "file")]) == 2
    assert "is a file, not a folder" in _error(capsys)
    # one output path blocked by a folder: nothing at all is written
    (d / "blocked" / "mix_source1.wav").mkdir(parents=True)
    assert main([*cmd, "--out", str(d / "blocked")]) == 2
    assert "is an existing folder" in _error(capsys)
    assert not (d / "blocked" / "mix_source0.wav").exists()
    if os.geteuid() != 0:  # root can write anywhere
        ro = d / "readonly"
        ro.mkdir()
        ro.chmod(0o500)
        assert main([*cmd, "--out", str(ro)]) == 2
        assert "not writable" in _error(capsys)


def test_bad_arguments_are_refused_in_one_line(short_mixture, tmp_path, capsys):
    d = short_mixture
    mix = str(d / "mix.wav")
    for args, message in [
        (["separate", mix, "--n-iter", "0", "--method", "online-auxiva"], "does not apply"),
        (["separate", mix, "--no-align", "--method", "online-ilrma"], "apply to the batch methods"),
        (["separate", mix, "--n-src", "3"], "--n-src 3 sources need at least as many mics"),
        (["separate", mix, "--ref-mic", "2"], "--ref-mic 2 but"),
        (["separate", str(tmp_path / "nope.wav")], "audio file not found"),
        (["separate", mix, "--device", "cuda"], "no usable CUDA device"),
        (["separate", mix, "--device", "nonsense"], "unknown device"),
    ]:
        if "cuda" in args and torch.cuda.is_available():
            continue
        assert main(args) == 2, args
        assert message in _error(capsys), args
    # argparse rejects invalid numbers itself (exit 2 with a usage line)
    for args in (["separate", mix, "--n-src", "0"], ["separate", mix, "--n-iter", "-1"],
                 ["separate", mix, "--block-seconds", "-1"]):  # fmt: skip
        with pytest.raises(SystemExit) as exc:
            main(args)
        assert exc.value.code == 2
        assert "expected" in capsys.readouterr().err
    # zero iterations is honoured (the identity demixing, scaled), not replaced by a default
    assert main(["separate", mix, "--n-iter", "0", "--out", str(d / "zero")]) == 0


def test_mono_input_and_checkpoint_errors(short_mixture, tmp_path, capsys):
    d = short_mixture
    io.save(tmp_path / "mono.wav", torch.zeros(1, 1000), 16000)
    assert main(["separate", str(tmp_path / "mono.wav")]) == 2
    assert "needs >= 2 mics" in _error(capsys)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    assert main(["separate", str(d / "mix.wav"), "--checkpoint", str(garbage)]) == 2
    assert "is not a torchbss export" in _error(capsys)
    torch.save({"state_dict": {}}, tmp_path / "noconfig.pt")
    assert main(["separate", str(d / "mix.wav"), "--params", str(tmp_path / "noconfig.pt")]) == 2
    assert "is not a torchbss export" in _error(capsys)


def test_checkpoint_for_another_mic_count_is_refused(short_mixture, tmp_path, capsys):
    from torchbss import OnlineILRMA
    from torchbss.export import save_separator

    sep = OnlineILRMA(n_freq=1025, n_src=3)
    cfg = {"_target_": "torchbss.OnlineILRMA", "n_freq": 1025, "n_src": 3}
    save_separator(tmp_path / "three.pt", sep, cfg)
    assert main(["separate", str(short_mixture / "mix.wav"), "--checkpoint",
                 str(tmp_path / "three.pt")]) == 2  # fmt: skip
    assert "separates 3 sources but the input has 2 channels" in _error(capsys)


def test_evaluate_refuses_mismatches(short_mixture, tmp_path, capsys):
    d = short_mixture
    ref, fs = io.load(d / "ref.wav")
    io.save(tmp_path / "e0.wav", ref[:1, :40000], fs, subtype="float")
    io.save(tmp_path / "e1.wav", ref[1:, :48000], fs, subtype="float")
    io.save(tmp_path / "e8k.wav", ref[1:], 8000, subtype="float")
    io.save(tmp_path / "short_mix.wav", ref[:, :1000], fs, subtype="float")
    base = ["evaluate", "--reference", str(d / "ref.wav"), "--estimates"]
    e0, e1 = str(tmp_path / "e0.wav"), str(tmp_path / "e1.wav")
    assert main([*base, e0, e1]) == 2
    assert "lengths differ" in _error(capsys) and True
    assert main([*base, e0, e1, "--truncate", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["files"]
    assert main([*base, e0, str(tmp_path / "e8k.wav")]) == 2
    assert "at 8000 Hz" in _error(capsys)
    both = [*base, str(d / "ref.wav")]
    assert main([*both, "--mixture", str(d / "mix.wav"), "--ref-mic", "5"]) == 2
    assert "ref_mic=5 but the mixture" in _error(capsys)
    assert main([*both, "--mixture", str(tmp_path / "short_mix.wav")]) == 2
    assert "lengths differ" in _error(capsys)


def test_demo_refuses_a_missing_data_folder_and_simulates_without_one(tmp_path, capsys):
    assert main(["demo", "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "d")]) == 2
    assert "omit --data and --mixture to simulate a room" in _error(capsys)
    # a --mixture that is not there is an error, not a silently simulated room
    (tmp_path / "data" / "mixtures").mkdir(parents=True)
    args = ["demo", "--data", str(tmp_path / "data"), "--mixture", "typo_00"]
    assert main([*args, "--out", str(tmp_path / "d")]) == 2
    assert "typo_00_mix.flac" in _error(capsys)


def test_demo_simulated_room(tmp_path, capsys, monkeypatch):
    from torchbss.cli import main as cli

    monkeypatch.setattr(cli, "_default_data_dir", lambda: None)
    assert main(["demo", "--methods", "auxiva", "--out", str(tmp_path / "demo")]) == 0
    out = capsys.readouterr().out
    assert "simulated room" in out and "mean SI-SDRi" in out
    assert (tmp_path / "demo" / "auxiva" / "source1.wav").is_file()


def test_benchmark_engine_runs_and_refuses_bad_settings(tmp_path, capsys):
    out = tmp_path / "bench"
    assert main(["benchmark", "recipe=quick", f"out_dir={out}", "data.n_items=1",
                 "data.seconds=1"]) == 0  # fmt: skip
    assert (out / "summary.md").is_file()
    for bad, message in (("workers=0", "workers"), ("recipe=nope", "nope")):
        assert main(["benchmark", bad, f"out_dir={tmp_path / 'x'}"]) == 2
        assert message in _error(capsys)


def test_python_dash_m_is_the_same_command():
    out = subprocess.run(
        [sys.executable, "-m", "torchbss", "separate", "--help"], capture_output=True, text=True
    )
    assert out.returncode == 0 and "--method" in out.stdout and "--overwrite" in out.stdout


def test_separate_writes_a_listening_report(short_mixture, capsys):
    pytest.importorskip("matplotlib")
    d = short_mixture
    (d / "busy").mkdir()
    (d / "busy" / "x.txt").write_text("x")
    cmd = ["separate", str(d / "mix.wav"), "--method", "auxiva", "--n-iter", "5", "--out",
           str(d / "o")]  # fmt: skip
    assert main([*cmd, "--report", str(d / "busy")]) == 2
    assert "not empty" in _error(capsys)
    assert not (d / "o").exists()  # refused before any work
    assert main([*cmd, "--report", str(d / "rep")]) == 0
    page = (d / "rep" / "index.html").read_text()
    assert "<audio" in page and "mix" in page
    # a non-empty folder that is not a report is refused up front with --overwrite too (it
    # was refused only after the separation)
    assert main([*cmd, "--report", str(d / "busy"), "--overwrite"]) == 2
    assert "not a torchbss report" in _error(capsys)
    # the report folder must not be (or hold) the output folder: replacing the report deleted
    # the separated files, and the command exited 0
    for report in (d / "rep", d):
        assert main([*cmd[:-1], str(d / "rep"), "--report", str(report), "--overwrite"]) == 2
        assert "holds the output folder" in _error(capsys)
    assert (d / "rep" / "index.html").is_file()
    assert main(["separate", str(d / "mix.wav"), "--checkpoint", str(d / "x.pt"), "--method",
                 "ilrma"]) == 2  # fmt: skip
    assert "both name the separator" in _error(capsys)


def test_separate_writes_source_images_that_sum_to_the_mixture(short_mixture):
    d = short_mixture
    cmd = ["separate", str(d / "mix.wav"), "--method", "auxiva", "--n-iter", "10", "--images",
           "--out", str(d / "img")]  # fmt: skip
    assert main(cmd) == 0
    mix, _ = io.load(d / "mix.wav")
    images = [io.load(d / "img" / f"mix_source{k}_images.wav")[0] for k in range(2)]
    assert images[0].shape == mix.shape
    err = (images[0] + images[1] - mix).pow(2).sum() / mix.pow(2).sum()
    assert err < 1e-8  # the determined demixing: exact up to float32 rounding


def test_music_only_and_compile_flags_are_refused_where_they_do_not_apply(short_mixture, capsys):
    """--compile reaches the separators that take it; elsewhere it (like the music-model
    flags) is refused rather than ignored."""
    from torchbss.cli.main import build_separator

    sep = build_separator("online-ilrma", n_src=None, n_iter=None, ref_mic=0, n_freq=33,
                          compile=True)  # fmt: skip
    assert sep.compile
    assert build_separator("ilrma", n_src=None, n_iter=3, ref_mic=0, n_freq=33,
                           compile=True).source_model.compile  # fmt: skip
    base = ["separate", str(short_mixture / "mix.wav"), "--out", str(short_mixture / "o")]
    assert main([*base, "--method", "auxiva", "--compile"]) == 2
    assert "--compile applies to the methods ilrma, online-auxiva, online-ilrma" in _error(capsys)
    assert main([*base, "--method", "neural-auxiva", "--compile"]) == 2
    assert "checkpoints of separators with a compile option" in _error(capsys)
    assert main([*base, "--mono-to-stereo"]) == 2
    assert "--mono-to-stereo applies to music models" in _error(capsys)
    assert main([*base, "--precision", "bf16"]) == 2
    assert "--precision bf16 applies to music models" in _error(capsys)
    assert not (short_mixture / "o").exists()


def test_align_flag_reaches_the_separator():
    from torchbss.cli.main import build_separator

    kw = {"n_src": None, "n_iter": None, "ref_mic": 0, "n_freq": 1025}
    assert build_separator("auxiva", **kw).align_permutations is True  # the class default
    assert build_separator("auxiva", align=False, **kw).align_permutations is False
    assert build_separator("ilrma", align=True, **kw).align_permutations is True


def test_cli_bad_input_found_by_an_audit(short_mixture, capsys):
    """evaluate refused to keep nothing: it overwrote any file named by --output (the
    reference audio too) after scoring; --ref-mic was ignored for checkpoints; --block-seconds
    for a batch method and a bad --subtype were accepted (the latter failed after the whole
    separation); a NaN sample was zeroed silently by the streamed methods."""
    d = short_mixture
    ref_bytes = (d / "ref.wav").read_bytes()
    ev = ["evaluate", "--reference", str(d / "ref.wav"), "--estimates", str(d / "ref.wav")]
    assert main([*ev[:3], "--estimates", str(d / "mix.wav"), "--truncate", "--output",
                 str(d / "ref.wav")]) == 2  # fmt: skip
    assert "already exists" in _error(capsys) and (d / "ref.wav").read_bytes() == ref_bytes
    with pytest.raises(SystemExit):  # argparse: --json and --csv print one format each
        main(["evaluate", "--json", "--csv", "--reference", "a.wav", "--estimates", "b.wav"])
    capsys.readouterr()
    mix = str(d / "mix.wav")
    for extra, message in (
        (["--method", "auxiva", "--block-seconds", "5"], "--block-seconds applies to the online"),
        (["--method", "auxiva", "--subtype", "int8"], "unknown subtype 'int8'"),
    ):
        assert main(["separate", mix, "--out", str(d / "x"), *extra]) == 2
        assert message in _error(capsys)
    assert not (d / "x").exists()
    outs = {}
    for r in (0, 1):
        out = d / f"rm{r}"
        assert main(["separate", mix, "--method", "neural-auxiva", "--ref-mic", str(r),
                     "--out", str(out)]) == 0  # fmt: skip
        outs[r] = io.load(out / "mix_source0.wav")[0]
    assert not torch.allclose(outs[0], outs[1], atol=1e-3)  # the reference mic is applied
    x, fs = io.load(mix)
    x[1, 20000] = float("nan")
    import soundfile as sf  # (io.save refuses NaN)

    sf.write(d / "nan.wav", x.T.numpy(), fs, subtype="FLOAT")
    capsys.readouterr()
    assert main(["separate", str(d / "nan.wav"), "--method", "online-auxiva", "--out",
                 str(d / "n")]) == 2  # fmt: skip
    assert "(block 0, from sample 0) contains 1 NaN/inf value(s)" in _error(capsys)
    assert not (d / "n").exists() or not list((d / "n").iterdir())


def test_benchmark_refuses_bad_stft_metric_and_device_settings_before_any_task(tmp_path, capsys):
    """These were found only by each task (every task failed and was recorded; exit 1)."""
    out = tmp_path / "bx"
    for bad, message in (
        ("stft.n_fft=0", "n_fft must be an integer >= 1"),
        ("stft.hop_length=10000", "hop_length must be <= n_fft"),
        ("metrics.filter_length=0", "metrics.filter_length must be an integer >= 1"),
        ("metrics.window_s=0", "metrics.window_s must be in"),
        ("metrics.ref_mic=-1", "metrics.ref_mic must be an integer >= 0"),
    ):
        assert main(["benchmark", "recipe=quick", f"out_dir={out}", bad]) == 2
        assert message in _error(capsys)
    assert not out.exists()
    (tmp_path / "afile").write_text("x")  # an out_dir that is a file: before the plan's banner
    assert main(["benchmark", "recipe=quick", f"out_dir={tmp_path / 'afile' / 'sub'}"]) == 2
    assert "is a file, not a folder" in _error(capsys)
