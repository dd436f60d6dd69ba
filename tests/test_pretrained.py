"""The trained separators shipped in torchbss/assets (torchbss.export.pretrained).

``neural-auxiva`` was trained on synthetic voices only (assets/README.md); the shared mixtures
(real speech) are held out from its training, so these are held-out quality checks.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import load_mixture

from torchbss import STFT, AuxIVA
from torchbss.export import PRETRAINED, load_separator, pretrained, pretrained_path
from torchbss.metrics import si_sdr, solve_permutation
from torchbss.source_models import NeuralSourceModel

STFT_2048 = STFT(n_fft=2048, hop_length=512)


def si_sdri(name: str, separator) -> float:
    """Mean SI-SDR improvement at mic 0 (best permutation) of ``separator`` on a mixture."""
    mix, ref, _ = load_mixture(name)
    mix, ref = mix.float(), ref.float()
    with torch.no_grad():
        Y = separator(STFT_2048(mix).to(torch.complex64)).sources
    est = STFT_2048.inverse(Y, length=mix.shape[-1]).double()
    k = ref.shape[0]
    score = si_sdr(ref.double()[:, None].expand(k, k, -1), est[None].expand(k, k, -1))
    best = score.gather(-1, solve_permutation(score)[:, None])[:, 0]
    return float((best - si_sdr(ref.double(), mix[:1].double().expand_as(ref))).mean())


def test_every_shipped_separator_loads_as_an_export():
    for name in PRETRAINED:
        wsep, meta = load_separator(pretrained_path(name))
        assert meta["name"] == name and wsep.stft.n_fft == 2048
    sep = pretrained("neural-auxiva")
    assert isinstance(sep.source_model, NeuralSourceModel) and sep.n_iter == 20
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


def test_shipped_settings_reach_every_entry_point():
    """``PRETRAINED_SETTINGS`` (neural-auxiva: also aligned after iteration 10, chosen on the
    `val` rooms) apply to ``pretrained``, ``load_pretrained`` and ``torchbss separate``;
    ``--no-align`` turns both alignments off."""
    import argparse

    from torchbss.cli.main import _load_waveform_separator
    from torchbss.export import PRETRAINED_SETTINGS, load_pretrained

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
