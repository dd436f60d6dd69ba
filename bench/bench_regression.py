"""Speed of this checkout against a previous commit, measured in one run (interleaved).

``python -m bench.bench_regression --base REV [--repeat 5] [--quick]`` extracts commit ``REV``
(default: :data:`DEFAULT_BASE`, the last commit of the previous stop) with ``git archive`` into a
temporary folder and times the same workloads with both implementations, alternating
previous/current in fresh subprocesses (one thread each), so that load changes on a shared
machine hit both alike. Reports the median time per workload and the ratio previous/current
(> 1: the current code is faster). Writes ``bench/results/bench_regression.json``.

Workloads (8 s at 16 kHz, STFT 2048/512, complex64, real speech of ``shared/data``):
batch AuxIVA IP1 / IP2 (50 it, 2x2 and 3x3), ILRMA (2 bases, 100 it, IP1, no warm start,
2x2), AuxIVA ISS (50 it, 3x3); online AuxIVA / ILRMA per frame, 2x2 and 4x4 (random STFT frames).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from bench._common import print_table, write_json

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_BASE = "55fa7b7"

WORKER = r"""
import json, sys, time, torch
torch.set_num_threads(1)
root, name = sys.argv[1], sys.argv[2]
sys.path.insert(0, root)
import torchbss
assert torchbss.__file__.startswith(root), torchbss.__file__
import soundfile as sf

def load(mix):
    x, _ = sf.read(f"{DATA}/mixtures/{mix}_mix.flac", dtype="float32", always_2d=True)
    w = torch.hann_window(2048, periodic=True)
    return torch.stft(torch.from_numpy(x.T.copy()), 2048, 512, window=w, return_complex=True)

def build(cls, **kw):
    try:
        return cls(**kw)
    except TypeError:  # an argument the other implementation does not know
        kw.pop("init_iter", None)
        return cls(**kw)

def batch(sep, X):
    if hasattr(sep, "align_permutations"):  # the previous implementation's work (no alignment)
        sep.align_permutations = False
    sep(X)  # warm-up
    t0 = time.perf_counter()
    sep(X)
    return time.perf_counter() - t0

def online(sep, mics):
    g = torch.Generator().manual_seed(0)
    X = torch.randn(1, mics, 1025, 64, dtype=torch.complex64, generator=g)
    state = sep.init_state(X)
    out = sep.step(X[..., :8], state)
    state = out[1] if isinstance(out, tuple) else out.state
    t0 = time.perf_counter()
    sep.step(X[..., 8:], state)
    return (time.perf_counter() - t0) / 56

from torchbss import AuxIVA, ILRMA, OnlineAuxIVA, OnlineILRMA
with torch.no_grad():
    if name == "auxiva_ip1_2x2":
        t = batch(AuxIVA(n_iter=50, update="ip1"), load("2x2_00"))
    elif name == "auxiva_ip2_2x2":
        t = batch(AuxIVA(n_iter=50, update="ip2"), load("2x2_00"))
    elif name == "auxiva_ip1_3x3":
        t = batch(AuxIVA(n_iter=50, update="ip1"), load("3x3_00"))
    elif name == "auxiva_ip2_3x3":
        t = batch(AuxIVA(n_iter=50, update="ip2"), load("3x3_00"))
    elif name == "ilrma_2x2":
        t = batch(build(ILRMA, n_iter=100, n_basis=2, update="ip1", init_iter=0), load("2x2_00"))
    elif name == "auxiva_iss_3x3":
        t = batch(AuxIVA(n_iter=50, update="iss"), load("3x3_00"))
    elif name.startswith("online_auxiva"):
        mics = int(name[-1])
        t = online(OnlineAuxIVA(n_src=mics), mics)
    elif name.startswith("online_ilrma"):
        mics = int(name[-1])
        t = online(OnlineILRMA(n_src=mics, n_freq=1025), mics)
print(json.dumps({"seconds": t}))
"""

WORKLOADS = (
    "auxiva_ip1_2x2",
    "auxiva_ip2_2x2",
    "ilrma_2x2",
    "auxiva_iss_3x3",
    "auxiva_ip1_3x3",
    "auxiva_ip2_3x3",
    "online_auxiva_2",
    "online_auxiva_4",
    "online_ilrma_2",
    "online_ilrma_4",
)


def _time(root: Path, name: str, data: Path) -> float:
    code = WORKER.replace("{DATA}", str(data))
    out = subprocess.run(
        [sys.executable, "-c", code, str(root), name],
        capture_output=True, text=True, check=True, env={"OMP_NUM_THREADS": "1", "PATH": ""},
    )  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])["seconds"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default=DEFAULT_BASE, help="previous commit (%(default)s)")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="two workloads, two repeats")
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    parser.add_argument("--only", nargs="+", default=None, help="workload name prefixes")
    args = parser.parse_args(argv)
    workloads = WORKLOADS[:1] + WORKLOADS[6:7] if args.quick else WORKLOADS
    if args.only:
        workloads = [w for w in workloads if any(w.startswith(o) for o in args.only)]
    repeat = 2 if args.quick else args.repeat
    rev = subprocess.run(["git", "rev-parse", "--short", args.base], cwd=ROOT, text=True,
                         capture_output=True, check=True).stdout.strip()  # fmt: skip
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, text=True,
                          capture_output=True, check=True).stdout.strip()  # fmt: skip
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        prev = Path(tmp) / "prev"
        prev.mkdir()
        archive = subprocess.run(["git", "archive", rev], cwd=ROOT, capture_output=True,
                                 check=True).stdout  # fmt: skip
        subprocess.run(["tar", "-x", "-C", str(prev)], input=archive, check=True)
        for name in workloads:
            times: dict[str, list[float]] = {"previous": [], "current": []}
            for _ in range(repeat):
                times["previous"].append(_time(prev, name, Path(args.data)))
                times["current"].append(_time(ROOT, name, Path(args.data)))
            p, c = statistics.median(times["previous"]), statistics.median(times["current"])
            unit = "ms/frame" if name.startswith("online") else "s"
            scale = 1e3 if unit == "ms/frame" else 1.0
            rows.append({"workload": name, "unit": unit, f"previous ({rev})": p * scale,
                         f"current ({head})": c * scale, "previous / current": p / c})  # fmt: skip
            print(rows[-1], flush=True)
    print_table(rows)
    write_json("bench_regression", {"base": rev, "head": head, "repeat": repeat, "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
