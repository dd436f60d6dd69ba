"""Parity of AuxIVA-IP1 (Laplace) and ILRMA-IP1 with ssspy 0.2 (float64, real speech excerpt).

Both libraries lay out the mixture as ``(mics, freq, frames)`` and the demixing matrices as
``(freq, sources, mics)`` (rows are ``w_k^H``), and the NMF factors as ``basis (sources, freq,
n_basis)``, ``activations (sources, n_basis, frames)``, so they are passed across unchanged. Both
start from the same non-identity ``W0`` (and for ILRMA the same NMF factors), run the same number
of iterations, and are compared on the raw demixing matrices (ssspy ``scale_restoration=False``,
ours ``scaling=None``) and on the scaled outputs.

Conventions that differ and how each test handles them:

* ssspy's Laplace contrast is ``G(y) = 2 ||y||`` (weights ``phi = G'(r) / max(2 r, 1e-10) =
  1 / r``), ours is ``G(y) = ||y||`` (``phi = 1 / (2 r)``). The IP1 update of a row depends on
  the other rows only through their directions, so both give the same directions, and the ssspy
  rows are ours times a scalar that follows ``s_n = sqrt(s_{n-1} / 2)``, ``s_0 = 1``, i.e.
  ``s_n = 2 ** -(1 - 2 ** -n)`` after ``n`` iterations. One test checks this exact relation with
  our stock ``Laplace``; another plugs a source model with ssspy's contrast in and checks that
  the demixing matrices are equal.
* ssspy's ``scale_restoration=True`` ("projection back" in ssspy) rescales the demixing matrix
  by ``(W^{-1})[ref, k]``: this is our ``scaling="minimum_distortion"``. Our
  ``"projection_back"`` is the least-squares fit onto the reference mic (as in
  pyroomacoustics), which differs when the outputs are correlated, so it is not compared here.
* ssspy floors the NMF factors at ``1e-10`` and never floors ``T V``; ours floors both at
  ``eps``: with ``NMF(eps=1e-10)`` the factor floors match, and the ``T V`` floor is never
  reached on this input (the parity would show it). Ours keeps each basis at unit mean (the
  split of ``T V`` between the factors is free), so the factors are compared through the
  model variance ``T V``.
* ILRMA normalisation: ssspy ``normalization=True`` ("power") divides each row of ``W`` by
  ``psi_k = sqrt(mean_{f,t} |y|^2)`` and the bases by ``psi_k ** 2``, which is our
  ``normalize=True``.
* Both separators use no diagonal loading here (``load=0``; ssspy has none).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import load_mixture

from torchbss.separators import ILRMA, AuxIVA, IterativeState
from torchbss.source_models import Laplace, NMFState
from torchbss.source_models.iva import laplace_weights
from torchbss.source_models.nmf import NMF
from torchbss.updates import IP1

pytest.importorskip("ssspy")
from ssspy.bss.ilrma import GaussILRMA  # noqa: E402
from ssspy.bss.iva import AuxLaplaceIVA  # noqa: E402

N_FFT, HOP = 512, 256
N_ITER = 30
N_BASIS = 2
SSSPY_EPS = 1e-10  # ssspy's default flooring (max_flooring, eps=1e-10)
TOL = 1e-9  # relative (max abs difference / max abs value); measured ~1e-12


class SsspyLaplace(Laplace):
    """Laplace source model with ssspy's contrast ``G(y) = 2 ||y||``: ``phi = 1 / r``."""

    def forward(self, Y, state=None, frame_mask=None):
        return 2.0 * laplace_weights(Y, SSSPY_EPS), state

    def cost(self, Y, state=None, frame_mask=None):
        return 2.0 * super().cost(Y, state, frame_mask)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Run this module on one torch thread (restored after).

    The problem is tiny (2 x 257 x 126), so intra-op threads only add synchronisation, which is
    very costly when the cores are shared with other processes.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def excerpt():
    """STFT ``(2, 257, frames)`` complex128 of 2 s of 2x2_00, and a fixed ``W0`` (freq, 2, 2)."""
    mix, _, fs = load_mixture("2x2_00")
    x = mix[:, 2 * fs : 4 * fs]  # seconds 2 to 4
    window = torch.hann_window(N_FFT, dtype=torch.float64)
    X = torch.stft(x, N_FFT, HOP, window=window, return_complex=True)
    rng = np.random.default_rng(0)
    n_freq = X.shape[-2]
    noise = rng.standard_normal((n_freq, 2, 2)) + 1j * rng.standard_normal((n_freq, 2, 2))
    W0 = np.eye(2) + 0.2 * noise  # well conditioned, not the identity
    return X, W0


def _rel_err(actual: np.ndarray, expected: np.ndarray) -> float:
    return float(np.abs(actual - expected).max() / np.abs(expected).max())


def _ssspy_auxiva(X: torch.Tensor, W0: np.ndarray, scale: bool):
    iva = AuxLaplaceIVA(spatial_algorithm="IP1", scale_restoration=scale, record_loss=False)
    Y = iva(X.numpy(), n_iter=N_ITER, demix_filter=W0.copy())
    return Y, iva.demix_filter


def _ours_auxiva(X, W0, source_model, scaling):
    sep = AuxIVA(
        n_iter=N_ITER,
        update=IP1(load=0.0),
        source_model=source_model,
        scaling=scaling,
        track_cost=False,
        align_permutations=False,  # ssspy has no permutation alignment
    )
    return sep(X, IterativeState(torch.from_numpy(W0)))


def test_auxiva_ip1_matches_ssspy_demixing_with_its_contrast(excerpt):
    """With ssspy's contrast ``2 ||y||`` plugged in, the demixing matrices are equal."""
    X, W0 = excerpt
    _, W_ref = _ssspy_auxiva(X, W0, scale=False)
    res = _ours_auxiva(X, W0, SsspyLaplace(), scaling=None)
    assert _rel_err(res.demixing.numpy(), W_ref) < TOL


def test_auxiva_ip1_stock_laplace_differs_from_ssspy_by_exact_scalar(excerpt):
    """Our ``G = ||y||`` gives ssspy's matrices divided by ``2 ** -(1 - 2 ** -n_iter)``."""
    X, W0 = excerpt
    _, W_ref = _ssspy_auxiva(X, W0, scale=False)
    res = _ours_auxiva(X, W0, Laplace(), scaling=None)
    scale = 2.0 ** -(1.0 - 2.0**-N_ITER)
    assert _rel_err(scale * res.demixing.numpy(), W_ref) < TOL


def test_auxiva_ip1_scaled_output_matches_ssspy(excerpt):
    """ssspy's scale restoration == our minimum distortion scaling; outputs are equal."""
    X, W0 = excerpt
    Y_ref, _ = _ssspy_auxiva(X, W0, scale=True)
    Y = _ours_auxiva(X, W0, Laplace(), scaling="minimum_distortion").sources
    assert Y.shape == Y_ref.shape
    assert _rel_err(Y.numpy(), Y_ref) < TOL


def _factors(X: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    n_freq, n_frames = X.shape[-2:]
    basis = np.maximum(rng.random((2, n_freq, N_BASIS)), SSSPY_EPS)
    activations = np.maximum(rng.random((2, N_BASIS, n_frames)), SSSPY_EPS)
    return basis, activations


def _ssspy_ilrma(X, W0, basis, activations, scale: bool) -> GaussILRMA:
    ilrma = GaussILRMA(
        n_basis=N_BASIS,
        spatial_algorithm="IP1",
        source_algorithm="MM",
        domain=2,
        normalization=True,
        scale_restoration=scale,
        record_loss=False,
        rng=np.random.default_rng(2),  # unused: the factors are given
    )
    ilrma(
        X.numpy(),
        n_iter=N_ITER,
        demix_filter=W0.copy(),
        basis=basis.copy(),
        activation=activations.copy(),
    )
    return ilrma


def _ours_ilrma(X, W0, basis, activations, scaling):
    sep = ILRMA(
        n_iter=N_ITER,
        update=IP1(load=0.0),
        source_model=NMF(N_BASIS, eps=SSSPY_EPS),
        normalize=True,
        scaling=scaling,
        track_cost=False,
        align_permutations=False,  # ssspy has no permutation alignment
    )
    state = NMFState(torch.from_numpy(basis), torch.from_numpy(activations))
    return sep(X, IterativeState(torch.from_numpy(W0), state))


def test_ilrma_ip1_matches_ssspy_demixing_and_factors(excerpt):
    """Same W0 and NMF factors: equal demixing matrices and NMF variances."""
    X, W0 = excerpt
    basis, activations = _factors(X)
    ref = _ssspy_ilrma(X, W0, basis, activations, scale=False)
    res = _ours_ilrma(X, W0, basis, activations, scaling=None)
    assert _rel_err(res.demixing.numpy(), ref.demix_filter) < TOL
    variance = res.state.source.variance().numpy()
    assert _rel_err(variance, ref.basis @ ref.activation) < TOL


def test_ilrma_ip1_scaled_output_matches_ssspy(excerpt):
    """ssspy's scale restoration == our minimum distortion scaling; outputs are equal."""
    X, W0 = excerpt
    basis, activations = _factors(X)
    ref = _ssspy_ilrma(X, W0, basis, activations, scale=True)
    Y = _ours_ilrma(X, W0, basis, activations, scaling="minimum_distortion").sources
    assert _rel_err(Y.numpy(), ref.output) < TOL
