"""Tests of torchbss.metrics.compute_metrics / MetricBundle on real mixtures and JSON."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import load_mixture, reference_figures

from torchbss.metrics import (
    METRIC_NAMES,
    MetricBundle,
    bss_eval_sdr,
    compute_metrics,
    framewise_si_sdr,
    framewise_summary,
    si_sdr,
)


def _figures(name: str) -> dict:
    return next(m for m in reference_figures()["sets"]["mixtures"] if m["name"] == name)


@pytest.mark.parametrize("name", ["2x2_00", "3x3_00"])
def test_unprocessed_mixture_matches_reference_figures(name):
    """The mixture as estimate: SI-SDR = the published input SI-SDR, improvements = 0."""
    mix, ref, fs = load_mixture(name)
    n_src = ref.shape[0]
    estimate = mix[:1].expand(n_src, -1)
    out = compute_metrics(ref, estimate, mix, sample_rate=fs, filter_length=128)
    want = torch.tensor(_figures(name)["input_si_sdr_db"], dtype=torch.float64)
    torch.testing.assert_close(out.si_sdr, want, atol=0.006, rtol=0)  # figures have 2 decimals
    torch.testing.assert_close(out.input_si_sdr, want, atol=0.006, rtol=0)
    assert (out.si_sdr_improvement == 0).all()
    # BSS-Eval's SDR of the mixture, with and without the permutation search, to rounding
    torch.testing.assert_close(out.sdr_improvement, torch.zeros_like(want), atol=1e-10, rtol=0)
    assert out.names == METRIC_NAMES
    # frame-wise SI-SDR of the mixture hovers around its global value
    assert (out.framewise_si_sdr_median - out.si_sdr).abs().max() < 6


def test_swapped_estimates_recover_permutation_and_values():
    mix, ref, fs = load_mixture("2x2_00")
    mix, ref = mix[:, fs : 4 * fs].contiguous(), ref[:, fs : 4 * fs].contiguous()  # 3 s
    gen = torch.Generator().manual_seed(0)
    clean = ref + 0.05 * mix[:1] + 0.01 * torch.randn(ref.shape, generator=gen, dtype=ref.dtype)
    out = compute_metrics(ref, clean.flip(0), mix, sample_rate=fs)
    assert out.permutation.tolist() == [1, 0]
    torch.testing.assert_close(out.si_sdr, si_sdr(ref, clean))
    fast_bss_eval = pytest.importorskip("fast_bss_eval")
    fbe = fast_bss_eval.bss_eval_sources(ref.numpy(), clean.flip(0).numpy())
    for got, want in zip((out.sdr, out.sir, out.sar), fbe[:3]):
        np.testing.assert_allclose(got.numpy(), want, atol=1e-4, rtol=0)
    np.testing.assert_array_equal(out.permutation.numpy(), fbe[3])
    torch.testing.assert_close(out.si_sdr_improvement, out.si_sdr - out.input_si_sdr)
    assert (out.si_sdr_improvement > 15).all() and (out.sdr_improvement > 15).all()
    frames = framewise_si_sdr(ref, clean, fs)
    summary = framewise_summary(*frames)
    torch.testing.assert_close(out.framewise_si_sdr_mean, summary.mean)
    torch.testing.assert_close(out.framewise_si_sdr_second_half_mean, summary.second_half_mean)
    n = frames.values.shape[-1]
    torch.testing.assert_close(
        out.framewise_si_sdr_second_half_mean, frames.values[:, n // 2 :].mean(-1)
    )


def test_batched_equals_items():
    gen = torch.Generator().manual_seed(1)
    ref = torch.randn(2, 3, 2, 2000, generator=gen)
    mix = torch.stack([ref.sum(-2), ref[..., 0, :] - ref[..., 1, :]], dim=-2)
    est = ref + 0.2 * torch.randn(ref.shape, generator=gen)
    est[0, 1] = est[0, 1].flip(0)
    out = compute_metrics(ref, est, mix, sample_rate=1000, filter_length=64)
    assert out.sdr.shape == (2, 3, 2) and out.batch_shape == (2, 3) and out.n_sources == 2
    assert out.sdr.dtype == torch.float32
    assert out.permutation[0, 1].tolist() == [1, 0] and out.permutation[1, 2].tolist() == [0, 1]
    for i, j in ((0, 1), (1, 2)):
        single = compute_metrics(
            ref[i, j], est[i, j], mix[i, j], sample_rate=1000, filter_length=64
        )
        for name in METRIC_NAMES:
            torch.testing.assert_close(getattr(out, name)[i, j], getattr(single, name))
    bss = bss_eval_sdr(ref, est, filter_length=64)
    torch.testing.assert_close(out.sir, bss.sir)


def test_more_estimates_than_references():
    gen = torch.Generator().manual_seed(2)
    ref = torch.randn(2, 3000, generator=gen, dtype=torch.float64)
    extra = torch.randn(1, 3000, generator=gen, dtype=torch.float64)
    est = torch.cat([ref[1:], extra, ref[:1]]) + 0.05 * torch.randn(3, 3000, generator=gen)
    out = compute_metrics(ref, est, filter_length=64)
    assert out.permutation.tolist() == [2, 0] and out.sdr.shape == (2,)
    assert out.input_sdr is None and out.framewise_si_sdr_mean is None
    assert out.names == ("sdr", "sir", "sar", "si_sdr")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_json_round_trip_is_exact(dtype):
    gen = torch.Generator().manual_seed(3)
    ref = torch.randn(3, 2, 4000, generator=gen, dtype=dtype)
    ref[0, 1, 2000:] = 0.0  # silent second half: that summary is undefined (NaN -> null)
    mix = ref.sum(-2, keepdim=True)
    est = ref.flip(-2) + 0.1 * torch.randn(ref.shape, generator=gen, dtype=dtype)
    out = compute_metrics(ref, est, mix, sample_rate=1000, filter_length=32, window_s=0.5)
    assert torch.isnan(out.framewise_si_sdr_second_half_mean[0, 1])
    text = json.dumps(out.to_dict(), allow_nan=False)  # strict JSON
    data = json.loads(text)
    assert data["per_source"]["framewise_si_sdr_second_half_mean"][0][1] is None
    assert data["batch_shape"] == [3] and data["n_sources"] == 2 and data["dtype"] == str(dtype)[6:]
    assert data["settings"] == {
        "filter_length": 32,
        "ref_mic": 0,
        "sample_rate": 1000.0,
        "window_s": 0.5,
        "hop_s": 1.0,
    }
    assert abs(data["mean"]["si_sdr"] - float(out.si_sdr.double().mean())) < 1e-12
    second_half = out.framewise_si_sdr_second_half_mean.double()
    assert (
        abs(data["mean"]["framewise_si_sdr_second_half_mean"] - float(second_half.nanmean())) < 1e-9
    )
    back = MetricBundle.from_dict(data)
    assert back == out
    for name in METRIC_NAMES:
        a, b = getattr(back, name), getattr(out, name)
        assert a.dtype == b.dtype and torch.equal(torch.nan_to_num(a), torch.nan_to_num(b))
    assert back.to_dict() == data
    tampered = dict(data, per_source=dict(data["per_source"], sdr=[[0.0, 0.0]] * 3))
    assert MetricBundle.from_dict(tampered) != out


def test_bad_input():
    ref = torch.randn(2, 1000)
    with pytest.raises(ValueError, match="same leading dimensions|share their leading"):
        compute_metrics(ref, ref[:, :900])
    with pytest.raises(ValueError, match="framewise=True needs sample_rate"):
        compute_metrics(ref, ref, framewise=True, filter_length=16)
    with pytest.raises(ValueError, match=r"ref_mic must be an integer in \[0, 2\)"):
        compute_metrics(ref, ref, ref, ref_mic=2, filter_length=16)
    with pytest.raises(ValueError, match="must share the leading dimensions and samples"):
        compute_metrics(ref, ref, ref[:, :500], filter_length=16)
    with pytest.raises(ValueError, match="filter_length must not exceed"):
        compute_metrics(ref[:, :100], ref[:, :100])
    with pytest.raises(ValueError, match="at least as many estimates"):
        compute_metrics(ref, ref[:1], filter_length=16)
    with pytest.raises(ValueError, match="not a MetricBundle dictionary"):
        MetricBundle.from_dict({"sdr": [1.0]})
    out = compute_metrics(ref, ref, filter_length=16).to_dict()
    with pytest.raises(ValueError, match="unknown metric"):
        MetricBundle.from_dict(dict(out, per_source=dict(out["per_source"], pesq=[1.0, 1.0])))
