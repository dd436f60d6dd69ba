"""Tests of torchbss.metrics: parity with numpy formulas, torchmetrics and fast_bss_eval."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from conftest import load_mixture

from torchbss.metrics import (
    apply_permutation,
    bleedless,
    bleedless_fullness,
    bss_eval_sdr,
    energy_ratio_db,
    framewise_si_sdr,
    framewise_summary,
    fullness,
    hz_to_mel,
    l1,
    l1_freq,
    linear_sum_assignment,
    mel_db_difference,
    mel_filterbank,
    mel_spectrogram_db,
    mel_to_hz,
    pairwise_scores,
    permutation_invariant_score,
    sdr,
    sdr_improvement,
    si_sdr,
    si_sdr_improvement,
    solve_permutation,
)

fast_bss_eval = pytest.importorskip("fast_bss_eval")


def _randn(generator, *shape, dtype=torch.float64):
    return torch.randn(*shape, generator=generator, dtype=dtype)


def _np_si_sdr(ref: np.ndarray, est: np.ndarray) -> np.ndarray:
    alpha = (est * ref).sum(-1, keepdims=True) / (ref**2).sum(-1, keepdims=True)
    target = alpha * ref
    return 10 * np.log10((target**2).sum(-1) / ((target - est) ** 2).sum(-1))


def _mixed_estimates(generator, reference, noise=0.1, taps=3):
    """Estimates = short FIR-filtered references + leakage + noise, sources reversed."""
    n_src = reference.shape[-2]
    filt = _randn(generator, n_src, taps, dtype=reference.dtype)
    filt[:, 0] += 1.0
    padded = torch.nn.functional.pad(reference, (taps - 1, 0))
    n = reference.shape[-1]
    filtered = sum(
        filt[:, k, None] * padded[..., taps - 1 - k : taps - 1 - k + n] for k in range(taps)
    )
    leak = 0.2 * reference.roll(1, dims=-2)
    est = filtered + leak + noise * _randn(generator, *reference.shape, dtype=reference.dtype)
    return est.flip(-2)


# --------------------------------------------------------------------------------------------
# SDR / SI-SDR
# --------------------------------------------------------------------------------------------


def test_si_sdr_matches_textbook_numpy(generator):
    ref = _randn(generator, 3, 2, 1000)
    est = ref + 0.3 * _randn(generator, 3, 2, 1000)
    expected = _np_si_sdr(ref.numpy(), est.numpy())
    np.testing.assert_allclose(si_sdr(ref, est).numpy(), expected, atol=1e-9)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("zero_mean", [False, True])
def test_si_sdr_matches_torchmetrics(generator, dtype, zero_mean):
    tm = pytest.importorskip("torchmetrics.functional.audio")
    ref = _randn(generator, 4, 800, dtype=dtype) + 0.5
    est = ref + 0.5 * _randn(generator, 4, 800, dtype=dtype)
    expected = tm.scale_invariant_signal_distortion_ratio(est, ref, zero_mean=zero_mean)
    tol = 1e-4 if dtype == torch.float32 else 1e-10
    torch.testing.assert_close(si_sdr(ref, est, zero_mean=zero_mean), expected, atol=tol, rtol=0)


def test_sdr_matches_numpy_and_torchmetrics(generator):
    tm = pytest.importorskip("torchmetrics.functional.audio")
    ref = _randn(generator, 2, 3, 500)
    est = 0.8 * ref + 0.2 * _randn(generator, 2, 3, 500)
    r, e = ref.numpy(), est.numpy()
    expected = 10 * np.log10((r**2).sum(-1) / ((r - e) ** 2).sum(-1))
    np.testing.assert_allclose(sdr(ref, est).numpy(), expected, atol=1e-9)
    torch.testing.assert_close(sdr(ref, est), tm.signal_noise_ratio(est, ref))


def test_scale_invariance(generator):
    ref = _randn(generator, 2, 400)
    est = ref + 0.1 * _randn(generator, 2, 400)
    torch.testing.assert_close(si_sdr(ref, 3.0 * est), si_sdr(ref, est))
    assert (sdr(ref, 3.0 * est) < sdr(ref, est) - 5).all()


def test_silent_reference_is_finite_and_documented(generator):
    est = _randn(generator, 2, 300)
    ref = torch.zeros(2, 300, dtype=torch.float64)
    eps = torch.finfo(torch.float64).eps
    expected = 10 * torch.log10(eps / (est.square().sum(-1) + eps))
    torch.testing.assert_close(si_sdr(ref, est), expected)
    assert (si_sdr(ref, est) < -140).all()
    torch.testing.assert_close(si_sdr(ref, torch.zeros_like(ref)), torch.zeros(2, dtype=ref.dtype))
    assert torch.isfinite(sdr(ref, est)).all()
    ref32 = ref.float()
    assert torch.isfinite(si_sdr(ref32, est.float())).all()
    ref.requires_grad_(True)
    si_sdr(ref, est).sum().backward()
    assert torch.isfinite(ref.grad).all()


def test_batch_consistency(generator):
    ref = _randn(generator, 3, 2, 600)
    est = _mixed_estimates(generator, ref)
    batched = si_sdr(ref, est)
    singles = torch.stack([si_sdr(r, e) for r, e in zip(ref, est)])
    torch.testing.assert_close(batched, singles)
    result = bss_eval_sdr(ref, est, filter_length=32)
    for b in range(3):
        single = bss_eval_sdr(ref[b], est[b], filter_length=32)
        for got, want in zip(result, single):
            torch.testing.assert_close(got[b], want)


def test_gradcheck_si_sdr_and_sdr(generator):
    ref = _randn(generator, 2, 12)
    est = (ref + 0.5 * _randn(generator, 2, 12)).requires_grad_(True)
    ref.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda r, e: si_sdr(r, e), (ref, est))
    assert torch.autograd.gradcheck(lambda r, e: si_sdr(r, e, zero_mean=True), (ref, est))
    assert torch.autograd.gradcheck(lambda r, e: sdr(r, e), (ref, est))


def test_silent_estimate_convention(generator):
    """A silent estimate of a non-silent reference scores 0 dB in sdr and si_sdr."""
    ref = _randn(generator, 3, 400)
    zero = torch.zeros_like(ref)
    for dtype in (torch.float32, torch.float64):
        want = torch.zeros(3, dtype=dtype)
        torch.testing.assert_close(si_sdr(ref.to(dtype), zero.to(dtype)), want)
        torch.testing.assert_close(sdr(ref.to(dtype), zero.to(dtype)), want)
    # and a silent reference with a unit-energy estimate: 10 log10(eps / (1 + eps))
    unit = ref / ref.norm(dim=-1, keepdim=True)
    eps32 = torch.finfo(torch.float32).eps
    got = si_sdr(zero.float(), unit.float())
    torch.testing.assert_close(got, torch.full((3,), 10 * math.log10(eps32 / (1 + eps32))))
    assert abs(float(got[0]) + 69.2) < 0.05


def test_eps_is_absolute(generator):
    """Scale invariance holds while the energies are far above eps, not near it."""
    ref = _randn(generator, 2, 1000, dtype=torch.float32)
    est = ref + 0.1 * _randn(generator, 2, 1000, dtype=torch.float32)
    loud = si_sdr(ref, est)
    torch.testing.assert_close(si_sdr(1e-2 * ref, 1e-2 * est), loud, atol=1e-3, rtol=0)
    # energy 1000 * 1e-10 = 1e-7 ~ float32 eps: the guard dominates, the value drifts to 0 dB
    faint = si_sdr(1e-5 * ref, 1e-5 * est)
    assert (faint < loud - 10).all() and (faint > 0).all()
    # a smaller eps restores it
    torch.testing.assert_close(si_sdr(1e-5 * ref, 1e-5 * est, eps=1e-30), loud, atol=1e-3, rtol=0)


def test_energy_ratio_db_guard():
    num = torch.tensor([1.0, 0.0, -1e-9, 0.0], dtype=torch.float64)
    den = torch.tensor([0.1, 1.0, 1.0, 0.0], dtype=torch.float64)
    want = [10 * math.log10((1 + 1e-12) / (0.1 + 1e-12)), -120.0, -120.0, 0.0]
    got = energy_ratio_db(num, den, 1e-12)
    torch.testing.assert_close(got, torch.tensor(want, dtype=torch.float64), atol=1e-6, rtol=0)


# --------------------------------------------------------------------------------------------
# BSS-Eval
# --------------------------------------------------------------------------------------------


def _assert_bss_parity(result, expected, atol):
    fbe_sdr, fbe_sir, fbe_sar, fbe_perm = (np.asarray(x) for x in expected)
    np.testing.assert_allclose(result.sdr.numpy(), fbe_sdr, atol=atol, rtol=0)
    np.testing.assert_allclose(result.sir.numpy(), fbe_sir, atol=atol, rtol=0)
    np.testing.assert_allclose(result.sar.numpy(), fbe_sar, atol=atol, rtol=0)
    np.testing.assert_array_equal(result.permutation.numpy(), fbe_perm)


@pytest.mark.parametrize("n_src", [2, 3])
def test_bss_eval_matches_fast_bss_eval_random(generator, n_src):
    ref = _randn(generator, 2, n_src, 3000)
    est = _mixed_estimates(generator, ref, noise=0.3)
    expected = fast_bss_eval.bss_eval_sources(ref.numpy(), est.numpy(), filter_length=64)
    result = bss_eval_sdr(ref, est, filter_length=64)
    _assert_bss_parity(result, expected, atol=1e-6)
    assert (result.permutation == torch.arange(n_src).flip(0)).all()


def test_bss_eval_matches_fast_bss_eval_options(generator):
    ref = _randn(generator, 2, 2000) + 0.3
    est = _mixed_estimates(generator, ref, noise=0.05)
    for kwargs in ({"zero_mean": True}, {"clamp_db": 10.0}, {"load_diag": 1e-3}):
        expected = fast_bss_eval.bss_eval_sources(
            ref.numpy(), est.numpy(), filter_length=32, **kwargs
        )
        _assert_bss_parity(bss_eval_sdr(ref, est, filter_length=32, **kwargs), expected, 1e-6)
    # SDR-only fast path: permutation by SDR, as fast_bss_eval.sdr
    fbe_sdr, fbe_perm = fast_bss_eval.sdr(
        ref.numpy(), est.numpy(), filter_length=32, return_perm=True
    )
    fast = bss_eval_sdr(ref, est, filter_length=32, compute_sir_sar=False)
    assert fast.sir is None and fast.sar is None
    np.testing.assert_allclose(fast.sdr.numpy(), fbe_sdr, atol=1e-6)
    np.testing.assert_array_equal(fast.permutation.numpy(), fbe_perm)
    # no permutation search: estimate j scored against reference j
    aligned = est.flip(0)
    # (the numpy backend of fast_bss_eval 0.1.4 fails here, so compare with its torch one)
    expected = fast_bss_eval.bss_eval_sources(
        ref, aligned.contiguous(), filter_length=32, compute_permutation=False
    )
    fixed = bss_eval_sdr(ref, aligned, filter_length=32, return_permutation=False)
    assert fixed.permutation is None
    for got, want in zip(fixed[:3], expected[:3]):
        np.testing.assert_allclose(got.numpy(), want.numpy(), atol=1e-6)


def test_bss_eval_matches_fast_bss_eval_real_signals():
    _, ref, fs = load_mixture("2x2_00")
    ref = ref[:, fs : fs + 2 * fs].contiguous()  # a 2 s excerpt of the reverberant images
    gen = torch.Generator().manual_seed(3)
    est = _mixed_estimates(gen, ref, noise=0.01, taps=8)
    expected = fast_bss_eval.bss_eval_sources(ref.numpy(), est.numpy())  # filter_length=512
    result = bss_eval_sdr(ref, est)
    _assert_bss_parity(result, expected, atol=1e-3)
    assert result.permutation.tolist() == [1, 0]
    # float32 input is computed in float64 and returned in float32
    result32 = bss_eval_sdr(ref.float(), est.float())
    assert result32.sdr.dtype == torch.float32
    for got, want in zip(result32[:3], result[:3]):
        torch.testing.assert_close(got.double(), want, atol=1e-4, rtol=0)


def _separation_at(ref: torch.Tensor, level_db: float, seed: int = 1) -> torch.Tensor:
    """Estimates (sources reversed) with interference and noise each ``level_db`` below."""
    gen = torch.Generator().manual_seed(seed)
    noise = torch.randn(ref.shape, generator=gen, dtype=ref.dtype)
    energy = ref.norm(dim=-1, keepdim=True)
    gain = 10 ** (-level_db / 20)
    other = ref.flip(0) * energy / energy.flip(0)
    est = ref + gain * other + gain * noise * energy / noise.norm(dim=-1, keepdim=True)
    return est.flip(0).contiguous()


@pytest.mark.parametrize("level_db", [24.0, 60.0])
def test_bss_eval_float32_is_accurate_on_good_separations(level_db):
    """float32 input gives the float64 values (before: 1.7 dB of SIR and 7 dB of SAR off at 60
    dB, because the squared cosines near 1 were computed in float32)."""
    _, ref, fs = load_mixture("2x2_00")
    ref = ref[:, fs : 3 * fs].contiguous()
    est = _separation_at(ref, level_db)
    expected = fast_bss_eval.bss_eval_sources(ref.numpy(), est.numpy())  # float64
    result64 = bss_eval_sdr(ref, est)
    _assert_bss_parity(result64, expected, atol=1e-6)
    assert abs(float(result64.sir.mean()) - level_db) < 0.2
    result32 = bss_eval_sdr(ref.float(), est.float())
    assert result32.permutation.tolist() == [1, 0]
    for got, want in zip(result32[:3], expected[:3]):
        np.testing.assert_allclose(got.double().numpy(), want, atol=1e-4, rtol=0)
    # the SDR-only path as well
    sdr32 = bss_eval_sdr(ref.float(), est.float(), compute_sir_sar=False, return_permutation=False)
    sdr64 = bss_eval_sdr(ref, est, compute_sir_sar=False, return_permutation=False)
    torch.testing.assert_close(sdr32.sdr.double(), sdr64.sdr, atol=1e-4, rtol=0)


def test_bss_eval_float32_gradient(generator):
    ref = _randn(generator, 2, 600, dtype=torch.float32)
    est = _mixed_estimates(generator, ref).requires_grad_(True)
    out = bss_eval_sdr(ref, est, filter_length=16)
    assert out.sdr.dtype == torch.float32
    out.sir.sum().backward()
    assert est.grad.dtype == torch.float32 and torch.isfinite(est.grad).all()


def test_bss_eval_many_sources_uses_hungarian(generator):
    ref = _randn(generator, 5, 1500)
    perm = torch.tensor([3, 0, 4, 1, 2])
    est = ref[perm] + 0.2 * _randn(generator, 5, 1500)
    expected = fast_bss_eval.bss_eval_sources(ref.numpy(), est.numpy(), filter_length=16)
    result = bss_eval_sdr(ref, est, filter_length=16)
    _assert_bss_parity(result, expected, atol=1e-6)
    assert result.permutation.tolist() == perm.argsort().tolist()


def test_bss_eval_more_estimates_than_references(generator):
    ref = _randn(generator, 2, 1200)
    est = torch.cat([_randn(generator, 1, 1200), ref.flip(0)]) + 0.1 * _randn(generator, 3, 1200)
    result = bss_eval_sdr(ref, est, filter_length=16)
    assert result.permutation.tolist() == [2, 1]
    assert result.sdr.shape == (2,) and (result.sdr > 15).all()


def test_bss_eval_gradient_is_finite(generator):
    ref = _randn(generator, 2, 800)
    est = _mixed_estimates(generator, ref).requires_grad_(True)
    out = bss_eval_sdr(ref, est, filter_length=16)
    (out.sdr.sum() + out.sir.sum() + out.sar.sum()).backward()
    assert torch.isfinite(est.grad).all() and est.grad.abs().sum() > 0


def test_bss_eval_silent_and_perfect_are_finite(generator):
    ref = _randn(generator, 2, 500)
    silent = ref.clone()
    silent[1] = 0
    est = ref + 0.1 * _randn(generator, 2, 500)
    out = bss_eval_sdr(silent, est, filter_length=8, return_permutation=False)
    assert all(torch.isfinite(x).all() for x in out[:3])
    assert out.sdr[1] < -100
    perfect = bss_eval_sdr(ref, ref, filter_length=8)
    assert all(torch.isfinite(x).all() for x in perfect[:3]) and (perfect.sdr > 100).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_bss_eval_documented_degenerate_values(generator, dtype):
    """Perfect: about +150 dB (at most 156.5); silent estimate: SDR = SAR = -156.5 dB, SIR = 0."""
    ref = _randn(generator, 2, 500, dtype=dtype)
    eps = torch.finfo(torch.float64).eps
    top = 10 * math.log10((1 + eps) / eps)
    perfect = bss_eval_sdr(ref, ref, filter_length=8, return_permutation=False)
    for value in perfect[:3]:
        assert value.dtype == dtype
        assert ((value.double() > 145) & (value.double() < top + 1e-4)).all(), value
    est = ref.clone()
    est[1] = 0.0
    out = bss_eval_sdr(ref, est, filter_length=8, return_permutation=False)
    assert out.sdr.dtype == dtype
    assert abs(float(out.sdr[1]) + top) < 1e-3 and abs(float(out.sar[1]) + top) < 1e-3
    assert float(out.sir[1]) == 0.0
    assert float(si_sdr(ref, est)[1]) == 0.0  # SI-SDR of a silent estimate: 0 dB


# --------------------------------------------------------------------------------------------
# Permutation solvers
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(50, 5, 5), (20, 6, 6), (20, 3, 7), (1, 1, 1)])
def test_linear_sum_assignment_is_optimal(generator, shape):
    cost = _randn(generator, *shape)
    got = linear_sum_assignment(cost)
    n_rows, n_cols = shape[1:]
    perms = torch.tensor(list(itertools.permutations(range(n_cols), n_rows)))
    best = cost[:, torch.arange(n_rows), perms].sum(-1).min(-1).values
    torch.testing.assert_close(cost.gather(2, got[..., None])[..., 0].sum(-1), best)
    assert all(len(set(row.tolist())) == n_rows for row in got)


def test_linear_sum_assignment_matches_scipy(generator):
    optimize = pytest.importorskip("scipy.optimize")
    cost = _randn(generator, 8, 9, 12)
    got = linear_sum_assignment(cost)
    for c, g in zip(cost, got):
        _, cols = optimize.linear_sum_assignment(c.numpy())
        assert g.tolist() == cols.tolist()


def test_solve_permutation_exhaustive_equals_hungarian(generator):
    score = _randn(generator, 30, 4, 4)
    torch.testing.assert_close(
        solve_permutation(score, max_exhaustive=4), solve_permutation(score, max_exhaustive=1)
    )


# --------------------------------------------------------------------------------------------
# Framewise and improvements
# --------------------------------------------------------------------------------------------


def test_framewise_si_sdr(generator):
    fs = 100
    ref = _randn(generator, 2, 350)
    est = ref + 0.3 * _randn(generator, 2, 350)
    ref[0, 100:200] = 0.0  # a silent second frame for source 0
    values, valid = framewise_si_sdr(ref, est, fs, window_s=1.0, hop_s=1.0)
    assert values.shape == valid.shape == (2, 3)  # the trailing 50 samples are dropped
    assert valid.tolist() == [[True, False, True], [True, True, True]]
    assert torch.isfinite(values).all() and values[0, 1] == 0.0
    torch.testing.assert_close(values[1, 2], si_sdr(ref[1, 200:300], est[1, 200:300]))
    overlap = framewise_si_sdr(ref, est, fs, window_s=1.0, hop_s=0.5)
    assert overlap.values.shape == (2, 6)
    short = framewise_si_sdr(ref[:, :50], est[:, :50], fs)
    torch.testing.assert_close(short.values[..., 0], si_sdr(ref[:, :50], est[:, :50]))


def test_improvements(generator):
    ref = _randn(generator, 3, 2, 500)
    mixture = torch.stack([ref.sum(1), 0.5 * ref.sum(1)], dim=1)  # (batch, mics, samples)
    est = ref + 0.1 * _randn(generator, 3, 2, 500)
    got = si_sdr_improvement(ref, est, mixture, ref_mic=1)
    want = si_sdr(ref, est) - si_sdr(ref, mixture[:, 1:2].expand_as(ref))
    torch.testing.assert_close(got, want)
    got = sdr_improvement(ref, est, mixture)
    torch.testing.assert_close(got, sdr(ref, est) - sdr(ref, mixture[:, :1].expand_as(ref)))
    unchanged = mixture[:, :1].expand_as(ref)
    zero = torch.zeros(3, 2, dtype=ref.dtype)
    torch.testing.assert_close(si_sdr_improvement(ref, unchanged, mixture), zero)
    bss = sdr_improvement(ref, est, mixture, metric="bss_eval_sdr", filter_length=8)
    assert bss.shape == (3, 2) and (bss > 10).all()


# --------------------------------------------------------------------------------------------
# Spectral metrics
# --------------------------------------------------------------------------------------------


def test_l1_and_l1_freq(generator):
    ref = _randn(generator, 2, 1000)
    est = ref + 0.1 * _randn(generator, 2, 1000)
    np.testing.assert_allclose(l1(ref, est).numpy(), np.abs(ref.numpy() - est.numpy()).mean(-1))
    window = torch.hann_window(256, dtype=torch.float64)

    def mag(x):
        return torch.stft(
            x, 256, 64, window=window, center=True, pad_mode="constant", return_complex=True
        ).abs()

    expected = (mag(ref) - mag(est)).abs().mean((-2, -1))
    torch.testing.assert_close(l1_freq(ref, est, n_fft=256, hop_length=64), expected)
    torch.testing.assert_close(l1_freq(ref, ref, n_fft=256, hop_length=64), torch.zeros(2).double())


def test_mel_scales_and_filterbank():
    hz = torch.tensor([0.0, 500.0, 1000.0, 4000.0], dtype=torch.float64)
    slaney = hz_to_mel(hz, "slaney")
    torch.testing.assert_close(slaney[:3], torch.tensor([0.0, 7.5, 15.0], dtype=torch.float64))
    torch.testing.assert_close(mel_to_hz(slaney, "slaney"), hz)
    htk = hz_to_mel(torch.tensor([700.0], dtype=torch.float64), "htk")
    torch.testing.assert_close(htk, torch.tensor([2595 * math.log10(2.0)], dtype=torch.float64))
    fb = mel_filterbank(512, 40, 16000, norm=None, dtype=torch.float64)
    assert fb.shape == (40, 257) and (fb >= 0).all() and (fb.max(-1).values > 0.5).all()
    fb_htk = mel_filterbank(512, 20, 16000, scale="htk", norm="slaney")
    assert fb_htk.shape == (20, 257) and torch.isfinite(fb_htk).all()
    # slaney-normalised triangles have unit area: sum_f w(f) * df ~= 1
    area = mel_filterbank(4096, 20, 16000, dtype=torch.float64).sum(-1) * (16000 / 4096)
    assert torch.allclose(area, torch.ones(20, dtype=torch.float64), atol=0.02)
    # f_max = inf made every entry NaN, beyond Nyquist gave empty filters, an integer dtype an
    # all-zero bank, too many mels for n_fft empty filters: refused or warned
    for f_max in (float("inf"), 20000.0):
        with pytest.raises(ValueError, match="f_max <= sample_rate / 2"):
            mel_filterbank(512, 40, 16000, f_max=f_max)
    with pytest.raises(TypeError, match="floating point dtype"):
        mel_filterbank(512, 40, 16000, dtype=torch.int64)
    with pytest.warns(UserWarning, match="mel filters are empty"):
        mel_filterbank(64, 128, 16000)


def test_mel_db_difference(generator):
    ref = _randn(generator, 2, 4000)
    assert torch.allclose(mel_db_difference(ref, ref, 16000), torch.zeros(2, dtype=ref.dtype))
    doubled = mel_db_difference(ref, 2.0 * ref, 16000)
    torch.testing.assert_close(doubled, torch.full((2,), 20 * math.log10(2.0), dtype=ref.dtype))
    assert mel_spectrogram_db(ref, 16000, n_mels=64).shape[-2] == 64


def test_bleedless_fullness_definition(generator):
    ref = _randn(generator, 2, 8000)
    gain_db = 20 * math.log10(2.0)
    louder = bleedless_fullness(ref, 2.0 * ref, 16000)  # D = +6.02 dB everywhere
    torch.testing.assert_close(louder.bleedless, torch.full((2,), 100 / (1 + gain_db)).double())
    torch.testing.assert_close(louder.fullness, torch.full((2,), 100.0).double())
    quieter = bleedless_fullness(ref, 0.5 * ref, 16000)
    torch.testing.assert_close(quieter.bleedless, torch.full((2,), 100.0).double())
    torch.testing.assert_close(quieter.fullness, torch.full((2,), 100 / (1 + gain_db)).double())
    same = bleedless_fullness(ref, ref, 16000)
    assert (same.bleedless == 100).all() and (same.fullness == 100).all()
    torch.testing.assert_close(bleedless(ref, 2 * ref, 16000), louder.bleedless)
    torch.testing.assert_close(fullness(ref, 2 * ref, 16000), louder.fullness)


def test_bleedless_fullness_on_music(data_dir):
    sf = pytest.importorskip("soundfile")
    stems = {}
    for name in ("vocals", "drums"):
        audio, fs = sf.read(
            data_dir / "music" / "sunny_street" / f"{name}.wav",
            dtype="float32",
            always_2d=True,
            start=5 * 44100,
            stop=7 * 44100,
        )
        stems[name] = torch.from_numpy(audio.T.copy())
    vocals, drums = stems["vocals"], stems["drums"]
    bleed = bleedless_fullness(vocals, vocals + 0.3 * drums, fs, pool_channels=True)
    missing = bleedless_fullness(vocals + drums, vocals, fs, pool_channels=True)
    assert bleed.bleedless.shape == ()
    # added bleed hurts bleedless far more than fullness, a removed stem the opposite
    assert bleed.bleedless < 20 and bleed.fullness > 2 * bleed.bleedless
    assert missing.fullness < 10 and missing.bleedless > 2 * missing.fullness
    per_channel = bleedless_fullness(vocals, vocals + 0.3 * drums, fs)
    assert per_channel.bleedless.shape == (2,)


def test_spectral_metrics_gradients(generator):
    ref = _randn(generator, 2, 2048)
    est = (ref + 0.3 * _randn(generator, 2, 2048)).requires_grad_(True)
    total = (
        l1_freq(ref, est, 256, 64).sum()
        + mel_db_difference(ref, est, 16000, 256, 64, 32).sum()
        + sum(x.sum() for x in bleedless_fullness(ref, est, 16000, 256, 64, 32))
    )
    total.backward()
    assert torch.isfinite(est.grad).all() and est.grad.abs().sum() > 0


# --------------------------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------------------------


def test_bad_inputs(generator):
    ref = _randn(generator, 2, 100)
    with pytest.raises(ValueError, match="same shape"):
        si_sdr(ref, ref[:, :50])
    with pytest.raises(TypeError, match="int16"):
        sdr(ref.to(torch.int16), ref.to(torch.int16))
    with pytest.raises(TypeError, match="torch.Tensor"):
        si_sdr(ref.numpy(), ref)
    bad = ref.clone()
    bad[0, 3] = float("nan")
    with pytest.raises(ValueError, match="NaN/inf"):
        si_sdr(ref, bad)
    bad[0, 3] = float("inf")
    with pytest.raises(ValueError, match="NaN/inf"):
        bss_eval_sdr(bad, ref, filter_length=4)
    with pytest.raises(ValueError, match="at least 1 entries"):
        si_sdr(torch.zeros(2, 0), torch.zeros(2, 0))
    with pytest.raises(ValueError, match="at least 2 dimensions"):
        bss_eval_sdr(ref[0], ref[0])
    with pytest.raises(ValueError, match="filter_length must be an integer >= 1"):
        bss_eval_sdr(ref, ref, filter_length=0)
    with pytest.raises(ValueError, match="must not exceed the number of samples"):
        bss_eval_sdr(ref, ref, filter_length=101)
    with pytest.raises(ValueError, match="share their leading dimensions"):
        bss_eval_sdr(ref, ref[:, :90], filter_length=4)
    with pytest.raises(ValueError, match="at least as many estimates"):
        bss_eval_sdr(ref, ref[:1], filter_length=4)
    with pytest.raises(ValueError, match="sample_rate must be a positive"):
        framewise_si_sdr(ref, ref, 0)
    with pytest.raises(ValueError, match="sample_rate must be a positive"):
        mel_db_difference(ref, ref, -16000)
    with pytest.raises(ValueError, match="sample_rate must be a positive"):
        bleedless_fullness(ref, ref, 0.0)
    with pytest.raises(ValueError, match="window_s must be a positive"):
        framewise_si_sdr(ref, ref, 100, window_s=0)
    with pytest.raises(ValueError, match="eps must be a positive"):
        si_sdr(ref, ref, eps=-1.0)
    with pytest.raises(ValueError, match="ref_mic must be an integer"):
        si_sdr_improvement(ref[None], ref[None], ref[None], ref_mic=2)
    with pytest.raises(ValueError, match="unknown metric"):
        sdr_improvement(ref[None], ref[None], ref[None], metric="pesq")
    with pytest.raises(ValueError, match="rows <= cols"):
        linear_sum_assignment(torch.zeros(3, 2))


# --------------------------------------------------------------------------------------------
# Permutation helpers and frame-wise summaries
# --------------------------------------------------------------------------------------------


def test_apply_permutation_and_permutation_invariant_score(generator):
    ref = _randn(generator, 4, 3, 800)
    perm = torch.stack([torch.randperm(3, generator=generator) for _ in range(4)])
    est = apply_permutation(ref, perm) + 0.1 * _randn(generator, 4, 3, 800)
    scores = pairwise_scores(si_sdr, ref, est)
    assert scores.shape == (4, 3, 3)
    torch.testing.assert_close(scores[2, 1, 0], si_sdr(ref[2, 1], est[2, 0]))
    result = permutation_invariant_score(si_sdr, ref, est)
    # reference j was placed at position k with perm[k] = j, so it is matched to k
    assert result.permutation.tolist() == perm.argsort(-1).tolist()
    torch.testing.assert_close(
        result.values, si_sdr(ref, apply_permutation(est, result.permutation))
    )
    assert (result.values > 15).all()
    # a distance is minimised
    dist = permutation_invariant_score(l1, ref, est, maximize=False)
    assert dist.permutation.tolist() == result.permutation.tolist()
    # torchmetrics' PIT agrees (it maximises the mean SI-SDR over the same matchings)
    tm = pytest.importorskip("torchmetrics.functional.audio")
    best, tm_perm = tm.permutation_invariant_training(
        est, ref, tm.scale_invariant_signal_distortion_ratio, mode="speaker-wise", eval_func="max"
    )
    torch.testing.assert_close(result.values.mean(-1), best)
    # torchmetrics' permutation maps estimates to references: its inverse is ours
    assert tm_perm.argsort(-1).tolist() == result.permutation.tolist()
    with pytest.raises(ValueError, match="one value per pair"):
        pairwise_scores(lambda r, e: si_sdr(r, e).sum(-1), ref, est)
    with pytest.raises(ValueError, match="leading dimensions"):
        apply_permutation(est, perm[:2])


def test_framewise_summary_matches_numpy(generator):
    values = _randn(generator, 3, 2, 9)
    valid = torch.rand(3, 2, 9, generator=generator) > 0.3
    valid[0, 0] = False  # no valid frame: every summary is NaN
    valid[0, 1] = True
    valid[0, 1, 4:] = False  # no valid frame in the second half (frames 4..8)
    out = framewise_summary(values, valid)
    masked = np.where(valid.numpy(), values.numpy(), np.nan)
    with np.errstate(all="ignore"), pytest.warns(RuntimeWarning):
        want = {
            "mean": np.nanmean(masked, -1),
            "median": np.nanmedian(masked, -1),
            "min": np.nanmin(masked, -1),
            "second_half_mean": np.nanmean(masked[..., 4:], -1),
        }
    for name, expected in want.items():
        np.testing.assert_allclose(getattr(out, name).numpy(), expected, atol=1e-12, err_msg=name)
    assert torch.isnan(out.second_half_mean[0, 1]) and torch.isfinite(out.mean[0, 1])
    # even count: the median averages the two middle values
    even = framewise_summary(torch.tensor([4.0, 1.0, 3.0, 2.0]), torch.ones(4, dtype=torch.bool))
    assert float(even.median) == 2.5 and float(even.min) == 1.0
    assert float(even.second_half_mean) == 2.5
    # differentiable where defined
    values.requires_grad_(True)
    total = framewise_summary(values, valid)
    sum(torch.nan_to_num(x).sum() for x in total).backward()
    assert torch.isfinite(values.grad).all() and values.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="bool tensor"):
        framewise_summary(values, valid.float())


def test_half_precision_signals_are_scored_in_float32_and_nan_scores_refuse_an_assignment():
    """float16 energies overflow (65504) within a second of audio: NaN or -inf scores; and a
    NaN score matrix got an arbitrary permutation from the exhaustive search."""
    from torchbss.losses import NegSISDR, pit
    from torchbss.metrics import solve_permutation

    g = torch.Generator().manual_seed(0)
    s = torch.randn(2, 2, 80000, generator=g)
    e = s + 0.1 * torch.randn(s.shape, generator=g)
    full = NegSISDR()(e, s)
    half = NegSISDR()(e.half(), s.half())
    assert half.dtype == torch.float32 and torch.isfinite(half)
    assert float(half) == pytest.approx(float(full), abs=0.05)
    assert torch.isfinite(pit(None, e.half(), s.half()).loss)
    with pytest.raises(ValueError, match="score contains 1 NaN"):
        solve_permutation(torch.tensor([[float("nan"), 1.0], [0.0, 1.0]]))
    perm = solve_permutation(torch.tensor([[float("nan"), 1.0], [0.0, 1.0]]), allow_nan=True)
    assert perm.shape == (2,)
