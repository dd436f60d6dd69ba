"""Benchmark: BSS-Eval SDR of torchbss against fast_bss_eval (numpy, torch) and torchmetrics.

Two sources of 10 s at 16 kHz (``--quick``: 3 s, fewer repeats), filter length 512, float64 and
float32, with one thread and with the default thread count. Every (implementation, dtype,
threads) case runs in its own subprocess (thread settings, including numpy's BLAS, are fixed
before import, and a case that hangs or crashes is reported instead of stopping the run).

Tasks compared:
* ``full``: SDR, SIR, SAR and permutation (``torchbss.metrics.bss_eval_sdr`` vs
  ``fast_bss_eval.bss_eval_sources``);
* ``sdr``: SDR only with permutation (``compute_sir_sar=False`` vs ``fast_bss_eval.sdr``);
* ``sdr_fixed``: SDR only, estimate j against reference j (``compute_sir_sar=False,
  return_permutation=False`` vs ``torchmetrics.functional.audio.signal_distortion_ratio``).

``speedup`` = peer time / torchbss time for the same task, dtype and threads (> 1: torchbss
is faster). Run: ``python -m bench.bench_metrics [--quick]``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

SAMPLE_RATE = 16000
N_SOURCES = 2
FILTER_LENGTH = 512

IMPLEMENTATIONS = {
    # name: (task, library label)
    "torchbss_full": ("full", "torchbss"),
    "fbe_torch_full": ("full", "fast_bss_eval[torch]"),
    "fbe_numpy_full": ("full", "fast_bss_eval[numpy]"),
    "torchbss_sdr": ("sdr", "torchbss"),
    "fbe_torch_sdr": ("sdr", "fast_bss_eval[torch]"),
    "fbe_numpy_sdr": ("sdr", "fast_bss_eval[numpy]"),
    "torchbss_sdr_fixed": ("sdr_fixed", "torchbss"),
    "torchmetrics_sdr_fixed": ("sdr_fixed", "torchmetrics"),
}


def _signals(seconds: float, dtype_name: str):
    import torch

    gen = torch.Generator().manual_seed(0)
    n = int(seconds * SAMPLE_RATE)
    ref = torch.randn(N_SOURCES, n, generator=gen, dtype=torch.float64)
    mixing = torch.tensor([[0.2, 1.0], [1.0, 0.3]], dtype=torch.float64)
    est = mixing @ ref + 0.1 * torch.randn(N_SOURCES, n, generator=gen, dtype=torch.float64)
    dtype = getattr(torch, dtype_name)
    return ref.to(dtype), est.to(dtype)


def _worker(impl: str, dtype_name: str, threads: int, seconds: float, repeat: int) -> None:
    """Time one case in this (fresh) process and print a JSON line."""
    import torch

    if threads > 0:
        torch.set_num_threads(threads)
    from bench._common import time_fn
    from torchbss.metrics import bss_eval_sdr

    ref, est = _signals(seconds, dtype_name)
    ref_np, est_np = ref.numpy(), est.numpy()
    if impl.startswith("fbe"):
        import fast_bss_eval
    if impl == "torchbss_full":

        def fn():
            return bss_eval_sdr(ref, est, FILTER_LENGTH).sdr

    elif impl == "torchbss_sdr":

        def fn():
            return bss_eval_sdr(ref, est, FILTER_LENGTH, compute_sir_sar=False).sdr

    elif impl == "torchbss_sdr_fixed":

        def fn():
            return bss_eval_sdr(
                ref, est, FILTER_LENGTH, return_permutation=False, compute_sir_sar=False
            ).sdr

    elif impl == "fbe_torch_full":

        def fn():
            return fast_bss_eval.bss_eval_sources(ref, est, filter_length=FILTER_LENGTH)[0]

    elif impl == "fbe_numpy_full":

        def fn():
            return fast_bss_eval.bss_eval_sources(ref_np, est_np, filter_length=FILTER_LENGTH)[0]

    elif impl == "fbe_torch_sdr":

        def fn():
            return fast_bss_eval.sdr(ref, est, filter_length=FILTER_LENGTH)

    elif impl == "fbe_numpy_sdr":

        def fn():
            return fast_bss_eval.sdr(ref_np, est_np, filter_length=FILTER_LENGTH)

    elif impl == "torchmetrics_sdr_fixed":
        from torchmetrics.functional.audio import signal_distortion_ratio

        def fn():
            return signal_distortion_ratio(est, ref, filter_length=FILTER_LENGTH)

    else:
        raise ValueError(f"unknown implementation {impl!r}")
    seconds_taken = time_fn(fn, repeat=repeat, warmup=1)
    values = [float(v) for v in torch.as_tensor(fn()).reshape(-1)]
    print(json.dumps({"time_s": seconds_taken, "sdr": values, "threads": torch.get_num_threads()}))


def _run_case(impl, dtype_name, threads, seconds, repeat, timeout):
    env = dict(os.environ)
    if threads > 0:
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            env[var] = str(threads)
    cmd = [sys.executable, "-m", "bench.bench_metrics", "--worker", impl, "--dtype", dtype_name]
    cmd += ["--threads", str(threads), "--seconds", str(seconds), "--repeat", str(repeat)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout} s"}
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        return {"error": f"exit {proc.returncode}: {tail[0][:120]}"}
    return json.loads(lines[-1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 s signals, fewer repeats")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--dtype", default="float64", help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--seconds", type=float, default=10.0, help=argparse.SUPPRESS)
    parser.add_argument("--repeat", type=int, default=5, help=argparse.SUPPRESS)
    parser.add_argument(
        "--timeout",
        type=float,
        default=None,
        help="per-case limit in seconds (default 30, 20 with --quick); fast_bss_eval[torch] and "
        "torchmetrics can hang with several MKL threads in torch 2.13 (torch.linalg.solve)",
    )
    parser.add_argument(
        "--thread-counts",
        default="1,default",
        help="comma-separated torch thread counts; 'default' = os.cpu_count()",
    )
    args = parser.parse_args(argv)
    if args.worker:
        _worker(args.worker, args.dtype, args.threads, args.seconds, args.repeat)
        return

    from bench._common import machine_info, print_table, write_json

    seconds = 3.0 if args.quick else 10.0
    repeat = 2 if args.quick else 5
    timeout = args.timeout or (20.0 if args.quick else 30.0)
    default_threads = os.cpu_count() or 1
    counts = [t.strip() for t in args.thread_counts.split(",")]
    thread_counts = sorted({default_threads if t == "default" else int(t) for t in counts})
    rows = []
    for dtype_name in ("float64", "float32"):
        for threads in thread_counts:
            results = {
                impl: _run_case(impl, dtype_name, threads, seconds, repeat, timeout)
                for impl in IMPLEMENTATIONS
            }
            for impl, (task, library) in IMPLEMENTATIONS.items():
                res = results[impl]
                own = results[f"torchbss_{task}"]
                row = {
                    "task": task,
                    "library": library,
                    "dtype": dtype_name,
                    "threads": threads,
                    "time_ms": "",
                    "speedup": "",
                    "max_abs_sdr_diff_db": "",
                    "note": res.get("error", ""),
                }
                if "time_s" in res:
                    row["time_ms"] = 1e3 * res["time_s"]
                    if "time_s" in own:
                        row["speedup"] = res["time_s"] / own["time_s"]
                        diffs = [abs(a - b) for a, b in zip(res["sdr"], own["sdr"])]
                        row["max_abs_sdr_diff_db"] = max(diffs) if diffs else ""
                rows.append(row)
    print(
        f"\nbss_eval_sdr: {N_SOURCES} sources x {seconds:g} s at {SAMPLE_RATE} Hz, "
        f"filter_length={FILTER_LENGTH}; speedup = peer time / torchbss time\n"
    )
    print_table(rows)
    path = write_json(
        "bench_metrics",
        {
            "quick": args.quick,
            "signal_seconds": seconds,
            "sample_rate": SAMPLE_RATE,
            "n_sources": N_SOURCES,
            "filter_length": FILTER_LENGTH,
            "repeat": repeat,
            "default_threads": default_threads,
            "rows": rows,
            "worker_machine": machine_info(),
        },
    )
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
