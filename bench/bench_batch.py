"""Speed of batch AuxIVA-IP1 and ILRMA-IP1 vs pyroomacoustics, torchiva and ssspy; batch throughput.

Run ``python -m bench.bench_batch [--quick]``; writes ``bench/results/bench_batch.json``.

1. Speed: every implementation separates the same mixtures (speech mixtures 2x2_00, 2x2_01 and
   3x3_00, 8 s each; STFT periodic Hann 2048 / hop 512 at 16 kHz, complex64 input) with the
   same number of iterations (AuxIVA 50, ILRMA 100; ``--quick``: 10 / 20 on 4 s of 2x2_00),
   the IP1 update, identity initial demixing, the spherical Laplace model ``G(r) = r``
   (ssspy's ``2 r`` only rescales the demixing rows) or NMF with 2 bases, and a scaling to
   the reference mic 0:

   - torchbss: ``AuxIVA(n_iter)``, ``ILRMA(n_iter, n_basis=2)``;
   - pyroomacoustics: ``bss.auxiva(X, n_iter=n_iter)``, ``bss.ilrma(X, n_iter=n_iter,
     n_components=2)`` (``X`` as ``(frames, freq, mics)``);
   - torchiva: ``AuxIVA_IP(n_iter, n_src, model=LaplaceModel())`` and
     ``AuxIVA_IP(n_iter, n_src, model=NMFModel(n_basis=2))`` (its ILRMA-IP);
   - ssspy: ``AuxLaplaceIVA(spatial_algorithm="IP1")``, ``GaussILRMA(n_basis=2,
     spatial_algorithm="IP1")``, both with ``record_loss=False``.

   Each call is timed (wall clock and process CPU time) with the implementations interleaved
   (round robin, ``repeat`` rounds, median per mixture, summed over mixtures), so a change of
   load on a shared machine hits all of them alike. ``x_<peer>`` = peer time / torchbss time
   (> 1: torchbss is faster). Inputs are converted to each library's layout before timing.
   Note: ssspy always builds its demixing matrices in complex128, so it computes in double
   precision whatever the input.
2. Throughput of torchbss AuxIVA (and torchiva, which also takes batches) on a batch of 16 and
   64 mixtures in one call vs one call per mixture (mixtures per second). The batch holds the
   2x2 mixtures, each copy circularly shifted by a different number of frames.
3. Activation memory saved by per-iteration checkpointing in a backward pass.

Parts 1 and 2 run in one subprocess per thread setting (1 thread, and the library default),
with ``OMP_NUM_THREADS``/``MKL_NUM_THREADS``/``OPENBLAS_NUM_THREADS`` set before import so that
numpy's BLAS is limited too.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import types
from collections.abc import Callable
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from bench._common import machine_info, print_table, write_json
from torchbss.separators import ILRMA, AuxIVA

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "mixtures"
N_FFT, HOP = 2048, 512
N_BASIS = 2
PEERS = ("pyroomacoustics", "torchiva", "ssspy")
MIX_2X2 = ["2x2_00", "2x2_01", "2x2_02", "2x2_03"]
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def _load(name: str, frames: int | None = None) -> torch.Tensor:
    """Mixture STFT ``(mics, freq, frames)`` complex64 (the first ``frames`` frames if given)."""
    mix, _ = sf.read(DATA / f"{name}_mix.flac", always_2d=True, dtype="float32")
    x = torch.from_numpy(mix.T.copy())
    win = torch.hann_window(N_FFT, periodic=True)
    X = torch.stft(x, N_FFT, HOP, window=win, return_complex=True)
    return X[..., :frames].contiguous() if frames else X


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


def _implementations(algo: str, n_iter: int) -> tuple[dict[str, Impl], dict[str, str]]:
    """Implementations of ``algo`` ('auxiva' or 'ilrma') that can be imported, and the errors."""
    impls: dict[str, Impl] = {}
    errors: dict[str, str] = {}

    def ours_run(sep):
        def run(X):
            with torch.inference_mode():
                return sep(X)

        return run

    if algo == "auxiva":
        impls["torchbss"] = (lambda X: X, ours_run(AuxIVA(n_iter=n_iter)))
    else:
        impls["torchbss"] = (lambda X: X, ours_run(ILRMA(n_iter=n_iter, n_basis=N_BASIS)))

    try:
        import pyroomacoustics as pra

        def pra_input(X):
            return np.ascontiguousarray(X.permute(2, 1, 0).numpy())  # (frames, freq, mics)

        if algo == "auxiva":
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
            model = tiva.LaplaceModel() if algo == "auxiva" else tiva.NMFModel(n_basis=N_BASIS)
            sep = tiva.AuxIVA_IP(n_iter=n_iter, n_src=X.shape[-3], model=model, proj_back_mic=0)
            with torch.inference_mode():
                return sep(X)

        impls["torchiva"] = (lambda X: X, tiva_run)
    except Exception as exc:  # optional peer: any import problem is reported, not raised
        errors["torchiva"] = f"{type(exc).__name__}: {exc}"

    try:
        from ssspy.bss.ilrma import GaussILRMA
        from ssspy.bss.iva import AuxLaplaceIVA

        def ssspy_run(X):
            if algo == "auxiva":
                sep = AuxLaplaceIVA(spatial_algorithm="IP1", record_loss=False)
            else:
                sep = GaussILRMA(
                    n_basis=N_BASIS,
                    spatial_algorithm="IP1",
                    record_loss=False,
                    rng=np.random.default_rng(0),
                )
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
    names: list[str], iters: dict[str, int], repeat: int, frames: int | None = None
) -> list[dict]:
    """Rows of total seconds per implementation and ratios, for the current thread setting."""
    mixtures = {name: _load(name, frames) for name in names}
    rows = []
    for algo, n_iter in iters.items():
        impls, errors = _implementations(algo, n_iter)
        wall: dict[str, float] = dict.fromkeys(impls, 0.0)
        cpu: dict[str, float] = dict.fromkeys(impls, 0.0)
        excerpt = next(iter(mixtures.values()))[..., :64]
        for lib, (prepare, run) in list(impls.items()):  # warm-up on an excerpt
            try:
                run(prepare(excerpt))
            except Exception as exc:  # a peer failing must not stop the benchmark
                errors[lib] = f"{type(exc).__name__}: {exc}"[:120]
                del impls[lib]
        for X in mixtures.values():
            inputs = {lib: prepare(X) for lib, (prepare, _) in impls.items()}
            samples: dict[str, list[tuple[float, float]]] = {lib: [] for lib in impls}
            for _ in range(repeat):  # round robin, so load changes hit every library alike
                for lib, (_, run) in impls.items():
                    samples[lib].append(_timed(lambda run=run, x=inputs[lib]: run(x)))
            for lib, values in samples.items():
                wall[lib] += statistics.median(v[0] for v in values)
                cpu[lib] += statistics.median(v[1] for v in values)
        row: dict[str, object] = {
            "threads": torch.get_num_threads(),
            "algorithm": f"{algo} ({n_iter} it)",
            "torchbss_s": wall["torchbss"],
        }
        for peer in PEERS:
            if peer in impls:
                row[f"{peer}_s"] = wall[peer]
                row[f"x_{peer}"] = wall[peer] / wall["torchbss"]
                row[f"x_{peer}_cpu"] = cpu[peer] / cpu["torchbss"]
            else:
                row[f"{peer}_s"] = "n/a"
                row[f"{peer}_error"] = errors.get(peer, "unavailable")
        row["torchbss_cpu_s"] = cpu["torchbss"]
        rows.append(row)
    return rows


def _batch(n: int, frames: int | None = None) -> torch.Tensor:
    """``(n, 2, freq, frames)``: the 2x2 mixtures, each copy shifted by a different frame count."""
    base = [_load(name, frames) for name in MIX_2X2]
    frames = min(X.shape[-1] for X in base)
    items = [base[i % len(base)][..., :frames].roll(3 * i, dims=-1) for i in range(n)]
    return torch.stack(items)


def batch_rows(sizes: list[int], n_iter: int, frames: int | None = None) -> list[dict]:
    """Mixtures per second of one batched call vs one call per mixture (AuxIVA-IP1)."""
    rows = []
    ours = AuxIVA(n_iter=n_iter)
    try:
        tiva = _import_torchiva()
        theirs = tiva.AuxIVA_IP(n_iter=n_iter, n_src=2, model=tiva.LaplaceModel())
    except Exception:  # optional peer
        theirs = None
    with torch.inference_mode():
        ours(_batch(1, frames))  # warm-up
        for n in sizes:
            X = _batch(n, frames)
            t_batch, _ = _timed(lambda X=X: ours(X))
            t_loop, _ = _timed(lambda X=X: [ours(x) for x in X])
            row = {
                "threads": torch.get_num_threads(),
                "batch": n,
                "n_iter": n_iter,
                "batched_s": t_batch,
                "one_by_one_s": t_loop,
                "mixtures_per_s_batched": n / t_batch,
                "mixtures_per_s_one_by_one": n / t_loop,
                "batch_speedup": t_loop / t_batch,
            }
            if theirs is not None:
                t_tiva, _ = _timed(lambda X=X: theirs(X))
                row["torchiva_batched_mixtures_per_s"] = n / t_tiva
                row["x_torchiva_batched"] = t_tiva / t_batch
            rows.append(row)
            del X
    return rows


def checkpoint_memory(n_iter: int) -> dict:
    """Peak saved-activation bytes of a backward pass with and without checkpointing."""
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
            Y = AuxIVA(n_iter=n_iter, checkpoint=ckpt)(Xg)
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
        }
    return {
        "names": ["2x2_00", "2x2_01", "3x3_00"],
        "frames": None,
        "iters": {"auxiva": 50, "ilrma": 100},
        "repeat": 2,
        "sizes": [16, 64],
        "batch_iter": 50,
    }


def _worker(quick: bool, threads: int) -> None:
    if threads > 0:
        torch.set_num_threads(threads)
    cfg = _config(quick)
    result = {
        "speed": speed_rows(cfg["names"], cfg["iters"], cfg["repeat"], cfg["frames"]),
        "batch": batch_rows(cfg["sizes"], cfg["batch_iter"], cfg["frames"]),
        "machine": machine_info(),
    }
    print(json.dumps(result, default=str))


def _run_worker(quick: bool, threads: int, timeout: float) -> dict:
    env = dict(os.environ)
    for var in THREAD_VARS:
        if threads > 0:
            env[var] = str(threads)
        else:
            env.pop(var, None)
    cmd = [sys.executable, "-m", "bench.bench_batch", "--worker", "--threads", str(threads)]
    cmd += ["--quick"] if quick else []
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
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
        "--timeout", type=float, default=None, help="per thread setting, seconds (default 1500)"
    )
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        _worker(args.quick, args.threads)
        return

    cfg = _config(args.quick)
    timeout = args.timeout or (300.0 if args.quick else 1500.0)
    load_before = _load_average()
    speed, batch, errors, workers = [], [], {}, {}
    for threads in (1, 0):  # 0: library default
        label = "1" if threads else "default"
        out = _run_worker(args.quick, threads, timeout)
        if "error" in out:
            errors[label] = out["error"]
            print(f"threads={label}: {out['error']}", file=sys.stderr)
            continue
        speed += out["speed"]
        batch += out["batch"]
        workers[label] = out["machine"]
    load_after = _load_average()

    print(
        f"## AuxIVA / ILRMA speed, total over {len(cfg['names'])} mixture(s), STFT {N_FFT}/{HOP}, "
        "complex64 (x_peer = peer time / torchbss time; > 1: torchbss faster)\n"
    )
    columns = ["threads", "algorithm", "torchbss_s"]
    columns += [f"{p}_s" for p in PEERS] + [f"x_{p}" for p in PEERS]
    print_table(speed, columns)
    length = f"{cfg['frames'] * HOP / 16000:.0f} s" if cfg["frames"] else "8 s"
    print(f"\n## AuxIVA-IP1 throughput: one batched call vs one per mixture (2x2, {length})\n")
    print_table(batch)
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
            "speed": speed,
            "batch": batch,
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
