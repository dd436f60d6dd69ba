"""Run every benchmark module in turn, each in its own subprocess, and print a summary.

``python -m bench.run_all [--quick] [--only NAME ...] [--timeout SECONDS]`` runs
``python -m bench.<name> [--quick]`` for each module of :data:`BENCHMARKS` (in that order),
streaming its output. A benchmark that fails or times out is reported in the summary and the
run goes on with the next one; the exit status is 1 if any failed. Each benchmark writes its
own ``bench/results/<name>.json``; this script writes ``bench/results/run_all.json`` with the
status and duration of each.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

from bench._common import print_table, write_json

BENCHMARKS = (
    "bench_metrics",
    "bench_chunked",
    "bench_batch",
    "bench_quality",
    "bench_online",
    "bench_online_profile",
)
ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"


def run_one(name: str, quick: bool, timeout: float | None) -> dict:
    """Run ``python -m bench.<name>``; return its status, exit code and duration."""
    cmd = [sys.executable, "-m", f"bench.{name}"] + (["--quick"] if quick else [])
    print(f"\n===== {' '.join(cmd[1:])} =====", flush=True)
    start = time.perf_counter()
    try:
        code = subprocess.run(cmd, cwd=ROOT, timeout=timeout).returncode
        status = "ok" if code == 0 else "failed"
    except subprocess.TimeoutExpired:
        code, status = None, f"timed out after {timeout:g} s"
    except OSError as exc:  # e.g. the interpreter cannot be started
        code, status = None, f"could not start: {exc}"
    seconds = time.perf_counter() - start
    result = RESULTS / f"{name}.json"
    return {
        "benchmark": name,
        "status": status,
        "exit_code": code,
        "seconds": round(seconds, 1),
        "results": str(result.relative_to(ROOT)) if status == "ok" and result.exists() else "",
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="pass --quick to every benchmark")
    parser.add_argument(
        "--only",
        nargs="+",
        choices=BENCHMARKS,
        metavar="NAME",
        help=f"run only these benchmarks (from: {', '.join(BENCHMARKS)})",
    )
    parser.add_argument(
        "--timeout", type=float, default=None, help="per-benchmark limit in seconds (default: none)"
    )
    args = parser.parse_args(argv)
    names = [n for n in BENCHMARKS if args.only is None or n in args.only]
    rows = [run_one(name, args.quick, args.timeout) for name in names]
    print("\n## benchmark summary\n")
    print_table(rows)
    write_json("run_all", {"quick": args.quick, "runs": rows})
    failed = [r["benchmark"] for r in rows if r["status"] != "ok"]
    if failed:
        print(f"\n{len(failed)} of {len(rows)} benchmark(s) failed: {', '.join(failed)}")
        return 1
    print(f"\nall {len(rows)} benchmark(s) ran")
    return 0


if __name__ == "__main__":
    sys.exit(main())
