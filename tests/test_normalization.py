"""Normalisation by the mono downmix statistics: values, inverse, sources dim, silence, grads."""

from __future__ import annotations

import pytest
import torch

from torchbss.signal import NormalizationStats, Normalize, denormalize, normalize


def _audio(*shape: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=generator, dtype=torch.float64)


def test_normalize_statistics_of_the_mono_downmix() -> None:
    x = _audio(3, 2, 500) * torch.tensor([0.5, 2.0, 10.0]).reshape(3, 1, 1) + 3.0
    y, stats = normalize(x)
    assert isinstance(stats, NormalizationStats)
    assert stats.mean.shape == stats.std.shape == (3, 1, 1)
    mono = y.mean(dim=-2)
    torch.testing.assert_close(mono.mean(-1), torch.zeros(3, dtype=torch.float64))
    torch.testing.assert_close(mono.std(-1, correction=0), torch.ones(3, dtype=torch.float64))
    # reference values with numpy-style formulas
    ref_mono = x.mean(1)
    torch.testing.assert_close(stats.mean.flatten(), ref_mono.mean(-1))
    torch.testing.assert_close(stats.std.flatten(), ref_mono.std(-1, correction=0))
    # same shift and scale for every channel: the stereo image is kept
    torch.testing.assert_close(y, (x - stats.mean) / stats.std)


def test_denormalize_inverts_and_handles_a_sources_dim() -> None:
    x = _audio(2, 4, 2, 300)  # two leading batch dims
    y, stats = normalize(x)
    assert stats.mean.shape == (2, 4, 1, 1)
    torch.testing.assert_close(denormalize(y, stats), x)
    estimates = torch.stack([y, 0.5 * y, -y], dim=2)  # (2, 4, sources=3, 2, 300)
    back = denormalize(estimates, stats)
    assert back.shape == (2, 4, 3, 2, 300)
    torch.testing.assert_close(back[:, :, 0], x)
    torch.testing.assert_close(back[:, :, 2], -y * stats.std + stats.mean)


def test_module_matches_functions() -> None:
    x = _audio(2, 2, 100)
    module = Normalize(eps=1e-6)
    y, stats = module(x)
    y_ref, stats_ref = normalize(x, eps=1e-6)
    torch.testing.assert_close(y, y_ref)
    torch.testing.assert_close(module.inverse(y, stats), denormalize(y_ref, stats_ref))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_silent_and_constant_input_stays_finite(dtype: torch.dtype) -> None:
    x = torch.zeros(2, 2, 64, dtype=dtype, requires_grad=True)
    y, stats = normalize(x)
    assert torch.equal(y, torch.zeros_like(y))
    assert torch.all(stats.std == torch.tensor(1e-8, dtype=dtype))
    y.sum().backward()
    assert torch.isfinite(x.grad).all()
    constant = torch.full((1, 2, 10), 0.25, dtype=dtype)
    y, stats = normalize(constant)
    assert torch.isfinite(y).all() and y.abs().max() < 1e-3
    torch.testing.assert_close(denormalize(y, stats), constant)


def test_one_sample_signal() -> None:
    y, stats = normalize(torch.tensor([[1.0], [3.0]]))
    assert torch.isfinite(y).all() and stats.mean.item() == 2.0


def test_gradcheck() -> None:
    x = _audio(2, 2, 7).requires_grad_()
    torch.autograd.gradcheck(lambda t: normalize(t)[0], (x,))
    y, stats = normalize(x.detach())
    mean = stats.mean.clone().requires_grad_()
    std = stats.std.clone().requires_grad_()
    estimates = torch.stack([y, y], dim=1).requires_grad_()
    torch.autograd.gradcheck(
        lambda e, m, s: denormalize(e, NormalizationStats(m, s)), (estimates, mean, std)
    )


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: normalize(torch.zeros(10)), ValueError, r"unsqueeze\(0\)"),
        (lambda: normalize(torch.zeros(2, 10, dtype=torch.int16)), TypeError, "int16"),
        (lambda: normalize(torch.zeros(2, 10, dtype=torch.complex64)), TypeError, "real"),
        (lambda: normalize(torch.full((2, 10), float("nan"))), ValueError, "NaN/inf"),
        (lambda: normalize(torch.zeros(2, 0)), ValueError, "empty"),
        (lambda: normalize(torch.zeros(2, 10), eps=0.0), ValueError, "eps"),
        (lambda: Normalize(eps=-1.0), ValueError, "eps"),
        (lambda: denormalize(torch.zeros(2, 10), (1.0, 2.0)), TypeError, "stats.mean"),
        (lambda: denormalize(torch.zeros(2, 10), torch.zeros(2)), TypeError, "NormalizationStats"),
        (
            lambda: denormalize(torch.zeros(3, 2, 10), normalize(torch.ones(4, 2, 10))[1]),
            ValueError,
            "batch shape",
        ),
        (
            lambda: denormalize(torch.zeros(2, 10), normalize(torch.ones(4, 2, 10))[1]),
            ValueError,
            "batch shape",
        ),
    ],
)
def test_bad_input(call, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        call()
