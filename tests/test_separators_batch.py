"""Batch AuxIVA / ILRMA: the contract, monotone cost, batch and dtype invariance, masks,
overdetermined routes, scaling, degenerate input, gradients, errors."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from torch import nn

from torchbss.separators import ILRMA, AuxIVA, IterativeState, SeparationResult
from torchbss.source_models import NMF, Gauss, Laplace, NMFState, SourceModel
from torchbss.updates import IP1, IP2, ISS
from torchbss.updates.covariance import packed_outer_products

UPDATES = ["ip1", "ip2", "iss"]
MODELS = ["laplace", "gauss", "nmf"]


def make_mixture(
    batch=(2,), n_src=2, n_mics=None, n_freq=17, n_frames=64, dtype=torch.complex128, seed=0
):
    """Random instantaneous-per-bin mixtures of super-Gaussian sources."""
    n_mics = n_mics or n_src
    g = torch.Generator().manual_seed(seed)
    env = 0.1 + torch.rand(*batch, n_src, 1, n_frames, generator=g, dtype=torch.float64)
    S = torch.randn(*batch, n_src, n_freq, n_frames, generator=g, dtype=torch.complex128) * env
    A = torch.randn(*batch, n_freq, n_mics, n_src, generator=g, dtype=torch.complex128)
    return torch.einsum("...fmk,...kft->...mft", A, S).to(dtype)


def separator(update, model, **kw):
    if model == "nmf":
        return ILRMA(update=update, n_basis=2, **kw)
    return AuxIVA(update=update, source_model=model, **kw)


# ------------------------------------------------------------------ the contract
def test_result_state_and_step_protocol():
    X = make_mixture(n_src=2, seed=1)
    # the plain algorithm: the alignment permutes the state at the end of every call, so with it
    # n single steps are n iterations each followed by an alignment (documented)
    for sep in (AuxIVA(n_iter=4, align_permutations=False),
                ILRMA(n_iter=4, n_basis=3, align_permutations=False)):  # fmt: skip
        full = sep(X)
        assert isinstance(full, SeparationResult) and isinstance(full.state, IterativeState)
        assert full.sources.shape == X.shape and full.demixing.shape == (2, 17, 2, 2)
        assert full.cost.shape == (2, 5)
        # init_state + 4 single steps == forward with 4 iterations
        state = sep.init_state(X)
        for _ in range(4):
            res = sep.step(X, state)
            state = res.state
        torch.testing.assert_close(res.sources, full.sources, rtol=1e-10, atol=1e-12)
        # forward continues from a state: 2 + 2 iterations == 4
        half = type(sep)(**_config(sep, n_iter=2))
        mid = half(X)
        torch.testing.assert_close(half(X, mid.state).sources, full.sources, rtol=1e-10, atol=1e-12)
    # ILRMA's NMF factors are in the state, with the documented shapes; nothing is kept on self
    res = ILRMA(n_iter=2, n_basis=3)(X)
    assert res.state.source.basis.shape == (2, 2, 17, 3)
    assert res.state.source.activations.shape == (2, 2, 3, 64)


def _config(sep, **over):
    cfg = {"n_iter": sep.n_iter, "update": sep.update, "align_permutations": False}
    if isinstance(sep, ILRMA):
        cfg["source_model"] = sep.source_model
    return {**cfg, **over}


def test_callback_sees_every_iteration():
    X = make_mixture(n_src=2, seed=2)
    seen = []
    res = AuxIVA(n_iter=5)(X, callback=lambda i, r: seen.append((i, r.sources.clone())))
    assert [i for i, _ in seen] == [0, 1, 2, 3, 4]
    torch.testing.assert_close(seen[-1][1], res.sources)
    assert not torch.allclose(seen[0][1], res.sources)


def test_initial_demixing_through_state():
    X = make_mixture(n_src=2, seed=7)
    sep = AuxIVA(n_iter=0, scaling=None, align_permutations=False)
    W0 = torch.randn(17, 2, 2, dtype=X.dtype, generator=torch.Generator().manual_seed(1))
    Y = sep(X, sep.init_state(X, demixing=W0)).sources
    torch.testing.assert_close(Y, torch.einsum("fkm,...mft->...kft", W0, X))
    # identity is the default start
    torch.testing.assert_close(sep(X).sources, X)
    # AuxIVA -> ILRMA warm start through the state
    W = AuxIVA(n_iter=4)(X).state.demixing
    ilrma = ILRMA(n_iter=3)
    warm = ilrma(X, ilrma.init_state(X, demixing=W))
    assert torch.isfinite(warm.sources).all()
    assert not torch.allclose(warm.sources, ilrma(X).sources)


# ------------------------------------------------------------------ monotone cost
@pytest.mark.parametrize("update", UPDATES)
@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("n_src", [2, 3])
def test_cost_non_increasing(update, model, n_src):
    X = make_mixture(n_src=n_src, seed=n_src)
    res = separator(update, model, n_iter=10)(X)
    scale = res.cost.abs().amax(-1, keepdim=True)
    assert (res.cost.diff(dim=-1) <= 1e-9 * scale).all(), res.cost
    assert res.cost[..., -1].lt(res.cost[..., 0]).all()


def test_ilrma_normalisation_changes_nothing_but_scale():
    """The normalisation rescales W rows and NMF variances together: same sources, same cost."""
    X = make_mixture(n_src=2, seed=3)
    a = ILRMA(n_iter=8, n_basis=2, normalize=True)(X)
    b = ILRMA(n_iter=8, n_basis=2, normalize=False)(X)
    torch.testing.assert_close(a.sources, b.sources, rtol=1e-8, atol=1e-10)
    torch.testing.assert_close(a.cost, b.cost, rtol=1e-9, atol=1e-9)


# ------------------------------------------------------------------ same answer however asked
@pytest.mark.parametrize("sep", [
    AuxIVA(n_iter=5), AuxIVA(n_iter=5, update="iss", source_model="gauss"),
    ILRMA(n_iter=5, n_basis=3), ILRMA(n_iter=5, n_basis=2, update="ip2"),
    AuxIVA(n_iter=5, n_src=2), ILRMA(n_iter=5, n_src=2),
], ids=["auxiva", "auxiva-iss-gauss", "ilrma", "ilrma-ip2", "overiva", "ilrma-pca"])  # fmt: skip
def test_each_item_alone_equals_inside_a_batch(sep):
    n_mics = 3 if sep.n_src == 2 else 2
    X = make_mixture(batch=(3,), n_src=2, n_mics=n_mics, seed=1)
    Y = sep(X).sources
    for b in range(3):
        torch.testing.assert_close(sep(X[b]).sources, Y[b], rtol=1e-9, atol=1e-11)
    # and with more leading dims
    Y2 = sep(X.reshape(1, 3, *X.shape[1:])).sources
    torch.testing.assert_close(Y2[0], Y, rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("chunk", [1, 2, 4])
def test_cpu_chunks_equal_the_whole_batch(monkeypatch, chunk):
    """A CPU batch run in chunks of ``chunk`` mixtures (as large inputs are, see
    ``cpu_chunk_bytes``; 4: a shorter last chunk) gives the whole batch's result: sources,
    state (NMF bases and activations included), demixing, cost."""
    X = make_mixture(batch=(2, 3), n_src=2, seed=4)
    mask = torch.ones(2, 3, X.shape[-1], dtype=torch.bool)
    mask[1, 2, 50:] = False
    for sep in (AuxIVA(n_iter=4, update="ip1", source_model="laplace"), ILRMA(n_iter=4)):
        whole = sep(X, frame_mask=mask)
        per_mixture = 8 * 2 * 2 * X.shape[-2] * X.shape[-1]
        monkeypatch.setattr(type(sep), "cpu_chunk_bytes", chunk * per_mixture)
        assert sep._cpu_chunk(X, None, mask, None) == chunk
        parts = sep(X, frame_mask=mask)
        monkeypatch.undo()
        for a, b in (
            (parts.sources, whole.sources),
            (parts.demixing, whole.demixing),
            (parts.state.demixing, whole.state.demixing),
            (parts.cost, whole.cost),
        ):
            assert a.shape == b.shape
            torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-11)
        if whole.state.source is not None:
            for a, b in (
                (parts.state.source.activations, whole.state.source.activations),
                (parts.state.source.basis, whole.state.source.basis),
            ):
                torch.testing.assert_close(a, b, rtol=1e-9, atol=0)


def test_cpu_chunks_only_for_states_they_can_put_together(monkeypatch):
    """A source model with a state of its own (not NMF's) runs the batch in one piece."""

    class Stateful(Laplace):
        def init_state(self, Y, frame_mask=None, generator=None):
            return {"calls": 0}

    X = make_mixture(batch=(3,), n_src=2, seed=4)
    monkeypatch.setattr(AuxIVA, "cpu_chunk_bytes", 1)
    assert AuxIVA(source_model=Laplace())._cpu_chunk(X, None, None, None) == 1
    assert AuxIVA(source_model=Stateful())._cpu_chunk(X, None, None, None) == 0


@pytest.mark.parametrize("update", ["ip1", "ip2"])
def test_frames_major_outer_products_separate_alike(monkeypatch, update):
    """Past the cache budget the float64 outer products are stored frames-major (both packed
    GEMMs read them so): the separation equals the one from the frequency-contiguous copy."""
    import torchbss.separators.iterative as iterative

    X = make_mixture(batch=(), n_src=3, seed=6).to(torch.complex64)
    mask = torch.ones(X.shape[-1], dtype=torch.bool)
    mask[70:] = False
    sep = AuxIVA(n_iter=5, update=update, source_model="laplace")
    calls = []

    def spy(*args, **kwargs):
        calls.append(kwargs.get("store_frames_major", False))
        return packed_outer_products(*args, **kwargs)

    monkeypatch.setattr(iterative, "packed_outer_products", spy)
    plain = sep(X, frame_mask=mask)
    assert calls == [False]  # a small input: one frequency-contiguous copy
    monkeypatch.setattr(type(sep), "cpu_chunk_bytes", 0)
    major = sep(X, frame_mask=mask)
    assert calls == [False, True]
    for a, b in ((major.sources, plain.sources), (major.demixing, plain.demixing)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5 * b.abs().max().item())


def test_ilrma_start_independent_of_dtype():
    """The NMF start is drawn in float64 and cast: complex64 and complex128 agree closely."""
    X = make_mixture(batch=(), n_src=2, seed=5)
    sep = ILRMA(n_iter=10, n_basis=2)
    s32 = sep.init_state(X.to(torch.complex64)).source
    s64 = sep.init_state(X).source
    torch.testing.assert_close(s32.basis.double(), s64.basis, rtol=1e-7, atol=0)
    Y32, Y64 = sep(X.to(torch.complex64)).sources, sep(X).sources
    err = (Y32.to(torch.complex128) - Y64).abs().pow(2).sum() / Y64.abs().pow(2).sum()
    assert err < 1e-6


def test_seeded_init_is_deterministic_and_global_rng_untouched():
    X = make_mixture(n_src=2, seed=0)
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    Y1 = ILRMA(n_iter=3, n_basis=2, seed=7)(X).sources
    assert torch.equal(before, torch.rand(1))  # the global RNG was not consumed
    torch.testing.assert_close(ILRMA(n_iter=3, n_basis=2, seed=7)(X).sources, Y1, rtol=0, atol=0)
    assert not torch.allclose(ILRMA(n_iter=3, n_basis=2, seed=8)(X).sources, Y1)


def test_frame_mask_equals_cropped_signal():
    X = make_mixture(batch=(2,), n_src=2, n_frames=60, seed=2)
    X[1, ..., 40:] = 0
    mask = torch.ones(2, 60, dtype=torch.bool)
    mask[1, 40:] = False
    for sep in (AuxIVA(n_iter=5), AuxIVA(n_iter=4, update="iss"), AuxIVA(n_iter=4, update="ip1")):
        Y = sep(X, frame_mask=mask).sources
        torch.testing.assert_close(
            Y[1][..., :40], sep(X[1, ..., :40]).sources, rtol=1e-7, atol=1e-10
        )
    Y = ILRMA(n_iter=5)(X, frame_mask=mask).sources  # the NMF start has 60 frames: only finite
    assert torch.isfinite(Y).all()


@pytest.mark.parametrize("dtype", [torch.complex64, torch.complex128])
@pytest.mark.parametrize("update", UPDATES)
def test_dtypes(dtype, update):
    X = make_mixture(n_src=2, dtype=dtype, seed=4)
    for model in MODELS:
        res = separator(update, model, n_iter=3)(X)
        assert res.sources.dtype == dtype and res.demixing.dtype == dtype
        assert torch.isfinite(res.sources).all()


# ------------------------------------------------------------------ overdetermined, scaling
def test_overdetermined_background_and_pca():
    X = make_mixture(n_src=2, n_mics=4, seed=5)
    for sep in (
        AuxIVA(n_iter=5, n_src=2, update="ip1"),
        AuxIVA(n_iter=5, n_src=2, update="ip2"),
        AuxIVA(n_iter=5, n_src=2, update="iss"),
        AuxIVA(n_iter=5, n_src=2, update="ip1", overdetermined="pca"),
        ILRMA(n_iter=5, n_src=2, n_basis=2),
    ):
        res = sep(X)
        assert res.sources.shape == (2, 2, 17, 64)
        assert res.demixing.shape == (2, 17, 4, 4)
        # the first n_src rows of the demixing give the (unscaled) sources from the mixture
        unscaled = sep(X, sep.init_state(X, demixing=res.state.demixing))
        plain = type(sep)(**_config(sep, n_iter=0), n_src=2, scaling=None,
                          overdetermined=sep.overdetermined)  # fmt: skip
        Y0 = plain(X, plain.init_state(X, demixing=res.state.demixing)).sources
        Ywx = torch.einsum("...fkm,...mft->...kft", res.demixing[..., :2, :], X)
        torch.testing.assert_close(Ywx, Y0, rtol=1e-8, atol=1e-10)
        assert torch.isfinite(unscaled.sources).all()
    with pytest.raises(ValueError, match="needs an update that supports it"):
        AuxIVA(update="iss", overdetermined="background")


@pytest.mark.parametrize("scaling", ["projection_back", "minimum_distortion"])
@pytest.mark.parametrize("ref_mic", [0, 1])
def test_scaling_reconstructs_reference_mic(scaling, ref_mic):
    """Determined case: the scaled images of all sources add up to the reference mic."""
    X = make_mixture(n_src=2, seed=6)
    Y = AuxIVA(n_iter=20, scaling=scaling, ref_mic=ref_mic)(X).sources
    if scaling == "minimum_distortion":  # exact: sum_k (W^-1)[ref, k] y_k = x_ref
        torch.testing.assert_close(Y.sum(-3), X[..., ref_mic, :, :], rtol=1e-8, atol=1e-9)
    else:  # least squares: close to x_ref for well separated sources
        err = (Y.sum(-3) - X[..., ref_mic, :, :]).abs().pow(2).sum()
        assert err / X[..., ref_mic, :, :].abs().pow(2).sum() < 0.05


@pytest.mark.filterwarnings("ignore:.*the demixing became singular")  # (degenerate on purpose)
def test_degenerate_inputs_are_finite():
    X = make_mixture(batch=(4,), n_src=3, seed=8)
    X[0, 1] = 0  # a silent mic
    X[1] = 0  # an all-zero mixture
    X[2, 2] = X[2, 0]  # a duplicated mic
    X[3, 1] *= 1e-5  # a mic 100 dB down
    for dtype in (torch.complex64, torch.complex128):
        for update in UPDATES:
            for model in MODELS:
                res = separator(update, model, n_iter=5)(X.to(dtype))
                assert torch.isfinite(res.sources).all(), (dtype, update, model)
                assert torch.isfinite(res.demixing).all(), (dtype, update, model)
                assert res.sources[1].abs().max() == 0  # silence in, silence out


# ------------------------------------------------------------------ source models
class TinyConvModel(SourceModel):
    """A neural source model: weights = 1 / softplus(conv(log |Y|^2)) (proves the hook)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv1d(1, 1, kernel_size=3, padding=1)

    def forward(self, Y, state=None, frame_mask=None):
        p = (Y.real**2 + Y.imag**2).mean(-2)  # (..., sources, frames)
        z = self.conv(torch.log(p + 1e-6).reshape(-1, 1, p.shape[-1])).reshape(p.shape)
        lam = nn.functional.softplus(z) * p.mean(-1, keepdim=True) + 1e-6
        return (1.0 / lam)[..., None, :], state


def test_neural_source_model_hook_gets_gradients():
    X = make_mixture(n_src=2, dtype=torch.complex64, seed=9)
    model = TinyConvModel()
    res = AuxIVA(n_iter=3, source_model=model, update="iss")(X)
    assert torch.isfinite(res.cost).all()  # default Gaussian cost of the base class
    res.sources.abs().pow(2).mean().backward()
    grad = model.conv.weight.grad
    assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_names_are_shorthands_for_the_classes_with_their_defaults():
    assert AuxIVA(update="ip2").update == IP2() and AuxIVA(update="ip1").update == IP1()
    assert AuxIVA(update="iss").update == ISS() and AuxIVA(update=IP1(load=0)).update.load == 0
    assert isinstance(AuxIVA(source_model="gauss").source_model, Gauss)
    assert isinstance(AuxIVA(source_model=Laplace()).source_model, Laplace)
    assert ILRMA().source_model.n_basis == NMF().n_basis  # NMF's own default
    assert ILRMA(n_basis=5).source_model.n_basis == 5
    assert "IP2" in repr(AuxIVA(update="ip2"))


# ------------------------------------------------------------------ gradients
@pytest.mark.parametrize("update", UPDATES)
@pytest.mark.parametrize("model", MODELS)
def test_gradcheck(update, model):
    X = make_mixture(batch=(), n_src=2, n_freq=3, n_frames=8, seed=10).requires_grad_(True)
    sep = separator(update, model, n_iter=2)
    assert torch.autograd.gradcheck(
        lambda x: sep(x).sources, (X,), eps=1e-6, atol=1e-5, rtol=1e-3, fast_mode=True
    )


def _unrolled_grads(n_mix, n_iter, checkpoint=False, update="ip1", model="laplace", seed=11,
                    dtype=torch.complex128):  # fmt: skip
    X = make_mixture(batch=(n_mix,), n_src=2, n_freq=9, n_frames=32, seed=seed)
    X[0, 1] = 0  # a silent mic
    X[1, 1] = X[1, 0]  # a duplicated mic
    X[2, 1] *= 1e-5  # a mic 100 dB down
    X = X.to(dtype).requires_grad_(True)
    sep = separator(update, model, n_iter=n_iter, checkpoint=checkpoint)
    sep(X).sources.abs().pow(2).sum().backward()
    return X.grad


@pytest.mark.filterwarnings("ignore:.*the demixing became singular")  # (degenerate on purpose)
@pytest.mark.parametrize("dtype", [torch.complex64, torch.complex128])
@pytest.mark.parametrize("update", UPDATES)
@pytest.mark.parametrize("model", MODELS)
def test_unrolled_gradients_finite_with_silent_duplicated_quiet_mics(update, model, dtype):
    g = _unrolled_grads(6, 20, update=update, model=model, dtype=dtype)
    assert torch.isfinite(g).all() and g.abs().sum() > 0


@pytest.mark.slow
@pytest.mark.parametrize(("update", "model"), [(u, m) for u in UPDATES for m in MODELS])
def test_unrolled_gradients_finite_100_mixtures(update, model):
    g = _unrolled_grads(100, 50, update=update, model=model)
    assert torch.isfinite(g).all()


@pytest.mark.parametrize("model", ["laplace", "nmf"])
def test_checkpoint_gives_identical_gradients(model):
    g0 = _unrolled_grads(3, 6, checkpoint=False, model=model)
    g1 = _unrolled_grads(3, 6, checkpoint=True, model=model)
    torch.testing.assert_close(g0, g1, rtol=1e-10, atol=1e-12)


# ------------------------------------------------------------------ bad input
def test_unknown_or_ignored_arguments_are_rejected():
    with pytest.raises(TypeError, match="n_itr"):
        AuxIVA(n_itr=5)
    with pytest.raises(ValueError, match=r"n_basis.*would be ignored"):
        ILRMA(n_basis=3, source_model=NMF(2))
    with pytest.raises(ValueError, match=r"eps', 'seed'.*would be ignored"):
        ILRMA(seed=1, eps=1e-9, source_model=NMF(2))
    with pytest.raises(TypeError, match="checkpoint must be True or False"):
        AuxIVA(checkpoint="yes")


@pytest.mark.filterwarnings("ignore:ComplexHalf support is experimental")
def test_bad_input_messages():
    X = make_mixture(n_src=2, seed=12)
    sep = AuxIVA(n_iter=1)
    with pytest.raises(ValueError, match="n_src=3 sources needs at least as many mics"):
        AuxIVA(n_src=3)(X)
    with pytest.raises(ValueError, match="at least 2 mics"):
        sep(X[:, :1])
    with pytest.raises(TypeError, match="complex STFT"):
        sep(X.real)
    with pytest.raises(TypeError, match="torch.Tensor"):
        sep(X.numpy())
    with pytest.raises(TypeError, match="complex32, which is not supported"):
        sep(X.to(torch.complex32))
    with pytest.raises(ValueError, match="swap the mics and freq"):
        sep(make_mixture(batch=(), n_src=2, n_freq=40, n_frames=64).transpose(-3, -2))
    with pytest.raises(ValueError, match="1 STFT frame.*signal is too short"):
        sep(X[..., :1])
    for empty in (ILRMA(n_iter=1), sep):  # no traceback from deep inside (the alignment)
        with pytest.raises(ValueError, match=r"0 frequency bins \(shape \(2, 2, 0, "):
            empty(X[..., :0, :])
        with pytest.raises(ValueError, match=r"holds no mixture: a leading \(batch\) dim"):
            empty(X[:0])
    bad = X.clone()
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN/inf"):
        sep(bad)
    with pytest.raises(ValueError, match="n_iter must be an integer >= 0"):
        AuxIVA(n_iter=-1)
    with pytest.raises(ValueError, match=r"unknown update 'ip3'.*'ip1', 'ip2', 'iss'"):
        AuxIVA(update="ip3")
    with pytest.raises(ValueError, match=r"unknown source_model 'cauchy'.*'gauss', 'laplace'"):
        AuxIVA(source_model="cauchy")
    with pytest.raises(ValueError, match=r"ref_mic must be in \[0, 2\)"):
        AuxIVA(ref_mic=2)(X)
    with pytest.raises(ValueError, match="ref_mic must be an integer >= 0"):
        AuxIVA(ref_mic=-1)
    with pytest.raises(ValueError, match="unknown scaling"):
        AuxIVA(scaling="peak")
    with pytest.raises(ValueError, match="frame_mask must have shape"):
        sep(X, frame_mask=torch.ones(2, 3))
    with pytest.raises(ValueError, match="demixing must have shape"):
        sep.init_state(X, demixing=torch.eye(3, dtype=X.dtype).expand(17, 3, 3))
    with pytest.raises(TypeError, match="IterativeState"):
        sep(X, {"W": 1})
    with pytest.raises(ValueError, match="NMFState has basis"):
        ILRMA(n_basis=2)(X, IterativeState(torch.eye(2, dtype=X.dtype).expand(2, 17, 2, 2),
                                           NMFState(torch.ones(2, 2, 17, 3),
                                                    torch.ones(2, 2, 3, 64))))  # fmt: skip


def test_divergence_is_reported_not_silent(data_dir):
    """An unloaded IP1 in complex64 loses precision on a real mixture (NaN after ~60
    iterations): the separator warns and says what to change; the loaded default does not."""
    from conftest import load_mixture

    from torchbss import STFT

    mix, _, _ = load_mixture("2x2_00")
    X = STFT(n_fft=2048, hop_length=512)(mix.float()).to(torch.complex64)
    with pytest.warns(RuntimeWarning, match=r"ILRMA diverged: .*IP1\(load=0\)"):
        ILRMA(n_iter=100, update=IP1(load=0.0), seed=0)(X)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Y = ILRMA(n_iter=100, update=IP1(), seed=0)(X).sources
    assert bool(torch.isfinite(torch.view_as_real(Y)).all())


def test_a_singular_demixing_is_reported(generator):
    """ISS in complex64 on two identical mics: finite sources, but |det W| = 0 (cost +inf), so
    no images or projection back; it passed without a word."""
    X = torch.randn(1, 9, 30, dtype=torch.complex64, generator=generator)
    with pytest.warns(RuntimeWarning, match="the demixing became singular"):
        AuxIVA(n_iter=5, update="iss")(torch.cat([X, X]))


def test_divergence_check_counts_the_mixtures_with_nan_or_inf():
    """The check after a separation (two reductions per mixture) finds a single NaN, +inf or
    -inf, in the real or the imaginary part, and counts the mixtures that hold one."""
    Y = torch.zeros(2, 3, 2, 5, 7, dtype=torch.complex64)
    Y[0, 1, 1, 3, 6] = complex(float("nan"), 0.0)
    Y[1, 0, 0, 0, 0] = complex(0.0, float("-inf"))
    Y[1, 2, 1, 4, 2] = complex(float("inf"), 1.0)
    result = SeparationResult(sources=Y, state=None, demixing=None)
    with pytest.warns(RuntimeWarning, match=r"in 3 of 6 mixture\(s\) \(torch.complex64"):
        AuxIVA()._checked(result, Y)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        AuxIVA()._checked(SeparationResult(sources=Y[0, ::2], state=None, demixing=None), Y)
    with pytest.warns(RuntimeWarning, match=r"in 1 of 2 mixture"):
        AuxIVA()._checked(SeparationResult(sources=Y[:, 2], state=None, demixing=None), Y)


def test_nmf_fused_update_equals_the_matmul_update(generator):
    """The compile-friendly NMF update (broadcast products, no in-place) is the eager one."""
    from torchbss.source_models.nmf import _fused_weights

    P = torch.rand(2, 3, 33, 40, generator=generator, dtype=torch.float64) ** 2
    model = NMF(n_basis=3)
    state = model.init_state(P)
    want_w, want = model.weights_from_power(P, state)
    got_w, basis, act = _fused_weights(P, state.basis, state.activations, None, model.eps)
    torch.testing.assert_close(got_w, want_w, rtol=1e-12, atol=0)
    torch.testing.assert_close(basis, want.basis, rtol=1e-12, atol=0)
    torch.testing.assert_close(act, want.activations, rtol=1e-12, atol=0)
    assert (want.basis - state.basis).abs().max() > 1e-2  # the update did change the bases


@pytest.mark.slow
def test_compiled_ilrma_equals_eager():
    """ILRMA(compile=True) (compiled NMF updates) gives the eager result (float64)."""
    X = make_mixture(seed=3)
    want = ILRMA(n_iter=15, n_basis=2, seed=0)(X)
    got = ILRMA(n_iter=15, n_basis=2, seed=0, compile=True)(X)
    torch.testing.assert_close(got.sources, want.sources, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(got.cost, want.cost, rtol=1e-9, atol=1e-9)


def test_compile_flag_is_checked():
    with pytest.raises(TypeError, match="compile"):
        ILRMA(compile=1)
    with pytest.raises(TypeError, match="compile"):
        NMF(compile="yes")
    with pytest.raises(ValueError, match="compile"):
        ILRMA(source_model=NMF(), compile=True)


@pytest.mark.parametrize(
    "make",
    [
        lambda: AuxIVA(n_iter=6, update="ip2", source_model="laplace"),  # packed, frame powers
        lambda: ILRMA(n_iter=6, n_basis=2, seed=0),  # packed, NMF powers (bases permuted)
        lambda: AuxIVA(n_iter=6, update="ip1", source_model="laplace", n_src=2),  # OverIVA loop
    ],
    ids=["auxiva-packed", "ilrma", "overiva-generic"],
)
def test_align_every_is_calls_of_that_many_iterations(make):
    """``align_every=k`` aligns inside the call exactly as calls of ``k`` iterations do (each
    ends with the alignment), and it did realign something here; without
    ``align_permutations`` it does nothing."""
    X = make_mixture(batch=(2,), n_src=3, n_frames=80, seed=11)
    with torch.no_grad():
        sep = make()
        sep.align_every = 3
        inside = sep(X)
        split = make()
        split.n_iter = 3
        first = split(X)
        calls = split(X, first.state)
        plain = make()(X)
        sep.align_permutations = False
        off = sep(X)
        plain_off = make()
        plain_off.align_permutations = False
    torch.testing.assert_close(inside.sources, calls.sources, rtol=1e-10, atol=0)
    torch.testing.assert_close(inside.demixing, calls.demixing, rtol=1e-10, atol=0)
    assert not torch.allclose(inside.sources, plain.sources)  # the mid-run alignment acted
    with torch.no_grad():
        torch.testing.assert_close(off.sources, plain_off(X).sources, rtol=0, atol=0)


def test_align_every_rejects_negative():
    with pytest.raises(ValueError, match="align_every"):
        AuxIVA(n_iter=2, align_every=-1)


def test_a_lazily_conjugated_input_is_resolved():
    """X.conj() (a conjugate bit, no copy) separates like its resolved copy, batch and online;
    the real views inside refused it with a traceback from deep inside."""
    from torchbss.separators import OnlineAuxIVA, OnlineILRMA

    g = torch.Generator().manual_seed(0)
    X = torch.randn(2, 33, 24, dtype=torch.complex64, generator=g).conj()
    assert X.is_conj()
    for sep in (AuxIVA(n_iter=3), ILRMA(n_iter=3), OnlineAuxIVA(), OnlineILRMA(n_freq=33)):
        assert torch.equal(sep(X).sources, sep(X.resolve_conj()).sources), type(sep).__name__


def test_frame_mask_values_and_valid_frames_are_checked():
    """frame_mask is a {0, 1} mask (NaN, -1 or complex values were used as weights: NaN
    sources or a cost that went up) with at least as many valid frames as mics per mixture
    (ILRMA went NaN on an all-masked item)."""
    g = torch.Generator().manual_seed(0)
    X = torch.randn(2, 2, 33, 40, dtype=torch.complex64, generator=g)
    for sep in (AuxIVA(n_iter=2), ILRMA(n_iter=2)):
        for mask in (
            torch.full((2, 40), float("nan")),
            -torch.ones(2, 40),
            0.5 * torch.ones(2, 40),
        ):
            with pytest.raises(ValueError, match="must hold only 0 and 1"):
                sep(X, frame_mask=mask)
        with pytest.raises(TypeError, match="bool or real"):
            sep(X, frame_mask=torch.ones(2, 40, dtype=torch.complex64))
        few = torch.ones(2, 40)
        few[1, 1:] = 0
        with pytest.raises(ValueError, match=r"fewer valid frames than mics \(2\).*index \[1\]"):
            sep(X, frame_mask=few)
        ok = torch.ones(2, 40, dtype=torch.int64)
        ok[0, 30:] = 0
        ref = sep(X, frame_mask=ok.bool()).sources
        torch.testing.assert_close(sep(X, frame_mask=ok).sources, ref)


def test_state_of_another_batch_is_refused_and_silent_input_gives_finite_neural_weights():
    """A state of another batch size failed deep inside (an expand); a silent source made the
    neural source model's weights overflow (inf, then NaN covariances and outputs)."""
    from torchbss.source_models import NeuralSourceModel

    g = torch.Generator().manual_seed(0)
    X = torch.randn(2, 2, 33, 40, dtype=torch.complex64, generator=g)
    state = AuxIVA(n_iter=1)(X).state
    with pytest.raises(ValueError, match="has another batch than the mixture"):
        AuxIVA(n_iter=1)(X[:1], state=state)
    model = NeuralSourceModel(n_freq=33)
    weights, _ = model(torch.zeros(1, 2, 33, 40, dtype=torch.complex64))
    assert bool(torch.isfinite(weights).all())
    sep = AuxIVA(n_iter=3, source_model=model, update="ip2")
    assert bool(sep(torch.zeros(1, 2, 33, 40, dtype=torch.complex64)).sources.isfinite().all())
    # the floor is far below any usual level: the same weights as without it
    Y = torch.randn(1, 2, 33, 40, dtype=torch.complex64, generator=g)
    lv = model.log_variance(Y)
    assert float(lv.detach().min()) > 0.5 * math.log(torch.finfo(torch.float32).tiny) + 10


def test_option_types_are_checked_when_given():
    """A string align_silence failed in a comparison; callback=5 only after an iteration."""
    with pytest.raises(TypeError, match="align_silence must be a number"):
        AuxIVA(align_silence="0.1")
    X = torch.randn(1, 2, 33, 40, dtype=torch.complex64)
    with pytest.raises(TypeError, match="callback must be callable"):
        AuxIVA(n_iter=2)(X, callback=5)
