"""Tests of torchbss.losses: negative SDR / SI-SDR, multi-resolution STFT loss, PIT."""

from __future__ import annotations

import functools
import math

import pytest
import torch

from torchbss.losses import (
    MultiResolutionSTFTLoss,
    NegSDR,
    NegSISDR,
    PITLoss,
    apply_permutation,
    multi_resolution_stft_l1,
    negative_sdr,
    negative_si_sdr,
    pairwise_loss_matrix,
    pit,
)
from torchbss.metrics import sdr, si_sdr


def _randn(generator, *shape, dtype=torch.float64):
    return torch.randn(*shape, generator=generator, dtype=dtype)


# --------------------------------------------------------------------------------------------
# Negative SDR / SI-SDR
# --------------------------------------------------------------------------------------------


def test_negative_si_sdr_and_reductions(generator):
    ref = _randn(generator, 3, 2, 400)
    est = ref + 0.3 * _randn(generator, 3, 2, 400)
    per_item = -si_sdr(ref, est)
    torch.testing.assert_close(negative_si_sdr(est, ref, reduction="none"), per_item)
    torch.testing.assert_close(negative_si_sdr(est, ref), per_item.mean())
    torch.testing.assert_close(negative_si_sdr(est, ref, reduction="sum"), per_item.sum())
    torch.testing.assert_close(NegSISDR(reduction="none")(est, ref), per_item)
    assert negative_si_sdr(est, ref).ndim == 0
    with pytest.raises(ValueError, match="unknown reduction"):
        negative_si_sdr(est, ref, reduction="max")
    with pytest.raises(ValueError, match="unknown reduction"):
        NegSDR(reduction="avg")


def test_negative_sdr_and_soft_threshold(generator):
    ref = _randn(generator, 4, 500)
    est = ref + 0.5 * _randn(generator, 4, 500)
    torch.testing.assert_close(negative_sdr(est, ref, reduction="none"), -sdr(ref, est))
    thr = 30.0
    perfect = negative_sdr(ref, ref, soft_threshold_db=thr, reduction="none")
    torch.testing.assert_close(perfect, torch.full((4,), -thr, dtype=ref.dtype))
    noisy = negative_sdr(est, ref, soft_threshold_db=thr, reduction="none")
    assert (noisy > -thr).all()
    # with a threshold far above the actual SDR the loss is the plain negative SDR
    tau = 10 ** (-thr / 10)
    expected = 10 * torch.log10(
        (ref - est).square().sum(-1) + tau * ref.square().sum(-1)
    ) - 10 * torch.log10(ref.square().sum(-1))
    torch.testing.assert_close(noisy, expected)
    torch.testing.assert_close(noisy, -sdr(ref, est), atol=0.05, rtol=0)
    module = NegSDR(soft_threshold_db=thr, reduction="sum")
    torch.testing.assert_close(module(est, ref), noisy.sum())
    silent = negative_sdr(est, torch.zeros_like(ref), soft_threshold_db=thr)
    assert torch.isfinite(silent)


def test_sdr_losses_gradients(generator):
    ref = _randn(generator, 2, 16)
    est = (ref + 0.5 * _randn(generator, 2, 16)).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda e: negative_sdr(e, ref, soft_threshold_db=20), (est,))
    assert torch.autograd.gradcheck(lambda e: negative_si_sdr(e, ref), (est,))


# --------------------------------------------------------------------------------------------
# Multi-resolution STFT
# --------------------------------------------------------------------------------------------


def test_multi_resolution_stft_l1(generator):
    ref = _randn(generator, 2, 4096)
    est = ref + 0.2 * _randn(generator, 2, 4096)
    resolutions = ((256, 64), (512, 128))
    for mode in ("sc+logmag", "mag"):
        same = multi_resolution_stft_l1(ref, ref, resolutions, mode=mode, reduction="none")
        torch.testing.assert_close(same, torch.zeros(2, dtype=ref.dtype))
        assert multi_resolution_stft_l1(est, ref, resolutions, mode=mode) > 0.01

    def mag(x, n_fft, hop):
        window = torch.hann_window(n_fft, dtype=x.dtype)
        spec = torch.stft(
            x, n_fft, hop, window=window, center=True, pad_mode="constant", return_complex=True
        )
        return spec.abs()

    expected = sum(
        (mag(ref, n, h) - mag(est, n, h)).abs().mean((-2, -1)) for n, h in resolutions
    ) / len(resolutions)
    got = multi_resolution_stft_l1(est, ref, resolutions, mode="mag", reduction="none")
    torch.testing.assert_close(got, expected)
    sc = sum(
        torch.linalg.vector_norm(mag(ref, n, h) - mag(est, n, h), dim=(-2, -1))
        / torch.linalg.vector_norm(mag(ref, n, h), dim=(-2, -1))
        + (mag(ref, n, h).clamp_min(1e-7).log() - mag(est, n, h).clamp_min(1e-7).log())
        .abs()
        .mean((-2, -1))
        for n, h in resolutions
    ) / len(resolutions)
    torch.testing.assert_close(multi_resolution_stft_l1(est, ref, resolutions).double(), sc.mean())
    module = MultiResolutionSTFTLoss(resolutions, reduction="none")
    torch.testing.assert_close(module(est, ref), sc)
    with pytest.raises(ValueError, match="unknown mode"):
        multi_resolution_stft_l1(est, ref, mode="complex")
    with pytest.raises(ValueError, match="resolutions must be"):
        multi_resolution_stft_l1(est, ref, resolutions=[(512,)])


def test_multi_resolution_gradient_finite_with_silence(generator):
    ref = _randn(generator, 2, 2048, dtype=torch.float32)
    est = torch.zeros(2, 2048, requires_grad=True)
    for mode in ("sc+logmag", "mag"):
        est.grad = None
        multi_resolution_stft_l1(est, ref, ((256, 64),), mode=mode).backward()
        assert torch.isfinite(est.grad).all()
    est2 = (ref + 0.1 * _randn(generator, 2, 2048, dtype=torch.float32)).requires_grad_(True)
    multi_resolution_stft_l1(est2, ref).backward()
    assert torch.isfinite(est2.grad).all() and est2.grad.abs().sum() > 0


# --------------------------------------------------------------------------------------------
# PIT
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n_src", [2, 3, 4, 6])
def test_pit_recovers_known_permutation(generator, n_src):
    batch = 5
    ref = _randn(generator, batch, n_src, 800)
    shuffle = torch.stack([torch.randperm(n_src, generator=generator) for _ in range(batch)])
    est = apply_permutation(ref, shuffle) + 0.1 * _randn(generator, batch, n_src, 800)
    result = pit(None, est, ref)  # negative SI-SDR; 6 sources use the Hungarian algorithm
    expected = shuffle.argsort(-1)  # estimate matched to each reference
    assert torch.equal(result.permutation, expected)
    aligned = apply_permutation(est, result.permutation)
    torch.testing.assert_close(result.loss, negative_si_sdr(aligned, ref))
    none = pit(None, est, ref, reduction="none")
    torch.testing.assert_close(none.loss, negative_si_sdr(aligned, ref, reduction="none").mean(-1))


def test_pit_hungarian_equals_exhaustive(generator):
    ref = _randn(generator, 6, 4, 300)
    est = _randn(generator, 6, 4, 300) + 0.5 * ref.flip(1)
    exhaustive = pit(None, est, ref, max_exhaustive=4)
    hungarian = pit(None, est, ref, max_exhaustive=1)
    assert torch.equal(exhaustive.permutation, hungarian.permutation)
    torch.testing.assert_close(exhaustive.loss, hungarian.loss)


def test_pit_gradients_flow(generator):
    ref = _randn(generator, 3, 3, 400)
    est = (ref[:, [1, 2, 0]] + 0.2 * _randn(generator, 3, 3, 400)).requires_grad_(True)
    loss, perm = PITLoss()(est, ref)
    loss.backward()
    assert torch.isfinite(est.grad).all() and (est.grad.abs().sum(-1) > 0).all()
    assert perm.tolist() == [[2, 0, 1]] * 3


def test_pit_with_custom_losses(generator):
    ref = _randn(generator, 2, 3, 2, 1024)  # (batch, sources, channels, samples)
    est = ref[:, [2, 0, 1]] + 0.05 * _randn(generator, 2, 3, 2, 1024)
    mrstft = functools.partial(multi_resolution_stft_l1, resolutions=((256, 64),), reduction="none")
    result = pit(mrstft, est, ref)
    assert result.permutation.tolist() == [[1, 2, 0]] * 2

    def l1(estimate, reference):
        return (estimate - reference).abs().mean(-1)  # keeps the channel dim: averaged by PIT

    matrix = pairwise_loss_matrix(l1, est, ref)
    assert matrix.shape == (2, 3, 3)
    torch.testing.assert_close(matrix[0, 2, 0], (est[0, 2] - ref[0, 0]).abs().mean())
    assert pit(l1, est, ref).permutation.tolist() == [[1, 2, 0]] * 2


def test_pit_more_estimates_than_references(generator):
    ref = _randn(generator, 2, 2, 500)
    est = torch.cat([_randn(generator, 2, 1, 500), ref.flip(1)], dim=1)
    result = pit(None, est, ref)
    assert result.permutation.tolist() == [[2, 1]] * 2
    assert apply_permutation(est, result.permutation).shape == ref.shape


def test_pit_bad_inputs(generator):
    ref = _randn(generator, 2, 3, 100)
    with pytest.raises(ValueError, match="one loss per pair"):
        pit(negative_si_sdr, ref, ref)  # reduced to a scalar
    with pytest.raises(ValueError, match="at least as many estimates"):
        pit(None, ref[:, :2], ref)
    with pytest.raises(ValueError, match="at least 3 dimensions"):
        pit(None, ref[0], ref[0])
    with pytest.raises(ValueError, match="share batch and signal"):
        pit(None, ref[:, :, :50], ref)
    with pytest.raises(ValueError, match="unknown reduction"):
        PITLoss(reduction="avg")
    with pytest.raises(TypeError, match="integer tensor"):
        apply_permutation(ref, torch.zeros(2, 3))
    with pytest.raises(ValueError, match="leading dimensions"):
        apply_permutation(ref, torch.zeros(3, 3, dtype=torch.int64))


def test_mr_stft_loss_refuses_a_negative_eps():
    """eps < 0 made the spectral convergence's denominator negative: a larger error scored a
    smaller loss."""
    from torchbss.losses import MultiResolutionSTFTLoss, multi_resolution_stft_l1

    x = torch.randn(1, 4000)
    for bad in (-1.0, 0.0, float("nan")):
        with pytest.raises(ValueError, match="eps must be a positive finite"):
            MultiResolutionSTFTLoss(eps=bad)
        with pytest.raises(ValueError, match="eps must be a positive finite"):
            multi_resolution_stft_l1(x, x, eps=bad)


def test_loss_of_silent_estimate_is_finite():
    ref = torch.randn(2, 2, 300)
    est = torch.zeros(2, 2, 300, requires_grad=True)
    loss = pit(None, est, ref).loss
    loss.backward()
    assert math.isfinite(loss.item()) and torch.isfinite(est.grad).all()


def test_soft_threshold_must_be_a_finite_number_of_db():
    """NaN gave a NaN loss, -1e9 an OverflowError from inside."""
    ref = torch.randn(2, 1000)
    for thr in (float("nan"), -1e9, "30"):
        with pytest.raises(ValueError, match="soft_threshold_db must be a number of dB"):
            negative_sdr(ref, ref, soft_threshold_db=thr)
