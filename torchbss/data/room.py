"""Shoebox room simulation in torch (image source method) for on-the-fly multichannel mixtures.

Written from J. B. Allen and D. A. Berkley, "Image method for efficiently simulating small-room
acoustics", JASA 65(4), 1979, with fractional delays by a Hann-windowed sinc and wall absorption
from Sabine's formula. Vectorised over image sources, microphones and sources; no Python loop
over images.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .._validation import check_positive_int, check_real_float, check_tensor

__all__ = [
    "sabine_absorption",
    "shoebox_rir",
    "convolve",
    "RoomMixture",
    "simulate_mixture",
    "random_room_mixture",
]

SPEED_OF_SOUND = 343.0


def sabine_absorption(room_dim: torch.Tensor, rt60: float) -> float:
    """Uniform wall energy absorption coefficient giving ``rt60`` seconds by Sabine's formula.

    ``RT60 = 0.161 V / (S alpha)``; clipped to ``(0, 1]``.
    """
    lx, ly, lz = (float(v) for v in room_dim)
    volume = lx * ly * lz
    surface = 2 * (lx * ly + lx * lz + ly * lz)
    return min(1.0, 0.161 * volume / (surface * rt60))


def shoebox_rir(
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
    """Room impulse responses of a shoebox room by the image source method.

    Args:
        room_dim: ``(3,)`` room size in metres.
        sources: ``(n_src, 3)`` source positions (m).
        mics: ``(n_mics, 3)`` microphone positions (m).
        sample_rate: in Hz.
        rt60: reverberation time (s) that sets the wall absorption (Sabine).
        rir_length: taps of each response (default: ``1.2 * rt60`` seconds).
        sinc_width: taps of the windowed-sinc fractional delay.
        dtype: real dtype of the result.

    Returns:
        ``(n_src, n_mics, rir_length)`` impulse responses (direct path included, 1/(4 pi d)
        spreading, so a source at 1 m has a direct-path peak near 0.08).
    """
    room_dim = torch.as_tensor(room_dim, dtype=dtype)
    sources = torch.as_tensor(sources, dtype=dtype).reshape(-1, 3)
    mics = torch.as_tensor(mics, dtype=dtype).reshape(-1, 3)
    for name, pos in (("sources", sources), ("mics", mics)):
        if bool(((pos <= 0) | (pos >= room_dim)).any()):
            raise ValueError(f"{name} must lie strictly inside the room {room_dim.tolist()} m")
    if rt60 <= 0:
        raise ValueError(f"rt60 must be > 0 seconds, got {rt60}")
    check_positive_int(sample_rate, "sample_rate")
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


def convolve(signals: torch.Tensor, rir: torch.Tensor) -> torch.Tensor:
    """Source images: convolve each source with its responses, truncated to the input length.

    Args:
        signals: ``(n_src, samples)`` dry sources.
        rir: ``(n_src, n_mics, taps)`` impulse responses.

    Returns:
        ``(n_src, n_mics, samples)`` the image of every source at every mic.
    """
    n = signals.shape[-1]
    n_fft = 1 << (n + rir.shape[-1] - 1).bit_length()
    spec = torch.fft.rfft(signals, n_fft)[:, None, :] * torch.fft.rfft(rir.to(signals.dtype), n_fft)
    return torch.fft.irfft(spec, n_fft)[..., :n]


@dataclass
class RoomMixture:
    """A simulated mixture: ``mixture (mics, samples)``, ``images (sources, samples)`` at the
    reference mic (the separation targets), and the room geometry used."""

    mixture: torch.Tensor
    images: torch.Tensor
    room_dim: torch.Tensor
    sources: torch.Tensor
    mics: torch.Tensor
    rt60: float


def simulate_mixture(
    signals: torch.Tensor,
    room_dim,
    sources,
    mics,
    *,
    sample_rate: int,
    rt60: float,
    snr_db: float | None = 40.0,
    ref_mic: int = 0,
    generator: torch.Generator | None = None,
) -> RoomMixture:
    """Simulate a reverberant mixture with equal-power images at ``ref_mic`` and sensor noise.

    Args:
        signals: ``(n_src, samples)`` dry sources (float).
        room_dim, sources, mics: geometry in metres, see :func:`shoebox_rir`.
        sample_rate: Hz.
        rt60: reverberation time (s).
        snr_db: white sensor noise level re the mean mixture power (``None``: no noise).
        ref_mic: mic whose images are returned as targets.
        generator: seeds the sensor noise.

    Returns:
        A :class:`RoomMixture`; the mixture is scaled so that ``max |mixture| = 0.9`` and the
        images share that gain, so ``mixture[ref_mic] == images.sum(0) + noise``.
    """
    check_tensor(signals, "signals", min_ndim=2, layout="(n_src, samples)")
    check_real_float(signals, "signals")
    rir = shoebox_rir(room_dim, sources, mics, sample_rate=sample_rate, rt60=rt60)
    img = convolve(signals.double(), rir)  # (S, M, N)
    power = img[:, ref_mic].pow(2).mean(-1, keepdim=True).clamp_min(1e-20)
    img = img / power.sqrt()[..., None]  # equal power at the reference mic
    mix = img.sum(0)
    if snr_db is not None:
        noise = torch.randn(mix.shape, generator=generator, dtype=mix.dtype)
        mix = mix + noise * (mix.pow(2).mean() * 10 ** (-snr_db / 10)).sqrt()
    gain = 0.9 / mix.abs().max().clamp_min(1e-20)
    return RoomMixture(
        mixture=(mix * gain).to(signals.dtype),
        images=(img[:, ref_mic] * gain).to(signals.dtype),
        room_dim=torch.as_tensor(room_dim),
        sources=torch.as_tensor(sources),
        mics=torch.as_tensor(mics),
        rt60=rt60,
    )


def random_room_mixture(
    signals: torch.Tensor,
    n_mics: int,
    *,
    sample_rate: int,
    generator: torch.Generator | None = None,
    rt60_range: tuple[float, float] = (0.15, 0.35),
    spacing_range: tuple[float, float] = (0.05, 0.15),
    snr_db: float | None = 40.0,
) -> RoomMixture:
    """Random shoebox room, linear array and source positions (as in ``shared/data/mixtures``).

    Room 5-8 x 4-6 x 2.6-3.2 m; a uniform linear array at 1.2-1.5 m height with random
    orientation; sources 1-2 m from the array centre at azimuths in [-80, 80] degrees from
    broadside, at least 25 degrees apart.

    Args:
        signals: ``(n_src, samples)`` dry sources.
        n_mics: number of microphones (>= 1).
        sample_rate: Hz.
        generator: the only source of randomness (reproducible).
        rt60_range, spacing_range: ranges of the reverberation time (s) and mic spacing (m).
        snr_db: sensor noise level.

    Returns:
        A :class:`RoomMixture`.
    """
    check_positive_int(n_mics, "n_mics")
    g = generator if generator is not None else torch.Generator().manual_seed(0)

    def uniform(lo: float, hi: float, n: int = 1) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(n, generator=g, dtype=torch.float64)

    n_src = signals.shape[0]
    room = torch.cat([uniform(5, 8), uniform(4, 6), uniform(2.6, 3.2)])
    centre = torch.cat(
        [uniform(1.5, float(room[0]) - 1.5), uniform(1.5, float(room[1]) - 1.5), uniform(1.2, 1.5)]
    )
    orient = float(uniform(0, 2 * math.pi))
    spacing = float(uniform(*spacing_range))
    offsets = (torch.arange(n_mics, dtype=torch.float64) - (n_mics - 1) / 2) * spacing
    axis = torch.tensor([math.cos(orient), math.sin(orient), 0.0], dtype=torch.float64)
    mics = centre + offsets[:, None] * axis
    broadside = orient + math.pi / 2
    for _ in range(1000):
        az = uniform(-80, 80, n_src) * math.pi / 180
        gaps = (az[:, None] - az[None, :]).abs() + torch.eye(n_src, dtype=torch.float64) * 10
        if n_src == 1 or float(gaps.min()) >= 25 * math.pi / 180:
            break
    dist = uniform(1.0, 2.0, n_src)
    ang = broadside + az
    src = torch.stack(
        [
            centre[0] + dist * torch.cos(ang),
            centre[1] + dist * torch.sin(ang),
            uniform(1.4, 1.8, n_src),
        ],
        dim=-1,
    )
    src = torch.minimum(src.clamp_min(0.3), room - 0.3)  # keep every source inside the room
    rt60 = float(uniform(*rt60_range))
    return simulate_mixture(
        signals, room, src, mics, sample_rate=sample_rate, rt60=rt60, snr_db=snr_db, generator=g
    )
