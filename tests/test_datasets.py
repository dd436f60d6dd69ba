"""Training datasets: fast image-source RIRs, dynamic mixing, wav folders, MUSDB-style stems."""

from __future__ import annotations

import importlib.util
import json
import math
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import DATA_DIR
from torch.utils.data import DataLoader

from torchbss.data.datasets import EpochSampler, example_generator, read_audio
from torchbss.data.dynamic_mixing import (
    DynamicMixingDataset,
    GeometryConfig,
    change_speed,
    sample_geometry,
    speaker_split,
)
from torchbss.data.folders import StemFolderDataset, WavFolderDataset
from torchbss.data.room import SPEED_OF_SOUND, image_source_rir, sabine_absorption

sf = pytest.importorskip("soundfile")

FS = 16000


def _write(path: Path, audio: torch.Tensor, fs: int = FS) -> Path:
    """Write ``(channels, samples)`` as 16-bit PCM."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), audio.T.double().numpy(), fs, subtype="PCM_16")
    return path


def _square(level: float, n: int) -> torch.Tensor:
    """``(1, n)`` square wave of amplitude ``level`` (exact in 16-bit PCM for k / 8)."""
    return level * (1 - 2 * (torch.arange(n) // 8 % 2)).float()[None]


@pytest.fixture
def speech_dir(tmp_path: Path) -> Path:
    """LibriSpeech-style folder: 6 speakers x 2 utterances of 0.3-0.6 s; speaker k's
    utterances are square waves of amplitude (k + 1) / 8 (so a dry piece tells its speaker)."""
    root = tmp_path / "speech"
    for k in range(6):
        for u in range(2):
            n = int((0.3 + 0.3 * u) * FS)
            _write(root / f"spk{k}" / "ch0" / f"utt{u}.flac", _square((k + 1) / 8, n))
    return root


def _small(root: Path, **kwargs) -> DynamicMixingDataset:
    """A fast dataset: 0.5 s segments, short reverberation."""
    args = dict(
        segment_s=0.5,
        rt60=(0.1, 0.2),
        length=8,
        split_fractions=(1.0, 0.0, 0.0),
        n_sources=2,
        n_mics=2,
    )
    args.update(kwargs)
    return DynamicMixingDataset(root, **args)


# --------------------------------------------------------------------------------------------
# room impulse responses and geometry
# --------------------------------------------------------------------------------------------


def test_rir_matches_the_reference_image_method():
    room = torch.tensor([6.5, 4.8, 2.9])
    src = torch.tensor([[2.0, 2.0, 1.5], [4.1, 3.2, 1.7]])
    mics = torch.tensor([[3.0, 2.5, 1.4], [3.08, 2.5, 1.4], [3.16, 2.5, 1.4]])
    ref = direct_image_source_rir(room, src, mics, sample_rate=FS, rt60=0.2)

    def err_db(oversampling: int) -> float:
        h = image_source_rir(
            room,
            src,
            mics,
            sample_rate=FS,
            rt60=0.2,
            oversampling=oversampling,
            dtype=torch.float64,
            match_decay=False,
        )
        assert h.shape == ref.shape
        return float(20 * torch.log10((h - ref).norm() / ref.norm()))

    assert err_db(8) < -40
    assert err_db(16) < err_db(4) - 15  # converges to the exact windowed sinc
    fast = image_source_rir(room, src, mics, sample_rate=FS, rt60=0.2, match_decay=False)
    assert fast.dtype == torch.float32
    assert float((fast.double() - ref).norm() / ref.norm()) < 0.01


def _schroeder_rt60(h: torch.Tensor) -> float:
    """T20 x 3: least-squares slope of the Schroeder curve of ``h`` between -5 and -25 dB."""
    edc = h.double().flip(-1).square().cumsum(-1).flip(-1)
    db = 10 * torch.log10(edc / edc[0])
    t = torch.nonzero((db <= -5) & (db >= -25)).flatten().double() / FS
    y = db[(t * FS).round().long()]
    slope = ((t - t.mean()) * (y - y.mean())).sum() / (t - t.mean()).square().sum()
    return float(-60 / slope)


def test_rir_decay_matches_the_requested_rt60():
    for i, rt60 in enumerate((0.2, 0.35, 0.5)):
        geo = sample_geometry(example_generator(4, i), 2, 2)
        args = (geo.room_dim, geo.sources, geo.mics)
        n = int(1.5 * rt60 * FS)
        matched = image_source_rir(*args, sample_rate=FS, rt60=rt60, rir_length=n)
        sabine = image_source_rir(*args, sample_rate=FS, rt60=rt60, rir_length=n, match_decay=False)
        for s in range(2):
            for m in range(2):
                assert _schroeder_rt60(matched[s, m]) == pytest.approx(rt60, rel=0.06)
        # Sabine's absorption alone leaves the specular image responses ringing longer
        assert _schroeder_rt60(sabine[0, 0]) > _schroeder_rt60(matched[0, 0])


@pytest.mark.parametrize("array", ["linear", "circular"])
def test_geometry_follows_its_ranges(array):
    cfg = GeometryConfig(array=array, mic_spacing=(0.04, 0.08), min_separation_deg=30.0)
    for i in range(20):
        geo = sample_geometry(example_generator(1, i), 3, 4, cfg)
        room = geo.room_dim
        for (lo, hi), size in zip(cfg.room_size, room.tolist()):
            assert lo <= size <= hi
        for pos in (geo.mics, geo.sources):
            assert bool((pos[:, :2] >= cfg.wall_margin).all())
            assert bool((pos[:, :2] <= room[:2] - cfg.wall_margin).all())
        centre = geo.mics.mean(0)
        horizontal = (geo.sources[:, :2] - centre[:2]).norm(dim=-1)
        torch.testing.assert_close(horizontal, geo.distances)
        assert bool(((geo.distances >= 1.0) & (geo.distances <= 2.0)).all())
        neighbours = (geo.mics[1:] - geo.mics[:-1]).norm(dim=-1)
        torch.testing.assert_close(neighbours, torch.full((3,), geo.spacing, dtype=torch.float64))
        az = geo.azimuths_deg.sort().values
        assert float((az[1:] - az[:-1]).min()) >= 30.0 - 1e-9


def test_geometry_rejects_what_no_room_holds():
    with pytest.raises(ValueError, match="do not fit"):
        GeometryConfig().check(8, 8)  # 160 deg / 25 deg -> at most 7 sources
    with pytest.raises(ValueError, match="cannot hold"):
        GeometryConfig(room_size=((2.0, 3.0), (2.0, 3.0), (2.5, 3.0))).check(2, 2)
    with pytest.raises(ValueError, match="source_height"):
        GeometryConfig(source_height=(1.5, 3.5)).check(2, 2)
    with pytest.raises(ValueError, match="array must be"):
        GeometryConfig(array="spherical").check(2, 2)


# --------------------------------------------------------------------------------------------
# dynamic mixing
# --------------------------------------------------------------------------------------------


def _assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)


def test_examples_do_not_depend_on_workers(speech_dir):
    ds = _small(speech_dir)
    serial = list(DataLoader(ds, batch_size=2, num_workers=0))
    parallel = list(DataLoader(ds, batch_size=2, num_workers=2))
    assert len(serial) == len(parallel) == 4
    for a, b in zip(serial, parallel):
        _assert_same(a, b)
    _assert_same(ds[3], _small(speech_dir)[3])  # a new instance gives the same example


def test_seed_split_and_index_change_the_example(speech_dir):
    ds = _small(speech_dir)
    other_seed = _small(speech_dir, seed=1)
    assert not torch.equal(ds[0]["mixture"], ds[1]["mixture"])
    assert not torch.equal(ds[0]["mixture"], other_seed[0]["mixture"])
    # indices past len are new examples (fresh mixtures for later epochs)
    assert not torch.equal(ds[0]["mixture"], ds[len(ds)]["mixture"])
    with pytest.raises(IndexError):
        ds[-1]


def test_images_sum_to_the_mixture_at_the_reference_mic(speech_dir):
    ds = _small(speech_dir, snr_db=None, n_mics=3, ref_mic=1)
    for i in range(3):
        ex = ds[i]
        assert ex["mixture"].shape == (3, 8000) and ex["reference"].shape == (2, 8000)
        assert ex["mixture"].dtype == ex["reference"].dtype == torch.float32
        torch.testing.assert_close(ex["mixture"][1], ex["reference"].sum(0), atol=2e-6, rtol=0)
        assert float(ex["mixture"].abs().max()) == pytest.approx(0.9, abs=1e-6)
        power = ex["reference"].square().mean(-1)
        assert float(power[0]) == pytest.approx(float(power[1]), rel=1e-3)  # 0 dB input SIR
        assert math.isinf(float(ex["snr_db"]))


def test_snr_rt60_and_gains_stay_in_range(speech_dir):
    ds = _small(
        speech_dir, snr_db=(10.0, 30.0), rt60=(0.3, 0.5), source_gain_db=(-6.0, 6.0), length=4
    )
    for i in range(4):
        ex = ds[i]
        snr, rt60 = float(ex["snr_db"]), float(ex["rt60"])
        assert 10.0 <= snr <= 30.0 and 0.3 <= rt60 <= 0.5
        # the sensor noise at the reference mic is what the images do not explain
        noise = ex["mixture"][0] - ex["reference"].sum(0)
        signal_power = ex["mixture"].square().mean() - noise.square().mean()
        measured = 10 * math.log10(float(signal_power / noise.square().mean()))
        assert measured == pytest.approx(snr, abs=0.6)
        # relative image levels follow the drawn gains
        gains = ex["source_gain_db"]
        assert bool(((gains >= -6) & (gains <= 6)).all())
        level = 10 * torch.log10(ex["reference"].square().mean(-1))
        assert float(level[1] - level[0]) == pytest.approx(float(gains[1] - gains[0]), abs=1e-3)
        # the metadata describe the room that was simulated: its decay follows the RT60
        h = image_source_rir(
            ex["room_dim"],
            ex["source_positions"],
            ex["mic_positions"],
            sample_rate=FS,
            rt60=rt60,
            rir_length=int(1.5 * rt60 * FS),
        )
        assert _schroeder_rt60(h[0, 0]) == pytest.approx(rt60, rel=0.1)


def test_concatenation_fills_the_segment(speech_dir):
    # 1 s segments from 0.3-0.6 s utterances; gaps of exactly 0.1 s
    same = _small(speech_dir, segment_s=1.0, gap_s=0.1, return_dry=True)
    anyone = _small(speech_dir, segment_s=1.0, gap_s=0.1, return_dry=True, concatenate="any")
    padded = _small(speech_dir, segment_s=1.0, return_dry=True, concatenate="none")
    for i in range(4):
        ex = same[i]
        levels = ((ex["speaker_ids"] + 1) / 8).tolist()
        names = [same.speakers[k] for k in ex["speaker_ids"]]
        assert names == [f"spk{k}" for k in ex["speaker_ids"].tolist()]
        for dry, level in zip(ex["dry"], levels):
            values = dry.abs().unique()
            # only this speaker's utterances, joined by silence, and longer than one utterance
            torch.testing.assert_close(values, torch.tensor([0.0, level]))
            assert int((dry != 0).sum()) > 0.6 * FS
        ex = anyone[i]
        own = set(((ex["speaker_ids"] + 1) / 8).tolist())
        for dry, level in zip(ex["dry"], ((ex["speaker_ids"] + 1) / 8).tolist()):
            used = set(dry.abs().unique().tolist()) - {0.0}
            assert level in used and not (used & (own - {level}))  # never another source's
        ex = padded[i]
        for dry in ex["dry"]:
            active = int((dry != 0).nonzero().max()) + 1
            assert active <= int(0.6 * FS) and bool((dry[active:] == 0).all())


@pytest.mark.parametrize("factor", [0.85, 1.0, 1.15])
def test_change_speed_moves_a_tone_and_keeps_its_level(factor):
    n = FS  # 1 s of a 500 Hz tone (and a 7.9 kHz one that a speed-up must remove, not alias)
    t = torch.arange(n, dtype=torch.float64) / FS
    tone = torch.sin(2 * math.pi * 500 * t)
    out = change_speed(tone + 0.5 * torch.sin(2 * math.pi * 7900 * t), factor)
    assert out.dtype == torch.float64 and out.shape == (round(n / factor),)
    spectrum = torch.fft.rfft(out).abs()
    hz = torch.fft.rfftfreq(out.numel(), 1 / FS)
    peak = float(hz[spectrum.argmax()])
    assert abs(peak - 500 * factor) <= 1.0  # the tone moved by the factor (1 Hz resolution)
    if factor > 1:  # 7.9 kHz * 1.15 is above Nyquist: removed, not folded back
        assert float(spectrum[hz > 1000].max()) < 1e-6 * float(spectrum.max())
    else:
        high = float(hz[spectrum[hz > 1000].argmax() + int((hz <= 1000).sum())])
        assert abs(high - 7900 * factor) <= 1.0
    # the sinusoid keeps its amplitude (away from the circular edges)
    ref = change_speed(tone, factor)[n // 4 : n // 2]
    assert abs(float(ref.abs().max()) - 1.0) < 1e-3
    fixed = change_speed(tone, factor, length=n)
    assert fixed.shape == (n,) and (factor >= 1 or bool((fixed[: n // 4] != 0).any()))
    if factor < 1:
        torch.testing.assert_close(fixed, change_speed(tone, factor)[:n])
    elif factor > 1:
        assert bool((fixed[round(n / factor) :] == 0).all())
    else:
        torch.testing.assert_close(fixed, tone, rtol=0, atol=0)


def test_speed_perturbation_draws_a_factor_per_source(speech_dir):
    plain = _small(speech_dir, segment_s=1.0, gap_s=0.1, return_dry=True)
    fast = _small(speech_dir, segment_s=1.0, gap_s=0.1, return_dry=True, speed_perturb=1.25)
    slow = _small(speech_dir, segment_s=1.0, gap_s=0.1, return_dry=True, speed_perturb=0.8)
    mixed = _small(speech_dir, segment_s=1.0, speed_perturb=(0.9, 1.1), return_dry=True)
    hz = torch.fft.rfftfreq(FS, 1 / FS)
    for i in range(3):
        # the square waves (period 16 samples: 1 kHz fundamental) move to 1.25 / 0.8 kHz
        for ds, f0 in ((plain, 1000.0), (fast, 1250.0), (slow, 800.0)):
            ex = ds[i]
            assert ex["dry"].shape == (2, FS) and torch.isfinite(ex["mixture"]).all()
            for dry in ex["dry"]:
                spectrum = torch.fft.rfft(dry.double()).abs()
                assert abs(float(hz[spectrum.argmax()]) - f0) <= 2.0
        assert torch.isfinite(mixed[i]["mixture"]).all()
    # the same example index gives the same perturbed example (a pure function of the seed)
    torch.testing.assert_close(mixed[2]["mixture"], mixed[2]["mixture"], rtol=0, atol=0)
    with pytest.raises(ValueError, match="speed_perturb must be <= 2.0"):
        _small(speech_dir, speed_perturb=(0.9, 3.0))
    with pytest.raises(ValueError, match="speed_perturb must be >= 0.5"):
        _small(speech_dir, speed_perturb=0.1)
    with pytest.raises(ValueError, match="factor must be a finite number > 0"):
        change_speed(torch.zeros(8), 0.0)


def test_split_by_speaker_from_manifest():
    if not (DATA_DIR / "speech").is_dir():
        pytest.skip("shared data not found")
    root = DATA_DIR / "speech"
    manifest = json.loads((root / "manifest.json").read_text())
    everyone = {u["speaker"] for u in manifest["utterances"]}
    splits = {
        s: DynamicMixingDataset(
            root,
            split=s,
            split_fractions=(0.5, 0.25, 0.25),
            length=2,
            segment_s=0.5,
            rt60=0.15,
        )
        for s in ("train", "val", "test")
    }
    speakers = {s: set(ds.speakers) for s, ds in splits.items()}
    assert speakers["train"].isdisjoint(speakers["val"])
    assert speakers["train"].isdisjoint(speakers["test"])
    assert speakers["val"].isdisjoint(speakers["test"])
    assert speakers["train"] | speakers["val"] | speakers["test"] == everyone
    assert [len(speakers[s]) for s in ("train", "val", "test")] == [7, 3, 3]
    for s, ds in splits.items():
        ex = ds[0]
        picked = {ds.speakers[k] for k in ex["speaker_ids"].tolist()}
        assert len(picked) == 2 and picked <= speakers[s]
        # the split reads exactly the utterances of its speakers
        files = {u.path.name for utts in ds.utterances for u in utts}
        assert files == {u["file"] for u in manifest["utterances"] if u["speaker"] in speakers[s]}


def test_speaker_split_is_a_partition_and_stable():
    names = [f"s{i}" for i in range(20)] * 3
    a = speaker_split(names, (0.6, 0.2, 0.2), seed=3)
    b = speaker_split(list(reversed(names)), (0.6, 0.2, 0.2), seed=3)
    assert a == b
    assert [len(a[s]) for s in ("train", "val", "test")] == [12, 4, 4]
    assert sorted(a["train"] + a["val"] + a["test"]) == sorted(set(names))
    assert speaker_split(names, (0.6, 0.2, 0.2), seed=4) != a
    with pytest.raises(ValueError, match="summing to 1"):
        speaker_split(names, (0.5, 0.2, 0.2))


def test_speakers_from_folders_stems_and_lists(speech_dir, tmp_path):
    ds = _small(speech_dir, split_fractions=(0.5, 0.5, 0.0))
    val = _small(speech_dir, split="val", split_fractions=(0.5, 0.5, 0.0))
    assert set(ds.speakers) | set(val.speakers) == {f"spk{k}" for k in range(6)}
    assert not set(ds.speakers) & set(val.speakers)
    assert all(len(u) == 2 for u in ds.utterances)  # two utterances per speaker folder
    flat = tmp_path / "flat"
    for k in range(3):
        _write(flat / f"voice{k}.wav", _square(0.25, 4000))
    assert _small(flat).speakers == ["voice0", "voice1", "voice2"]
    chosen = _small(speech_dir, speakers=["spk1", "spk4"])
    assert chosen.speakers == ["spk1", "spk4"]
    assert set(_small(speech_dir, exclude_speakers=["spk0"]).speakers) == {
        f"spk{k}" for k in range(1, 6)
    }
    with pytest.raises(ValueError, match=r"speakers \['nobody'\] are not in"):
        _small(speech_dir, speakers=["nobody", "spk1"])
    # a misspelt exclusion left that (held-out) speaker in the data silently
    with pytest.raises(ValueError, match=r"exclude_speakers \['spk0 '\] are not in"):
        _small(speech_dir, exclude_speakers=["spk0 "])
    # an infinite SNR or gain gave NaN mixtures (or none of the noise); rt60=50 asked for TB
    for bad, match in (({"snr_db": (0.0, float("inf"))}, "snr_db must be finite"),
                       ({"source_gain_db": float("-inf")}, "source_gain_db must be finite"),
                       ({"rt60": 50.0}, "rt60 must be <= 2.0")):  # fmt: skip
        with pytest.raises(ValueError, match=match):
            _small(speech_dir, **bad)


def test_dynamic_mixing_errors_are_specific(speech_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match="speech folder not found"):
        _small(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no audio files"):
        _small(tmp_path / "empty")
    with pytest.raises(ValueError, match="has 1 speaker.*n_sources=2"):
        _small(speech_dir, speakers=["spk1"])
    with pytest.raises(ValueError, match="do not fit"):
        _small(speech_dir, n_sources=5, azimuth_deg=(-60, 60), min_separation_deg=40)
    with pytest.raises(ValueError, match="low <= high"):
        _small(speech_dir, rt60=(0.5, 0.2))
    with pytest.raises(ValueError, match="split must be"):
        _small(speech_dir, split="dev")
    bad = tmp_path / "bad"
    _write(bad / "a.flac", _square(0.25, 4000))
    _write(bad / "b.flac", _square(0.25, 4000))
    (bad / "c.flac").write_bytes(b"this is not audio")
    with pytest.raises(ValueError, match=r"c\.flac"):
        _small(bad)
    (bad / "c.flac").unlink()
    _write(bad / "c.flac", _square(0.25, 4000), fs=8000)
    with pytest.raises(ValueError, match=r"c\.flac.*8000 Hz, expected 16000"):
        _small(bad)
    _write(bad / "c.flac", torch.cat([_square(0.25, 4000)] * 2))
    with pytest.raises(ValueError, match=r"mono.*c\.flac.*2 channels"):
        _small(bad)


# --------------------------------------------------------------------------------------------
# wav folders
# --------------------------------------------------------------------------------------------


def _need_data(sub: str) -> Path:
    if not (DATA_DIR / sub).is_dir():
        pytest.skip("shared data not found")
    return DATA_DIR / sub


def test_wav_folder_whole_files_pair_mixture_and_references():
    ds = WavFolderDataset(_need_data("mixtures"), include="2x2_*")
    assert len(ds) == 4 and ds.names == ["2x2_00", "2x2_01", "2x2_02", "2x2_03"]
    ex = ds[2]
    assert ex["mixture"].shape == (2, 128000) and ex["reference"].shape == (2, 128000)
    # the references are the images at mic 0 of this very mixture (-40 dB sensor noise)
    residual = ex["mixture"][0] - ex["reference"].sum(0)
    assert float(10 * torch.log10(residual.square().sum() / ex["mixture"][0].square().sum())) < -30


def test_wav_folder_chunks():
    root = _need_data("mixtures")
    whole = WavFolderDataset(root, include="3x3_*")
    rand = WavFolderDataset(root, include="3x3_*", segment_s=1.5, length=10, seed=2)
    assert len(rand) == 10 and rand.fresh_indices
    starts = set()
    for i in (0, 4, 13):
        ex = rand[i]
        f, start = int(ex["file_index"]), int(ex["start"])
        assert f == i % 3 and 0 <= start <= 128000 - 24000
        starts.add(start)
        full = whole[f]
        torch.testing.assert_close(ex["mixture"], full["mixture"][:, start : start + 24000])
        torch.testing.assert_close(ex["reference"], full["reference"][:, start : start + 24000])
        _assert_same(ex, rand[i])
    assert len(starts) == 3
    seq = WavFolderDataset(root, include="3x3_*", segment_s=3.0, random_chunks=False)
    assert len(seq) == 3 * 3 and not seq.fresh_indices  # 8 s -> 3 s + 3 s + 2 s (padded)
    pieces = torch.cat([seq[i]["mixture"] for i in range(3)], dim=-1)
    torch.testing.assert_close(pieces[:, :128000], whole[0]["mixture"])
    assert bool((pieces[:, 128000:] == 0).all())
    with pytest.raises(IndexError):
        seq[9]


def test_wav_folder_errors_name_the_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="mixture folder not found"):
        WavFolderDataset(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no mixture files matching"):
        WavFolderDataset(tmp_path / "empty")
    root = tmp_path / "wav"
    noise = torch.randn(2, 4000) * 0.1
    _write(root / "a_mix.flac", noise)
    with pytest.raises(FileNotFoundError, match=r"a_ref\.flac"):
        WavFolderDataset(root)
    _write(root / "a_ref.flac", noise, fs=8000)
    with pytest.raises(ValueError, match=r"sample rates differ.*a_mix\.flac.*a_ref\.flac"):
        WavFolderDataset(root)
    _write(root / "a_ref.flac", noise[:, :3000])
    with pytest.raises(ValueError, match=r"lengths differ.*4000 samples.*3000 samples"):
        WavFolderDataset(root)
    _write(root / "a_ref.flac", noise)
    _write(root / "b_mix.flac", torch.randn(3, 4000) * 0.1)
    _write(root / "b_ref.flac", torch.randn(3, 4000) * 0.1)
    with pytest.raises(ValueError, match="cannot be batched"):
        WavFolderDataset(root)
    assert len(WavFolderDataset(root, include="a")) == 1
    with pytest.raises(ValueError, match="expected 8000 Hz"):
        WavFolderDataset(root, include="a", sample_rate=8000)
    with pytest.raises(ValueError, match="leave length unset"):
        WavFolderDataset(root, include="a", length=4)
    # refused by name: a segment under one sample or not a number, a fractional length, an
    # empty file (it gave silent examples); hidden files (macOS ._ copies) are not examples
    for segment in (1e-5, float("inf"), "1"):
        with pytest.raises(ValueError, match="segment_s"):
            WavFolderDataset(root, include="a", segment_s=segment)
    with pytest.raises(ValueError, match="length must be a positive integer"):
        WavFolderDataset(root, include="a", segment_s=0.1, length=2.5)
    (root / "._a_mix.flac").write_bytes(b"\0" * 10)
    assert WavFolderDataset(root, include="a").names == ["a"]
    _write(root / "c_mix.wav", torch.zeros(2, 0))
    _write(root / "c_ref.wav", torch.zeros(2, 0))
    with pytest.raises(ValueError, match=r"c_mix\.wav' holds no audio"):
        WavFolderDataset(root, include="c", mixture_suffix="_mix.wav", reference_suffix="_ref.wav")


# --------------------------------------------------------------------------------------------
# stem folders
# --------------------------------------------------------------------------------------------

STEMS = ["bass", "drums", "other", "vocals"]


def test_musdb_remix_draws_stems_gains_and_windows():
    root = _need_data("music")
    ds = StemFolderDataset(
        root, segment_s=1.0, gain_db=(-6.0, 3.0), length=6, seed=5, channel_swap=True
    )
    assert ds.tracks == ["autumn_waltz", "night_drive", "sunny_street"] and len(ds) == 6
    seg = 44100
    mixed_tracks = False
    for i in range(3):
        ex = ds[i]
        assert ex["mixture"].shape == (2, seg) and ex["reference"].shape == (4, 2, seg)
        gains = ex["gain_db"]
        assert bool(((gains >= -6.0) & (gains <= 3.0)).all())
        mixed_tracks |= len(set(ex["track_ids"].tolist())) > 1
        for k, stem in enumerate(STEMS):
            track, start = ds.tracks[int(ex["track_ids"][k])], int(ex["start"][k])
            x = read_audio(root / track / f"{stem}.wav", start, seg)
            if bool(ex["swapped"][k]):
                x = x.flip(0)
            torch.testing.assert_close(ex["reference"][k], x * 10 ** (float(gains[k]) / 20))
        torch.testing.assert_close(ex["mixture"], ex["reference"].sum(0))
    assert mixed_tracks  # cross-track remixing happened
    assert not torch.equal(ds[0]["mixture"], ds[6]["mixture"])  # a fresh example past len


def test_musdb_targets_and_the_mixture_file():
    root = _need_data("music")
    vocals = StemFolderDataset(root, targets=["vocals"], segment_s=0.5, length=2, gain_db=0)
    ex = vocals[0]
    assert ex["reference"].shape == (1, 2, 22050)
    assert len(set(ex["track_ids"].tolist())) >= 1
    seq = StemFolderDataset(
        root,
        tracks=["night_drive"],
        segment_s=None,
        random_chunks=False,
        mixture_from_stems=False,
    )
    assert len(seq) == 1
    ex = seq[0]
    assert ex["reference"].shape == (4, 2, 374850)
    # the mixture file is the exact sum of the 16-bit stems
    torch.testing.assert_close(ex["mixture"], ex["reference"].sum(0), atol=1e-6, rtol=0)
    assert bool((ex["gain_db"] == 0).all())


def _track(root: Path, name: str, frames: int = 2000, fs: int = 8000, skip=()) -> None:
    for stem in ["mixture", *STEMS]:
        if stem not in skip:
            _write(root / name / f"{stem}.wav", torch.randn(2, frames) * 0.05, fs=fs)


def test_stem_folder_errors_name_what_is_wrong(tmp_path):
    with pytest.raises(FileNotFoundError, match="track folder not found"):
        StemFolderDataset(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no track folders"):
        StemFolderDataset(tmp_path / "empty")
    root = tmp_path / "music"
    _track(root, "a")
    _track(root, "b", skip=("drums", "vocals"))
    with pytest.raises(FileNotFoundError, match=r"lacks stems \['drums', 'vocals'\]"):
        StemFolderDataset(root, segment_s=0.1)
    _track(root, "b")
    _write(root / "b" / "mixture.wav", torch.zeros(2, 1500), fs=8000)
    with pytest.raises(ValueError, match=r"lengths differ.*b/mixture\.wav.*1500 samples"):
        StemFolderDataset(root, segment_s=None, random_chunks=False, mixture_from_stems=False)
    assert len(StemFolderDataset(root, segment_s=0.1)) == 2  # the stems alone are consistent
    _write(root / "b" / "other.wav", torch.zeros(2, 2000), fs=16000)
    with pytest.raises(ValueError, match=r"sample rates differ.*b/other\.wav.*16000 Hz"):
        StemFolderDataset(root, segment_s=0.1)
    with pytest.raises(ValueError, match="does not follow"):
        StemFolderDataset(root, tracks=["a"], segment_s=0.1, mixture_from_stems=False, remix=True)
    with pytest.raises(ValueError, match="read as stored"):
        StemFolderDataset(root, tracks=["a"], segment_s=0.1, random_chunks=False, gain_db=(0, 1))
    with pytest.raises(ValueError, match="leave length unset"):
        StemFolderDataset(root, tracks=["a"], segment_s=0.1, random_chunks=False, length=3)
    plain = StemFolderDataset(root, tracks=["a"], segment_s=0.1, mixture_from_stems=False)
    assert not plain.remix and plain.gain_db == (0.0, 0.0)  # the defaults follow the mode
    with pytest.raises(ValueError, match="subset of stems"):
        StemFolderDataset(root, tracks=["a"], targets=["piano"])
    with pytest.raises(FileNotFoundError, match=r"tracks \['zz'\] not found"):
        StemFolderDataset(root, tracks=["zz"])
    # a string or a misspelt exclusion left the held-out track in the data
    with pytest.raises(TypeError, match="exclude_tracks must be a list"):
        StemFolderDataset(root, exclude_tracks="b", segment_s=0.1)
    with pytest.raises(FileNotFoundError, match=r"exclude_tracks \['bb'\] not found"):
        StemFolderDataset(root, exclude_tracks=["bb"], segment_s=0.1)
    with pytest.raises(ValueError, match="gain_db must be <= 100"):
        StemFolderDataset(root, tracks=["a"], segment_s=0.1, gain_db=1000)
    (root / ".ipynb_checkpoints").mkdir()  # hidden folders are not tracks
    assert StemFolderDataset(root, exclude_tracks=["b"], segment_s=0.1).tracks == ["a"]


# --------------------------------------------------------------------------------------------
# sampler
# --------------------------------------------------------------------------------------------


def test_epoch_sampler_gives_fresh_indices_per_epoch():
    s = EpochSampler(10, seed=1)
    first = list(s)
    assert sorted(first) == list(range(10)) and first != list(range(10))
    assert list(s) == first  # same epoch, same order
    s.set_epoch(2)
    assert sorted(s) == list(range(20, 30))
    fixed = EpochSampler(10, shuffle=False, fresh=False)
    fixed.set_epoch(5)
    assert list(fixed) == list(range(10))
    with pytest.raises(ValueError, match="positive integer"):
        EpochSampler(0)


def test_epoch_sampler_gives_every_process_as_many_indices():
    """7 examples on 2 processes: 3 each (the 7th of the epoch's order left out). With 4 and 3
    the process with a batch fewer hung the other one in its next step's all_gather."""
    single = list(EpochSampler(7, seed=3))
    shards = [EpochSampler(7, seed=3, num_replicas=2, rank=r) for r in (0, 1)]
    assert [len(s) for s in shards] == [3, 3]
    got = [list(s) for s in shards]
    assert got[0] == single[0:6:2] and got[1] == single[1:6:2]


def direct_image_source_rir(
    room_dim: torch.Tensor,
    sources: torch.Tensor,
    mics: torch.Tensor,
    *,
    sample_rate: int,
    rt60: float,
    rir_length: int | None = None,
    sinc_width: int = 32,
    dtype: torch.dtype = torch.float64,
) -> torch.Tensor:
    """The image source method evaluated image by image with a 32-tap windowed sinc: the
    straightforward reference for :func:`torchbss.data.room.image_source_rir`."""
    room_dim = torch.as_tensor(room_dim, dtype=dtype)
    sources = torch.as_tensor(sources, dtype=dtype).reshape(-1, 3)
    mics = torch.as_tensor(mics, dtype=dtype).reshape(-1, 3)
    for name, pos in (("sources", sources), ("mics", mics)):
        if bool(((pos <= 0) | (pos >= room_dim)).any()):
            raise ValueError(f"{name} must lie strictly inside the room {room_dim.tolist()} m")
    if rt60 <= 0:
        raise ValueError(f"rt60 must be > 0 seconds, got {rt60}")
    if rir_length is None:
        rir_length = int(1.2 * rt60 * sample_rate) + sinc_width
    alpha = sabine_absorption(room_dim, rt60)
    beta = math.sqrt(1.0 - alpha)
    max_dist = rir_length / sample_rate * SPEED_OF_SOUND
    order = int(math.ceil(max_dist / (2 * float(room_dim.min())))) + 1
    n = torch.arange(-order, order + 1, dtype=dtype)
    q = torch.tensor([0.0, 1.0], dtype=dtype)
    # per axis: image coordinate offsets and reflection counts, (2 * (2 order + 1),)
    nn_, qq = torch.meshgrid(n, q, indexing="ij")
    nn_, qq = nn_.reshape(-1), qq.reshape(-1)
    refl = (nn_ - qq).abs() + nn_.abs()  # reflections on the two walls of this axis
    axes = []
    for a in range(3):
        # coordinate of the image of source s along axis a: (1 - 2q) s_a + 2 n L_a
        coord = (1 - 2 * qq)[:, None] * sources[None, :, a] + 2 * nn_[:, None] * room_dim[a]
        axes.append((coord, refl))
    (cx, rx), (cy, ry), (cz, rz) = axes
    # image grid: (Ix, Iy, Iz, n_src) -> flatten to (I, n_src)
    img = torch.stack(
        torch.broadcast_tensors(cx[:, None, None, :], cy[None, :, None, :], cz[None, None, :, :]),
        dim=-1,
    ).reshape(-1, sources.shape[0], 3)
    n_refl = (rx[:, None, None] + ry[None, :, None] + rz[None, None, :]).reshape(-1)
    dist = torch.linalg.norm(img[:, :, None, :] - mics[None, None, :, :], dim=-1)  # (I, S, M)
    keep = (dist.min(dim=-1).values.min(dim=-1).values) < max_dist
    dist, n_refl = dist[keep], n_refl[keep]
    amp = beta ** n_refl[:, None, None] / (4 * math.pi * dist.clamp_min(1e-3))
    delay = dist / SPEED_OF_SOUND * sample_rate  # (I, S, M) in samples
    half = sinc_width // 2
    taps = torch.arange(-half + 1, half + 1, dtype=dtype)  # (W,)
    base = torch.floor(delay)
    idx = base[..., None] + taps  # (I, S, M, W)
    frac = idx - delay[..., None]
    window = 0.5 + 0.5 * torch.cos(math.pi * frac / (half + 1))
    values = amp[..., None] * torch.sinc(frac) * window
    valid = (idx >= 0) & (idx < rir_length)
    values = torch.where(valid, values, torch.zeros_like(values))
    idx = idx.clamp(0, rir_length - 1).long()
    n_src, n_mics = sources.shape[0], mics.shape[0]
    rir = torch.zeros(n_src, n_mics, rir_length, dtype=dtype)
    flat = (
        idx
        + (
            torch.arange(n_src)[None, :, None, None] * n_mics
            + torch.arange(n_mics)[None, None, :, None]
        )
        * rir_length
    )
    rir.view(-1).index_add_(0, flat.reshape(-1), values.reshape(-1))
    return rir


# --------------------------------------------------------------------------------------------
# train/make_tts_speech.py: the synthetic training voices of configs/data/heldout_2x2_tts.yaml
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tts():
    """The script as a module (train/ is not a package)."""
    path = Path(__file__).resolve().parents[1] / "train" / "make_tts_speech.py"
    spec = importlib.util.spec_from_file_location("make_tts_speech", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_tts_clean_trims_resamples_and_normalises(tts):
    rate = 22050
    t = np.arange(rate) / rate
    tone = 0.3 * np.sin(2 * np.pi * 440.0 * t) + 0.05  # 1 s of 440 Hz with a DC offset
    silence = np.zeros(rate // 2)
    out = tts.clean(np.concatenate([silence, tone, silence]), rate)
    # 1 s of tone + 50 ms margin on each side, at 16 kHz (frame-exact trimming: 10 ms frames)
    assert abs(len(out) - 1.1 * 16000) <= 160
    assert np.abs(out).max() == pytest.approx(10 ** (-3 / 20), rel=1e-9)
    assert abs(out.mean()) < 1e-9
    spectrum = np.abs(np.fft.rfft(out))
    assert np.argmax(spectrum) * 16000 / len(out) == pytest.approx(440.0, abs=2.0)


def test_tts_speakers_are_distinct_and_reproducible(tts):
    a, b = tts.speakers(44, random.Random(0)), tts.speakers(44, random.Random(0))
    assert a == b
    names = [s["speaker"] for s in a]
    assert len(set(names)) == len(names) == 44 + len(tts.FLITE_VOICES)
    assert [s["voice"] for s in a[44:]] == tts.FLITE_VOICES
    assert all(25 <= s["pitch"] <= 80 for s in a[:44])


@pytest.mark.skipif(
    not all(shutil.which(p) for p in ("espeak-ng", "flite")),
    reason="needs the espeak-ng and flite programs",
)
def test_tts_folder_is_a_training_split_of_the_dynamic_mixing_dataset(tts, tmp_path):
    out = tmp_path / "tts"
    assert tts.main(["--out", str(out), "--espeak", "2", "--sentences", "2"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert len(manifest["utterances"]) == (2 + len(tts.FLITE_VOICES)) * 2
    for u in manifest["utterances"]:
        audio, rate = sf.read(out / u["file"])
        assert rate == 16000 and 0.5 < len(audio) / rate < 10
        assert np.abs(audio).max() == pytest.approx(10 ** (-3 / 20), abs=1e-4)
    ds = DynamicMixingDataset(
        out, n_sources=2, n_mics=2, segment_s=2.0, split="train",
        split_fractions=(1.0, 0.0, 0.0), length=2,
    )  # fmt: skip
    assert len(ds.speakers) == 2 + len(tts.FLITE_VOICES)
    assert torch.isfinite(ds[0]["mixture"]).all()
    with pytest.raises(SystemExit, match="not empty"):
        tts.main(["--out", str(out), "--espeak", "1", "--sentences", "1"])


def test_tts_refuses_bad_arguments_and_silent_audio(tts, tmp_path):
    with pytest.raises(ValueError, match="silent or empty"):
        tts.clean(np.zeros(22050), 22050)
    with pytest.raises(SystemExit, match="--espeak must be in"):
        tts.main(["--out", str(tmp_path / "a"), "--espeak", "-1"])
    with pytest.raises(SystemExit, match="--sentences must be in"):
        tts.main(["--out", str(tmp_path / "a"), "--sentences", "0"])
    (tmp_path / "file").write_text("x")
    with pytest.raises(SystemExit, match="is not a folder"):
        tts.main(["--out", str(tmp_path / "file")])
    assert not (tmp_path / "a").exists()
