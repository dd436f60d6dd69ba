"""ILRMA specifics: explicit, seeded, warm-startable NMF state; monotone NMF step."""

from __future__ import annotations

import pytest
import torch
from test_auxiva import make_mixture

from torchbss.separators import ILRMA
from torchbss.source_models import NMF, NMFState, nmf_init, nmf_update
from torchbss.source_models.base import power


def test_seeded_init_is_deterministic_and_global_rng_untouched():
    X = make_mixture(n_src=2, seed=0)
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    Y1 = ILRMA(n_iter=3, n_basis=2, seed=7)(X)
    after = torch.rand(1)
    assert torch.equal(before, after)  # the global RNG was not consumed
    torch.testing.assert_close(ILRMA(n_iter=3, n_basis=2, seed=7)(X), Y1, rtol=0, atol=0)
    assert not torch.allclose(ILRMA(n_iter=3, n_basis=2, seed=8)(X), Y1)


def test_state_is_returned_and_warm_start_continues():
    X = make_mixture(n_src=2, seed=1)
    sep = ILRMA(n_iter=6, n_basis=3, normalize=None)
    full = sep(X, return_state=True)
    assert full.source_state.basis.shape == (2, 2, 17, 3)
    assert full.source_state.activations.shape == (2, 2, 3, 64)
    assert not any(isinstance(v, torch.Tensor) for v in vars(sep).values())  # nothing on self
    # 3 + 3 iterations with the state and W carried over == 6 iterations
    half = ILRMA(n_iter=3, n_basis=3, normalize=None, scaling=None)(X, return_state=True)
    rest = ILRMA(n_iter=3, n_basis=3, normalize=None)(X, W0=half.W, source_state=half.source_state)
    torch.testing.assert_close(rest, full.Y, rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("n_basis", [1, 4])
def test_nmf_update_never_increases_is_cost(n_basis):
    g = torch.Generator().manual_seed(2)
    P = torch.rand(2, 2, 9, 30, generator=g, dtype=torch.float64) ** 2
    state = nmf_init((2, 2), 9, 30, n_basis, generator=g)
    model = NMF(n_basis)
    Y = P.sqrt().to(torch.complex128)
    cost = model.cost(Y, state)
    for _ in range(20):
        state = nmf_update(power(Y), state)
        new = model.cost(Y, state)
        assert (new <= cost + 1e-10).all()
        cost = new


def test_nmf_rescale_matches_scaled_estimates():
    g = torch.Generator().manual_seed(3)
    Y = torch.randn(2, 5, 8, dtype=torch.complex128, generator=g)
    model = NMF(2)
    state = model.init_state(Y)
    scale = torch.tensor([2.0, 0.5], dtype=torch.float64)
    c0 = model.cost(Y, state)
    c1 = model.cost(Y * scale[:, None, None], model.rescale(state, scale))
    # only the log-variance term moves, by F * T-mean of log(scale^2) per source
    torch.testing.assert_close(c1 - c0, 5 * torch.log(scale**2).sum())


def test_bad_nmf_arguments():
    with pytest.raises(ValueError, match="n_basis must be an integer >= 1"):
        ILRMA(n_basis=0)
    with pytest.raises(ValueError, match="needs the NMF state"):
        NMF(2).cost(torch.zeros(2, 3, 4, dtype=torch.complex64), None)
    assert isinstance(ILRMA(n_iter=1).source_model, NMF)
    assert NMFState(torch.ones(1), torch.ones(1)).stale_scale is None


def test_warm_start_equals_auxiva_then_ilrma_from_its_demixing():
    """``init_iter`` AuxIVA iterations then ILRMA == ILRMA started from AuxIVA's ``W``."""
    from torchbss.separators import AuxIVA

    X = make_mixture(n_src=2, seed=4)
    W = AuxIVA(n_iter=4, update="ip2", scaling=None)(X, return_state=True).W
    Y_ref = ILRMA(n_iter=3, n_basis=2, init_iter=0)(X, W0=W)
    Y = ILRMA(n_iter=3, n_basis=2, init_iter=4, init_update="ip2")(X)
    torch.testing.assert_close(Y, Y_ref, rtol=1e-9, atol=1e-11)
    # an explicit W0 takes precedence over the warm start
    torch.testing.assert_close(ILRMA(n_iter=3, n_basis=2, init_iter=4)(X, W0=W), Y_ref)


@pytest.mark.parametrize("masked", [False, True])
def test_nmf_update_in_place_path_matches_autograd_path(masked):
    g = torch.Generator().manual_seed(5)
    P = torch.rand(2, 2, 9, 30, generator=g, dtype=torch.float64) ** 2
    state = nmf_init((2, 2), 9, 30, 3, generator=g)
    mask = (torch.arange(30) < 25).to(torch.float64).expand(2, 30) if masked else None
    fast, w_fast = nmf_update(P, state, mask, return_weights=True)  # nothing requires grad
    P_graph = P.clone().requires_grad_(True)
    slow, w_slow = nmf_update(P_graph, state, mask, return_weights=True)
    assert w_slow.requires_grad
    torch.testing.assert_close(fast.basis, slow.basis.detach(), rtol=1e-12, atol=0)
    torch.testing.assert_close(fast.activations, slow.activations.detach(), rtol=1e-12, atol=0)
    torch.testing.assert_close(w_fast, w_slow.detach(), rtol=1e-12, atol=0)
    torch.testing.assert_close(w_fast, 1.0 / fast.variance(1e-15), rtol=1e-12, atol=0)


def test_bad_warm_start_arguments():
    with pytest.raises(ValueError, match="init_iter"):
        ILRMA(init_iter=-1)
    with pytest.raises(ValueError, match="update"):
        ILRMA(init_update="ip9")
