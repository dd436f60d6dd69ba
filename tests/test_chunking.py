"""Chunking, overlap-add and chunked inference: exact reconstruction, streaming, grads, errors."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

from torchbss.signal import (
    ChunkInfo,
    apply_chunked,
    chunk,
    chunk_info,
    chunk_window,
    iter_chunk_batches,
    overlap_add,
)
from torchbss.signal.chunking import PADDING_MODES, _pad

CHUNK = 16
OVERLAPS = [0.0, 0.25, 0.5, 0.75]
LENGTHS = [1, 7, CHUNK, 37, 100]  # shorter than a chunk, not multiples of the hop


def _audio(*shape: int, seed: int = 0, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return (torch.rand(*shape, generator=generator, dtype=torch.float64) * 2 - 1).to(dtype)


def _two_stems(x: torch.Tensor) -> torch.Tensor:
    return torch.stack([0.3 * x, 0.7 * x], dim=1)


@pytest.mark.parametrize(
    ("padding_mode", "overlap"), list(itertools.product(PADDING_MODES, OVERLAPS))
)
def test_chunk_then_overlap_add_reconstructs(padding_mode: str, overlap: float) -> None:
    for length in LENGTHS:
        x = _audio(2, 3, length, seed=length)
        chunks, info = chunk(x, CHUNK, overlap=overlap, padding_mode=padding_mode)
        assert chunks.shape == (2, info.num_chunks, 3, CHUNK)
        torch.testing.assert_close(overlap_add(chunks, target=info), x, atol=1e-6, rtol=0)
        # with the number of samples instead of the ChunkInfo
        y = overlap_add(chunks, info.hop, "triangular", length)
        torch.testing.assert_close(y, x, atol=1e-6, rtol=0)


@pytest.mark.parametrize(
    ("padding_mode", "overlap"), list(itertools.product(PADDING_MODES, OVERLAPS))
)
def test_apply_chunked_identity_and_two_stems(padding_mode: str, overlap: float) -> None:
    for length in LENGTHS:
        x = _audio(2, 2, length, seed=length)
        same = apply_chunked(
            lambda t: t, x, CHUNK, overlap, batch_size=3, padding_mode=padding_mode, progress=False
        )
        torch.testing.assert_close(same, x, atol=1e-6, rtol=0)
        stems = apply_chunked(
            _two_stems, x[0], CHUNK, overlap, batch_size=3, padding_mode=padding_mode
        )
        assert stems.shape == (2, 2, length)
        torch.testing.assert_close(stems[0], 0.3 * x[0], atol=1e-6, rtol=0)
        torch.testing.assert_close(stems[1], 0.7 * x[0], atol=1e-6, rtol=0)


def test_chunk_layout_and_padding() -> None:
    x = torch.arange(10.0).reshape(1, 10)
    chunks, info = chunk(x, 4, hop=2, padding_mode="constant")
    assert info == ChunkInfo(10, 4, 2, 2, 2, 6, 0)
    assert chunks.shape == (6, 1, 4)  # (num_chunks, channels, chunk) for a (channels, T) input
    assert chunks[0, 0].tolist() == [0.0, 0.0, 0.0, 1.0]
    assert chunks[-1, 0].tolist() == [8.0, 9.0, 0.0, 0.0]
    # every chunk is a window of the padded signal, spaced by hop
    padded = F.pad(x, (2, 2))
    for k in range(6):
        assert torch.equal(chunks[k, 0], padded[0, 2 * k : 2 * k + 4])
    info = chunk_info(37, 16, overlap=0.25)
    assert (info.hop, info.pad_left) == (12, 4)
    assert (info.pad_left + 37 + info.pad_right - 16) % 12 == 0


def test_padding_modes_match_torch_when_valid_and_work_for_any_length() -> None:
    x = _audio(2, 3, 10)
    for mode in ("reflect", "replicate", "constant"):
        for left, right in [(3, 5), (9, 9), (0, 4)]:
            torch.testing.assert_close(_pad(x, left, right, mode), F.pad(x, (left, right), mode))
    # longer than the signal: reflect continues periodically, a 1-sample signal is repeated
    assert _pad(torch.tensor([[0.0, 1.0, 2.0]]), 5, 5, "reflect").tolist() == [
        [1.0, 0.0, 1.0, 2.0, 1.0, 0.0, 1.0, 2.0, 1.0, 0.0, 1.0, 2.0, 1.0]
    ]
    assert _pad(torch.tensor([[4.0]]), 3, 2, "reflect").tolist() == [[4.0] * 6]


def test_iter_chunk_batches_matches_chunk() -> None:
    x = _audio(2, 3, 2, 50)  # two leading dims, flattened into 6 items
    chunks, info = chunk(x, CHUNK, overlap=0.5, padding_mode="reflect")
    batches = list(iter_chunk_batches(x, CHUNK, batch_size=4, overlap=0.5))
    assert all(b.chunks.shape[0] <= 4 for b in batches)
    assert sum(b.chunks.shape[0] for b in batches) == 6 * info.num_chunks
    flat = chunks.reshape(6, info.num_chunks, 2, CHUNK)
    for batch in batches:
        for j, (item, index) in enumerate(zip(batch.item, batch.index)):
            assert torch.equal(batch.chunks[j], flat[item, index])


def test_overlap_add_of_model_outputs_with_a_sources_dim() -> None:
    x = _audio(2, 2, 45)
    chunks, info = chunk(x, CHUNK, overlap=0.5)
    outputs = torch.stack([0.3 * chunks, 0.7 * chunks], dim=2)  # (B, n, S, C, chunk)
    stems = overlap_add(outputs, target=info)
    assert stems.shape == (2, 2, 2, 45)
    torch.testing.assert_close(stems[:, 1], 0.7 * x, atol=1e-6, rtol=0)


def test_windows() -> None:
    hann = chunk_window("hann", 8, 4, dtype=torch.float64)
    assert (hann > 0).all()
    torch.testing.assert_close(hann, hann.flip(0))
    # the shifted Hann window sums to one at 50 % overlap
    torch.testing.assert_close(hann[:4] + hann[4:], torch.ones(4, dtype=torch.float64))
    tri = chunk_window("triangular", 8, 4, dtype=torch.float64)
    torch.testing.assert_close(tri[:4] + tri[4:], torch.ones(4, dtype=torch.float64))
    assert torch.equal(chunk_window("hann", 8, 8), torch.ones(8))  # no overlap: rectangular
    assert torch.equal(chunk_window(None, 8, 4), torch.ones(8))
    custom = torch.linspace(0.1, 1.0, 8)
    assert torch.equal(chunk_window(custom, 8, 4), custom)


@pytest.mark.parametrize("window", ["hann", "triangular", "rectangular", None, "custom"])
def test_apply_chunked_windows_reconstruct(window) -> None:
    if window == "custom":
        window = torch.linspace(0.1, 1.0, CHUNK)
    x = _audio(2, 2, 53)
    out = apply_chunked(lambda t: t, x, CHUNK, overlap=0.5, window=window, batch_size=2)
    torch.testing.assert_close(out, x, atol=1e-6, rtol=0)


def test_apply_chunked_matches_chunk_and_overlap_add_for_a_nonlinear_model() -> None:
    torch.manual_seed(0)
    conv = torch.nn.Conv1d(2, 4, 5, padding=2)

    def model(t: torch.Tensor) -> torch.Tensor:
        return torch.tanh(conv(t)).reshape(t.shape[0], 2, 2, t.shape[-1])

    x = _audio(1, 2, 150)
    with torch.no_grad():
        out = apply_chunked(model, x, 32, overlap=0.5, batch_size=3)
        chunks, info = chunk(x, 32, overlap=0.5)
        ref = overlap_add(model(chunks[0]).unsqueeze(0), target=info)
        torch.testing.assert_close(out, ref, atol=1e-6, rtol=1e-6)
        # batch size does not change the result
        for batch_size in (1, 5):
            torch.testing.assert_close(
                apply_chunked(model, x, 32, overlap=0.5, batch_size=batch_size), out
            )


def test_apply_chunked_gradients_flow() -> None:
    weight = torch.tensor(2.0, dtype=torch.float64, requires_grad=True)
    x = _audio(2, 40, dtype=torch.float64).requires_grad_()
    out = apply_chunked(lambda t: _two_stems(t) * weight, x, CHUNK, overlap=0.25, batch_size=2)
    out.sum().backward()
    # d/dx sum(0.3 w x + 0.7 w x) = w, d/dw = sum(x)
    torch.testing.assert_close(x.grad, torch.full_like(x, 2.0))
    torch.testing.assert_close(weight.grad, x.detach().sum())
    x.grad = None
    torch.autograd.gradcheck(
        lambda t: apply_chunked(torch.sin, t, 8, overlap=0.5, batch_size=3),
        (x[:, :13].detach().requires_grad_(),),
    )
    with torch.no_grad():
        assert not apply_chunked(torch.sin, x, CHUNK).requires_grad


def test_progress_bar_runs(capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("tqdm")
    x = _audio(2, 100)
    out = apply_chunked(lambda t: t, x, CHUNK, progress=True)
    torch.testing.assert_close(out, x, atol=1e-6, rtol=0)
    assert "apply_chunked" in capsys.readouterr().err
    apply_chunked(lambda t: t, x, CHUNK, progress=None, device=x.device)  # short: no bar
    assert capsys.readouterr().err == ""


def _fail(t: torch.Tensor) -> torch.Tensor:
    raise AssertionError("the model must not be called")


def _bad_model_shape(t: torch.Tensor) -> torch.Tensor:
    return t[..., :-1]


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: chunk(torch.zeros(2, 10), 0), ValueError, "chunk_size"),
        (lambda: chunk(torch.zeros(2, 10), 4, hop=5), ValueError, "hop must be <= chunk_size"),
        (lambda: chunk(torch.zeros(2, 10), 4, hop=0), ValueError, "hop"),
        (lambda: chunk(torch.zeros(2, 10), 4, overlap=1.0), ValueError, r"overlap must be in"),
        (lambda: chunk(torch.zeros(2, 10), 4, overlap=-0.1), ValueError, r"\[0.0, 1.0\)"),
        (lambda: chunk(torch.zeros(2, 10), 4, hop=2, overlap=0.5), ValueError, "not both"),
        (lambda: chunk(torch.zeros(2, 10), 4, padding_mode="wrap"), ValueError, "reflect"),
        (lambda: chunk(torch.full((2, 10), float("nan")), 4), ValueError, "NaN/inf"),
        (lambda: chunk(torch.zeros(2, 0), 4), ValueError, "empty"),
        (lambda: chunk(torch.zeros(10), 4), ValueError, r"unsqueeze\(0\)"),
        (lambda: chunk(torch.zeros(2, 10, dtype=torch.int16), 4), TypeError, "int16"),
        (lambda: overlap_add(torch.zeros(1, 3, 2, 4), 2), TypeError, "target"),
        (lambda: overlap_add(torch.zeros(1, 3, 2, 4), None, "hann", 10), ValueError, "hop"),
        (lambda: overlap_add(torch.zeros(1, 3, 2, 4), 2, "hann", 10), ValueError, "expected 6"),
        (lambda: overlap_add(torch.zeros(1, 6, 2, 4), 2, "cosine", 10), ValueError, "hann"),
        (lambda: overlap_add(torch.zeros(1, 6, 2, 4), 2, torch.ones(3), 10), ValueError, "shape"),
        (
            lambda: overlap_add(torch.zeros(1, 6, 2, 4), 2, torch.tensor([0.0, 1, 0, 0]), 10),
            ValueError,
            "zero at some samples",
        ),
        (lambda: apply_chunked(lambda t: t, torch.zeros(2, 10), 0), ValueError, "chunk_size"),
        (
            lambda: apply_chunked(
                _fail, torch.zeros(2, 10), 4, 0.5, window=torch.tensor([0, 1.0, 0, 0])
            ),
            ValueError,
            "zero at some samples",
        ),
        (lambda: apply_chunked(lambda t: t, torch.zeros(2, 10), 4, 1.5), ValueError, "overlap"),
        (lambda: apply_chunked(lambda t: t, torch.zeros(2, 10), 4, 0.5, 0), ValueError, "batch"),
        (lambda: apply_chunked(lambda t: t, torch.zeros(1, 1, 2, 9), 4), ValueError, "batch, ch"),
        (lambda: apply_chunked(lambda t: t, torch.zeros(2, 0), 4), ValueError, "empty"),
        (lambda: apply_chunked(_bad_model_shape, torch.zeros(2, 10), 4), ValueError, "model out"),
        (lambda: apply_chunked(lambda t: t.sum(), torch.zeros(2, 10), 4), ValueError, "model"),
        (lambda: apply_chunked(lambda t: None, torch.zeros(2, 10), 4), TypeError, "tensor"),
        (lambda: apply_chunked("model", torch.zeros(2, 10), 4), TypeError, "callable"),
        (
            lambda: apply_chunked(lambda t: t, torch.zeros(2, 10), 4, padding_mode="zeros"),
            ValueError,
            "valid options",
        ),
    ],
)
def test_bad_input(call, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        call()
