"""`torchbss separate SONG OUT --model CONFIG --checkpoint CKPT`: stems, derived stems, errors."""

from __future__ import annotations

import json

import pytest
import torch

from torchbss import io
from torchbss.cli.main import main

yaml = pytest.importorskip("yaml")


@pytest.fixture
def tiny(tmp_path, data_dir, monkeypatch, request):
    """A tiny BS-RoFormer config (the community vocals layout, shrunk) and 3 s of a song."""
    from torchbss.models import from_config, load_config

    threads = torch.get_num_threads()
    request.addfinalizer(lambda: torch.set_num_threads(threads))
    torch.set_num_threads(1)
    cfg = load_config(data_dir / "music_model_configs" / "config_vocals_bs_roformer.yaml")
    cfg = json.loads(json.dumps(cfg))  # tuples -> lists, plain YAML
    cfg["model"].update(dim=16, depth=1, dim_head=8, heads=2, mask_estimator_depth=1)
    cfg["audio"]["chunk_size"] = 44100
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(cfg))
    song, fs = io.load(data_dir / "music" / "sunny_street" / "mixture.wav", num_frames=3 * 44100)
    io.save(tmp_path / "song.wav", song, fs, subtype="float")
    spec = from_config(tmp_path / "tiny.yaml")
    torch.save(spec.model.state_dict(), tmp_path / "tiny.ckpt")
    return tmp_path


def _error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err, err
    return err


def test_song_into_stems_with_a_derived_instrumental(tiny, capsys):
    cmd = ["separate", str(tiny / "song.wav"), str(tiny / "out"), "--model",
           str(tiny / "tiny.yaml"), "--checkpoint", str(tiny / "tiny.ckpt"),
           "--stems", "vocals,instrumental", "--batch-size", "2"]  # fmt: skip
    assert main(cmd) == 0
    song, _ = io.load(tiny / "song.wav")
    vocals, fs = io.load(tiny / "out" / "song_vocals.wav")
    inst, _ = io.load(tiny / "out" / "song_instrumental.wav")
    assert fs == 44100 and vocals.shape == song.shape
    torch.testing.assert_close(vocals + inst, song, rtol=0, atol=1e-5)  # exact by definition
    assert main(cmd) == 2  # outputs exist: refused without --overwrite
    assert "already exists" in _error(capsys)


def test_music_errors_are_one_line(tiny, capsys, monkeypatch):
    base = ["separate", str(tiny / "song.wav"), str(tiny / "o"), "--model", str(tiny / "tiny.yaml")]
    assert main(base) == 2
    assert "needs --checkpoint" in _error(capsys)
    ck = ["--checkpoint", str(tiny / "tiny.ckpt")]
    assert main([*base, *ck, "--stems", "drums"]) == 2
    assert "unknown stem 'drums'" in _error(capsys)
    song, fs = io.load(tiny / "song.wav")
    io.save(tiny / "mono.wav", song[:1], fs, subtype="float")
    assert main(["separate", str(tiny / "mono.wav"), "--model", str(tiny / "tiny.yaml"), *ck]) == 2
    assert "--mono-to-stereo" in _error(capsys)
    io.save(tiny / "sr.wav", song, 16000, subtype="float")
    assert main(["separate", str(tiny / "sr.wav"), "--model", str(tiny / "tiny.yaml"), *ck]) == 2
    assert "at 16000 Hz but the model was trained at 44100 Hz" in _error(capsys)
    state = torch.load(tiny / "tiny.ckpt")
    state.pop([k for k in state if k.endswith(".weight")][0])
    state["extra.weight"] = torch.zeros(1)
    torch.save(state, tiny / "bad.ckpt")
    assert main([*base, "--checkpoint", str(tiny / "bad.ckpt")]) == 2
    message = _error(capsys)
    assert "missing" in message and "extra.weight" in message
    assert main(["separate", str(tiny / "song.wav"), "--stems", "vocals"]) == 2
    assert "applies to music models" in _error(capsys)
    monkeypatch.setenv("TORCHBSS_ALLOW_UNTRAINED", "1")  # tests only: random weights
    assert main([*base, "--mono-to-stereo"]) == 0


def test_music_flags_and_outputs_are_checked_before_the_song_is_separated(tiny, capsys):
    """BSS-only flags were ignored (--report wrote nothing and exited 0), an empty --stems
    wrote nothing and exited 0, a bad --subtype failed after the separation."""
    base = ["separate", str(tiny / "song.wav"), str(tiny / "o"), "--model",
            str(tiny / "tiny.yaml"), "--checkpoint", str(tiny / "tiny.ckpt")]  # fmt: skip
    for extra in (["--report", str(tiny / "r")], ["--n-fft", "1024"], ["--images"],
                  ["--method", "ilrma"], ["--ref-mic", "1"]):  # fmt: skip
        assert main([*base, *extra]) == 2
        assert "apply to the BSS methods" in _error(capsys)
    assert main([*base, "--stems", ","]) == 2
    assert "names no stem" in _error(capsys)
    assert main([*base, "--stems", "vocals,vocals"]) == 2
    assert "more than once" in _error(capsys)
    assert main([*base, "--subtype", "vorbis"]) == 2
    assert "subtype" in _error(capsys)
    assert not (tiny / "o").exists() and not (tiny / "r").exists()


def test_a_checkpoint_with_nan_weights_writes_no_stem(tiny, capsys):
    """NaN stems from the model: one error naming them and the checkpoint, and no stem written
    (three of four were written, then the input was blamed)."""
    cfg = yaml.safe_load((tiny / "tiny.yaml").read_text())
    cfg["training"]["instruments"] = ["vocals", "other"]
    cfg["training"]["target_instrument"] = None
    cfg["model"]["num_stems"] = 2
    (tiny / "two.yaml").write_text(yaml.safe_dump(cfg))
    from torchbss.models import from_config

    state = from_config(tiny / "two.yaml").model.state_dict()
    head = [k for k in state if "mask_estimators.1" in k and k.endswith(".bias")][-1]
    state[head] = torch.full_like(state[head], float("nan"))  # only the second stem's head
    torch.save(state, tiny / "nan.ckpt")
    cmd = ["separate", str(tiny / "song.wav"), str(tiny / "o"), "--model", str(tiny / "two.yaml"),
           "--checkpoint", str(tiny / "nan.ckpt")]  # fmt: skip
    assert main(cmd) == 2
    message = _error(capsys)
    assert "stem(s) ['other']" in message and "checkpoint" in message
    assert not (tiny / "o").exists()
