"""The pure spatial updates: each minimises its auxiliary function; helpers agree; one IP1."""

from __future__ import annotations

import pytest
import torch

from torchbss.updates import (
    demix,
    diagonal_loading,
    ip1_sweep,
    ip1_update,
    ip2_update,
    iss_update,
    loaded_inverse,
    minimum_distortion,
    outer_products,
    projection_back,
    weighted_covariance,
    weighted_covariance_from_outer,
)
from torchbss.updates.covariance import (
    frames_major,
    packed_outer_products,
    packed_output_power,
    packed_weighted_covariance,
)
from torchbss.updates.hermitian import to_freq_last, unpack_hermitian


def _data(M=3, F=4, T=50, seed=0):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(M, F, T, dtype=torch.complex128, generator=g)
    W = torch.randn(F, M, M, dtype=torch.complex128, generator=g) + 2 * torch.eye(M)
    w = torch.rand(M, F, T, dtype=torch.float64, generator=g) + 0.1
    return X, W, w


def surrogate(W, V):
    """Auxiliary function sum_k w_k^H V_k w_k - 2 log|det W| summed over freq."""
    quad = torch.einsum("fkm,kfmn,fkn->", W, V, W.conj()).real  # rows are w_k^H
    return quad - 2 * torch.linalg.slogdet(W)[1].sum()


def test_weighted_covariance_paths_agree():
    X, _, w = _data()
    mask = torch.ones(50, dtype=torch.bool)
    mask[40:] = False
    for m in (None, mask):
        torch.testing.assert_close(
            weighted_covariance(X, w, m), weighted_covariance_from_outer(outer_products(X), w, m)
        )
    V = weighted_covariance(X, w)
    torch.testing.assert_close(V, V.conj().transpose(-1, -2))


@pytest.mark.parametrize("batch", [(), (2,)])
def test_packed_gemms_equal_the_definitions_in_both_storage_orders(batch):
    """The packed covariance and frame-power GEMMs read the outer products in two storage
    orders (frequency-contiguous and frames-major); both give the definitions."""
    g = torch.Generator().manual_seed(3)
    M, F, T = 3, 5, 40
    X = torch.randn(batch + (M, F, T), dtype=torch.complex128, generator=g)
    W = torch.randn(batch + (F, M, M), dtype=torch.complex128, generator=g)
    w = torch.rand(batch + (M, 1, T), dtype=torch.float64, generator=g) + 0.1
    XX = packed_outer_products(X)
    major = frames_major(XX)
    assert major.shape == XX.shape and not major.is_contiguous()
    assert major.movedim(-1, -3).is_contiguous()  # stored (..., T, M^2, F)
    # written frames-major directly (float64 products of complex64 input, as the separators
    # use it; with a frame mask): the same numbers, bit for bit, in the same storage order
    mask = torch.rand(batch + (T,), generator=g) > 0.3
    X32 = X.to(torch.complex64)
    ref = frames_major(packed_outer_products(X32, mask, dtype=torch.float64))
    direct = packed_outer_products(X32, mask, dtype=torch.float64, store_frames_major=True)
    assert direct.movedim(-1, -3).is_contiguous() and direct.shape == ref.shape
    assert torch.equal(direct, ref) and bool(
        ref[..., ~mask[..., None, None, :].expand_as(ref)].eq(0).all()
    )
    V = weighted_covariance(X, w)  # (..., K, F, M, M)
    Y = demix(W, X, M)  # (..., K, F, T)
    power = Y.abs().square().sum(-2, keepdim=True)
    for stored in (XX, major):
        Vd, Vo = packed_weighted_covariance(stored, w, T)
        torch.testing.assert_close(unpack_hermitian(Vd, Vo), V)
        got = packed_output_power(to_freq_last(W), stored, M)
        torch.testing.assert_close(got, power)


def test_ip1_minimises_row_and_normalises():
    X, W, w = _data()
    V = weighted_covariance(X, w)
    for k in range(3):
        W1 = ip1_update(W, V[k : k + 1], [k], load=0.0)
        assert surrogate(W1, V) <= surrogate(W, V) + 1e-10
        q = torch.einsum("fm,fmn,fn->f", W1[:, k], V[k], W1[:, k].conj()).real
        torch.testing.assert_close(q, torch.ones(4, dtype=torch.float64))
        # stationarity in row k: W V_k w_k = e_k (up to the unit normalisation)
        r = W1 @ V[k] @ W1[:, k, :, None].conj()
        torch.testing.assert_close(r[..., 0], torch.eye(3, dtype=r.dtype)[k].expand(4, 3))
        W = W1


def test_ip2_beats_two_ip1_steps_on_its_pair():
    X, W, w = _data(M=2)
    V = weighted_covariance(X, w)
    W2 = ip2_update(W, V[0], V[1], 0, 1, load=0.0)
    W11 = ip1_update(W, V, load=0.0)
    assert surrogate(W2, V) <= surrogate(W11, V) + 1e-10
    assert surrogate(W2, V) <= surrogate(W, V)


def test_iss_keeps_y_in_sync_and_decreases_surrogate():
    X, W, w = _data()
    V = weighted_covariance(X, w)
    Y = demix(W, X)
    for k in range(3):
        Y1, W1 = iss_update(Y, W, w, k)
        torch.testing.assert_close(Y1, demix(W1, X))
        assert surrogate(W1, V) <= surrogate(W, V) + 1e-10
        Y, W = Y1, W1


def test_scalings():
    X, W, _ = _data()
    Y = demix(W, X)
    Z = minimum_distortion(Y, W, ref_mic=1)
    torch.testing.assert_close(Z.sum(0), X[1])  # exact reconstruction of the ref mic
    P = projection_back(Y, X, ref_mic=1)
    # invariant to any complex rescaling of the estimates (per source and frequency)
    c = torch.randn(3, 4, 1, dtype=Y.dtype, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(projection_back(Y * c, X, ref_mic=1), P)
    # least squares: each source's residual at the ref mic is orthogonal to that source
    resid = X[1][None] - P
    torch.testing.assert_close(
        (resid * P.conj()).sum(-1), torch.zeros(3, 4, dtype=Y.dtype), atol=1e-9, rtol=0
    )
    assert torch.isfinite(projection_back(torch.zeros_like(Y), X)).all()


def test_ip1_sweep_tracks_the_inverse_and_matches_the_solve_form():
    """The one IP1 (tracked inverse, frequency last) equals w_k = (W V_k)^-1 e_k normalised."""
    from torchbss.updates.hermitian import from_freq_last, pack_hermitian, to_freq_last

    X, W, w = _data(M=3)
    V = weighted_covariance(X, w)
    Vl = diagonal_loading(V, 1e-3)
    Wf, Af = to_freq_last(W), to_freq_last(torch.linalg.inv(W))
    Wf, Af = ip1_sweep(Wf, Af, loaded_inverse(*pack_hermitian(V), 1e-3, 1e-30), 1e-12)
    W_sweep, A_sweep = from_freq_last(Wf), from_freq_last(Af)
    torch.testing.assert_close(A_sweep, torch.linalg.inv(W_sweep), rtol=1e-9, atol=1e-10)
    # reference: the textbook solve, row after row
    W_ref = W.clone()
    eye = torch.eye(3, dtype=W.dtype)
    for k in range(3):
        u = torch.linalg.solve(W_ref @ Vl[k], eye[:, k].expand(4, 3))
        norm = torch.einsum("fm,fmn,fn->f", u.conj(), Vl[k], u).real.sqrt()
        W_ref[:, k, :] = (u / norm[:, None]).conj()
    torch.testing.assert_close(W_sweep, W_ref, rtol=1e-9, atol=1e-10)


def test_diagonal_loading_semantics():
    V = torch.diag_embed(torch.tensor([[4.0, 2.0], [0.0, 0.0]], dtype=torch.float64))
    L = diagonal_loading(V, 0.5, floor=1e-3)
    # relative to the mean diagonal (3), with an absolute floor for all-zero matrices
    torch.testing.assert_close(L[0].diagonal(), torch.tensor([5.5, 3.5], dtype=torch.float64))
    torch.testing.assert_close(L[1].diagonal(), torch.tensor([5e-4, 5e-4], dtype=torch.float64))
    assert diagonal_loading(V, 0.0) is V
    # a tensor load (e.g. a trainable one) broadcasts over the leading dims and passes gradients
    load = torch.tensor(0.5, requires_grad=True)
    diagonal_loading(V, load, floor=1e-3).sum().backward()
    assert load.grad is not None and load.grad > 0


def test_small_hermitian_inverse_matches_linalg():
    from torchbss.updates.hermitian import hermitian_inverse, pack_hermitian

    g = torch.Generator().manual_seed(0)
    for M in (1, 2, 3, 4, 5):
        B = torch.randn(3, 9, M, M, dtype=torch.complex128, generator=g)
        V = B @ B.mH + 0.1 * torch.eye(M)
        inv = hermitian_inverse(*pack_hermitian(V)).movedim(-1, -3)
        torch.testing.assert_close(inv, torch.linalg.inv(V), rtol=1e-10, atol=1e-10)


def test_ip2_in_float32_equals_float64_on_ill_conditioned_covariances():
    """IP2 solves its inverses and 2x2 pencils in double precision (``ip._widen``): with nearly
    collinear mics (covariances of condition ~1e6) the float32 eigenvectors were rounding
    noise; now float32 input gives the float64 answer up to float32 rounding."""
    from torchbss.updates import IP2
    from torchbss.updates.hermitian import pack_hermitian, to_freq_last

    g = torch.Generator().manual_seed(3)
    s = torch.randn(2, 64, 200, dtype=torch.complex128, generator=g)
    X = torch.stack([s[0] + s[1], s[0] + s[1] + 1e-3 * s[1]])  # nearly collinear mics
    w = torch.rand(2, 64, 200, dtype=torch.float64, generator=g) + 0.1
    V = weighted_covariance(X, w).to(torch.complex64).to(torch.complex128)  # exact in both
    W = torch.eye(2) + 0.1 * torch.randn(64, 2, 2, dtype=torch.complex128, generator=g)
    W = W.to(torch.complex64).to(torch.complex128)
    assert torch.linalg.cond(V[0]).min() > 1e5
    ref = ip2_update(W, V[0], V[1], 0, 1)
    c64 = torch.complex64
    low = ip2_update(W.to(c64), V[0].to(c64), V[1].to(c64), 0, 1)
    assert low.dtype == torch.complex64
    torch.testing.assert_close(low.to(ref.dtype), ref, rtol=1e-5, atol=1e-5 * ref.abs().max())
    # the strategy class (separators' packed path) widens the same way
    Vd, Vo = pack_hermitian(V.to(torch.complex64))
    packed = IP2().update_packed(to_freq_last(W.to(torch.complex64)), Vd, Vo, None)
    ref_packed = IP2().update_packed(to_freq_last(W), *pack_hermitian(V), None)
    assert packed.dtype == torch.complex64
    torch.testing.assert_close(packed.to(ref_packed.dtype), ref_packed, rtol=1e-5,
                               atol=1e-5 * ref_packed.abs().max())  # fmt: skip


def test_ip2_stereo_equals_the_pair_sweep_up_to_a_row_phase():
    """Two sources on two mics take the inverse-free IP2 (``ip2_stereo``: the pencil of the
    covariances themselves). It gives the rows of the general pair sweep up to a phase per row
    and bin, also for small, nearly collinear covariances (scale 1e-10, condition ~1e5), where an
    absolute floor on ``c^H V c`` once mis-normalised the second row; the IP2 conditions hold:
    ``w_s^H V_s w_s = 1`` and ``w_1^H V_0 w_0 = 0``."""
    from torchbss.updates import IP2
    from torchbss.updates.hermitian import from_freq_last, pack_hermitian, to_freq_last
    from torchbss.updates.ip import ip2_pair_sweep

    g = torch.Generator().manual_seed(4)
    s = torch.randn(2, 64, 200, dtype=torch.complex128, generator=g)
    X = torch.stack([s[0] + s[1], s[0] + s[1] + 3e-3 * s[1]]) * 1e-5
    X[:, :32] = torch.randn(2, 32, 200, dtype=torch.complex128, generator=g)  # well-conditioned
    w = torch.rand(2, 64, 200, dtype=torch.float64, generator=g) + 0.1
    V = weighted_covariance(X, w)
    W = torch.eye(2) + 0.3 * torch.randn(64, 2, 2, dtype=torch.complex128, generator=g)
    W = to_freq_last(W)
    Vd, Vo = pack_hermitian(V)
    got = IP2().update_packed(W, Vd, Vo, None)
    pair = IP2()._inverses(Vd, Vo)
    want = ip2_pair_sweep(W, torch.linalg.inv(W.movedim(-1, 0)).movedim(0, -1), pair, 0, 1)
    ratio = got / want  # a unit phase per row and bin
    torch.testing.assert_close(ratio.abs(), torch.ones_like(ratio.abs()), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(ratio, ratio[..., :1, :].expand_as(ratio), rtol=1e-6, atol=1e-6)
    rows = from_freq_last(got).conj()  # (F, 2, M): w_0, w_1
    Vl = IP2()._inverses(Vd, Vo).movedim(-1, 1).inverse()  # the loaded covariances (K, F, M, M)
    q = torch.einsum("fkm,kfmn,fkn->kf", rows.conj(), Vl, rows).real
    torch.testing.assert_close(q, torch.ones_like(q), rtol=1e-8, atol=1e-8)
    cross = torch.einsum("fm,fmn,fn->f", rows[:, 1].conj(), Vl[0], rows[:, 0]).abs()
    assert float(cross.max()) < 1e-8


def test_background_update_survives_a_singular_bin():
    """Two nearly parallel source rows in one bin (as an online separator reached in the DC
    bin of a real 2-source 4-mic room) make the K x K system singular: that bin is loaded
    relative to its norm, the others keep the plain solution, all finite, gradients too."""
    from torchbss.updates.overiva import background_update

    g = torch.Generator().manual_seed(0)
    F, M, K = 5, 4, 2
    x = torch.randn(F, M, 50, dtype=torch.complex128, generator=g)
    C = x @ x.mH / 50
    W = torch.randn(F, M, M, dtype=torch.complex128, generator=g)
    W[2, 1] = W[2, 0]  # bin 2: source rows equal
    WsC = (W[..., :K, :] @ C).detach()
    with pytest.raises(RuntimeError, match="singular"):  # what the plain solve does
        torch.linalg.solve(WsC[..., :K], WsC[..., K:])
    W.requires_grad_(True)
    out = background_update(W, C, K, load=0.0)
    assert bool(torch.isfinite(torch.view_as_real(out)).all())
    # the regular bins: the exact solution of W_s C U^H = 0 (background uncorrelated)
    Ws, U = out[..., :K, :], out[..., K:, :]
    cross = (Ws @ C @ U.mH).abs()
    scale = (Ws @ C @ Ws.mH).abs().amax((-1, -2))
    ok = [0, 1, 3, 4]
    assert float((cross[ok].amax((-1, -2)) / scale[ok]).max().detach()) < 1e-2
    # the background rows keep their [J, -I] form in the rescued bin
    torch.testing.assert_close(U[2, :, K:], -torch.eye(M - K, dtype=U.dtype))
    out.abs().sum().backward()
    assert bool(torch.isfinite(W.grad.abs()).all())


def test_public_updates_check_their_arguments():
    """Found by an audit: these were silently reinterpreted (a negative loading taken as 0, a
    duplicate or missing row, one bin's demixing broadcast to all) or failed deep inside."""
    from torchbss.updates import diagonal_loading, ip1_update, ip2_update, minimum_distortion

    X, W, w = _data()
    V = weighted_covariance(X, w)
    for load in (-1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="load must be a finite float >= 0"):
            diagonal_loading(V[0], load)
        with pytest.raises(ValueError, match="load must be a finite float >= 0"):
            ip1_update(W, V, load=load)
    with pytest.raises(ValueError, match="load must be a finite float >= 0"):
        minimum_distortion(demix(W, X), W, load=-1.0)
    for rows in ([0], [0, 0, 1], [0, 1, 3]):
        with pytest.raises(ValueError, match="distinct row indices"):
            ip1_update(W, V, rows)
    for k, l in ((0, 0), (0, 3), (-1, 1)):
        with pytest.raises(ValueError, match="two different rows"):
            ip2_update(W, V[0], V[1], k, l)
    with pytest.raises(ValueError, match="n_src must be an int in"):
        demix(W, X, 0)
    with pytest.raises(ValueError, match="match X"):
        demix(W[..., :1, :, :], X)
    Y = demix(W, X)
    for bad in (dict(ref_mic=3), dict(ref_mic=-1)):
        with pytest.raises(ValueError, match="ref_mic must be"):
            projection_back(Y, X, **bad)
        with pytest.raises(ValueError, match="ref_mic must be"):
            minimum_distortion(Y, W, **bad)
    with pytest.raises(ValueError, match="share their batch, freq and frames"):
        projection_back(Y, X[..., :1])
    # the usual calls are unchanged
    torch.testing.assert_close(diagonal_loading(V[0], 0.0), V[0])
    assert bool(projection_back(Y, X, 2).isfinite().all())
