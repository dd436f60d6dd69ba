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
from torch.nn import functional as F

from .._validation import check_positive_int, check_real_float, check_tensor

__all__ = [
    "sabine_absorption",
    "image_source_rir",
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


def _fractional_delay_kernel(
    sinc_width: int, oversampling: int, dtype: torch.dtype, device
) -> torch.Tensor:
    """Hann-windowed sinc ``w(x) = sinc(x) (1 + cos(pi x / (half + 1))) / 2``, ``|x| <= half``,
    sampled every ``1 / oversampling`` sample: ``(2 half oversampling + 1,)``."""
    half = sinc_width // 2
    x = torch.arange(-half * oversampling, half * oversampling + 1, dtype=dtype, device=device)
    x = x / oversampling
    return torch.sinc(x) * (0.5 + 0.5 * torch.cos(math.pi * x / (half + 1)))


def _decay_time(responses: torch.Tensor, sample_rate: int) -> float | None:
    """RT60 (s) of ``(..., taps)`` responses: T20 x 3, the least-squares slope of their summed
    Schroeder curve between -5 and -25 dB (``None`` when it does not reach -25 dB)."""
    edc = responses.square().flip(-1).cumsum(-1).flip(-1).reshape(-1, responses.shape[-1])
    edc = edc.sum(0)
    db = 10 * torch.log10(edc / edc[0]).nan_to_num(neginf=-1e3)
    sel = torch.nonzero((db <= -5) & (db >= -25)).flatten()
    if sel.numel() < 2 or float(db[-1]) > -25:
        return None
    t = sel.to(db.dtype) / sample_rate
    y = db[sel]
    slope = float(((t - t.mean()) * (y - y.mean())).sum() / (t - t.mean()).square().sum())
    return -60.0 / slope if slope < 0 else None


def _reflection_for_decay(
    images: list[tuple[torch.Tensor, torch.Tensor]],
    beta: float,
    rt60: float,
    sample_rate: int,
    rir_length: int,
    *,
    tolerance: float = 0.02,
    max_iter: int = 8,
) -> float:
    """Wall reflection coefficient whose responses decay in ``rt60`` seconds.

    Sabine's formula assumes a diffuse field; the specular images of a shoebox decay more
    slowly (up to ~1.5 x). The decay is measured on a coarse response of mic 0 to every source
    (each image at its nearest sample, which keeps the coherent sums of simultaneous images
    that dominate the low frequencies) and ``-ln beta`` is rescaled by ``measured / rt60``
    until they agree within ``tolerance``.
    """
    if not 0 < beta < 1:
        return beta
    coarse = []  # per source: arrival sample, reflection count and 1 / (4 pi d) of each image
    for n, dist in images:
        d = dist[:, 0].double()
        tap = torch.round(d * (sample_rate / SPEED_OF_SOUND)).long().clamp_max(rir_length)
        coarse.append((tap, n, (4 * math.pi * d.clamp_min(1e-3)).reciprocal()))
    max_n = max(int(n.max()) for _, n, _ in coarse)
    k = torch.arange(max_n + 1, dtype=torch.float64, device=coarse[0][0].device)
    x = -math.log(beta)
    for _ in range(max_iter):
        powers = torch.exp(-x * k)
        responses = torch.stack(
            [
                torch.zeros(rir_length + 1, dtype=torch.float64, device=k.device).index_add_(
                    0, tap, w * powers[n]
                )[:rir_length]
                for tap, n, w in coarse
            ]
        )
        measured = _decay_time(responses, sample_rate)
        if measured is None or abs(measured / rt60 - 1) < tolerance:
            break
        x *= measured / rt60
    return math.exp(-x)


def image_source_rir(
    room_dim,
    sources,
    mics,
    *,
    sample_rate: int,
    rt60: float,
    match_decay: bool = True,
    rir_length: int | None = None,
    sinc_width: int = 32,
    oversampling: int = 8,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Room impulse responses of a shoebox room by the image source method, fast.

    Same model as :func:`torchbss.data.room.shoebox_rir` (J. B. Allen and D. A. Berkley,
    "Image method for efficiently simulating small-room acoustics", JASA 65(4), 1979: images
    of the source in the six walls up to the order the response length needs, each with
    amplitude ``beta^reflections / (4 pi distance)``, and a Hann-windowed sinc fractional
    delay), computed in two cheaper steps:

    1. images farther than the response length from every microphone are discarded per axis
       (a lower bound of the distance) before the 3-D image grid is formed, so the cost grows
       with the number of images that arrive in time, not with the bounding cube;
    2. every image adds its amplitude to a time grid ``oversampling`` times finer than the
       output by linear interpolation (2 taps instead of ``sinc_width``), and one windowed-sinc
       filter, sampled on that finer grid, band-limits and decimates all of them at once
       (a polyphase convolution).

    With ``match_decay=False`` the reflection coefficient is ``beta = sqrt(1 - alpha)``, alpha
    from Sabine's formula as in :func:`~torchbss.data.room.shoebox_rir`, which this matches to
    about -44 dB (relative error of the whole response, ``oversampling=8``). Those responses
    decay up to ~1.5 x more slowly than ``rt60`` (Sabine assumes a diffuse field): with
    ``match_decay=True`` (default) ``beta`` is adjusted so that the decay of the responses
    (T20 x 3 of the Schroeder curve at mic 0, all sources together) is ``rt60`` within 2 %,
    the way ``shared/data/mixtures`` was made.

    Device-agnostic: the responses are computed on the device of ``room_dim`` (a tensor) or of
    ``sources``; the image grid is built in float64.

    Args:
        room_dim: ``(3,)`` room size in metres.
        sources: ``(n_src, 3)`` source positions (m), strictly inside the room.
        mics: ``(n_mics, 3)`` microphone positions (m), strictly inside the room.
        sample_rate: Hz.
        rt60: reverberation time (s).
        match_decay: make the measured decay equal ``rt60`` (else: Sabine's absorption).
        rir_length: taps of each response (default ``int(1.2 rt60 sample_rate) + sinc_width``,
            as :func:`~torchbss.data.room.shoebox_rir`).
        sinc_width: support of the windowed-sinc fractional delay, in samples.
        oversampling: factor of the finer time grid (>= 1; 8 is within 0.2 dB of an exact
            sinc at the Nyquist frequency).
        dtype: real dtype of the result and of the per-image arithmetic; float32 is about twice
            as fast and as accurate here (a float32 delay of 250 m is exact to 1e-3 sample).

    Returns:
        ``(n_src, n_mics, rir_length)`` impulse responses.
    """
    device = next(
        (t.device for t in (room_dim, sources, mics) if isinstance(t, torch.Tensor)), None
    )
    f64 = torch.float64
    room = torch.as_tensor(room_dim, dtype=f64, device=device).reshape(-1)
    src = torch.as_tensor(sources, dtype=f64, device=device).reshape(-1, 3)
    mic = torch.as_tensor(mics, dtype=f64, device=device).reshape(-1, 3)
    if room.shape != (3,) or not bool((room > 0).all()):
        raise ValueError(f"room_dim must be 3 positive sizes in metres, got {room.tolist()}")
    for name, pos in (("sources", src), ("mics", mic)):
        if bool(((pos <= 0) | (pos >= room)).any()):
            raise ValueError(f"{name} must lie strictly inside the room {room.tolist()} m")
    if not rt60 > 0:
        raise ValueError(f"rt60 must be > 0 seconds, got {rt60}")
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, int) or sample_rate <= 0:
        raise ValueError(f"sample_rate must be a positive integer (Hz), got {sample_rate!r}")
    if dtype not in (torch.float32, torch.float64):
        raise TypeError(f"dtype must be torch.float32 or torch.float64, got {dtype}")
    if isinstance(oversampling, bool) or not isinstance(oversampling, int) or oversampling < 1:
        raise ValueError(f"oversampling must be a positive integer, got {oversampling!r}")
    if rir_length is None:
        rir_length = int(1.2 * rt60 * sample_rate) + sinc_width
    half = sinc_width // 2
    n_src, n_mics = src.shape[0], mic.shape[0]
    beta = math.sqrt(1.0 - sabine_absorption(room, rt60))
    # an image can touch the output only if it arrives before the last tap + the sinc half-width
    max_dist = (rir_length + half) / sample_rate * SPEED_OF_SOUND
    r2 = max_dist**2

    # Per axis a, the images of the source are at (1 - 2q) s_a + 2 n L_a (q in {0, 1}, n in Z)
    # after |n - q| + |n| reflections. Both things an image needs are separable over the axes:
    # the squared distance to mic m (sum of squared offsets) and the reflection count.
    tables = []
    for a in range(3):
        order = int(math.ceil(max_dist / (2 * float(room[a])))) + 1
        n = torch.arange(-order, order + 1, dtype=f64, device=device).repeat_interleave(2)
        q = torch.tensor([0.0, 1.0], dtype=f64, device=device).repeat(2 * order + 1)
        coord = (1 - 2 * q)[:, None] * src[None, :, a] + 2 * n[:, None] * room[a]  # (P, S)
        offsets = (coord[:, :, None] - mic[None, None, :, a]).square().to(dtype)  # (P, S, M)
        tables.append((offsets, ((n - q).abs() + n.abs()).long()))
    (sqx, rx), (sqy, ry), (sqz, rz) = tables

    images = []  # per source: reflection counts (I,) and distances (I, M) of the images kept
    for s in range(n_src):  # few sources: a loop keeps the pruning memory small
        sx, sy, sz = (t[:, s] for t in (sqx, sqy, sqz))  # (P, M) each
        # lower bound (over mics) of each axis' squared offset; keep images that can arrive
        lx, ly, lz = (t.amin(-1) for t in (sx, sy, sz))
        lxy = lx[:, None] + ly[None, :]
        ix, iy = torch.nonzero(lxy < r2, as_tuple=True)
        # z images sorted by their bound: the ones kept for an (x, y) pair form a prefix
        lz_sorted, z_order = torch.sort(lz)
        counts = torch.searchsorted(lz_sorted, r2 - lxy[ix, iy])
        pair = torch.repeat_interleave(torch.arange(ix.numel(), device=device), counts)
        starts = torch.cumsum(counts, 0) - counts
        iz = z_order.index_select(0, torch.arange(pair.numel(), device=device) - starts[pair])
        ix, iy = ix.index_select(0, pair), iy.index_select(0, pair)
        dist = (sx.index_select(0, ix) + sy.index_select(0, iy) + sz.index_select(0, iz)).sqrt()
        images.append((rx[ix] + ry[iy] + rz[iz], dist))
    if match_decay:
        beta = _reflection_for_decay(images, beta, rt60, sample_rate, rir_length)

    # fine grid of each (source, mic) response, plus two spare taps that collect the images
    # arriving after the end (cheaper than masking them out)
    kernel = _fractional_delay_kernel(sinc_width, oversampling, f64, device)
    phases = -(-kernel.numel() // oversampling)  # kernel taps per polyphase branch
    grid = (rir_length - 1 + phases) * oversampling
    stride = grid + 2
    fine = torch.zeros(n_src * n_mics * stride, dtype=dtype, device=device)
    max_refl = max(int(n.max()) for n, _ in images)
    beta_pow = (beta ** torch.arange(max_refl + 1, dtype=f64, device=device)).to(dtype)
    scale = sample_rate * oversampling / SPEED_OF_SOUND
    for s, (n_refl, dist) in enumerate(images):
        amp = beta_pow[n_refl][:, None] / (4 * math.pi) / dist.clamp_min(1e-3)  # (I, M)
        # fine-grid position; the kernel is centred, so shift by its half length
        pos = dist * scale + half * oversampling
        i0 = torch.floor(pos)
        w1 = pos - i0
        i0 = i0.long().clamp_max(grid)  # late images: both taps land on the spare taps
        offset = (s * n_mics + torch.arange(n_mics, device=device)) * stride  # (M,)
        fine.index_add_(0, (i0 + offset).reshape(-1), (amp * (1 - w1)).reshape(-1))
        fine.index_add_(0, (i0 + 1 + offset).reshape(-1), (amp * w1).reshape(-1))
    fine = fine.reshape(-1, stride)[:, :grid]
    # y[n] = sum_j fine[n R + j] kernel[j]: band-limit and decimate at once, as a polyphase
    # correlation (the R phases of the fine grid are the input channels)
    kernel = F.pad(kernel, (0, phases * oversampling - kernel.numel())).to(dtype)
    weight = kernel.reshape(1, phases, oversampling).transpose(1, 2)  # (1, R, phases)
    fine = fine.reshape(-1, grid // oversampling, oversampling).transpose(1, 2)
    rir = F.conv1d(fine, weight)  # (S * M, 1, rir_length)
    return rir.reshape(n_src, n_mics, rir_length)


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
    """Room impulse responses with Sabine's wall absorption (:func:`image_source_rir` with
    ``match_decay=False``), float64 by default.

    Returns:
        ``(n_src, n_mics, rir_length)`` impulse responses.
    """
    return image_source_rir(
        room_dim, sources, mics, sample_rate=sample_rate, rt60=rt60, rir_length=rir_length,
        sinc_width=sinc_width, match_decay=False, dtype=dtype,
    )  # fmt: skip


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
