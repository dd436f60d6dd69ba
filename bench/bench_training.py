"""Training throughput: steps per second and peak memory of unrolled separators.

``python -m bench.bench_training [--quick] [--repeat 3]``. Each configuration runs in a fresh
single-thread subprocess: one warm-up step, then ``repeat`` timed optimisation steps (forward
through the separator, negative SI-SDR with PIT, backward, Adam step) on random mixtures of the
configured shape; the peak resident memory of the process above its level before the first step
is the memory of one step (activations kept for the backward pass, gradients, optimizer state).

Configurations (float32, 16 kHz, STFT 2048/512): unrolled AuxIVA with the neural source model,
20 IP2 iterations, 4 s chunks, batch 8, 2x2 and 4x4; online ILRMA 2x2 (trainable, per-frequency
forgetting), 4 s, batch 8; each with and without gradient checkpointing. Writes
``bench/results/bench_training.json``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

from bench._common import print_table, write_json

WORKER = r"""
import json, resource, sys, time, torch
torch.set_num_threads(1)
kind, mics, ckpt, batch, seconds, repeat = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1", \
    int(sys.argv[4]), float(sys.argv[5]), int(sys.argv[6])
from torchbss import AuxIVA, OnlineILRMA
from torchbss.inference import WaveformSeparator
from torchbss.losses import PITLoss, NegSISDR
from torchbss.source_models import NeuralSourceModel
if kind == "auxiva":
    sep = AuxIVA(n_iter=20, update="ip2", source_model=NeuralSourceModel(1025), checkpoint=ckpt,
                 track_cost=False)
else:
    sep = OnlineILRMA(n_freq=1025, trainable=True, forget_per_freq=True, checkpoint=ckpt)
model = WaveformSeparator(sep, 2048, 512)
loss_fn = PITLoss(NegSISDR(reduction="none"))
opt = torch.optim.Adam(model.parameters(), 1e-3)
g = torch.Generator().manual_seed(0)
n = int(seconds * 16000)
def batch_():
    s = torch.randn(batch, mics, n, generator=g)
    A = torch.randn(batch, mics, mics, generator=g)
    return A @ s, s
def step():
    x, s = batch_()
    opt.zero_grad()
    loss = loss_fn(model(x).sources, s).loss
    loss.backward()
    opt.step()
def rss():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # MiB (Linux: KiB)
base = rss()
step()  # warm-up
times = []
for _ in range(repeat):
    t0 = time.perf_counter(); step(); times.append(time.perf_counter() - t0)
times.sort()
print(json.dumps({"seconds_per_step": times[len(times) // 2], "peak_mib": rss() - base}))
"""

CONFIGS = (
    ("auxiva", 2),
    ("auxiva", 4),
    ("online_ilrma", 2),
)


def run_one(kind: str, mics: int, ckpt: bool, batch: int, seconds: float, repeat: int) -> dict:
    args = [kind, str(mics), "1" if ckpt else "0", str(batch), str(seconds), str(repeat)]
    out = subprocess.run(
        [sys.executable, "-c", WORKER, *args],
        capture_output=True, text=True, check=True, env={"OMP_NUM_THREADS": "1", "PATH": ""},
    )  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="batch 2, 1 s, one repeat")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    batch, seconds, repeat = (2, 1.0, 1) if args.quick else (8, 4.0, args.repeat)
    rows = []
    for kind, mics in CONFIGS:
        for ckpt in (False, True):
            r = run_one(kind, mics, ckpt, batch, seconds, repeat)
            label = "AuxIVA (neural, 20 IP2 it)" if kind == "auxiva" else "online ILRMA (trainable)"
            rows.append({
                "separator": label, "setup": f"{mics}x{mics}", "checkpointing": ckpt,
                "batch": batch, "chunk (s)": seconds,
                "s / step": r["seconds_per_step"], "steps / s": 1.0 / r["seconds_per_step"],
                "peak memory (MiB)": r["peak_mib"],
            })  # fmt: skip
            print(rows[-1], flush=True)
    print_table(rows)
    write_json(
        "bench_training",
        {"quick": args.quick, "tables": [{"title": "One training step, one thread", "rows": rows}]},
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
