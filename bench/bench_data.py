"""Data pipeline benchmark: simulated mixtures per second per worker vs a CPU training step.

Run ``python -m bench.bench_data`` (``--quick`` for a smoke run); writes
``bench/results/bench_data.json`` and prints markdown tables.

1. Loader: :class:`~torchbss.data.dynamic_mixing.DynamicMixingDataset` on the shared dry
   speech (``../shared/data/speech``; synthetic noise utterances when it is absent), 4 s
   segments at 16 kHz, RT60 0.15-0.6 s (decay matched), SNR 20-40 dB, 2x2, 3x3 and 2s4m,
   one thread (= one ``DataLoader`` worker): mixtures per second, and the mean / 90th
   percentile seconds per mixture, in process CPU time (what one worker costs, robust to other
   load on a shared machine; ``wall_mixtures_per_s`` alongside). The examples are the training
   split's indices 0..n-1.
2. Room responses alone: :func:`~torchbss.data.dynamic_mixing.image_source_rir` vs
   :func:`torchbss.data.room.shoebox_rir` (the reference torch image-source code) on the same
   rooms (2 sources, 2 mics, RT60 0.2 / 0.4 / 0.6 s, Sabine absorption for both), process CPU
   time with one thread.
3. Training step: unrolled ``torchbss.AuxIVA(n_iter=20)`` forward + backward on a batch of 8
   four-second mixtures (STFT 2048/512, complex64, loss = mean power of the outputs, which
   is enough to time the graph), one thread (CPU time) and the library default (wall time).

``batches_per_step`` = training-step seconds / (8 x seconds per mixture): how many batches
one worker simulates while the model trains on one; >= 1 means a single worker keeps up
(``workers_needed`` = 1 / that, rounded up).
"""

from __future__ import annotations

import argparse
import math
import statistics
import tempfile
import time
from pathlib import Path

import torch

from bench._common import print_table, write_json
from torchbss.data.datasets import example_generator
from torchbss.data.dynamic_mixing import DynamicMixingDataset, sample_geometry
from torchbss.data.room import image_source_rir, shoebox_rir

FS, SEGMENT_S, BATCH = 16000, 4.0, 8
N_FFT, HOP = 2048, 512
SPEECH = Path(__file__).resolve().parents[2] / "shared" / "data" / "speech"
CASES = {"2x2": (2, 2), "3x3": (3, 3), "2s4m": (2, 4)}


def _speech_dir(tmp: Path) -> tuple[Path, str]:
    """The shared dry speech, or 8 synthetic speakers of 6 s noise when it is absent."""
    if SPEECH.is_dir():
        return SPEECH, "shared/data/speech"
    import soundfile as sf

    g = torch.Generator().manual_seed(0)
    for k in range(8):
        x = 0.1 * torch.randn(6 * FS, generator=g)
        sf.write(str(tmp / f"synthetic_{k}.wav"), x.numpy(), FS, subtype="PCM_16")
    return tmp, "synthetic noise utterances"


def loader_rows(root: Path, n_examples: int) -> list[dict]:
    rows = []
    for name, (n_src, n_mics) in CASES.items():
        ds = DynamicMixingDataset(
            root,
            n_sources=n_src,
            n_mics=n_mics,
            segment_s=SEGMENT_S,
            sample_rate=FS,
            rt60=(0.15, 0.6),
            snr_db=(20.0, 40.0),
            split_fractions=(0.5, 0.25, 0.25),
            length=n_examples,
            cache_audio=True,
        )
        ds[0]  # warm-up
        times, wall = [], time.perf_counter()
        for i in range(n_examples):
            start = time.process_time()
            ds[i]
            times.append(time.process_time() - start)
        wall = time.perf_counter() - wall
        total = sum(times)
        rows.append(
            {
                "case": name,
                "mixtures": n_examples,
                "mixtures_per_s": n_examples / total,
                "mean_s": total / n_examples,
                "p90_s": sorted(times)[math.ceil(0.9 * n_examples) - 1],
                "batch_of_8_s": BATCH * total / n_examples,
                "wall_mixtures_per_s": n_examples / wall,
            }
        )
    return rows


def rir_rows(repeat: int) -> list[dict]:
    rows = []
    g = example_generator(0, 0)
    geo = sample_geometry(g, 2, 2)
    for rt60 in (0.2, 0.4, 0.6):
        args = (geo.room_dim, geo.sources, geo.mics)
        times = []
        for _ in range(repeat):
            start = time.process_time()
            image_source_rir(*args, sample_rate=FS, rt60=rt60, match_decay=False)
            times.append(time.process_time() - start)
        fast = statistics.median(times)
        start = time.process_time()
        shoebox_rir(*args, sample_rate=FS, rt60=rt60)
        reference = time.process_time() - start
        rows.append(
            {
                "rt60_s": rt60,
                "room_m": "x".join(f"{v:.1f}" for v in geo.room_dim.tolist()),
                "image_source_rir_s": fast,
                "room.shoebox_rir_s": reference,
                "speedup": reference / fast,
            }
        )
    return rows


def _separate(separator, X: torch.Tensor) -> torch.Tensor:
    """Adapter to the separator contract (a Tensor today, a result with ``.sources`` soon)."""
    out = separator(X)
    return getattr(out, "sources", out)


def train_step_seconds(n_mics: int, threads: int, repeat: int) -> float:
    """Median seconds of one forward + backward: process CPU time with one thread (robust on a
    shared machine), wall-clock time with more."""
    import torchbss

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        g = torch.Generator().manual_seed(0)
        x = torch.randn(BATCH, n_mics, int(SEGMENT_S * FS), generator=g)
        window = torch.hann_window(N_FFT)
        X = torch.stft(x.reshape(-1, x.shape[-1]), N_FFT, HOP, window=window, return_complex=True)
        X = X.reshape(BATCH, n_mics, *X.shape[-2:]).to(torch.complex64)
        separator = torchbss.AuxIVA(n_iter=20)
        clock = time.process_time if threads == 1 else time.perf_counter
        times = []
        for i in range(repeat + 1):
            Xg = X.clone().requires_grad_(True)
            start = clock()
            Y = _separate(separator, Xg)
            Y.abs().square().mean().backward()
            if i:  # the first run is a warm-up
                times.append(clock() - start)
        return statistics.median(times)
    finally:
        torch.set_num_threads(previous)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few examples, one repeat")
    args = parser.parse_args(argv)
    n_examples = 6 if args.quick else 40
    repeat = 1 if args.quick else 3
    default_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        root, source = _speech_dir(Path(tmp))
        loader = loader_rows(root, n_examples)
    rirs = rir_rows(repeat)
    steps = []
    for name, (_, n_mics) in CASES.items():
        if name == "2s4m":
            continue  # AuxIVA with more mics than sources: covered by bench_batch
        step_1 = train_step_seconds(n_mics, 1, repeat)
        step_n = train_step_seconds(n_mics, default_threads, repeat)
        sim = next(r for r in loader if r["case"] == name)["batch_of_8_s"]
        steps.append(
            {
                "case": name,
                "step_s_1_thread": step_1,
                f"step_s_{default_threads}_threads": step_n,
                "batch_of_8_sim_s": sim,
                "batches_per_step": step_1 / sim,
                "workers_needed": max(1, math.ceil(sim / step_1)),
            }
        )
    print(f"\nSimulated mixtures per worker (1 thread, 4 s, 16 kHz, speech: {source})\n")
    print_table(loader)
    print("\nRoom impulse responses: fast image-source vs torchbss.data.room.shoebox_rir\n")
    print_table(rirs)
    print("\nAuxIVA(n_iter=20) training step (batch 8, 4 s, forward + backward) vs the loader\n")
    print_table(steps)
    path = write_json(
        "bench_data",
        {
            "quick": args.quick,
            "speech": source,
            "segment_s": SEGMENT_S,
            "sample_rate": FS,
            "rt60_range_s": [0.15, 0.6],
            "loader": loader,
            "rir": rirs,
            "train_step": steps,
        },
    )
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
