"""Music metrics (torchbss.metrics.music): the MDX global SDR and museval's BSS-Eval v4.

The parity tests compare :func:`museval_sdr` with museval 0.4.1, a test-only reference
installed without its dependencies (``pip install --no-deps museval==0.4.1``): its
``museval/__init__.py`` imports musdb and stempeg, which need the ffmpeg binaries, so the tests
load its ``metrics.py`` (numpy and scipy only) straight from the installed package and call
``bss_eval`` with the arguments ``museval.evaluate(..., mode="v4")`` passes.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch

from torchbss.metrics import MDX_EPS, global_sdr, museval_sdr, sdr

STEMS = ("bass", "drums", "other", "vocals")
FS = 44100
TOLERANCE_DB = 1e-4  # measured agreement: within 1e-6 dB (see the report in the module docs)
ROUNDING_LIMITED_DB = 100.0  # ratios whose error term is rounding noise (e.g. SAR of a mixture)


# --------------------------------------------------------------------------------------------
# the reference: museval's metrics module, loaded without museval/__init__.py
# --------------------------------------------------------------------------------------------


@functools.cache
def _museval_metrics() -> ModuleType | None:
    spec = importlib.util.find_spec("museval")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "metrics.py"
    module_spec = importlib.util.spec_from_file_location("_museval_metrics_reference", path)
    if module_spec is None or module_spec.loader is None:
        return None
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


def _need_museval() -> ModuleType:
    module = _museval_metrics()
    if module is None:
        pytest.skip("museval is not installed (test-only: pip install --no-deps museval==0.4.1)")
    return module


def _one_blas_thread():
    """museval's solves are 10x slower when OpenBLAS threads compete for 2 cores."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(1)


def _museval(reference, estimate, window_s, hop_s, filter_length):
    """museval.evaluate(mode="v4") on ``(sources, channels, samples)`` arrays: frame values
    ``{name: (sources, frames)}`` and museval's medians (nanmedian, inf dropped as its store)."""
    metrics = _need_museval()
    with _one_blas_thread():
        values = metrics.bss_eval(
            reference.transpose(0, 2, 1),
            estimate.transpose(0, 2, 1),
            window=int(window_s * FS),
            hop=int(hop_s * FS),
            compute_permutation=False,
            filters_len=filter_length,
            framewise_filters=False,
            bsseval_sources_version=False,
        )
    frames = dict(zip(("sdr", "isr", "sir", "sar"), values[:4]))
    medians = {
        k: np.nanmedian(np.where(np.isinf(v), np.nan, v), axis=-1) for k, v in frames.items()
    }
    return frames, medians


# --------------------------------------------------------------------------------------------
# songs and estimates
# --------------------------------------------------------------------------------------------


def _song(data_dir: Path, song: str, start_s: float, seconds: float):
    """Stems ``(4, 2, samples)`` and mixture ``(2, samples)`` of a shared song, float64."""
    sf = pytest.importorskip("soundfile")
    start, frames = int(start_s * FS), int(seconds * FS)

    def read(name: str) -> np.ndarray:
        path = data_dir / "music" / song / f"{name}.wav"
        if not path.is_file():
            pytest.skip(f"{path} not found")
        audio, rate = sf.read(path, dtype="float64", always_2d=True, start=start, frames=frames)
        assert rate == FS
        return audio.T

    return np.stack([read(name) for name in STEMS]), read("mixture")


def _estimates(kind: str, stems: np.ndarray, mixture: np.ndarray) -> np.ndarray:
    """Estimates of diverse quality: every value of SDR/ISR/SIR/SAR moves."""
    rng = np.random.default_rng(20251202)
    power = stems.std(axis=(1, 2), keepdims=True)
    noise = rng.standard_normal(stems.shape) * power
    if kind == "mixture":  # the mixture for every stem: low SIR, SAR rounding-limited
        return np.broadcast_to(mixture, stems.shape).copy()
    if kind == "filtered":  # each stem through a short FIR (ISR), plus noise (SAR)
        fir = np.array([0.0, 0.0, 0.75, 0.2, -0.1, 0.05])
        filtered = np.apply_along_axis(lambda x: np.convolve(x, fir)[: x.size], -1, stems)
        return filtered + 0.03 * noise
    if kind == "bleed":  # other stems leak in (SIR), one of them low-passed, plus noise
        smooth = np.apply_along_axis(lambda x: np.convolve(x, np.ones(8) / 8)[: x.size], -1, stems)
        return stems + 0.3 * np.roll(stems, 1, axis=0) + 0.2 * np.roll(smooth, 2, 0) + 0.01 * noise
    raise ValueError(kind)


def _compare(reference, estimate, window_s, hop_s, filter_length):
    """Assert museval_sdr == museval on every frame value and median; returns the worst gap."""
    want_frames, want_medians = _museval(reference, estimate, window_s, hop_s, filter_length)
    got = museval_sdr(
        torch.from_numpy(reference),
        torch.from_numpy(estimate),
        FS,
        window_s=window_s,
        hop_s=hop_s,
        filter_length=filter_length,
    )
    worst = 0.0
    for name in ("sdr", "isr", "sir", "sar"):
        for mine, theirs in (
            (getattr(got.framewise, name).numpy(), want_frames[name]),
            (getattr(got, name).numpy(), want_medians[name]),
        ):
            assert mine.shape == theirs.shape, name
            np.testing.assert_array_equal(np.isnan(mine), np.isnan(theirs), err_msg=name)
            both = ~np.isnan(theirs)
            # a ratio whose error term is rounding noise is "infinite" for both, not equal
            limited = both & (theirs > ROUNDING_LIMITED_DB)
            assert (mine[limited] > ROUNDING_LIMITED_DB).all(), name
            exact = both & ~limited
            gap = float(np.abs(mine[exact] - theirs[exact]).max(initial=0.0))
            assert gap <= TOLERANCE_DB, (name, gap)
            worst = max(worst, gap)
    return got, want_frames, worst


# --------------------------------------------------------------------------------------------
# parity with museval on the shared songs
# --------------------------------------------------------------------------------------------


def test_museval_parity_fast(data_dir):
    """1.5 s of a song, 64-tap filters, 0.5 s frames: every value within 1e-4 dB of museval."""
    stems, mixture = _song(data_dir, "sunny_street", 2.0, 1.5)
    estimate = _estimates("bleed", stems, mixture)
    got, want, _ = _compare(stems, estimate, window_s=0.5, hop_s=0.5, filter_length=64)
    assert got.framewise.sdr.shape == (4, 3)
    # the case is not degenerate: values spread over a wide range
    for name in ("sdr", "isr", "sir", "sar"):
        assert np.ptp(want[name]) > 3.0, name


@pytest.mark.slow
@pytest.mark.parametrize(
    ("song", "kind", "hop_s", "silence"),
    [
        ("sunny_street", "mixture", 1.0, False),
        ("night_drive", "filtered", 1.0, False),
        ("autumn_waltz", "bleed", 0.5, True),
    ],
)
def test_museval_parity_songs(data_dir, song, kind, hop_s, silence):
    """6 s excerpts, museval's defaults (512 taps, 1 s frames): every value within 1e-4 dB."""
    stems, mixture = _song(data_dir, song, 1.0, 6.0)
    estimate = _estimates(kind, stems, mixture)
    if silence:  # vocals silent in [1 s, 2 s): that frame is NaN for every stem
        stems[3, :, FS : 2 * FS] = 0.0
    got, want, _ = _compare(stems, estimate, window_s=1.0, hop_s=hop_s, filter_length=512)
    n_nan = int(np.isnan(want["sdr"][0]).sum())
    assert n_nan == (1 if silence else 0)  # a frame counts while any stem is audible in it
    assert torch.isnan(got.framewise.sir).sum() == 4 * n_nan


# --------------------------------------------------------------------------------------------
# global SDR
# --------------------------------------------------------------------------------------------


def test_global_sdr_values():
    """Energy ratios over channels and samples, with the challenge's eps = 1e-7."""
    gen = torch.Generator().manual_seed(0)
    ref = torch.randn(3, 4, 2, 1000, generator=gen, dtype=torch.float64)
    est = 0.5 * ref  # error energy = 1/4 of the signal's: 10 log10(4) dB
    torch.testing.assert_close(
        global_sdr(ref, est), torch.full((3, 4), 10 * np.log10(4.0), dtype=torch.float64)
    )
    # the challenge's formula, computed independently
    est = ref + 0.3 * torch.randn(ref.shape, generator=gen, dtype=torch.float64)
    r, e = ref.numpy(), est.numpy()
    num = np.sum(r**2, axis=(-2, -1)) + 1e-7
    den = np.sum((r - e) ** 2, axis=(-2, -1)) + 1e-7
    np.testing.assert_allclose(global_sdr(ref, est).numpy(), 10 * np.log10(num / den), atol=1e-12)
    # one value over both channels: not the mean of per-channel SDRs
    stereo = torch.stack([ref[0, 0, 0], 0.01 * ref[0, 0, 1]])
    noisy = stereo + 0.1 * torch.randn(stereo.shape, generator=gen, dtype=torch.float64)
    pooled, per_channel = global_sdr(stereo, noisy), sdr(stereo, noisy).mean()
    assert pooled.shape == () and abs(float(pooled - per_channel)) > 5.0
    # eps: a silent estimate scores 0 dB, a silent stem with a silent estimate 0 dB
    assert float(global_sdr(ref[0, 0], torch.zeros_like(ref[0, 0]))) == pytest.approx(0, abs=1e-9)
    assert float(global_sdr(torch.zeros(2, 10), torch.zeros(2, 10))) == 0.0
    assert float(global_sdr(torch.zeros(2, 10), torch.ones(2, 10))) == pytest.approx(
        10 * np.log10(MDX_EPS / (20 + MDX_EPS)), rel=1e-5
    )


def test_global_sdr_dtype_gradient_and_errors():
    gen = torch.Generator().manual_seed(1)
    ref = torch.randn(2, 2, 500, generator=gen)
    est = (ref + 0.1 * torch.randn(ref.shape, generator=gen)).requires_grad_(True)
    value = global_sdr(ref, est)
    assert value.dtype == torch.float32 and value.shape == (2,)
    torch.testing.assert_close(value, global_sdr(ref.double(), est.double()).float())
    value.sum().backward()
    assert torch.isfinite(est.grad).all() and est.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="channels, samples"):
        global_sdr(torch.randn(100), torch.randn(100))
    with pytest.raises(ValueError, match="same shape"):
        global_sdr(torch.randn(2, 100), torch.randn(2, 99))


# --------------------------------------------------------------------------------------------
# museval_sdr on synthetic signals (no museval needed)
# --------------------------------------------------------------------------------------------

SMALL_FS = 8000


def _noise_stems(seed: int = 0, n_src: int = 3, n_chan: int = 2, seconds: float = 1.0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n_src, n_chan, int(seconds * SMALL_FS), generator=gen, dtype=torch.float64)


def test_museval_sdr_is_the_framewise_snr():
    """v4's SDR uses no filter: per frame 10 log10(|s|^2 / |ŝ - s|^2); medians as nanmedian."""
    ref = _noise_stems()
    gen = torch.Generator().manual_seed(1)
    est = ref + 0.2 * torch.randn(ref.shape, generator=gen, dtype=torch.float64) * torch.tensor(
        [1.0, 0.5, 2.0], dtype=torch.float64
    ).view(3, 1, 1)
    result = museval_sdr(ref, est, SMALL_FS, window_s=0.25, hop_s=0.2, compute_isr_sir_sar=False)
    assert result.isr is None and result.framewise.sar is None
    frames_ref = ref.unfold(-1, 2000, 1600)  # (sources, channels, frames, window)
    frames_est = est.unfold(-1, 2000, 1600)
    want = 10 * torch.log10(
        frames_ref.square().sum((1, 3)) / (frames_est - frames_ref).square().sum((1, 3))
    )
    torch.testing.assert_close(result.framewise.sdr, want)
    torch.testing.assert_close(result.sdr, torch.from_numpy(np.median(want.numpy(), axis=-1)))
    # the SDR does not depend on whether the filters were computed
    full = museval_sdr(ref, est, SMALL_FS, window_s=0.25, hop_s=0.2, filter_length=32)
    torch.testing.assert_close(full.framewise.sdr, result.framewise.sdr)


def test_museval_sdr_filtered_estimate():
    """An estimate that is its stem through a short FIR: the filters are that FIR, so the SIR is
    rounding-limited and the ISR and SAR are those of the FIR applied to each frame (zero
    outside it: the frame edges make the artifacts), computed directly here."""
    ref = _noise_stems(seed=2)
    ref[..., -64:] = 0.0  # so that the filtered stem is exactly in the span of its delays
    fir = np.array([0.0, 0.9, 0.3, -0.2])
    est = torch.from_numpy(
        np.apply_along_axis(lambda x: np.convolve(x, fir)[: x.size], -1, ref.numpy())
    )
    result = museval_sdr(ref, est, SMALL_FS, window_s=0.25, hop_s=0.25, filter_length=32)
    assert result.framewise.sir.shape == (3, 4) and (result.framewise.sir > 100).all()

    def frames(x):  # (sources, channels, frames, window + 3), zero-padded
        return np.pad(x.unfold(-1, 2000, 2000).numpy(), [(0, 0)] * 3 + [(0, 3)])

    s, s_hat = frames(ref), frames(est)
    s_filt = np.apply_along_axis(lambda x: np.convolve(x, fir)[: x.size], -1, s)

    def ratio(num, den):
        return 10 * np.log10((num**2).sum(axis=(1, 3)) / (den**2).sum(axis=(1, 3)))

    np.testing.assert_allclose(result.framewise.isr.numpy(), ratio(s, s_filt - s), atol=1e-6)
    np.testing.assert_allclose(
        result.framewise.sar.numpy(), ratio(s_filt, s_hat - s_filt), atol=1e-6
    )
    assert 20 < float(result.sar.min()) < 60  # finite: only the frame edges differ


def test_museval_sdr_silent_frames_are_nan_for_every_stem():
    ref = _noise_stems(seed=3)
    est = ref + 0.1 * _noise_stems(seed=4)
    ref[1, :, 2000:4000] = 0.0  # stem 1 silent in frame 1: that frame is NaN for all stems
    est[2, :, 6000:] = 0.0  # estimate 2 silent in frame 3
    est[0, 0, 100:200] = -est[0, 1, 100:200]  # channels cancelling over part of a frame: valid
    result = museval_sdr(ref, est, SMALL_FS, window_s=0.25, hop_s=0.25, filter_length=16)
    for values in result.framewise:
        nan = torch.isnan(values)
        assert nan[:, [1, 3]].all() and not nan[:, [0, 2]].any()
    valid = result.framewise.sdr[:, [0, 2]]
    torch.testing.assert_close(result.sdr, valid.mean(-1))  # median of two = their mean
    # no valid frame at all: NaN medians
    silent = museval_sdr(ref, torch.zeros_like(est), SMALL_FS, filter_length=16)
    assert torch.isnan(silent.sdr).all() and torch.isnan(silent.sar).all()


def test_museval_sdr_batch_dtype_and_one_frame():
    refs = torch.stack([_noise_stems(seed=5), _noise_stems(seed=6)])
    ests = refs + 0.3 * torch.stack([_noise_stems(seed=7), _noise_stems(seed=8)]).roll(1, 1)
    batched = museval_sdr(refs, ests, SMALL_FS, window_s=0.5, filter_length=16)
    for i in range(2):
        alone = museval_sdr(refs[i], ests[i], SMALL_FS, window_s=0.5, filter_length=16)
        for got, want in zip(batched[:4], alone[:4]):
            torch.testing.assert_close(got[i], want, rtol=0, atol=1e-9)
    single = museval_sdr(refs.float(), ests.float(), SMALL_FS, window_s=0.5, filter_length=16)
    assert single.sir.dtype == torch.float32 and single.framewise.sar.dtype == torch.float32
    torch.testing.assert_close(single.sir, batched.sir.float(), rtol=0, atol=1e-3)
    # a window longer than the signal: one frame over all of it
    whole = museval_sdr(refs, ests, SMALL_FS, window_s=5.0, filter_length=16)
    assert whole.framewise.sdr.shape == (2, 3, 1)
    torch.testing.assert_close(whole.sdr, whole.framewise.sdr[..., 0])


def test_museval_sdr_errors():
    ref = _noise_stems()
    with pytest.raises(ValueError, match=r"sources, channels, samples"):
        museval_sdr(ref[0], ref[0], SMALL_FS)
    with pytest.raises(ValueError, match="same shape"):
        museval_sdr(ref, ref[:2], SMALL_FS)
    with pytest.raises(ValueError, match="window_s"):
        museval_sdr(ref, ref, SMALL_FS, window_s=0)
    with pytest.raises(ValueError, match="hop_s"):
        museval_sdr(ref, ref, SMALL_FS, hop_s=-1.0)
    with pytest.raises(ValueError, match="filter_length"):
        museval_sdr(ref, ref, SMALL_FS, filter_length=0)
    with pytest.raises(TypeError, match="sample_rate"):
        museval_sdr(ref, ref, "44100")
    with pytest.raises(TypeError, match="compute_isr_sir_sar"):
        museval_sdr(ref, ref, SMALL_FS, compute_isr_sir_sar=1)


# --------------------------------------------------------------------------------------------
# accumulating modules
# --------------------------------------------------------------------------------------------


def _tracks(n_tracks: int = 4, seed: int = 10):
    gen = torch.Generator().manual_seed(seed)
    ref = torch.randn(n_tracks, 3, 2, 4000, generator=gen, dtype=torch.float64)
    scale = torch.linspace(0.1, 1.0, n_tracks, dtype=torch.float64).view(-1, 1, 1, 1)
    est = ref + scale * torch.randn(ref.shape, generator=gen, dtype=torch.float64)
    return ref, est


def test_global_sdr_module():
    pytest.importorskip("torchmetrics")
    from torchbss.metrics import GlobalSDR

    ref, est = _tracks()
    want = global_sdr(ref, est)  # (tracks, stems)
    plain, named = GlobalSDR(), GlobalSDR(stems=("bass", "drums", "vocals"))
    halves = (
        GlobalSDR(stems=["bass", "drums", "vocals"]),
        GlobalSDR(stems=("bass", "drums", "vocals")),
    )
    for i, (r, e) in enumerate(zip(ref.split(1), est.split(1))):
        plain.update(r, e)
        named.update(r, e)
        halves[i % 2].update(r, e)
    torch.testing.assert_close(plain.compute(), want.mean().float())
    out = named.compute()
    torch.testing.assert_close(out["sdr"], want.mean().float())
    torch.testing.assert_close(out["sdr_drums"], want[:, 1].mean().float())
    halves[0].merge_state(halves[1])  # the DDP reduction: sums of the two halves
    for key, value in halves[0].compute().items():
        torch.testing.assert_close(value, out[key])
    # permutation invariant: estimates in another order score the same
    pit = GlobalSDR(permutation_invariant=True)
    pit.update(ref, est.flip(1))
    torch.testing.assert_close(pit.compute(), want.mean().float())
    with pytest.raises(ValueError, match="3 stems"):
        GlobalSDR(stems=("a", "b", "c")).update(ref[:, :2], est[:, :2])
    with pytest.raises(TypeError, match="stems"):
        GlobalSDR(stems="vocals")


def test_museval_sdr_module():
    pytest.importorskip("torchmetrics")
    from torchbss.metrics import MusevalSDR

    ref, est = _tracks()
    est[1, :, :, 1000:] = 0.0  # track 1: every frame after the first is NaN
    est[2] = 0.0  # track 2: no valid frame, left out of the means
    options = dict(window_s=0.125, hop_s=0.125, filter_length=16)
    want = museval_sdr(ref, est, SMALL_FS, **options)
    names = ("bass", "drums", "vocals")
    whole = MusevalSDR(SMALL_FS, stems=names, compute_isr_sir_sar=True, **options)
    parts = [MusevalSDR(SMALL_FS, stems=names, compute_isr_sir_sar=True, **options) for _ in "ab"]
    for i, (r, e) in enumerate(zip(ref.split(2), est.split(2))):
        whole.update(r, e)
        parts[i].update(r, e)
    out = whole.compute()
    kept = [0, 1, 3]
    for name in ("sdr", "isr", "sir", "sar"):
        medians = getattr(want, name)
        assert torch.isnan(medians[2]).all() and not torch.isnan(medians[kept]).any()
        torch.testing.assert_close(out[name], medians[kept].mean().float())
        torch.testing.assert_close(out[f"{name}_vocals"], medians[kept, 2].mean().float())
    parts[0].merge_state(parts[1])
    for key, value in parts[0].compute().items():
        torch.testing.assert_close(value, out[key])
    plain = MusevalSDR(SMALL_FS, **options)
    plain.update(ref, est)
    assert set(plain.compute()) == {"sdr"}
    torch.testing.assert_close(plain.compute()["sdr"], out["sdr"])
