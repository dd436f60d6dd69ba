"""The trained separators shipped in torchbss/assets (torchbss.export.pretrained).

``neural-auxiva`` and ``online-ilrma-tuned`` were trained on synthetic voices only
(assets/README.md); the shared mixtures (real speech) are held out from their training, so these
are held-out quality checks.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import load_mixture

from torchbss import STFT, AuxIVA, OnlineILRMA
from torchbss.export import (
    PRETRAINED,
    PRETRAINED_SAMPLE_RATE,
    OverrideError,
    load_pretrained,
    load_separator,
    pretrained,
    pretrained_path,
)
from torchbss.metrics import si_sdr, solve_permutation
from torchbss.source_models import FrameCorrection, NeuralSourceModel

STFT_2048 = STFT(n_fft=2048, hop_length=512)


def si_sdri_parts(name: str, separator) -> tuple[float, float]:
    """Mean SI-SDR improvement at mic 0 (best permutation) of ``separator`` on a mixture: on the
    whole signal and on its second half (what an online separator gives once adapted)."""
    mix, ref, _ = load_mixture(name)
    mix, ref = mix.float(), ref.float()
    with torch.no_grad():
        Y = separator(STFT_2048(mix).to(torch.complex64)).sources
    est = STFT_2048.inverse(Y, length=mix.shape[-1]).double()
    mix, ref, k = mix.double(), ref.double(), ref.shape[0]
    half = mix.shape[-1] // 2
    parts = []
    for part in (slice(None), slice(half, None)):
        r, e, m = ref[:, part], est[:, part], mix[:1, part].expand(k, -1)
        score = si_sdr(r[:, None].expand(k, k, -1), e[None].expand(k, k, -1))
        best = score.gather(-1, solve_permutation(score)[:, None])[:, 0]
        parts.append(float((best - si_sdr(r, m)).mean()))
    return parts[0], parts[1]


def si_sdri(name: str, separator) -> float:
    """Mean SI-SDR improvement at mic 0 (best permutation) on the whole signal."""
    return si_sdri_parts(name, separator)[0]


def test_every_shipped_separator_loads_as_an_export():
    assert set(PRETRAINED_SAMPLE_RATE) == set(PRETRAINED)  # every shipped model has its rate
    for name in PRETRAINED:
        wsep, meta = load_separator(pretrained_path(name))
        assert meta["name"] == name and wsep.stft.n_fft == 2048
    sep = pretrained("neural-auxiva")
    assert isinstance(sep.source_model, NeuralSourceModel) and sep.n_iter == 20
    online = pretrained("online-ilrma-tuned")
    assert isinstance(online, OnlineILRMA) and isinstance(online.correction, FrameCorrection)
    # shipped for inference: frozen, no gradient checkpointing (its config sets both)
    assert not any(p.requires_grad for p in online.parameters())
    assert not online.checkpoint
    # settings that leave the weights alone can be changed at load time, others are refused
    assert load_pretrained("online-ilrma-tuned", overrides={"compile": True})[0].separator.compile
    with pytest.raises(OverrideError, match=r"takes no argument \['compile'\]"):
        load_pretrained("neural-auxiva", overrides={"compile": True})
    with pytest.raises(ValueError, match="unknown pretrained separator 'nope'"):
        pretrained("nope")


SHARED = [f"2x2_0{i}" for i in range(4)] + [f"3x3_0{i}" for i in range(3)] + ["2s4m_00", "2s4m_01"]


def test_neural_auxiva_beats_laplace_auxiva_at_the_same_iterations_on_held_out_speech():
    """All 9 shared mixtures (real speech, never seen in training; n_src=2 on the 4-mic ones).
    Both sides run as shipped / by default, i.e. with the frequency-permutation alignment (since
    stop 22; neural-auxiva also after iteration 10 since stop 27). Measured on one thread: mean
    8.1 dB against 7.1 dB for AuxIVA-IP2-Laplace (20 it); with the alignment at the end only
    (stops 22-26) 8.3 dB; without any alignment 6.7 dB (the model at 1.6 dB on 2x2_00). Single
    mixtures move by up to 1 dB with the rounding of the GEMMs (1 or 2 threads: 3x3_01 at 6.1 or
    5.0 dB), hence the margin. On the 240 `val` / `test` rooms of the held-out protocol and the
    second simulator the figures are in BENCHMARKS.md; 9 mixtures are too few to count
    collapses or to choose a setting."""
    neural, laplace = [], []
    for name in SHARED:
        k = 2 if name.startswith("2s4m") else None
        neural.append(si_sdri(name, pretrained("neural-auxiva", n_src=k)))
        aux = AuxIVA(n_iter=20, update="ip2", source_model="laplace", n_src=k)
        laplace.append(si_sdri(name, aux))
    assert np.mean(neural) >= np.mean(laplace) + 0.5, (neural, laplace)


def test_online_ilrma_tuned_beats_the_untrained_online_ilrma_on_held_out_speech():
    """The issue's check of the fine-tuned online ILRMA: on all 9 shared mixtures (real speech,
    never seen in training; n_src=2 on the 4-mic ones) against the untrained online ILRMA (the
    class defaults). Measured (1 and 2 threads alike): whole signal 3.04 against 1.72 dB
    (+1.32; better on 8 of 9, 2x2_01 -0.9), second half 4.77 against 2.70 dB (+2.07; better
    on all 9). On the 180 `test` rooms of the held-out protocol the gain is +0.87 dB whole
    signal and +0.90 dB on the second half (BENCHMARKS.md, validation_online_neural_test): the
    issue's goal of +3 dB is not met, and these 9 mixtures choose nothing."""
    tuned = {"whole": [], "second": []}
    plain = {"whole": [], "second": []}
    for name in SHARED:
        mics = 4 if name.startswith("2s4m") else int(name[0])
        k = 2 if name.startswith("2s4m") else mics
        for scores, sep in (
            (tuned, pretrained("online-ilrma-tuned", n_src=k)),
            (plain, OnlineILRMA(n_freq=1025, n_src=k)),
        ):
            whole, second = si_sdri_parts(name, sep)
            scores["whole"].append(whole)
            scores["second"].append(second)
    assert np.mean(tuned["whole"]) >= np.mean(plain["whole"]) + 0.5, (tuned, plain)
    assert np.mean(tuned["second"]) >= np.mean(plain["second"]) + 1.0, (tuned, plain)


def test_neural_auxiva_separates_more_mics_than_sources_on_request():
    """n_src=2 on the 4-mic mixture (PCA route): measured 6.6 dB."""
    assert si_sdri("2s4m_00", pretrained("neural-auxiva", n_src=2)) > 5.0


def test_cli_separates_with_the_shipped_model(tmp_path, capsys):
    from torchbss import io
    from torchbss.cli.main import main

    mix, _, fs = load_mixture("2s4m_00")
    io.save(tmp_path / "mix.wav", mix[:, : 3 * fs].float(), fs, subtype="float")
    cmd = ["separate", str(tmp_path / "mix.wav"), str(tmp_path / "out")]
    assert main([*cmd, "--method", "neural-auxiva", "--n-src", "2"]) == 0
    outs = sorted((tmp_path / "out").glob("*.wav"))
    assert len(outs) == 2
    y, _ = io.load(outs[0])
    assert y.shape[-1] == 3 * fs and bool(torch.isfinite(y).all()) and float(y.abs().max()) > 0
    assert main([*cmd, "--method", "neural-auxiva", "--checkpoint", "x.pt"]) == 2
    assert "drop --checkpoint" in capsys.readouterr().err
    # the fine-tuned online ILRMA, by name: streamed in blocks, exactly what the whole signal
    # gives in one call; a causal separator refuses the batch alignment
    out = tmp_path / "out_online"
    cmd = ["separate", str(tmp_path / "mix.wav"), str(out), "--method", "online-ilrma-tuned"]
    stream = ["--n-src", "2", "--block-seconds", "0.7", "--subtype", "float"]
    assert main([*cmd, *stream]) == 0
    outs = sorted(out.glob("*.wav"))
    assert len(outs) == 2
    wsep, _ = load_pretrained("online-ilrma-tuned")
    wsep.separator.n_src = 2
    with torch.no_grad():
        whole = wsep(io.load(tmp_path / "mix.wav")[0]).sources
    for k, path in enumerate(outs):
        y, _ = io.load(path)
        assert y.shape[-1] == 3 * fs and float(y.abs().max()) > 0
        torch.testing.assert_close(y[0], whole[k], rtol=0, atol=1e-6)
    # compiled (the NMF and spatial halves as kernels, the correction eagerly between them;
    # n_src == mics): the eager output to rounding
    stereo, _, _ = load_mixture("2x2_00")
    io.save(tmp_path / "mix2.wav", stereo[:, : 3 * fs].float(), fs, subtype="float")
    with torch.no_grad():
        whole = wsep(io.load(tmp_path / "mix2.wav")[0]).sources  # n_src 2 == mics
    compiled = tmp_path / "out_compiled"
    cmd = ["separate", str(tmp_path / "mix2.wav"), str(compiled), "--method", "online-ilrma-tuned"]
    assert main([*cmd, "--compile", "--subtype", "float"]) == 0
    for k, path in enumerate(sorted(compiled.glob("*.wav"))):
        y, _ = io.load(path)
        torch.testing.assert_close(y[0], whole[k], rtol=0, atol=1e-4 * float(whole.abs().max()))
    # the shipped models were trained at 16 kHz: another rate is refused, nothing written
    io.save(tmp_path / "mix8k.wav", stereo[:, : 3 * 8000].float(), 8000, subtype="float")
    for method in PRETRAINED:
        out8k = tmp_path / "out8k"
        assert main(["separate", str(tmp_path / "mix8k.wav"), str(out8k), "--method", method]) == 2
        assert f"{method} was trained at 16000 Hz; resample" in capsys.readouterr().err
        assert not out8k.exists()
    assert main([*cmd, "--no-align"]) == 2
    assert "--align/--no-align apply to batch AuxIVA / ILRMA" in capsys.readouterr().err


def test_shipped_settings_reach_every_entry_point():
    """``PRETRAINED_SETTINGS`` (neural-auxiva: also aligned after iteration 10, chosen on the
    `val` rooms) apply to ``pretrained``, ``load_pretrained`` and ``torchbss separate``;
    ``--no-align`` turns both alignments off."""
    import argparse

    from torchbss.cli.main import _load_waveform_separator
    from torchbss.export import PRETRAINED_SETTINGS

    assert PRETRAINED_SETTINGS["neural-auxiva"] == {"align_every": 10}
    assert pretrained("neural-auxiva").align_every == 10
    assert load_pretrained("neural-auxiva")[0].separator.align_every == 10
    base = dict(checkpoint=None, method="neural-auxiva", compile=False, n_src=None, n_iter=None)
    base.update(n_fft=None, hop=None, ref_mic=0)
    for align in (None, False):
        args = argparse.Namespace(**base, align=align)
        sep = _load_waveform_separator(args, 2, torch.device("cpu")).separator
        assert sep.align_every == 10 and sep.align_permutations is (align is None)
    # the plain export loader keeps the file's training config
    assert load_separator(pretrained_path("neural-auxiva"))[0].separator.align_every == 0
    # the caller's overrides win over the settings (they were replaced by them silently)
    loaded = load_pretrained("neural-auxiva", overrides={"align_every": 5})[0].separator
    assert loaded.align_every == 5
    with pytest.raises(TypeError, match="n_src must be an integer"):
        pretrained("online-ilrma-tuned", n_src=0.5)
    with pytest.raises(ValueError, match="n_src must be"):
        pretrained("online-ilrma-tuned", n_src=0)  # was a ZeroDivisionError deep inside
