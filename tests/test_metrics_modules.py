"""Tests of the accumulating metric modules (torchbss.metrics.modules, torchmetrics based)."""

from __future__ import annotations

import importlib
import sys

import pytest
import torch
from conftest import single_threaded

import torchbss.metrics as metrics
from torchbss.metrics import (
    apply_permutation,
    bleedless,
    bss_eval_sdr,
    framewise_si_sdr,
    framewise_summary,
    fullness,
    l1_freq,
    sdr,
    sdr_improvement,
    si_sdr,
    si_sdr_improvement,
)

tm = pytest.importorskip("torchmetrics")
tm_audio = pytest.importorskip("torchmetrics.functional.audio")

FS = 1000  # a low sample rate keeps the frame-wise and spectral cases small


def _batches(seed: int = 0, n_batches: int = 3, batch: int = 2, n_src: int = 2, n: int = 2500):
    """(reference, estimate, mixture) batches; estimates are noisy and in reversed order."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n_batches):
        ref = torch.randn(batch, n_src, n, generator=gen, dtype=torch.float64)
        mix = torch.stack([ref.sum(1), ref[:, 0] - 0.5 * ref[:, 1]], dim=1)
        noise = torch.randn(batch, n_src, n, generator=gen, dtype=torch.float64)
        est = (ref + 0.2 * ref.roll(1, dims=1) + 0.3 * noise).flip(1)
        out.append((ref, est, mix))
    return out


def _concat(batches):
    return tuple(torch.cat(parts) for parts in zip(*batches))


def _aligned(ref, est):
    """Estimates in reference order (they are built reversed)."""
    return est.flip(-2)


# Each case: module factory, expected per-signal values from the functions on the whole data
# (estimates already aligned), whether update takes the mixture.
CASES = {
    "sdr": (lambda pit: metrics.SDR(permutation_invariant=pit), lambda r, e, m: sdr(r, e), False),
    "si_sdr": (
        lambda pit: metrics.SISDR(zero_mean=True, permutation_invariant=pit),
        lambda r, e, m: si_sdr(r, e, zero_mean=True),
        False,
    ),
    "si_sdr_improvement": (
        lambda pit: metrics.SISDRImprovement(ref_mic=1, permutation_invariant=pit),
        lambda r, e, m: si_sdr_improvement(r, e, m, ref_mic=1),
        True,
    ),
    "sdr_improvement": (
        lambda pit: metrics.SDRImprovement(permutation_invariant=pit),
        lambda r, e, m: sdr_improvement(r, e, m),
        True,
    ),
    "bss_eval_sdr_improvement": (
        lambda pit: metrics.SDRImprovement(
            metric="bss_eval_sdr", filter_length=32, permutation_invariant=pit
        ),
        lambda r, e, m: sdr_improvement(r, e, m, metric="bss_eval_sdr", filter_length=32),
        True,
    ),
    "l1_freq": (
        lambda pit: metrics.L1Freq(n_fft=256, hop_length=64, permutation_invariant=pit),
        lambda r, e, m: l1_freq(r, e, 256, 64),
        False,
    ),
    "bleedless": (
        lambda pit: metrics.Bleedless(
            FS, n_fft=256, hop_length=64, n_mels=32, permutation_invariant=pit
        ),
        lambda r, e, m: bleedless(r, e, FS, n_fft=256, hop_length=64, n_mels=32),
        False,
    ),
    "fullness": (
        lambda pit: metrics.Fullness(
            FS, n_fft=256, hop_length=64, n_mels=32, permutation_invariant=pit
        ),
        lambda r, e, m: fullness(r, e, FS, n_fft=256, hop_length=64, n_mels=32),
        False,
    ),
}


@pytest.mark.parametrize("pit", [False, True])
@pytest.mark.parametrize("name", list(CASES))
def test_accumulation_equals_metric_on_concatenation(name, pit):
    make, expected_fn, with_mixture = CASES[name]
    batches = _batches()
    metric = make(pit)
    for ref, est, mix in batches:
        if not pit:
            est = _aligned(ref, est)
        if with_mixture:
            metric.update(ref, est, mix)
        else:
            metric.update(ref, est)
    ref, est, mix = _concat(batches)
    expected = expected_fn(ref, _aligned(ref, est), mix).mean()
    torch.testing.assert_close(metric.compute().double(), expected, rtol=1e-5, atol=1e-5)
    # a second metric over the concatenation agrees too, and reset() forgets everything
    whole = make(pit)
    args = (ref, est if pit else _aligned(ref, est)) + ((mix,) if with_mixture else ())
    whole.update(*args)
    torch.testing.assert_close(whole.compute(), metric.compute(), rtol=1e-5, atol=1e-5)
    metric.reset()
    assert int(metric.count) == 0


def test_without_permutation_the_order_matters():
    ref, est, _ = _concat(_batches())
    fixed, invariant = metrics.SISDR(), metrics.SISDR(permutation_invariant=True)
    fixed.update(ref, est)
    invariant.update(ref, est)
    assert float(fixed.compute()) < 0 < 5 < float(invariant.compute())


@pytest.mark.parametrize("pit", [False, True])
def test_bss_eval_module_accumulates(pit):
    batches = _batches(n=1500)
    metric = metrics.BSSEvalSDR(filter_length=32, permutation_invariant=pit)
    for ref, est, _ in batches:
        metric.update(ref, est if pit else _aligned(ref, est))
    ref, est, _ = _concat(batches)
    want = bss_eval_sdr(ref, est, filter_length=32)
    assert want.permutation.tolist() == [[1, 0]] * len(ref)
    got = metric.compute()
    assert set(got) == {"sdr", "sir", "sar"}
    for key in got:
        torch.testing.assert_close(got[key].double(), getattr(want, key).mean(), rtol=1e-5, atol=0)
    sdr_only = metrics.BSSEvalSDR(filter_length=32, compute_sir_sar=False)
    sdr_only.update(ref, _aligned(ref, est))
    assert set(sdr_only.compute()) == {"sdr"}


@pytest.mark.parametrize("pit", [False, True])
def test_framewise_module_accumulates(pit):
    batches = _batches()
    for ref, _, _ in batches:
        ref[0, 0, 1000:] = 0.0  # silent in its second half (frames 4..8): undefined there
    metric = metrics.FramewiseSISDR(FS, window_s=0.5, hop_s=0.25, permutation_invariant=pit)
    for ref, est, _ in batches:
        metric.update(ref, est if pit else _aligned(ref, est))
    ref, est, _ = _concat(batches)
    frames = framewise_si_sdr(ref, _aligned(ref, est), FS, window_s=0.5, hop_s=0.25)
    summary = framewise_summary(*frames)
    got = metric.compute()
    for key, value in summary._asdict().items():
        torch.testing.assert_close(got[key].double(), value.nanmean(), rtol=1e-5, atol=1e-5)
    assert int(metric.second_half_mean_count) == ref.shape[0] * ref.shape[1] - len(batches)
    assert int(metric.mean_count) == ref.shape[0] * ref.shape[1]


def test_parity_with_torchmetrics_modules():
    """Same batches into torchbss and torchmetrics modules give the same means."""
    batches = _batches(n=1200)
    ours = {
        "si_sdr": metrics.SISDR(),
        "snr": metrics.SDR(),
        "sdr": metrics.BSSEvalSDR(compute_sir_sar=False),
        "pit": metrics.SISDR(permutation_invariant=True),
    }
    theirs = {
        "si_sdr": tm.audio.ScaleInvariantSignalDistortionRatio().double(),
        "snr": tm.audio.SignalNoiseRatio(),
        "sdr": tm.audio.SignalDistortionRatio(),
        "pit": tm.audio.PermutationInvariantTraining(
            tm_audio.scale_invariant_signal_distortion_ratio,
            mode="speaker-wise",
            eval_func="max",
        ),
    }
    with single_threaded():  # torchmetrics' SDR: see single_threaded
        for ref, est, _ in batches:
            aligned = _aligned(ref, est)
            for key in ("si_sdr", "snr", "sdr"):
                ours[key].update(ref, aligned)
                theirs[key].update(aligned, ref)  # torchmetrics: (preds, target)
            ours["pit"].update(ref, est)
            theirs["pit"].update(est, ref)
    for key in ours:
        got = ours[key].compute()
        got = got["sdr"] if isinstance(got, dict) else got
        want = theirs[key].compute()
        torch.testing.assert_close(got.double(), want.double(), rtol=1e-5, atol=1e-5, msg=key)
    # and the functional values, batch by batch
    ref, est, _ = batches[0]
    aligned = _aligned(ref, est)
    metric = metrics.SISDR()
    torch.testing.assert_close(
        metric(ref, aligned).double(),
        tm_audio.scale_invariant_signal_distortion_ratio(aligned, ref).mean(),
    )


def test_forward_returns_batch_value_and_accumulates():
    batches = _batches()
    metric = metrics.SISDR(permutation_invariant=True)
    values = [metric(ref, est) for ref, est, _ in batches]
    for (ref, est, _), value in zip(batches, values):
        want = si_sdr(ref, _aligned(ref, est)).mean()
        torch.testing.assert_close(value.double(), want, rtol=1e-5, atol=1e-5)
    ref, est, _ = _concat(batches)
    want = si_sdr(ref, _aligned(ref, est)).mean()
    torch.testing.assert_close(metric.compute().double(), want, rtol=1e-5, atol=1e-5)


def test_forward_is_differentiable():
    ref, est, _ = _batches(n_batches=1)[0]
    est = est.clone().requires_grad_(True)
    value = metrics.SISDR(permutation_invariant=True)(ref, est)
    value.backward()
    assert torch.isfinite(est.grad).all() and est.grad.abs().sum() > 0


def test_merge_state_is_the_ddp_reduction():
    """merge_state applies each state's dist_reduce_fx: halves merged == whole."""
    batches = _batches(n_batches=4)
    for make in (
        lambda: metrics.SISDR(permutation_invariant=True),
        lambda: metrics.BSSEvalSDR(filter_length=16, permutation_invariant=True),
        lambda: metrics.FramewiseSISDR(FS, permutation_invariant=True),
    ):
        first, second, whole = make(), make(), make()
        for i, (ref, est, _) in enumerate(batches):
            (first if i % 2 else second).update(ref, est)
            whole.update(ref, est)
        first.merge_state(second)
        got, want = first.compute(), whole.compute()
        if isinstance(want, dict):
            for key in want:
                torch.testing.assert_close(got[key], want[key])
        else:
            torch.testing.assert_close(got, want)


def _ddp_worker(rank: int, world_size: int, init_file: str, queue) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    batches = _batches(n_batches=4)
    metric = metrics.SISDR(permutation_invariant=True)
    bss = metrics.BSSEvalSDR(filter_length=16, permutation_invariant=True)
    for ref, est, _ in batches[rank::world_size]:
        metric.update(ref, est)
        bss.update(ref, est)
    queue.put((rank, float(metric.compute()), {k: float(v) for k, v in bss.compute().items()}))
    dist.barrier()
    dist.destroy_process_group()


@pytest.mark.slow
def test_ddp_two_processes(tmp_path):
    """Under DDP (2 CPU processes, gloo) every rank computes the mean over all the data."""
    import torch.multiprocessing as mp

    ctx = mp.get_context("spawn")
    queue = ctx.SimpleQueue()
    mp.spawn(_ddp_worker, args=(2, str(tmp_path / "init"), queue), nprocs=2, join=True)
    results = sorted(queue.get() for _ in range(2))
    ref, est, _ = _concat(_batches(n_batches=4))
    want = float(si_sdr(ref, _aligned(ref, est)).mean())
    want_bss = bss_eval_sdr(ref, est, filter_length=16)
    for _, value, bss in results:
        assert abs(value - want) < 1e-4
        assert abs(bss["sir"] - float(want_bss.sir.mean())) < 1e-4


def test_import_without_torchmetrics(monkeypatch):
    """torchbss.metrics imports without torchmetrics; the module classes then say what to do."""
    import torchbss

    monkeypatch.setitem(sys.modules, "torchmetrics", None)  # makes `import torchmetrics` fail
    for name in list(sys.modules):
        if name == "torchbss.metrics" or name.startswith("torchbss.metrics."):
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setattr(torchbss, "metrics", torchbss.metrics)  # restored after the test
    fresh = importlib.import_module("torchbss.metrics")
    assert fresh is not metrics
    ref = torch.randn(2, 100)
    torch.testing.assert_close(fresh.si_sdr(ref, ref), si_sdr(ref, ref))
    assert "torchbss.metrics.modules" not in sys.modules
    with pytest.raises(ImportError, match=r"torchbss\[train\]"):
        fresh.SISDR  # noqa: B018
    with pytest.raises(AttributeError, match="no attribute 'NotAMetric'"):
        fresh.NotAMetric  # noqa: B018
    namespace: dict = {}
    exec("from torchbss.metrics import *", namespace)
    assert "compute_metrics" in namespace and "SISDR" not in namespace


def test_lazy_names_resolve_to_the_module_classes():
    from torchbss.metrics import modules

    for name in metrics.MODULE_METRICS:
        assert getattr(metrics, name) is getattr(modules, name)
        assert issubclass(getattr(metrics, name), tm.Metric)
        assert name in dir(metrics)


def test_bad_arguments():
    with pytest.raises(ValueError, match="Unexpected keyword arguments"):
        metrics.SISDR(zero_man=True)
    with pytest.raises(TypeError, match="permutation_invariant must be True or False"):
        metrics.SDR(permutation_invariant=1)
    with pytest.raises(ValueError, match="needs metric='bss_eval_sdr'"):
        metrics.SDRImprovement(filter_length=256)
    with pytest.raises(ValueError, match="unknown metric"):
        metrics.SDRImprovement(metric="pesq")
    with pytest.raises(ValueError, match="sample_rate must be a positive"):
        metrics.FramewiseSISDR(0)
    metric = metrics.SISDRImprovement(ref_mic=2)
    ref, est, mix = _batches(n_batches=1)[0]
    with pytest.raises(ValueError, match=r"ref_mic must be an integer in \[0, 2\)"):
        metric.update(ref, est, mix)
    with pytest.raises(ValueError, match="at least 2 dimensions"):
        metrics.SISDR(permutation_invariant=True).update(ref[0, 0], est[0, 0])
    with pytest.raises(ValueError, match="same shape"):
        metrics.SISDR().update(ref, est[..., :-1])


def test_aligned_helper_matches_permutation():
    ref, est, _ = _batches(n_batches=1)[0]
    perm = torch.tensor([[1, 0], [1, 0]])
    torch.testing.assert_close(apply_permutation(est, perm), _aligned(ref, est))
