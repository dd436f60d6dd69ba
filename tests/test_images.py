"""Source images at every mic and the mixing matrix implied by a demixing matrix."""

from __future__ import annotations

import pytest
import torch

from torchbss import ILRMA, STFT, AuxIVA, OnlineAuxIVA
from torchbss.images import mixing_matrix, projected_images, result_images, source_images
from torchbss.updates import minimum_distortion


def _relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().pow(2).sum().sqrt() / b.abs().pow(2).sum().sqrt())


@pytest.fixture(scope="module")
def speech_stft(data_dir):
    from conftest import load_mixture

    mix, _, _ = load_mixture("2x2_00")
    return STFT(512, 128)(mix[:, 8000:24000].float())  # (2, 257, 126) complex64, 1 s


def test_images_sum_to_the_mixture_determined(speech_stft):
    """Determined case: summed over sources, the images give the mixture back (to 1e-5)."""
    X = speech_stft
    res = AuxIVA(n_iter=10)(X)
    images = source_images(X, res.demixing)
    assert images.shape == (2, 2) + X.shape[-2:]
    assert _relative_error(images.sum(-4), X) < 1e-5
    res = ILRMA(n_iter=10, n_basis=2)(X)
    assert _relative_error(source_images(X, res.demixing).sum(-4), X) < 1e-5


def test_images_sum_to_the_mixture_random_batch(generator):
    """Batched complex128 input: exact to rounding, and each batch item equals its own call."""
    X = torch.randn(3, 3, 33, 40, dtype=torch.complex128, generator=generator)
    W = torch.randn(3, 33, 3, 3, dtype=torch.complex128, generator=generator)
    images = source_images(X, W)
    assert (images.sum(-4) - X).abs().max() < 1e-10
    assert torch.allclose(images[1], source_images(X[1], W[1]))


def test_image_at_the_reference_mic_is_the_minimum_distortion_output(generator):
    """Overdetermined (OverIVA background and PCA routes): the image at mic m is the minimal
    distortion principle's output for m, and all M columns together give the mixture."""
    X = torch.randn(4, 65, 60, dtype=torch.complex128, generator=generator)
    for sep in (AuxIVA(n_iter=5, n_src=2, update="ip1"), AuxIVA(n_iter=5, n_src=2)):
        res = sep(X)
        W = res.demixing
        Y = torch.einsum("fkm,mft->kft", W[:, :2], X)
        images = source_images(X, W, n_src=2)
        assert images.shape == (2, 4, 65, 60)
        for mic in (0, 3):
            expected = minimum_distortion(Y, W, ref_mic=mic)
            assert _relative_error(images[:, mic], expected) < 1e-10
        assert _relative_error(source_images(X, W).sum(-4), X) < 1e-10


def test_mixing_matrix_inverts_and_normalises(generator):
    W = torch.randn(2, 17, 3, 3, dtype=torch.complex128, generator=generator)
    A = mixing_matrix(W)
    eye = torch.eye(3, dtype=W.dtype)
    assert (A @ W - eye).abs().max() < 1e-10
    rtf = mixing_matrix(W, n_src=2, ref_mic=1)
    assert rtf.shape == (2, 17, 3, 2)
    assert (rtf[..., 1, :] - 1).abs().max() < 1e-12  # relative transfer functions
    assert torch.allclose(rtf, A[..., :2] / A[..., 1:2, :2])
    # a zero reference entry stays finite
    W2 = torch.linalg.inv(torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.complex128))[None]
    assert torch.isfinite(mixing_matrix(W2, ref_mic=0)).all()


def test_images_are_differentiable(generator):
    X = torch.randn(2, 2, 4, dtype=torch.complex128, generator=generator)
    W = torch.randn(2, 2, 2, dtype=torch.complex128, generator=generator) + 2 * torch.eye(2)
    W.requires_grad_(True)
    X.requires_grad_(True)

    def f(W, X):
        return source_images(X, W)[0].abs().pow(2).sum()

    assert torch.autograd.gradcheck(f, (W, X))
    assert torch.autograd.gradcheck(lambda W: mixing_matrix(W, ref_mic=0).abs().sum(), (W,))


def test_projected_images_recover_disjoint_sources(generator):
    """Sources active in disjoint frames: least squares per mic recovers every image exactly."""
    S = torch.zeros(2, 9, 40, dtype=torch.complex128)
    S[0, :, :20] = torch.randn(9, 20, dtype=torch.complex128, generator=generator)
    S[1, :, 20:] = torch.randn(9, 20, dtype=torch.complex128, generator=generator)
    A = torch.randn(9, 3, 2, dtype=torch.complex128, generator=generator)  # (freq, mics, src)
    X = torch.einsum("fmk,kft->mft", A, S)
    true = torch.einsum("fmk,kft->kmft", A, S)
    images = projected_images(0.3 * S, X)
    assert images.shape == (2, 3, 9, 40)
    assert (images - true).abs().max() < 1e-10


def test_result_images_picks_the_route(speech_stft):
    X = speech_stft[..., :40]
    batch = AuxIVA(n_iter=5)(X)
    assert torch.equal(result_images(batch, X), source_images(X, batch.demixing, 2))
    online = OnlineAuxIVA()(X)  # W adapts over time: projection onto every mic
    assert torch.equal(result_images(online, X), projected_images(online.sources, X))
    assert torch.equal(result_images(online, X, "demixing"), source_images(X, online.demixing, 2))


def test_bad_input_is_named(generator):
    X = torch.randn(2, 5, 8, dtype=torch.complex64, generator=generator)
    W = torch.randn(5, 2, 2, dtype=torch.complex64, generator=generator)
    with pytest.raises(ValueError, match="must be square"):
        source_images(X, W[..., :1])
    with pytest.raises(ValueError, match=r"\(\.\.\., 5, 2, 2\)"):
        source_images(X, W[:4])
    with pytest.raises(ValueError, match="n_src=3"):
        source_images(X, W, n_src=3)
    with pytest.raises(TypeError, match="complex"):
        source_images(X.real, W)
    with pytest.raises(ValueError, match="ref_mic"):
        mixing_matrix(W, ref_mic=2)
    with pytest.raises(ValueError, match="same freq and frames"):
        projected_images(X[:, :4], X)
    with pytest.raises(ValueError, match="method"):
        result_images(AuxIVA(n_iter=1)(X), X, "magic")
    # a demixing of another batch failed inside einsum, or broadcast one mixture silently
    with pytest.raises(ValueError, match="must have the same batch shape"):
        source_images(X, W.expand(3, 5, 2, 2))
    singular = W.clone()
    singular[2, 1] = singular[2, 0]  # one bin's rows equal: no inverse
    with pytest.raises(ValueError, match=r"singular in frequency bin\(s\) \[2\]"):
        source_images(X, singular)
