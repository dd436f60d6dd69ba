"""Room simulation: direct path geometry, decay time, mixture bookkeeping, bad input."""

from __future__ import annotations

import math

import pytest
import torch

from torchbss.data import random_room_mixture, shoebox_rir, simulate_mixture


def _schroeder_rt60(h: torch.Tensor, fs: int) -> float:
    """RT60 from the -5..-25 dB slope of the Schroeder energy decay curve (T20 x 3)."""
    edc = h.flip(-1).pow(2).cumsum(-1).flip(-1)
    edc_db = 10 * torch.log10(edc / edc[0])
    t5 = int((edc_db < -5).nonzero()[0])
    t25 = int((edc_db < -25).nonzero()[0])
    return 3 * (t25 - t5) / fs


def test_direct_path_delay_and_amplitude():
    room = torch.tensor([6.0, 5.0, 3.0])
    src = torch.tensor([[2.0, 2.5, 1.5]])
    mic = torch.tensor([[4.0, 2.5, 1.5]])  # exactly 2 m away
    fs = 16000
    h = shoebox_rir(room, src, mic, sample_rate=fs, rt60=0.2)[0, 0]
    delay = 2.0 / 343.0 * fs
    peak = int(h[: int(delay) + 20].abs().argmax())
    assert abs(peak - delay) <= 1
    # the sinc interpolation spreads the 1/(4 pi d) amplitude over neighbouring taps
    assert h[int(delay) - 16 : int(delay) + 17].pow(2).sum().sqrt() == pytest.approx(
        1 / (4 * math.pi * 2.0), rel=0.05
    )


@pytest.mark.parametrize("rt60", [0.2, 0.4])
def test_decay_time_follows_sabine(rt60):
    room = torch.tensor([7.0, 5.0, 3.0])
    h = shoebox_rir(
        room,
        torch.tensor([[2.0, 2.0, 1.6]]),
        torch.tensor([[4.5, 3.0, 1.4]]),
        sample_rate=16000,
        rt60=rt60,
        rir_length=int(1.5 * rt60 * 16000),
    )[0, 0]
    # Sabine is a diffuse-field formula; the specular image model decays a little slower
    assert _schroeder_rt60(h, 16000) == pytest.approx(rt60, rel=0.4)


def test_mixture_bookkeeping():
    g = torch.Generator().manual_seed(3)
    sig = torch.randn(2, 8000, generator=g)
    m = random_room_mixture(sig, 3, sample_rate=16000, generator=g, snr_db=None)
    assert m.mixture.shape == (3, 8000) and m.images.shape == (2, 8000)
    assert m.mixture.abs().max() == pytest.approx(0.9)
    torch.testing.assert_close(m.mixture[0], m.images.sum(0), atol=1e-6, rtol=0)
    p = m.images.pow(2).mean(-1)
    assert p[0] == pytest.approx(float(p[1]), rel=1e-4)  # equal power at the reference mic


def test_bad_geometry():
    with pytest.raises(ValueError, match="inside the room"):
        shoebox_rir(
            torch.tensor([3.0, 3, 3]),
            torch.tensor([[4.0, 1, 1]]),
            torch.tensor([[1.0, 1, 1]]),
            sample_rate=16000,
            rt60=0.2,
        )
    with pytest.raises(ValueError, match="rt60"):
        simulate_mixture(
            torch.zeros(1, 10),
            [3.0, 3, 3],
            [[1.0, 1, 1]],
            [[2.0, 1, 1]],
            sample_rate=16000,
            rt60=0.0,
        )
