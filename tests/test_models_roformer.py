"""BS-RoFormer / Mel-RoFormer: parity with the community references, gradients, inference.

References (test-only, MIT): ``splifft`` (its shipped RoFormer configs and its own per-chunk
STFT -> model -> mask -> iSTFT pipeline) and lucidrains' ``bs-roformer`` 0.3.10, the last
release whose ``state_dict`` layout is the one community checkpoints use. Weights are copied
from the reference into our model with ``load_state_dict(strict=True)`` and no renaming.
"""

from __future__ import annotations

import json
import math
import sys
import types
import warnings
from pathlib import Path

import pytest
import torch

from torchbss.models import (
    BSRoformer,
    MelBandRoformer,
    from_config,
    load_checkpoint,
    mel_band_membership,
    separate_song,
)

TOL = 1e-5


pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.one_thread


# --------------------------------------------------------------------------------------------
# reference helpers


def _install_torchaudio_shim() -> None:
    """splifft's Mel-RoFormer imports ``torchaudio.functional.melscale_fbanks``; torchaudio
    wheels are built for other torch versions, so stand in librosa's Slaney filter bank (what
    the community code uses) when torchaudio cannot be imported."""
    try:
        import torchaudio.functional  # noqa: F401

        return
    except Exception:
        pass
    librosa_filters = pytest.importorskip("librosa.filters")

    def melscale_fbanks(n_freqs, f_min, f_max, n_mels, sample_rate, norm=None, mel_scale="htk"):
        assert norm == "slaney" and mel_scale == "slaney" and f_min == 0.0
        bank = librosa_filters.mel(
            sr=sample_rate, n_fft=2 * (n_freqs - 1), n_mels=n_mels, fmax=f_max
        )
        return torch.from_numpy(bank).T.contiguous()

    functional = types.ModuleType("torchaudio.functional")
    functional.melscale_fbanks = melscale_fbanks
    package = types.ModuleType("torchaudio")
    package.functional = functional
    sys.modules["torchaudio"] = package
    sys.modules["torchaudio.functional"] = functional


def splifft_configs() -> list[Path]:
    """Every BS-/Mel-RoFormer JSON config shipped with splifft (empty if not installed)."""
    try:
        import splifft
    except ImportError:
        return []
    root = Path(splifft.__file__).parent / "data" / "config"
    return sorted(p for p in root.glob("*.json") if "roformer" in p.name)


def _splifft_supported(config: dict) -> bool:
    head = config["model"].get("mask_estimator", {"kind": "baseline"})
    return head.get("kind", "baseline") == "baseline"


TINY = {"dim": 32, "depth": 2, "heads": 2, "dim_head": 16}  # depth 2: skip connections act


def tiny_variant(config: dict, **overrides) -> dict:
    """The same configuration (bands, STFT, stems, heads layout) at a small width/depth and a
    short chunk, so the full model runs fast."""
    config = json.loads(json.dumps(config))
    model = config["model"]
    hop = model.get("stft_hop_length", 512)
    model.update(TINY | overrides)
    model["chunk_size"] = hop * 12
    return config


def build_splifft(config: dict):
    """splifft's model and its own chunk pipeline (STFT -> model -> mask -> iSTFT)."""
    pytest.importorskip("splifft")
    pytest.importorskip("pydantic")
    _install_torchaudio_shim()
    from splifft import core
    from splifft.config import MaskingConfig, StftConfig
    from splifft.models import bs_roformer as sbs

    params = dict(config["model"])
    band = dict(params.pop("band_config"))
    band_cls = sbs.MelBandsConfig if band["kind"] == "mel" else sbs.FixedBandsConfig
    if "freqs_per_bands" in band:
        band["freqs_per_bands"] = tuple(band["freqs_per_bands"])
    params["band_config"] = band_cls(**band)
    params.pop("mask_estimator", None)
    params["output_stem_names"] = tuple(params["output_stem_names"])
    for key in ("rotary_embed_dtype", "transformer_residual_dtype"):
        if isinstance(params.get(key), str):
            params[key] = getattr(torch, params[key])
    model = sbs.BSRoformer(sbs.BSRoformerParams(**params)).eval()
    transform = {k: v for k, v in (config.get("transform") or {"kind": "stft"}).items()}
    transform.pop("conv_dtype", None)
    transform.setdefault("hop_length", params.get("stft_hop_length", 512))
    stft_cfg = StftConfig(**transform)
    channels = 2 if params.get("stereo", True) else 1
    pipeline = core.create_w2w_model(
        model,
        "spectrogram",
        "spectrogram_mask",
        stft_cfg,
        channels,
        params["chunk_size"],
        MaskingConfig(),
        io_device=torch.device("cpu"),
        model_device=torch.device("cpu"),
    )
    return model, pipeline, channels


def ours_from(config: dict):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return from_config(config)


def check_splifft_parity(path: Path, tiny: bool, seed: int = 0) -> None:
    config = json.loads(path.read_text())
    if not _splifft_supported(config):
        with pytest.raises(ValueError, match="mask_estimator"):
            ours_from(config)
        pytest.skip(f"{path.name}: non-standard mask head (not a community layout)")
    if tiny:
        config = tiny_variant(config)
    else:  # full width and depth, short chunk (the chunk size does not change the layout)
        hop = config["model"].get("stft_hop_length", 512)
        config["model"]["chunk_size"] = hop * 24
    torch.manual_seed(seed)
    reference, pipeline, channels = build_splifft(config)
    spec = ours_from(config)
    ours = spec.model
    ours.load_state_dict(reference.state_dict(), strict=True)  # no key renaming
    chunk = config["model"]["chunk_size"]
    audio = torch.randn(2, channels, chunk, generator=torch.Generator().manual_seed(seed))
    with torch.inference_mode():
        expected = pipeline(audio)
        got = ours(audio)
    assert got.shape == expected.shape == (2, len(spec.stems), channels, chunk)
    assert float(expected.abs().max()) > 1e-3  # a real, non-trivial output
    diff = float((got - expected).abs().max())
    assert diff <= TOL, f"{path.name}: max abs difference {diff:.3g} > {TOL}"


SPLIFFT = splifft_configs()
# A few fast configurations in the default suite: fixed bands, mel bands (44.1 kHz), a
# 4096-point, 4-stem mel model with skip connections; the rest is marked slow.
FAST = {
    "bs_roformer-viperx-1297.json",
    "mel_roformer-kim-vocals.json",
    "mel_roformer-amane-4_stems_large.json",
}


@pytest.mark.parametrize(
    "path",
    [pytest.param(p, id=p.stem, marks=() if p.name in FAST else pytest.mark.slow) for p in SPLIFFT]
    or [pytest.param(None, marks=pytest.mark.skip(reason="splifft not installed"))],
)
def test_splifft_parity_tiny(path: Path) -> None:
    check_splifft_parity(path, tiny=True)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["bs_roformer-viperx-1297.json", "mel_roformer-kim-vocals.json"])
def test_splifft_parity_full_size(name: str) -> None:
    paths = [p for p in SPLIFFT if p.name == name]
    if not paths:
        pytest.skip("splifft not installed")
    check_splifft_parity(paths[0], tiny=False)


def test_splifft_parity_linear_attention() -> None:
    """The MSST linear-attention blocks (no shipped config uses them) against splifft."""
    paths = [p for p in SPLIFFT if p.name == "bs_roformer-viperx-1297.json"]
    if not paths:
        pytest.skip("splifft not installed")
    config = tiny_variant(json.loads(paths[0].read_text()), linear_transformer_depth=1)
    torch.manual_seed(1)
    reference, pipeline, channels = build_splifft(config)
    with torch.no_grad():  # splifft initialises the temperatures to 1 (exp(1) scale)
        for name, p in reference.named_parameters():
            if name.endswith("temperature"):
                p.uniform_(-0.5, 0.5)
    ours = ours_from(config).model
    ours.load_state_dict(reference.state_dict(), strict=True)
    audio = torch.randn(1, channels, config["model"]["chunk_size"])
    with torch.inference_mode():
        diff = float((ours(audio) - pipeline(audio)).abs().max())
    assert diff <= TOL


# lucidrains bs-roformer 0.3.10: BSRoformer / MelBandRoformer with the community defaults
LUCIDRAINS_CASES = [
    ("bs", dict(num_stems=2, stft_hop_length=441, mask_estimator_depth=2)),
    ("bs", dict(num_stems=1, stereo=False, mask_estimator_depth=1)),
    ("mel", dict(num_stems=1, num_bands=60, mask_estimator_depth=2, stft_hop_length=441)),
    (
        "mel",
        dict(
            num_stems=3,
            num_bands=48,
            sample_rate=32000,
            stft_n_fft=1024,
            stft_win_length=1024,
            stft_hop_length=256,
            mask_estimator_depth=1,
        ),
    ),
]


@pytest.mark.parametrize(
    "kind,kwargs",
    [
        pytest.param(*case, marks=() if i in (0, 2) else pytest.mark.slow)
        for i, case in enumerate(LUCIDRAINS_CASES)
    ],
)
def test_lucidrains_parity(kind: str, kwargs: dict) -> None:
    ref = pytest.importorskip("bs_roformer")
    if not hasattr(ref, "MelBandRoformer"):
        pytest.skip("bs_roformer without MelBandRoformer")
    common = (
        dict(
            dim=32,
            depth=2,
            stereo=True,
            time_transformer_depth=1,
            freq_transformer_depth=1,
            dim_head=16,
            heads=2,
        )
        | kwargs
    )
    ref_cls, our_cls = (
        (ref.BSRoformer, BSRoformer) if kind == "bs" else (ref.MelBandRoformer, MelBandRoformer)
    )
    if kind == "bs" and "stft_n_fft" not in kwargs:
        common["freqs_per_bands"] = (
            (2,) * 24
            + (4,) * 12
            + (12,) * 8
            + (24,) * 8
            + (48,) * 8
            + (
                128,
                129,
            )
        )
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference = ref_cls(**common).eval()
    ours = our_cls(**common).eval()
    state = reference.state_dict()
    assert set(state) == set(ours.state_dict())  # same keys, rotary frequencies included
    ours.load_state_dict(state, strict=True)
    hop = common.get("stft_hop_length", 512)
    audio = torch.randn(2, 2 if common["stereo"] else 1, hop * 20)
    with torch.inference_mode(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = reference(audio)
        got = ours(audio)
    if expected.ndim == 3:  # the reference drops the stems dim of single-stem models
        expected = expected.unsqueeze(1)
    assert got.shape == expected.shape
    assert float((got - expected).abs().max()) <= TOL


def test_mel_bands_match_librosa() -> None:
    filters = pytest.importorskip("librosa.filters")
    for sr, n_fft, bands in [
        (44100, 2048, 60),
        (44100, 4096, 60),
        (48000, 2048, 64),
        (32000, 1024, 48),
        (16000, 512, 40),
        (22050, 2048, 128),
    ]:
        bank = torch.from_numpy(filters.mel(sr=sr, n_fft=n_fft, n_mels=bands))
        bank[0, 0] = 1.0
        bank[-1, -1] = 1.0
        assert torch.equal(mel_band_membership(sr, n_fft, bands), bank > 0)


# --------------------------------------------------------------------------------------------
# behaviour of our models


def small_bs(**kwargs) -> BSRoformer:
    kwargs = (
        dict(
            depth=1,
            stereo=True,
            num_stems=2,
            time_transformer_depth=1,
            freq_transformer_depth=1,
            dim_head=16,
            heads=2,
            stft_n_fft=512,
            stft_win_length=512,
            stft_hop_length=128,
            freqs_per_bands=(8,) * 16 + (129,),
            mlp_expansion_factor=2,
        )
        | kwargs
    )
    return BSRoformer(32, **kwargs)


def test_output_has_input_length_and_stems_dim() -> None:
    model = small_bs(num_stems=1).eval()
    audio = torch.randn(3, 2, 1000)  # not a multiple of the hop
    with torch.inference_mode():
        out = model(audio)
    assert out.shape == (3, 1, 2, 1000)
    # batch items are independent
    with torch.inference_mode():
        single = model(audio[1:2])
    torch.testing.assert_close(out[1:2], single, atol=1e-5, rtol=1e-5)


def test_gradients_finite_with_and_without_checkpointing() -> None:
    torch.manual_seed(0)
    plain = small_bs(attn_dropout=0.0, ff_dropout=0.0).train()
    checkpointed = small_bs(use_torch_checkpoint=True, skip_connection=True).train()
    checkpointed.load_state_dict(plain.state_dict())
    audio = torch.randn(2, 2, 2048, requires_grad=True)
    grads = []
    for model in (plain, checkpointed):
        model.zero_grad()
        loss = model(audio).square().mean()
        loss.backward()
        g = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
        assert torch.isfinite(g).all() and float(g.abs().sum()) > 0
        grads.append(g)
    assert torch.isfinite(audio.grad).all()
    # checkpointing changes memory, not maths (skip_connection does change the maths)
    plain2 = small_bs().train()
    plain2.load_state_dict(plain.state_dict())
    plain2.use_torch_checkpoint = True
    plain2.zero_grad()
    plain2(audio.detach()).square().mean().backward()
    g2 = torch.cat([p.grad.flatten() for p in plain2.parameters() if p.grad is not None])
    plain.zero_grad()
    plain(audio.detach()).square().mean().backward()
    g1 = torch.cat([p.grad.flatten() for p in plain.parameters() if p.grad is not None])
    torch.testing.assert_close(g1, g2, atol=1e-6, rtol=1e-5)


def test_bf16_autocast_close_to_float32() -> None:
    torch.manual_seed(0)
    model = MelBandRoformer(
        32,
        depth=1,
        stereo=True,
        num_bands=24,
        stft_n_fft=512,
        stft_win_length=512,
        stft_hop_length=128,
        dim_head=16,
        heads=2,
        time_transformer_depth=1,
        freq_transformer_depth=1,
    ).eval()
    audio = torch.randn(1, 2, 4096)
    with torch.inference_mode():
        ref = model(audio)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model(audio)
    assert low.dtype == torch.float32 and torch.isfinite(low).all()
    rel = float((low - ref).norm() / ref.norm())
    assert rel < 0.05, rel


def test_bad_inputs_have_clear_errors() -> None:
    model = small_bs()
    with pytest.raises(ValueError, match="stereo.*expand"):
        model(torch.randn(1, 1, 4096))
    with pytest.raises(ValueError, match=r"\(batch, channels, samples\)"):
        model(torch.randn(2, 4096))
    with pytest.raises(ValueError, match="shorter than the model's STFT"):
        model(torch.randn(1, 2, 100))
    with pytest.raises(ValueError, match="freqs_per_bands must cover the 257"):
        small_bs(freqs_per_bands=(8,) * 16)
    with pytest.raises(ValueError, match="mono_to_stereo"):
        separate_song(model, torch.randn(1, 8000), chunk_size=2048)
    with pytest.raises(ValueError, match="shorter than the model's STFT"):
        separate_song(model, torch.randn(2, 8000), chunk_size=256)
    # checked before the song is separated: a string was split into one-letter names, a
    # duplicate name was found after the whole song, a float chunk was called too short
    for names in ("ab", ["a", "a"]):
        with pytest.raises(ValueError, match="distinct, non-empty names"):
            separate_song(model, torch.randn(2, 8000), chunk_size=2048, stem_names=names)
    with pytest.raises(ValueError, match="name the model's 2 output"):
        separate_song(model, torch.randn(2, 8000), chunk_size=2048, stem_names=["a"])
    with pytest.raises(TypeError, match="chunk_size must be an int"):
        separate_song(model, torch.randn(2, 8000), chunk_size=2048.0)


def test_load_checkpoint_wrappers_and_mismatch(tmp_path: Path) -> None:
    torch.manual_seed(0)
    source = small_bs()
    state = source.state_dict()
    for wrapped in (
        state,
        {"state_dict": {f"model.{k}": v for k, v in state.items()}, "epoch": 3},
        {"model": {f"module.{k}": v for k, v in state.items()}},
    ):
        target = small_bs()
        path = tmp_path / "model.ckpt"
        torch.save(wrapped, path)
        load_checkpoint(target, path)
        for key, value in state.items():
            assert torch.equal(target.state_dict()[key], value), key
    # rotary frequencies are optional (splifft's layout has none)
    no_rotary = {k: v for k, v in state.items() if "rotary_embed" not in k}
    load_checkpoint(small_bs(), no_rotary)
    # a checkpoint from another config: every problem key is named, nothing is loaded
    other = small_bs(num_stems=3, mlp_expansion_factor=4)
    before = {k: v.clone() for k, v in other.state_dict().items()}
    with pytest.raises(ValueError) as err:
        load_checkpoint(other, state)
    message = str(err.value)
    assert "missing key(s): mask_estimators.2." in message
    assert "shape mismatch" in message and "mask_estimators.0.to_freqs.0.0.0.weight" in message
    assert all(torch.equal(before[k], v) for k, v in other.state_dict().items())
    with pytest.raises(ValueError, match=r"unexpected key\(s\): extra.lora_A.*LoRA"):
        load_checkpoint(small_bs(), state | {"extra.lora_A": torch.zeros(1)})
    # a Lightning checkpoint that also holds its loss's buffer: the prefix is still stripped
    # and only that key is named (every key was listed as missing and unexpected)
    lightning = {"state_dict": {f"model.{k}": v for k, v in state.items()}
                 | {"loss_fn.window": torch.ones(3)}}  # fmt: skip
    with pytest.raises(ValueError, match=r"unexpected key\(s\): loss_fn.window") as err:
        load_checkpoint(small_bs(), lightning)
    assert "missing" not in str(err.value) and len(str(err.value)) < 400


def test_separate_song_identity_and_derived_stems() -> None:
    """With an exact model (stems = fixed fractions of the mixture) chunked inference returns
    the fractions exactly, and instrumental = mixture - vocals."""

    class Fractions(torch.nn.Module):
        audio_channels = 2
        n_fft = 512

        def __init__(self) -> None:
            super().__init__()
            self.weight = torch.nn.Parameter(torch.tensor([0.25, 0.75]))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.weight[None, :, None, None] * x[:, None]

    song = torch.randn(2, 30_000, dtype=torch.float32) * 0.3 + 0.05
    stems = separate_song(
        Fractions(),
        song,
        chunk_size=4096,
        overlap=0.5,
        batch_size=3,
        stem_names=("vocals", "other"),
        normalize_input=False,
        derived_stems={"instrumental": "mixture - vocals"},
        progress=False,
    )
    assert list(stems) == ["vocals", "other", "instrumental"]
    torch.testing.assert_close(stems["vocals"], 0.25 * song, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(stems["instrumental"], 0.75 * song, atol=1e-5, rtol=1e-5)
    # normalised: the model sees (x - mean) / std; every stem gets std * y + mean back (the
    # community convention), mean and std of the mono downmix
    stems = separate_song(
        Fractions(), song, chunk_size=4096, overlap=0.5, batch_size=3, progress=False
    )
    mean = song.mean()
    torch.testing.assert_close(stems["stem0"], 0.25 * (song - mean) + mean, atol=1e-5, rtol=1e-5)


def test_song_statistics_equal_normalize() -> None:
    """Blockwise pooled statistics are those of normalize() on the whole song."""
    from torchbss.models.music import _song_statistics
    from torchbss.signal import normalize

    song = torch.randn(2, 100_003, dtype=torch.float64) * 0.2 + 0.03
    song[:, 40_000:60_000] = 0.0  # a silent stretch
    expected = normalize(song)[1]
    got = _song_statistics(song, block=7_919)
    torch.testing.assert_close(got.mean, expected.mean, rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(got.std, expected.std, rtol=1e-12, atol=1e-15)


def test_separate_song_matches_unchunked_model_in_the_middle() -> None:
    """A RoFormer run chunk by chunk equals running it on each chunk's span: compare the
    chunked result with the model on the whole (short) song away from chunk seams."""
    torch.manual_seed(0)
    model = small_bs(num_stems=1).eval()
    song = torch.randn(2, 6000)
    stems = separate_song(
        model, song, chunk_size=6000 * 4, overlap=0.0, progress=False, normalize_input=False
    )
    # one chunk covers the whole song: only reflect padding differs from a direct call
    assert stems["stem0"].shape == song.shape and torch.isfinite(stems["stem0"]).all()
    # bf16 and float32 agree roughly
    low = separate_song(model, song, chunk_size=4096, precision="bf16", progress=False)
    high = separate_song(model, song, chunk_size=4096, progress=False)
    rel = float((low["stem0"] - high["stem0"]).norm() / high["stem0"].norm())
    assert rel < 0.05, rel


def _load_song(data_dir: Path, name: str, seconds: float) -> dict[str, torch.Tensor]:
    sf = pytest.importorskip("soundfile")
    out = {}
    for stem in ("mixture", "vocals"):
        data, rate = sf.read(
            data_dir / "music" / name / f"{stem}.wav", dtype="float32", always_2d=True
        )
        assert rate == 44100
        start = int(2 * rate)
        out[stem] = torch.from_numpy(data[start : start + int(seconds * rate)].T.copy())
    return out


@pytest.mark.slow  # ~10 s on one core
def test_tiny_model_overfits_one_song(data_dir: Path) -> None:
    """A tiny BS-RoFormer fits the vocals of a 0.5 s excerpt: the L1 loss falls 10x."""
    song = _load_song(data_dir, "sunny_street", 0.5)
    mixture, vocals = song["mixture"][None], song["vocals"][None, None]
    torch.manual_seed(0)
    model = small_bs(num_stems=1).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(150):
        optimizer.zero_grad()
        loss = (model(mixture) - vocals).abs().mean()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        if losses[-1] < losses[0] / 10:
            break
    assert all(math.isfinite(v) for v in losses)
    assert min(losses) < losses[0] / 10, (losses[0], min(losses))
