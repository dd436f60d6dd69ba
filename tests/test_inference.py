"""The waveform wrapper: STFT -> separator -> iSTFT, streaming with flat memory, exports."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from torchbss import ILRMA, AuxIVA, OnlineAuxIVA, OnlineILRMA, OnlineISNMF
from torchbss.export import ExportError, instantiate, load_separator, save_separator
from torchbss.inference import WaveformSeparator
from torchbss.separators import SeparationResult, Separator
from torchbss.signal import STFT
from torchbss.signal.streaming import StreamingSTFT


def _mixture(n_mics=2, samples=6000, seed=0, batch=()):
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(*batch, n_mics, samples, generator=g, dtype=torch.float64)
    s = s * (torch.rand(*batch, n_mics, 1, generator=g, dtype=torch.float64) + 0.5)
    A = torch.randn(n_mics, n_mics, generator=g, dtype=torch.float64)
    return torch.einsum("mk,...kt->...mt", A, s)


def test_waveform_wrapper_equals_the_manual_pipeline():
    x = _mixture()
    stft = STFT(256, 64)
    for sep in (AuxIVA(n_iter=5), ILRMA(n_iter=3), OnlineAuxIVA()):
        out = WaveformSeparator(sep, n_fft=256, hop_length=64)(x)
        manual = stft.inverse(sep(stft(x)).sources, length=x.shape[-1])
        torch.testing.assert_close(out.sources, manual)
        assert isinstance(out.separation, SeparationResult)


def test_lengths_mask_padded_frames_of_a_batch():
    x = _mixture(batch=(2,), samples=4000)
    x[1, :, 3000:] = 0
    wsep = WaveformSeparator(AuxIVA(n_iter=5), n_fft=256, hop_length=64)
    out = wsep(x, lengths=torch.tensor([4000, 3000])).sources
    alone = wsep(x[1, :, :3000]).sources
    # frames whose centre lies inside the valid part are the same as separating it alone
    err = (out[1, :, :2800] - alone[..., :2800]).abs().max() / alone.abs().max()
    assert err < 0.05


@pytest.mark.parametrize("make", [
    lambda: OnlineAuxIVA(), lambda: OnlineILRMA(n_freq=129, n_basis=3),
    lambda: OnlineAuxIVA(n_src=2),
], ids=["auxiva", "ilrma", "overiva"])  # fmt: skip
def test_stream_equals_whole_signal(make):
    x = _mixture(n_mics=3, samples=5000) if "overiva" in str(make) else _mixture(samples=5000)
    sep = make()
    if sep.n_src == 2 and x.shape[0] == 2:
        x = _mixture(n_mics=3, samples=5000)
    wsep = WaveformSeparator(sep, n_fft=256, hop_length=64)
    whole = wsep(x).sources
    for block in (1000, 333, 64, 7000):
        streamed = torch.cat(list(wsep.stream(x.split(block, -1))), -1)
        torch.testing.assert_close(streamed, whole, rtol=1e-7, atol=1e-9)


def test_stream_refuses_what_forward_refuses(tmp_path):
    """A NaN sample was skipped silently in a stream (forward refuses it); a block with other
    channels, or half precision, failed inside torch; separate_file took block_seconds <= 0 as
    one-sample blocks, NaN with a bare conversion error, a string as its list of outputs."""
    from torchbss import io
    from torchbss.inference import separate_file

    x = _mixture(samples=3000)
    wsep = WaveformSeparator(OnlineAuxIVA(), n_fft=256, hop_length=64)
    bad = x.clone()
    bad[1, 1700] = float("nan")
    with pytest.raises(ValueError, match="block 1"):
        list(wsep.stream(bad.split(1000, -1)))
    with pytest.raises(ValueError, match="every block needs the same"):
        list(wsep.stream([x[:, :1000], torch.cat([x, x])[:, 1000:2000]]))
    with pytest.raises(TypeError, match="float16 is not supported"):
        list(wsep.stream([x.half()]))
    io.save(tmp_path / "mix.wav", x, 16000, subtype="float")
    outs = [tmp_path / "a.wav", tmp_path / "b.wav"]
    for seconds in (0, -3, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="block_seconds must be a finite number > 0"):
            separate_file(wsep, tmp_path / "mix.wav", outs, block_seconds=seconds)
    with pytest.raises(TypeError, match="outputs must be a list of paths"):
        separate_file(wsep, tmp_path / "mix.wav", str(outs[0]))
    with pytest.raises(TypeError, match="WaveformSeparator around an online separator"):
        separate_file(OnlineAuxIVA(), tmp_path / "mix.wav", outs)
    assert not outs[0].exists() and not outs[1].exists()


def test_stream_of_a_single_channel_isnmf():
    x = _mixture(n_mics=1, samples=3000)
    wsep = WaveformSeparator(OnlineISNMF(n_freq=129, n_src=2, n_basis=4), 256, 64)
    whole = wsep(x).sources
    streamed = torch.cat(list(wsep.stream(x.split(500, -1))), -1)
    torch.testing.assert_close(streamed, whole, rtol=1e-7, atol=1e-9)
    torch.testing.assert_close(whole.sum(-2), x[0], rtol=1e-6, atol=1e-8)  # masks sum to one


def test_streaming_stft_equals_whole_signal_transforms():
    tf = STFT(512, 128)
    stream = StreamingSTFT(tf)
    for length in (1, 100, 511, 3001):
        x = torch.randn(2, length, dtype=torch.float64)
        for block in (1, 97, 5000):
            state, frames = stream.init_analysis(x), []
            for b in x.split(block, -1):
                f, state = stream.analyze(b, state)
                frames.append(f)
            frames.append(stream.flush_analysis(state))
            X = torch.cat(frames, -1)
            torch.testing.assert_close(X, tf(x), rtol=1e-9, atol=1e-9)
            syn, outs = stream.init_synthesis(X), []
            for f in X.split(3, -1):
                y, syn = stream.synthesize(f, syn, length)
                outs.append(y)
            outs.append(stream.flush_synthesis(syn, length))
            torch.testing.assert_close(torch.cat(outs, -1), x, rtol=1e-9, atol=1e-9)


def test_short_input_gets_a_clear_message():
    wsep = WaveformSeparator(AuxIVA(), n_fft=2048, hop_length=512)
    with pytest.raises(ValueError, match=r"gives 1 STFT frame.*needs at least 2 frames"):
        wsep(torch.randn(2, 100))
    with pytest.raises(ValueError, match="gives 0 STFT frame"):
        wsep(torch.randn(2, 0))
    with pytest.raises(TypeError, match="stream\\(\\) needs an online separator"):
        next(wsep.stream([torch.randn(2, 100)]))


class Halves(Separator):
    """A waveform-domain 'model': two sources, each half the reference mic."""

    input_domain = "waveform"

    def forward(self, X, state=None, *, frame_mask=None, callback=None):
        return SeparationResult(sources=torch.stack([X[..., 0, :] / 2, X[..., 0, :] / 2], -2))


def test_waveform_models_fit_the_same_wrapper():
    x = _mixture()
    out = WaveformSeparator(Halves())(x)
    torch.testing.assert_close(out.sources.sum(-2), x[0])


def test_export_round_trip_and_errors(tmp_path):
    sep = OnlineILRMA(n_freq=129, n_src=2, n_basis=3, trainable=True)
    with torch.no_grad():
        sep.forget_logit.fill_(3.0)
    cfg = {"_target_": "torchbss.OnlineILRMA", "n_freq": 129, "n_src": 2, "n_basis": 3,
           "trainable": True}  # fmt: skip
    save_separator(tmp_path / "m.pt", sep, cfg, n_fft=256, hop_length=64, metadata={"a": 1})
    loaded, meta = load_separator(tmp_path / "m.pt")
    assert meta == {"a": 1} and loaded.stft.n_fft == 256
    x = _mixture()
    ref = WaveformSeparator(sep, 256, 64)(x).sources
    torch.testing.assert_close(loaded(x).sources, ref)
    with pytest.raises(ExportError, match="weights do not fit"):
        save_separator(tmp_path / "bad.pt", sep, {**cfg, "n_basis": 4})
    with pytest.raises(ExportError, match="must name a torchbss class"):
        instantiate({"_target_": "os.system", "command": "true"})
    with pytest.raises(ExportError, match="plain"):
        save_separator(tmp_path / "bad.pt", sep, {**cfg, "thing": object()})
    with pytest.raises(FileNotFoundError):
        load_separator(tmp_path / "missing.pt")


def test_exports_build_only_modules_and_rebuild_what_was_saved(tmp_path):
    """A crafted export's config called torchbss.io.save on load (it overwrote a file); a config
    of another class or other settings was saved for a separator without a word; a folder as
    the path left a temporary file behind."""
    import numpy as np
    import soundfile as sf

    victim = tmp_path / "victim.wav"
    sf.write(victim, np.zeros(1600), 16000)
    crafted = {"format": "torchbss.separator", "version": 1, "stft": {"n_fft": 256,
               "hop_length": 64}, "state_dict": {}, "metadata": {},
               "config": {"_target_": "torchbss.io.save", "path": str(victim),
                          "audio": torch.zeros(1, 10), "sample_rate": 8000}}  # fmt: skip
    torch.save(crafted, tmp_path / "crafted.pt")
    with pytest.raises(ExportError, match="not a torchbss module or spatial update class"):
        load_separator(tmp_path / "crafted.pt")
    assert sf.info(victim).frames == 1600  # untouched
    sep = AuxIVA(n_iter=50, source_model="laplace")
    for config in ({"_target_": "torchbss.ILRMA", "n_iter": 2}, {"_target_": "torchbss.AuxIVA"}):
        with pytest.raises(ExportError, match="does not rebuild the separator given"):
            save_separator(tmp_path / "a.pt", sep, config)
    good = {"_target_": "torchbss.AuxIVA", "n_iter": 50, "source_model": "laplace"}
    with pytest.raises(TypeError, match="n_fft must be an integer"):  # was stored as 1000
        save_separator(tmp_path / "a.pt", sep, good, n_fft=1000.9)
    (tmp_path / "dir.pt").mkdir()
    with pytest.raises(IsADirectoryError, match="is a folder"):
        save_separator(tmp_path / "dir.pt", sep, good)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["crafted.pt", "dir.pt", "victim.wav"]
    save_separator(tmp_path / "a.pt", sep, good)
    assert isinstance(load_separator(tmp_path / "a.pt")[0].separator, AuxIVA)
    assert not isinstance(load_separator(tmp_path / "a.pt")[0].separator, ILRMA)
    with pytest.raises(ValueError, match="not a device this machine can use"):
        load_separator(tmp_path / "a.pt", map_location="gpu")
    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(ExportError, match="is not a torchbss export"):
        load_separator(tmp_path / "empty.pt")


def test_nested_configs_build_nested_modules():
    sep = instantiate({"_target_": "torchbss.AuxIVA", "n_iter": 3,
                       "update": {"_target_": "torchbss.updates.ISS"},
                       "source_model": {"_target_": "torchbss.source_models.Gauss"}})  # fmt: skip
    assert sep.n_iter == 3 and sep.update.name == "iss"
    assert type(sep.source_model).__name__ == "Gauss"
    assert isinstance(sep, nn.Module)
