"""Speed of batch AuxIVA (IP1, IP2, ISS) and ILRMA vs peers and the previous implementation;
batch throughput; the FLOP and memory floors of AuxIVA-IP1.

Run ``python -m bench.bench_batch [--quick] [--previous REV]``; writes
``bench/results/bench_batch.json`` and prints markdown tables.

1. Speed: every implementation separates the same mixtures (speech mixtures 2x2_00, 2x2_01 and
   3x3_00, 8 s each; STFT periodic Hann 2048 / hop 512 at 16 kHz, complex64 input) with the
   same number of iterations (AuxIVA 50, ILRMA 100; ``--quick``: 10 / 20 on 4 s of 2x2_00),
   identity initial demixing, the spherical Laplace model ``G(r) = r`` (ssspy's ``2 r`` only
   rescales the demixing rows) or NMF with 2 bases, and a scaling to the reference mic 0:

   - torchbss: ``AuxIVA(n_iter, update=..., source_model="laplace", track_cost=False)``,
     ``ILRMA(n_iter, n_basis=2, track_cost=False)`` (IP1): the peers' work (they compute no
     cost per iteration unless asked); row ``ilrma-ip1-compile``: the same with
     ``compile=True`` (compiled NMF updates; compiled during the untimed warm-up);
   - previous: the same calls on torchbss as of commit ``--previous`` (default
     :data:`PREVIOUS_REV`, the implementation before the memory-hierarchy rework), imported in
     the same process under the name ``torchbss_prev``;
   - pyroomacoustics: ``bss.auxiva`` (IP1: its only update, also the reference of the IP2 and
     ISS rows) and ``bss.ilrma(n_components=2)``;
   - torchiva: ``AuxIVA_IP`` / ``AuxIVA_IP2`` (2 channels only) / ``T_ISS`` with
     ``LaplaceModel()``, and ``AuxIVA_IP`` with ``NMFModel(n_basis=2)`` (its ILRMA-IP);
   - ssspy: ``AuxLaplaceIVA(spatial_algorithm="IP1" / "IP2" / "ISS")`` and
     ``GaussILRMA(n_basis=2, spatial_algorithm="IP1")``, ``record_loss=False``.

   Each call is timed (wall clock and process CPU time) with the implementations interleaved
   (round robin, ``repeat`` rounds, median per mixture), so a change of load on a shared
   machine hits all of them alike. ``x_<peer>`` = peer time / torchbss time over the mixtures
   both ran (> 1: torchbss is faster). Inputs are converted to each library's layout before
   timing. ssspy builds its demixing matrices in complex128 whatever the input.
2. Throughput of AuxIVA (IP1 and the default IP2) on a batch of 16 and 64 mixtures in one call
   vs one call per mixture (mixtures per second, interleaved, best of ``repeat``). The batch
   holds the 2x2 mixtures, each copy circularly shifted by a different number of frames; the
   8 s mixtures (with torchiva's batched call) and their first :data:`SHORT` frames (~2 s: on
   CPU several such mixtures share a cache-sized chunk, ``cpu_chunk_bytes``).
3. The floors of AuxIVA-IP1 on 2x2_00 (8 s, 50 iterations): the arithmetic it cannot avoid
   (counted below, :func:`flop_floor`) at the measured single-thread SGEMM rate, and the bytes
   it must stream per iteration at the measured streaming rate of a GEMM over data that does
   not fit in cache.
4. Activation memory saved by per-iteration checkpointing in a backward pass.

Parts 1-3 run in one subprocess per thread setting (1 thread by default), with
``OMP_NUM_THREADS``/``MKL_NUM_THREADS``/``OPENBLAS_NUM_THREADS`` set before import so that
numpy's BLAS is limited too.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import types
from collections.abc import Callable
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from bench._common import machine_info, print_table, write_json

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "mixtures"
N_FFT, HOP = 2048, 512
N_BASIS = 2
#: torchbss before the memory-hierarchy rework (issue 15): the "previous implementation"
PREVIOUS_REV = "a36d12cf753af0335b40229affe9db4a242994d4"
PEERS = ("previous", "pyroomacoustics", "torchiva", "ssspy")
MIX_2X2 = ["2x2_00", "2x2_01", "2x2_02", "2x2_03"]
#: frames of the short mixtures of the batch throughput rows (~2 s, four per CPU chunk at 2x2)
SHORT = 63
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def separate(separator: Callable, X: torch.Tensor) -> torch.Tensor:
    """The one adapter to the separator contract: the separated sources of ``separator(X)``."""
    out = separator(X)
    return getattr(out, "sources", out)


def _load(name: str, frames: int | None = None) -> torch.Tensor:
    """Mixture STFT ``(mics, freq, frames)`` complex64 (the first ``frames`` frames if given)."""
    mix, _ = sf.read(DATA / f"{name}_mix.flac", always_2d=True, dtype="float32")
    x = torch.from_numpy(mix.T.copy())
    win = torch.hann_window(N_FFT, periodic=True)
    X = torch.stft(x, N_FFT, HOP, window=win, return_complex=True)
    return X[..., :frames].contiguous() if frames else X


def import_previous(rev: str) -> types.ModuleType:
    """torchbss as of git ``rev``, importable next to the current one as ``torchbss_prev``.

    The package is extracted with ``git archive`` into a temporary folder and every
    ``torchbss`` identifier in its sources is renamed, so both versions run in one process.
    """
    if "torchbss_prev" in sys.modules:
        return sys.modules["torchbss_prev"]
    folder = Path(tempfile.mkdtemp(prefix="torchbss_prev_"))
    archive = subprocess.run(
        ["git", "archive", rev, "torchbss"], cwd=ROOT, capture_output=True, check=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)
    src, dst = folder / "torchbss", folder / "torchbss_prev"
    src.rename(dst)
    pattern = re.compile(r"\btorchbss\b")
    for path in dst.rglob("*.py"):
        path.write_text(pattern.sub("torchbss_prev", path.read_text()))
    sys.path.insert(0, str(folder))
    return importlib.import_module("torchbss_prev")


def _import_torchiva():
    """torchiva 0.1.1, with a stub ``torchaudio`` (imported at import time, unused here)."""
    if "torchaudio" not in sys.modules:
        transforms = types.ModuleType("torchaudio.transforms")
        transforms.MelScale = type("MelScale", (), {})  # only referenced by its neural models
        stub = types.ModuleType("torchaudio")
        stub.transforms = transforms
        sys.modules["torchaudio"] = stub
        sys.modules["torchaudio.transforms"] = transforms
    import torchiva

    return torchiva


# An implementation: prepare(X) -> input in the library's layout (untimed), run(input) (timed).
Impl = tuple[Callable[[torch.Tensor], object], Callable[[object], object]]
#: algorithm -> (torchbss constructor name, keyword arguments, number of iterations key)
#: the peers' work: the Laplace model (not the Gauss default) and no cost per iteration (the
#: peers do not compute it unless asked; ssspy runs with ``record_loss=False``)
#: and no frequency-permutation alignment (the peers have none)
SAME_WORK = {"track_cost": False, "align_permutations": False}
ALGORITHMS = {
    "auxiva-ip1": ("AuxIVA", {"update": "ip1", "source_model": "laplace", **SAME_WORK}, "auxiva"),
    "auxiva-ip2": ("AuxIVA", {"update": "ip2", "source_model": "laplace", **SAME_WORK}, "auxiva"),
    "auxiva-iss": ("AuxIVA", {"update": "iss", "source_model": "laplace", **SAME_WORK}, "auxiva"),
    "ilrma-ip1": ("ILRMA", {"update": "ip1", "n_basis": N_BASIS, **SAME_WORK}, "ilrma"),
    # the same with the NMF updates compiled (NMF(compile=True); compiled in the warm-up)
    "ilrma-ip1-compile": (
        "ILRMA",
        {"update": "ip1", "n_basis": N_BASIS, "compile": True, **SAME_WORK},
        "ilrma",
    ),
}


def make_separator(package: types.ModuleType, name: str, n_iter: int, kwargs: dict):
    """``package.separators.<name>(n_iter, **kwargs)``, leaving out the arguments an older
    implementation does not take (``align_permutations`` came at stop 22)."""
    cls = getattr(package.separators, name)
    if "align_permutations" not in inspect.signature(cls).parameters:
        kwargs = {k: v for k, v in kwargs.items() if k != "align_permutations"}
    return cls(n_iter=n_iter, **kwargs)


def _torchbss_run(package: types.ModuleType, algo: str, n_iter: int) -> Callable:
    name, kwargs, _ = ALGORITHMS[algo]
    sep = make_separator(package, name, n_iter, kwargs)

    def run(X):
        with torch.inference_mode():
            return separate(sep, X)

    return run


def _implementations(
    algo: str, n_iter: int, previous: str | None
) -> tuple[dict[str, Impl], dict[str, str]]:
    """Implementations of ``algo`` that can be imported, and the errors of those that cannot."""
    import torchbss

    impls: dict[str, Impl] = {"torchbss": (lambda X: X, _torchbss_run(torchbss, algo, n_iter))}
    errors: dict[str, str] = {}
    if previous:
        try:
            run_previous = _torchbss_run(import_previous(previous), algo, n_iter)
            impls["previous"] = (lambda X: X, run_previous)
        except Exception as exc:  # no git, unknown revision: reported, not raised
            errors["previous"] = f"{type(exc).__name__}: {exc}"[:200]
    try:
        import pyroomacoustics as pra

        def pra_input(X):
            return np.ascontiguousarray(X.permute(2, 1, 0).numpy())  # (frames, freq, mics)

        if algo.startswith("auxiva"):
            impls["pyroomacoustics"] = (pra_input, lambda X: pra.bss.auxiva(X, n_iter=n_iter))
        else:
            impls["pyroomacoustics"] = (
                pra_input,
                lambda X: pra.bss.ilrma(X, n_iter=n_iter, n_components=N_BASIS),
            )
    except ImportError as exc:
        errors["pyroomacoustics"] = f"not installed ({exc})"
    try:
        tiva = _import_torchiva()

        def tiva_run(X):
            if algo.startswith("ilrma-ip1"):
                sep = tiva.AuxIVA_IP(
                    n_iter=n_iter, n_src=X.shape[-3], model=tiva.NMFModel(n_basis=N_BASIS)
                )
            elif algo == "auxiva-ip1":
                sep = tiva.AuxIVA_IP(n_iter=n_iter, n_src=X.shape[-3], model=tiva.LaplaceModel())
            elif algo == "auxiva-ip2":
                sep = tiva.AuxIVA_IP2(n_iter=n_iter, model=tiva.LaplaceModel())
            else:
                sep = tiva.T_ISS(n_iter=n_iter, model=tiva.LaplaceModel())
            with torch.inference_mode():
                return sep(X)

        impls["torchiva"] = (lambda X: X, tiva_run)
    except Exception as exc:  # optional peer: any import problem is reported, not raised
        errors["torchiva"] = f"{type(exc).__name__}: {exc}"
    try:
        from ssspy.bss.ilrma import GaussILRMA
        from ssspy.bss.iva import AuxLaplaceIVA

        def ssspy_run(X):
            if algo.startswith("ilrma-ip1"):
                sep = GaussILRMA(
                    n_basis=N_BASIS,
                    spatial_algorithm="IP1",
                    record_loss=False,
                    rng=np.random.default_rng(0),
                )
            else:
                spatial = {"auxiva-ip1": "IP1", "auxiva-ip2": "IP2", "auxiva-iss": "ISS"}[algo]
                sep = AuxLaplaceIVA(spatial_algorithm=spatial, record_loss=False)
            return sep(X, n_iter=n_iter)

        impls["ssspy"] = (lambda X: np.ascontiguousarray(X.numpy()), ssspy_run)
    except ImportError as exc:
        errors["ssspy"] = f"not installed ({exc})"
    return impls, errors


def _timed(fn: Callable[[], object]) -> tuple[float, float]:
    cpu, wall = time.process_time(), time.perf_counter()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def speed_rows(
    names: list[str],
    iters: dict[str, int],
    repeat: int,
    frames: int | None = None,
    previous: str | None = None,
) -> list[dict]:
    """Rows of total seconds per implementation and ratios, for the current thread setting."""
    mixtures = {name: _load(name, frames) for name in names}
    rows = []
    for algo in ALGORITHMS:
        n_iter = iters[ALGORITHMS[algo][2]]
        impls, errors = _implementations(algo, n_iter, previous)
        excerpt = next(iter(mixtures.values()))[..., :64]
        # warm-up on an excerpt; a compiled variant also on every input shape (compilation is
        # not what its row measures)
        shapes = list(mixtures.values()) if algo.endswith("-compile") else []
        for lib, (prepare, run) in list(impls.items()):
            try:
                for X in [excerpt] + (shapes if lib == "torchbss" else []):
                    run(prepare(X))
            except Exception as exc:  # a peer failing must not stop the benchmark
                errors[lib] = f"{type(exc).__name__}: {exc}"[:160]
                del impls[lib]
        # per mixture: median wall / cpu seconds of each implementation that ran on it
        wall: dict[str, dict[str, float]] = {lib: {} for lib in impls}
        cpu: dict[str, dict[str, float]] = {lib: {} for lib in impls}
        for name, X in mixtures.items():
            inputs = {lib: prepare(X) for lib, (prepare, _) in impls.items()}
            samples: dict[str, list[tuple[float, float]]] = {lib: [] for lib in impls}
            for _ in range(repeat):  # round robin, so load changes hit every library alike
                for lib, (_, run) in impls.items():
                    if lib in samples:
                        try:
                            samples[lib].append(_timed(lambda run=run, x=inputs[lib]: run(x)))
                        except Exception as exc:  # e.g. torchiva's IP2 on 3 channels
                            errors[lib] = f"{name}: {type(exc).__name__}: {exc}"[:160]
                            del samples[lib]
            for lib, values in samples.items():
                wall[lib][name] = statistics.median(v[0] for v in values)
                cpu[lib][name] = statistics.median(v[1] for v in values)
        ours = wall["torchbss"]
        row: dict[str, object] = {
            "threads": torch.get_num_threads(),
            "algorithm": f"{algo} ({n_iter} it)",
            "torchbss_s": sum(ours.values()),
            "torchbss_cpu_s": sum(cpu["torchbss"].values()),
        }
        for peer in PEERS:
            common = [n for n in ours if n in wall.get(peer, {})]
            if not common:
                row[f"{peer}_s"] = "n/a"
                row[f"{peer}_error"] = errors.get(peer, "not run")
                continue
            row[f"{peer}_s"] = sum(wall[peer].values())
            row[f"x_{peer}"] = sum(wall[peer][n] for n in common) / sum(ours[n] for n in common)
            row[f"x_{peer}_cpu"] = sum(cpu[peer][n] for n in common) / sum(
                cpu["torchbss"][n] for n in common
            )
            if len(common) < len(ours):
                row[f"{peer}_mixtures"] = common
                row[f"{peer}_error"] = errors.get(peer, "")
        row["per_mixture_s"] = {lib: wall[lib] for lib in wall}
        rows.append(row)
    return rows


def _batch(n: int, frames: int | None = None) -> torch.Tensor:
    """``(n, 2, freq, frames)``: the 2x2 mixtures, each copy shifted by a different frame count."""
    base = [_load(name, frames) for name in MIX_2X2]
    frames = min(X.shape[-1] for X in base)
    items = [base[i % len(base)][..., :frames].roll(3 * i, dims=-1) for i in range(n)]
    return torch.stack(items)


def batch_rows(
    sizes: list[int],
    n_iter: int,
    repeat: int,
    frames: int | None = None,
    peers: bool = True,
) -> list[dict]:
    """Mixtures per second of one batched call vs one call per mixture (AuxIVA IP1 and IP2);
    ``peers``: torchiva's batched call too (minutes for a batch of 64)."""
    import torchbss

    rows = []
    tiva = None
    if peers:
        try:
            tiva = _import_torchiva()
        except Exception:  # optional peer
            pass
    for update in ("ip1", "ip2"):
        ours = torchbss.separators.AuxIVA(
            n_iter=n_iter, update=update, source_model="laplace", **SAME_WORK
        )
        theirs = None
        if tiva is not None:
            cls = tiva.AuxIVA_IP if update == "ip1" else tiva.AuxIVA_IP2
            kwargs = {"n_src": 2} if update == "ip1" else {}
            theirs = cls(n_iter=n_iter, model=tiva.LaplaceModel(), **kwargs)
        with torch.inference_mode():
            separate(ours, _batch(2, frames))  # warm-up
            for n in sizes:
                X = _batch(n, frames)
                batched, loop, tiva_t = [], [], []
                for _ in range(repeat):  # interleaved
                    batched.append(_timed(lambda X=X, s=ours: separate(s, X)))
                    loop.append(_timed(lambda X=X, s=ours: [separate(s, x) for x in X]))
                    if theirs is not None:
                        tiva_t.append(_timed(lambda X=X, s=theirs: s(X)))
                t_batch = min(v[0] for v in batched)
                t_loop = min(v[0] for v in loop)
                c_batch = min(v[1] for v in batched)
                c_loop = min(v[1] for v in loop)
                row = {
                    "threads": torch.get_num_threads(),
                    "update": update,
                    "seconds": round(X.shape[-1] * HOP / 16000),
                    "batch": n,
                    "n_iter": n_iter,
                    "batched_s": t_batch,
                    "one_by_one_s": t_loop,
                    "mixtures_per_s_batched": n / t_batch,
                    "mixtures_per_s_one_by_one": n / t_loop,
                    "batch_speedup": t_loop / t_batch,
                    "batch_speedup_cpu": c_loop / c_batch,
                }
                if tiva_t:
                    t_tiva = min(v[0] for v in tiva_t)
                    row["torchiva_batched_mixtures_per_s"] = n / t_tiva
                    row["x_torchiva_batched"] = t_tiva / t_batch
                rows.append(row)
                del X
    return rows


def flop_floor(n_mics: int, n_freq: int, n_frames: int, n_iter: int) -> dict:
    """The arithmetic and the streamed bytes AuxIVA-IP1 (Laplace) cannot avoid.

    Per iteration, with ``K = M`` sources, ``C = M^2`` real numbers per packed Hermitian outer
    product and ``F T`` time-frequency points:

    * weighted covariances ``V_k = 1/T sum_t phi_kt x x^H``: ``K C F T`` real multiply-adds
      (Hermitian symmetry counted; the real weights make each entry a real dot product);
    * frame powers ``sum_f |y_kft|^2`` for the weights: ``K C F T`` multiply-adds as a
      quadratic form of the outer products (``Y = W X`` would be ``4 K M F T``: more);
    * the per-frequency IP1 updates: ``O(K M^3 F)``, negligible (< 1 %).

    So ``4 K M^2 F T`` FLOP per iteration, plus ``6 M^2 F T`` once for the outer products.
    (The issue's own estimate, ~1.2 GFLOP for 2x2 8 s 50 iterations, counts complex
    covariances and ``Y = W X``; it is reported next to this count.) The memory floor: the
    packed outer products must be read by both products every iteration, in float64 (exact
    for the powers, :func:`torchbss.updates.covariance.packed_output_power`; the covariances
    read the same copy), i.e. ``16 C F T`` bytes per iteration; at the rate of main memory
    (``memory_floor``) or, as they fit there, of the cache (``cache_floor``).
    """
    K, C = n_mics, n_mics * n_mics
    flop = n_iter * 4 * K * C * n_freq * n_frames + 6 * C * n_freq * n_frames
    return {
        "flop": flop,
        "bytes_per_iteration": 16 * C * n_freq * n_frames,
        "bytes": n_iter * 16 * C * n_freq * n_frames,
        "issue_flop_estimate": 1.2e9,
    }


def _rates() -> dict:
    """Single-thread SGEMM rate (2048^3) and streaming rate of a skinny GEMM over 256 MB."""
    a = torch.randn(2048, 2048)
    a @ a
    start = time.perf_counter()
    for _ in range(3):
        a @ a
    gflops = 3 * 2 * 2048**3 / (time.perf_counter() - start) / 1e9
    big = torch.randn(64 * 4100, 251)  # not cache resident: 263 MB
    w = torch.rand(2, 251)
    w @ big.mT
    start = time.perf_counter()
    for _ in range(3):
        w @ big.mT
    stream = 3 * big.numel() * 4 / (time.perf_counter() - start) / 1e9
    small = torch.randn(4100, 251, dtype=torch.float64)  # 8 MB: the products of 2x2 8 s
    coef = torch.rand(2, 4100, dtype=torch.float64)
    coef @ small
    start = time.perf_counter()
    for _ in range(20):
        coef @ small
    cache = 20 * small.numel() * 8 / (time.perf_counter() - start) / 1e9
    return {"sgemm_gflops": gflops, "stream_gb_per_s": stream, "cache_gb_per_s": cache}


def floor_rows(speed: list[dict]) -> list[dict]:
    """AuxIVA-IP1 on 2x2_00: the measured time against the FLOP and memory floors."""
    import torchbss

    X = _load("2x2_00")
    M, F, T = X.shape
    n_iter = 50
    sep = torchbss.separators.AuxIVA(
        n_iter=n_iter, update="ip1", source_model="laplace", **SAME_WORK
    )
    with torch.inference_mode():
        separate(sep, X)
        times = [_timed(lambda: separate(sep, X)) for _ in range(5)]
    measured = min(t[0] for t in times)
    measured_cpu = min(t[1] for t in times)
    rates = _rates()
    floor = flop_floor(M, F, T, n_iter)
    flop_s = floor["flop"] / (rates["sgemm_gflops"] * 1e9)
    issue_s = floor["issue_flop_estimate"] / (rates["sgemm_gflops"] * 1e9)
    mem_s = floor["bytes"] / (rates["stream_gb_per_s"] * 1e9)
    cache_s = floor["bytes"] / (rates["cache_gb_per_s"] * 1e9)
    return [
        {
            "case": "AuxIVA-IP1 2x2_00 8 s 50 it",
            "measured_s": measured,
            "measured_cpu_s": measured_cpu,
            "flop": floor["flop"],
            "sgemm_gflops": rates["sgemm_gflops"],
            "flop_floor_s": flop_s,
            "x_flop_floor": measured / flop_s,
            "issue_flop_floor_s": issue_s,
            "x_issue_flop_floor": measured / issue_s,
            "stream_gb_per_s": rates["stream_gb_per_s"],
            "memory_floor_s": mem_s,
            "x_memory_floor": measured / mem_s,
            "cache_gb_per_s": rates["cache_gb_per_s"],
            "cache_floor_s": cache_s,
            "x_cache_floor": measured / cache_s,
        }
    ]


def checkpoint_memory(n_iter: int) -> dict:
    """Peak saved-activation bytes of a backward pass with and without checkpointing."""
    import torchbss

    X = _load("2x2_00")[:, :257]

    def run(ckpt: bool) -> int:
        live: list[int] = []
        peak = 0

        def pack(t):
            nonlocal peak
            live.append(t.numel() * t.element_size())
            peak = max(peak, sum(live))
            return t

        Xg = X.clone().requires_grad_(True)
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            Y = separate(torchbss.separators.AuxIVA(n_iter=n_iter, checkpoint=ckpt), Xg)
        Y.abs().pow(2).sum().backward()
        return peak

    full, ckpt = run(False), run(True)
    return {
        "n_iter": n_iter,
        "saved_bytes": full,
        "saved_bytes_checkpoint": ckpt,
        "saving": full / max(ckpt, 1),
    }


def _config(quick: bool) -> dict:
    if quick:
        return {
            "names": ["2x2_00"],
            "frames": 128,  # 4 s
            "iters": {"auxiva": 10, "ilrma": 20},
            "repeat": 1,
            "sizes": [4],
            "batch_iter": 10,
            "batch_repeat": 1,
        }
    return {
        "names": ["2x2_00", "2x2_01", "3x3_00"],
        "frames": None,
        "iters": {"auxiva": 50, "ilrma": 100},
        "repeat": 3,
        "sizes": [16, 64],
        "batch_iter": 50,
        "batch_repeat": 2,
    }


def _worker(quick: bool, threads: int, previous: str | None) -> None:
    if threads > 0:
        torch.set_num_threads(threads)
    cfg = _config(quick)
    result = {
        "speed": speed_rows(cfg["names"], cfg["iters"], cfg["repeat"], cfg["frames"], previous),
        "batch": batch_rows(cfg["sizes"], cfg["batch_iter"], cfg["batch_repeat"], cfg["frames"]),
        "machine": machine_info(),
    }
    if not quick:  # short mixtures, several per cache-sized chunk (torchiva left out: slow)
        short = batch_rows(cfg["sizes"], cfg["batch_iter"], cfg["batch_repeat"], SHORT, False)
        result["batch"] += short
    result["floor"] = floor_rows(result["speed"]) if not quick else []
    print(json.dumps(result, default=str))


def _run_worker(quick: bool, threads: int, timeout: float, previous: str | None) -> dict:
    env = dict(os.environ)
    for var in THREAD_VARS:
        if threads > 0:
            env[var] = str(threads)
        else:
            env.pop(var, None)
    cmd = [sys.executable, "-m", "bench.bench_batch", "--worker", "--threads", str(threads)]
    cmd += ["--quick"] if quick else []
    cmd += ["--previous", previous or ""]
    try:
        proc = subprocess.run(
            cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT
        )
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout} s"}
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:] or ["no output"]
        return {"error": f"exit {proc.returncode}: {' | '.join(tail)[:300]}"}
    return json.loads(lines[-1])


def _load_average() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one mixture, few iterations")
    parser.add_argument(
        "--timeout", type=float, default=None, help="per thread setting, seconds (default 3000)"
    )
    parser.add_argument(
        "--previous",
        default=PREVIOUS_REV,
        help="git revision of the previous implementation ('' to skip)",
    )
    parser.add_argument(
        "--thread-settings",
        default="1",
        help="comma-separated torch thread counts to run (0: library default), e.g. '1,0'",
    )
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        _worker(args.quick, args.threads, args.previous or None)
        return

    cfg = _config(args.quick)
    timeout = args.timeout or (600.0 if args.quick else 3000.0)
    load_before = _load_average()
    speed, batch, floor, errors, workers = [], [], [], {}, {}
    for threads in (int(t) for t in args.thread_settings.split(",")):
        label = str(threads) if threads else "default"
        out = _run_worker(args.quick, threads, timeout, args.previous or None)
        if "error" in out:
            errors[label] = out["error"]
            print(f"threads={label}: {out['error']}", file=sys.stderr)
            continue
        speed += out["speed"]
        batch += out["batch"]
        floor += out["floor"]
        workers[label] = out["machine"]
    load_after = _load_average()

    print(
        f"## AuxIVA / ILRMA speed, total over {len(cfg['names'])} mixture(s), STFT {N_FFT}/{HOP}, "
        "complex64 (x_peer = peer time / torchbss time over the mixtures both ran; > 1: "
        "torchbss faster; wall clock, CPU-time ratios in the JSON)\n"
    )
    columns = ["threads", "algorithm", "torchbss_s"]
    columns += [f"{p}_s" for p in PEERS] + [f"x_{p}" for p in PEERS]
    print_table(speed, columns)
    print("\nCPU-time ratios:\n")
    print_table(speed, ["threads", "algorithm", "torchbss_cpu_s"] + [f"x_{p}_cpu" for p in PEERS])
    length = f"{cfg['frames'] * HOP / 16000:.0f} s" if cfg["frames"] else "8 s"
    short = "" if args.quick else " and 2 s"
    print(f"\n## AuxIVA throughput: one batched call vs one per mixture (2x2, {length}{short})\n")
    print_table(batch)
    if floor:
        print("\n## AuxIVA-IP1 against its floors (see flop_floor)\n")
        print_table(floor)
    mem = checkpoint_memory(10 if args.quick else 50)
    print(
        f"\ncheckpointing ({mem['n_iter']} it, 257 bins): saved activations "
        f"{mem['saved_bytes'] / 1e6:.1f} MB -> {mem['saved_bytes_checkpoint'] / 1e6:.1f} MB "
        f"({mem['saving']:.1f}x less)"
    )
    print(f"load average before / after: {load_before} / {load_after}")
    path = write_json(
        "bench_batch",
        {
            "quick": args.quick,
            "config": {**cfg, "n_fft": N_FFT, "hop": HOP, "n_basis": N_BASIS},
            "previous_rev": args.previous,
            "speed": speed,
            "batch": batch,
            "floor": floor,
            "checkpoint_memory": mem,
            "worker_machine": workers,
            "errors": errors,
            "load_average_before_after": [load_before, load_after],
            "time": time.strftime("%Y-%m-%d %H:%M:%S"),
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
