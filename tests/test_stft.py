"""STFT: perfect reconstruction, parity with scipy / a manual DFT, autograd, batching, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from torchbss.signal import STFT, istft, num_frames, stft


def _audio(*shape: int, dtype: torch.dtype = torch.float32, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return (torch.rand(*shape, generator=generator, dtype=torch.float64) * 2 - 1).to(dtype)


@pytest.mark.parametrize("length", [1, 2, 100, 2047, 2048, 2049, 4097, 10 * 512 + 3])
def test_reconstruction_default_config(length: int) -> None:
    x = _audio(2, length)
    tf = STFT()
    spec = tf(x)
    assert spec.shape == (2, 1025, num_frames(length))
    assert spec.dtype == torch.complex64
    torch.testing.assert_close(tf.inverse(spec, length=length), x, atol=1e-6, rtol=0)


@pytest.mark.parametrize(
    ("n_fft", "hop"),
    [(64, 16), (64, 32), (64, 48), (63, 21), (32, 1), (16, 3), (7, 6)],
)
def test_reconstruction_hops(n_fft: int, hop: int) -> None:
    # the periodic Hann window satisfies NOLA for every hop < n_fft; hop > n_fft // 2 relies on
    # the extra right padding documented in torchbss.signal.stft
    for length in [1, 5, n_fft - 1, n_fft, n_fft + 1, 10 * hop + 3, 257]:
        x = _audio(3, length, seed=length)
        spec = stft(x, n_fft, hop)
        assert spec.shape[-1] == num_frames(length, n_fft, hop)
        torch.testing.assert_close(istft(spec, n_fft, hop, length=length), x, atol=1e-6, rtol=0)


def test_reconstruction_leading_dims_and_float64() -> None:
    x = _audio(2, 3, 4, 999, dtype=torch.float64)
    tf = STFT(n_fft=128, hop_length=32)
    spec = tf(x)
    assert spec.shape == (2, 3, 4, 65, num_frames(999, 128, 32))
    assert spec.dtype == torch.complex128
    y = tf.inverse(spec, length=999)
    assert y.dtype == torch.float64
    torch.testing.assert_close(y, x, atol=1e-12, rtol=0)


def test_default_length_is_hop_times_frames_minus_one() -> None:
    x = _audio(1, 1000)
    spec = stft(x, 64, 16)
    assert istft(spec, 64, 16).shape[-1] == 16 * (spec.shape[-1] - 1)


def test_parity_with_scipy_short_time_fft() -> None:
    signal = pytest.importorskip("scipy.signal")
    n_fft, hop, length = 64, 16, 301
    x = _audio(length, dtype=torch.float64, seed=3)
    ours = stft(x[None], n_fft, hop)[0].numpy()
    window = signal.windows.hann(n_fft, sym=False)
    ref = signal.ShortTimeFFT(window, hop, fs=1.0).stft(x.numpy(), p0=0, p1=ours.shape[1])
    # scipy takes the phase at the window centre, torch.stft at the frame start: a shift of
    # n_fft / 2 samples, i.e. a factor (-1)^k on bin k
    sign = (-1.0) ** np.arange(n_fft // 2 + 1)
    np.testing.assert_allclose(ours, ref * sign[:, None], atol=1e-12, rtol=0)


def test_parity_with_manual_dft_of_a_frame() -> None:
    n_fft, hop, length = 32, 8, 100
    x = _audio(length, dtype=torch.float64, seed=4).numpy()
    ours = stft(torch.from_numpy(x)[None], n_fft, hop)[0].numpy()
    padded = np.pad(x, n_fft // 2)  # zero padding, centred frames
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)
    freqs = np.arange(n_fft // 2 + 1)
    basis = np.exp(-2j * np.pi * np.outer(freqs, np.arange(n_fft)) / n_fft)
    for frame in [0, 3, ours.shape[1] - 1]:
        segment = padded[frame * hop : frame * hop + n_fft] * window
        np.testing.assert_allclose(ours[:, frame], basis @ segment, atol=1e-12, rtol=0)


def test_custom_window_and_module_buffer() -> None:
    window = torch.hamming_window(64, periodic=True)
    tf = STFT(64, 16, window=window)
    assert "window" in dict(tf.named_buffers())
    assert "window" not in tf.state_dict()  # non-persistent
    x = _audio(2, 333)
    torch.testing.assert_close(tf.inverse(tf(x), length=333), x, atol=1e-6, rtol=0)
    torch.testing.assert_close(tf(x), stft(x, 64, 16, window))
    # float32 buffer, float64 input: the window is cast to the input's dtype
    x64 = x.double()
    assert tf(x64).dtype == torch.complex128


def test_batch_consistency() -> None:
    x = _audio(4, 2, 777)
    tf = STFT(128, 32)
    batched = tf(x)
    single = torch.stack([tf(item) for item in x])
    torch.testing.assert_close(batched, single, atol=1e-6, rtol=0)
    back = tf.inverse(batched, length=777)
    torch.testing.assert_close(back, torch.stack([tf.inverse(s, 777) for s in single]))


@pytest.mark.parametrize("fast_mode", [True, pytest.param(False, marks=pytest.mark.slow)])
def test_gradcheck_forward_and_inverse(fast_mode: bool) -> None:
    x = _audio(1, 2, 19, dtype=torch.float64).requires_grad_()
    torch.autograd.gradcheck(lambda t: stft(t, 8, 2), (x,), fast_mode=fast_mode)
    spec = stft(x.detach(), 8, 2).requires_grad_()
    torch.autograd.gradcheck(lambda s: istft(s, 8, 2, length=19), (spec,), fast_mode=fast_mode)


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: stft(torch.zeros(100)), ValueError, r"unsqueeze\(0\)"),
        (lambda: stft(torch.zeros(2, 100, dtype=torch.complex64)), TypeError, "real"),
        (lambda: stft(torch.zeros(2, 100, dtype=torch.int16)), TypeError, "int16"),
        (lambda: stft(torch.zeros(2, 100, dtype=torch.float16)), TypeError, "float32 or float64"),
        (lambda: stft(torch.tensor([[0.0, float("nan")]])), ValueError, "NaN/inf"),
        (lambda: stft(torch.tensor([[0.0, float("inf")]])), ValueError, "NaN/inf"),
        (lambda: stft(torch.zeros(2, 0)), ValueError, "empty"),
        (lambda: stft(torch.zeros(2, 100), 64, 65), ValueError, "hop_length must be <= n_fft"),
        (lambda: stft(torch.zeros(2, 100), 0, 1), ValueError, "n_fft must be an integer >= 1"),
        (lambda: stft(torch.zeros(2, 100), -4, 1), ValueError, "n_fft"),
        (lambda: stft(torch.zeros(2, 100), 64, 0), ValueError, "hop_length"),
        (lambda: stft(torch.zeros(2, 100), 64, 64), ValueError, "NOLA"),
        (lambda: stft(torch.zeros(2, 100), 64, 16, torch.ones(32)), ValueError, r"\(64,\)"),
        (lambda: istft(torch.zeros(2, 33, 5), 64, 16), TypeError, "complex"),
        (lambda: istft(torch.zeros(2, 32, 5, dtype=torch.complex64), 64, 16), ValueError, "33"),
        (lambda: istft(torch.zeros(32, 5, dtype=torch.complex64), 62, 16), ValueError, "3 dim"),
        (lambda: istft(torch.zeros(1, 33, 0, dtype=torch.complex64), 64, 16), ValueError, "frames"),
        (lambda: STFT(64, 80), ValueError, "hop_length must be <= n_fft"),
        (lambda: STFT(64, 16, window="hann"), TypeError, "window must be a torch.Tensor"),
        (lambda: STFT().inverse(torch.zeros(1, 1025, 4)), TypeError, "complex"),
        (lambda: STFT()(torch.zeros(1, 10, dtype=torch.complex64)), TypeError, "real"),
    ],
)
def test_bad_input(call, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        call()


@pytest.mark.slow
def test_compile_consistency() -> None:
    tf = STFT(64, 16)
    x = _audio(2, 500)
    compiled = torch.compile(lambda t: tf.inverse(tf(t), length=500))
    torch.testing.assert_close(compiled(x), x, atol=1e-6, rtol=0)


def test_stft_rejects_a_non_finite_window():
    """A NaN in the window passed the NOLA check (NaN compares False) and every bin was NaN."""
    w = torch.hann_window(512)
    w[3] = float("nan")
    with pytest.raises(ValueError, match="window contains 1 NaN/inf"):
        stft(torch.randn(1, 2, 4000), 512, 128, window=w)


def test_stft_empty_batch_and_one_frame_without_length_are_clear_errors():
    """An empty batch failed inside MKL; one frame without ``length`` inside torch."""
    for x in (torch.randn(0, 2, 4000), torch.randn(2, 0, 4000)):
        with pytest.raises(ValueError, match="empty batch or channel dimension"):
            stft(x, 512, 128)
    spec = stft(torch.randn(1, 2, 400), 512, 128)[..., :1]
    with pytest.raises(ValueError, match="pass length"):
        istft(spec, 512, 128)
    assert istft(spec, 512, 128, length=100).shape == (1, 2, 100)
