"""The validation protocol's data set (bench/validation): determinism, targets, metadata, splits."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `pytest` without `python -m` does not put the repo on the path
    sys.path.append(str(ROOT))

from bench.validation import dataset as ds  # noqa: E402
from bench.validation import run as vrun  # noqa: E402

# fast rooms (short RT60) so that rendering stays well under a second each
FAST_ROOM = {"2x2": 1, "2s4m": 1}


@pytest.fixture(scope="module")
def speech_dir(data_dir: Path) -> Path:
    return data_dir / "speech"


def test_speakers_are_real_speech_only(speech_dir):
    speakers = ds.list_speakers(speech_dir)
    assert len(speakers) == 5
    assert all(s.startswith(("libri_", "arctic_")) for s in speakers)
    assert not any("espeak" in s for s in speakers)


def test_missing_speech_folder_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="real-speech utterances"):
        ds.list_speakers(tmp_path)


def test_splits_are_disjoint_and_consistent():
    val, test = ds.room_indices("val", 60), ds.room_indices("test", 60)
    assert not set(val) & set(test)
    assert all(ds.split_of(i) == "val" for i in val)
    assert all(ds.split_of(i) == "test" for i in test)
    assert ds.room_indices("val", 3, first=2) == val[2:5]
    with pytest.raises(ValueError, match="split must be one of"):
        ds.room_indices("train", 3)
    with pytest.raises(ValueError, match="case must be one of"):
        ds.room_seed("4x4", 0)


@pytest.mark.parametrize("case", sorted(ds.CASES))
def test_metadata_ranges(case, speech_dir):
    speakers = ds.list_speakers(speech_dir)
    n_src, n_mics = ds.CASES[case]
    rt60, snr = [], []
    for index in range(200):
        meta = ds.sample_room(case, index, speakers)
        assert len(set(meta["speakers"])) == n_src
        room = torch.tensor(meta["room_m"], dtype=torch.float64)
        mics = torch.tensor(meta["mics_m"], dtype=torch.float64)
        src = torch.tensor(meta["sources_m"], dtype=torch.float64)
        assert mics.shape == (n_mics, 3) and src.shape == (n_src, 3)
        assert 0.03 <= meta["mic_spacing_m"] <= 0.15
        gaps = (mics[1:] - mics[:-1]).norm(dim=-1)
        torch.testing.assert_close(gaps, torch.full_like(gaps, meta["mic_spacing_m"]))
        centre = mics.mean(0)
        dist = (src[:, :2] - centre[:2]).norm(dim=-1)
        torch.testing.assert_close(dist, torch.tensor(meta["distance_m"], dtype=torch.float64))
        assert bool(((dist >= 1.0) & (dist <= 2.5)).all())
        az = torch.tensor(meta["azimuth_deg"], dtype=torch.float64)
        assert bool((az.abs() <= 80).all())
        if n_src > 1:
            sep = (az[:, None] - az[None, :]).abs() + 1e3 * torch.eye(n_src, dtype=torch.float64)
            assert float(sep.min()) >= 20.0
        # direction check: the angle between the array axis and each source matches the azimuth
        axis = (mics[-1] - mics[0])[:2] / (mics[-1] - mics[0])[:2].norm()
        cos_to_axis = ((src[:, :2] - centre[:2]) @ axis) / dist
        torch.testing.assert_close(cos_to_axis, -torch.sin(az * math.pi / 180), atol=1e-9, rtol=0)
        assert bool((src[:, :2] >= 0.5).all()) and bool((src[:, :2] <= room[:2] - 0.5).all())
        assert bool((mics > 0).all()) and bool((mics < room).all())
        assert 0.15 <= meta["rt60_s"] <= 0.5
        assert 20.0 <= meta["snr_db"] <= 40.0
        rt60.append(meta["rt60_s"])
        snr.append(meta["snr_db"])
    # the ranges are actually covered, not only respected
    assert min(rt60) < 0.2 and max(rt60) > 0.45
    assert min(snr) < 23 and max(snr) > 37


def test_rooms_differ_between_indices_and_cases(speech_dir):
    speakers = ds.list_speakers(speech_dir)
    a = ds.sample_room("2x2", 0, speakers)
    assert a != ds.sample_room("2x2", 2, speakers)
    assert a["room_m"] != ds.sample_room("2s4m", 0, speakers)["room_m"]
    assert a == ds.sample_room("2x2", 0, speakers)


@pytest.fixture(scope="module")
def built_2x2(speech_dir) -> ds.ValidationMixture:
    return ds.build_mixture("2x2", FAST_ROOM["2x2"], speech_dir)


@pytest.mark.parametrize("case", sorted(FAST_ROOM))
def test_mixture_is_deterministic_and_consistent(case, speech_dir, built_2x2):
    index = FAST_ROOM[case]
    a = built_2x2 if case == "2x2" else ds.build_mixture(case, index, speech_dir)
    b = ds.build_mixture(case, index, speech_dir)
    assert torch.equal(a.mixture, b.mixture) and torch.equal(a.images, b.images)
    assert a.meta == b.meta
    n_src, n_mics = ds.CASES[case]
    assert a.mixture.shape == (n_mics, ds.SEGMENT_SAMPLES)
    assert a.images.shape == (n_src, ds.SEGMENT_SAMPLES)
    assert a.mixture.dtype == torch.float32 and a.split == ds.split_of(index)
    assert abs(float(a.mixture.abs().max()) - 0.9) < 1e-6
    mix, img = a.mixture.double(), a.images.double()
    # 0 dB input SIR at mic 0: equal-power images
    power = img.pow(2).mean(-1)
    torch.testing.assert_close(power, power.mean().expand_as(power), rtol=1e-5, atol=0)
    # targets sum to the mic-0 mixture minus white sensor noise at the drawn SNR
    noise = mix[0] - img.sum(0)
    p_noise = float(noise.pow(2).mean())
    p_clean = float(mix.pow(2).mean()) - p_noise  # noise is independent of the images
    assert abs(10 * math.log10(p_clean / p_noise) - a.meta["snr_db"]) < 0.2
    corr = (noise @ img.T) / (noise.norm() * img.norm(dim=-1))
    assert float(corr.abs().max()) < 0.02
    # each source: silent during its onset, then speech
    for k, onset in enumerate(a.meta["onset_samples"]):
        assert 0 <= onset <= int(0.6 * ds.SAMPLE_RATE)
        direct_delay = 400  # > 2.5 m / 343 m/s * 16 kHz + sinc half-width
        peak = float(img[k].abs().max())
        if onset > 0:  # zero up to FFT-convolution rounding
            assert float(img[k, :onset].abs().max()) < 1e-9 * peak
        assert float(img[k, onset + direct_delay :].abs().max()) > 0.1 * peak


def test_cache_round_trip(tmp_path, speech_dir, built_2x2):
    fresh = built_2x2
    first = ds.load_mixture("2x2", 1, cache_dir=tmp_path, speech_dir=speech_dir)
    path = tmp_path / "2x2_0001.pt"
    assert path.is_file()
    stamp = path.stat().st_mtime_ns
    second = ds.load_mixture("2x2", 1, cache_dir=tmp_path, speech_dir=speech_dir)
    assert path.stat().st_mtime_ns == stamp  # read back, not rebuilt
    for item in (first, second):
        assert torch.equal(item.mixture, fresh.mixture)
        assert torch.equal(item.images, fresh.images)
        assert item.meta == fresh.meta and item.split == "test"


def test_synthetic_voices_render_the_same_rooms(tmp_path, speech_dir, built_2x2):
    """``voices="synthetic"``: the room, array, positions, RT60 and SNR of the real-speech room,
    with distinct espeak-ng speakers; cached under its own name, so the protocol's cached real
    rooms are never taken for it (or it for them)."""
    with pytest.raises(ValueError, match="voices must be one of"):
        ds.list_speakers(speech_dir, "tts")
    voices = ds.list_speakers(speech_dir, "synthetic")
    assert len(voices) == 8 and all(v.startswith("espeak_") for v in voices)
    item = ds.load_mixture(
        "2x2", FAST_ROOM["2x2"], cache_dir=tmp_path, speech_dir=speech_dir, voices="synthetic"
    )
    assert (tmp_path / "synthetic_2x2_0001.pt").is_file()
    assert not (tmp_path / "2x2_0001.pt").exists()
    real = built_2x2.meta
    assert len(set(item.meta["speakers"])) == 2 and set(item.meta["speakers"]) <= set(voices)
    assert item.meta["voices"] == "synthetic" and "voices" not in real
    for key in ("room_m", "mics_m", "sources_m", "rt60_s", "snr_db"):
        assert item.meta[key] == real[key], key
    assert not torch.equal(item.images, built_2x2.images)
    again = ds.load_mixture(
        "2x2", FAST_ROOM["2x2"], cache_dir=tmp_path, speech_dir=speech_dir, voices="synthetic"
    )
    assert torch.equal(again.mixture, item.mixture)


def test_si_sdri_solves_the_permutation():
    g = torch.Generator().manual_seed(0)
    ref = torch.randn(3, 4000, generator=g, dtype=torch.float64)
    mix0 = ref.sum(0)
    est = ref[[2, 0, 1]] + 0.01 * torch.randn(3, 4000, generator=g, dtype=torch.float64)
    scores = vrun._si_sdri_best(ref, est, mix0)
    # SI-SDR of each estimate ~ 40 dB, of the mixture ~ -3 dB: ~ 43 dB improvement each
    assert all(40 < s < 46 for s in scores)


def test_aggregate_counts_collapsed_runs():
    rows = [
        ["2x2", 0, 0, "m", [1.0, 2.0], [5.0, 5.0], 0.1],  # mean 1.5: collapsed (whole)
        ["2x2", 0, 1, "m", [3.0, 3.0], [1.0, 1.0], 0.3],  # mean 3.0, 2nd half collapsed
        ["2x2", 2, 0, "m", [10.0, 8.0], [9.0, 9.0], 0.2],
        ["3x3", 0, None, "m", [0.0, 0.0, 0.0], [0.0, 0.0, 0.0], 0.1],
    ]
    out = {e["case"]: e for e in vrun.aggregate(rows)}
    e = out["2x2"]
    assert e["runs"] == 3 and e["whole_collapsed"] == 1 and e["second_half_collapsed"] == 1
    assert e["whole_mean"] == pytest.approx((1.5 + 3.0 + 9.0) / 3)
    assert e["whole_median"] == pytest.approx(3.0)
    assert e["second_half_median"] == pytest.approx(5.0)
    assert out["3x3"]["whole_collapsed"] == 1 and out["3x3"]["runs"] == 1


def test_unknown_method_is_a_clear_error():
    with pytest.raises(ValueError, match="no method matches 'ilrma_nonexistent'"):
        vrun.resolve_methods(["ilrma_nonexistent"])
    names = [m.name for m in vrun.resolve_methods(["ilrma_b2_*_init0"])]
    assert names == ["ilrma_b2_ip1_init0", "ilrma_b2_ip2_init0"]


def test_rank_prefers_fewer_collapses_within_the_tie_margin():
    from bench.validation.choose_defaults import rank

    def rows(method, scores):
        return [["2x2", 2 * i, 0, method, [s, s], [s, s], 0.1] for i, s in enumerate(scores)]

    data = rows("a", [10.0, 10.0, 0.0]) + rows("b", [6.5, 6.5, 6.5]) + rows("c", [5.0, 5.0, 5.0])
    # a: mean 6.67 with 1 collapse; b: 6.5 (within 0.3 dB) with none -> b first, then a, c
    assert [e["method"] for e in rank(data, "whole")] == ["b", "a", "c"]
    # with a 0.1 dB margin the higher mean wins
    assert [e["method"] for e in rank(data, "whole", tie_db=0.1)] == ["a", "b", "c"]


def test_an_export_file_is_scored_as_saved(tmp_path):
    """``--export NAME=PATH``: an exported separator (here online ILRMA with a trained-looking,
    non-zero weight correction) is rebuilt from its file and separates exactly as the saved
    module does, with the protocol's number of sources; a bad spec is refused by the CLI."""
    from torchbss import OnlineILRMA
    from torchbss.export import save_separator

    config = {"_target_": "torchbss.OnlineILRMA", "n_freq": 33, "correction_hidden": 8}
    sep = OnlineILRMA(n_freq=33, correction_hidden=8)
    with torch.no_grad():
        sep.correction.net[4].bias.uniform_(-1.0, 1.0, generator=torch.Generator().manual_seed(0))
    path = save_separator(tmp_path / "export.pt", sep, config, n_fft=64, hop_length=16)
    g = torch.Generator().manual_seed(0)
    X = torch.randn(2, 33, 40, dtype=torch.complex64, generator=g)
    out = vrun.separate(vrun.Method("exported", f"file:{path}"), X, 2, None)
    with torch.no_grad():
        torch.testing.assert_close(out, sep(X).sources, rtol=0, atol=0)
        assert not torch.allclose(out, OnlineILRMA(n_freq=33)(X).sources)
    with pytest.raises(SystemExit):
        vrun.main(["--methods", "--export", f"missing={tmp_path / 'none.pt'}"])
    with pytest.raises(SystemExit):
        vrun.main(["--methods", "--export", str(path)])  # no NAME=
    with pytest.raises(SystemExit):
        vrun.main(["--methods"])  # nothing to score


def test_oracle_weights_lift_online_ilrma(built_2x2):
    """``bench.heldout_oracle_weights``: online ILRMA fed the true source powers through its
    correction hook separates a real-speech room far better than with its own NMF weights
    (the premise of the ceiling it reports), and the true envelope alone helps too."""
    from bench.heldout_oracle_weights import METHODS, method_scores

    scores = dict(zip(METHODS, method_scores(built_2x2, 1e-2)))
    whole = {name: s[0] for name, s in scores.items()}
    assert whole["oracle_tf"] > whole["default"] + 1.0, whole
    assert whole["oracle_envelope"] > whole["default"] + 0.5, whole
