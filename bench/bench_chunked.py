"""Benchmark of chunked inference (``torchbss.signal.apply_chunked``).

1. Overhead: ``apply_chunked`` on a long 44.1 kHz stereo track with a small 2-stem conv model,
   against the same model run directly on the same chunks (pre-cut, same batches), i.e. the
   cost of cutting, cross-fading and stitching. Goal: < 5 %.
2. Memory: peak resident memory beyond the input and output buffers, for several track
   lengths, each measured in a fresh subprocess after a warm-up (peak RSS ``VmHWM``, reset
   through ``/proc/self/clear_refs`` just before the run; ``getrusage``'s max RSS would keep
   the parent's peak across ``exec``). For ``apply_chunked`` it should be flat in the track
   length; a naive version that keeps every chunk's output and stitches at the end
   (``overlap_add``) is shown for contrast.

Run ``python -m bench.bench_chunked [--quick]``; writes ``bench/results/bench_chunked.json``.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import time

import torch
from torch import nn

from bench._common import print_table, time_fn, write_json
from torchbss.signal import apply_chunked, chunk, iter_chunk_batches, overlap_add

SAMPLE_RATE = 44100
CHANNELS = 2
SOURCES = 2
MIB = 2**20


class SmallConv(nn.Module):
    """Three 1-D conv layers mapping ``(b, channels, t)`` to ``(b, sources, channels, t)``."""

    def __init__(self, hidden: int = 16, kernel: int = 9) -> None:
        super().__init__()
        pad = kernel // 2
        self.net = nn.Sequential(
            nn.Conv1d(CHANNELS, hidden, kernel, padding=pad),
            nn.ReLU(),
            nn.Conv1d(hidden, hidden, kernel, padding=pad),
            nn.ReLU(),
            nn.Conv1d(hidden, SOURCES * CHANNELS, kernel, padding=pad),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).reshape(x.shape[0], SOURCES, CHANNELS, x.shape[-1])


def _track(seconds: float) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    return torch.randn(CHANNELS, int(seconds * SAMPLE_RATE), generator=generator)


def _no_compute(x: torch.Tensor) -> torch.Tensor:
    """A 'model' that costs nothing: two sources that are views of the input."""
    return x.unsqueeze(1).expand(-1, SOURCES, -1, -1)


def measure_overhead(
    name: str,
    model: nn.Module | object,
    seconds: float,
    chunk_seconds: float,
    overlap: float,
    batch_size: int,
    repeat: int,
) -> dict:
    """Median time of apply_chunked and of the model alone on the same (pre-cut) chunks."""
    audio = _track(seconds)
    chunk_size = int(chunk_seconds * SAMPLE_RATE)
    with torch.inference_mode():
        batches = [
            b.chunks.contiguous()
            for b in iter_chunk_batches(audio, chunk_size, batch_size, overlap=overlap)
        ]

        def model_only() -> None:
            for inputs in batches:
                model(inputs)

        def chunked() -> None:
            apply_chunked(model, audio, chunk_size, overlap, batch_size, progress=False)

        # interleave the two so that load changes on a shared machine hit both alike; CPU
        # time (all threads) is reported too, as it is less sensitive to other processes
        walls: dict[str, list[float]] = {"model": [], "chunked": []}
        cpus: dict[str, list[float]] = {"model": [], "chunked": []}
        model(batches[0])
        for _ in range(repeat):
            for key, fn in (("model", model_only), ("chunked", chunked)):
                start = time.process_time()
                walls[key].append(time_fn(fn, repeat=1, warmup=0))
                cpus[key].append(time.process_time() - start)
    model_time = statistics.median(walls["model"])
    chunked_time = statistics.median(walls["chunked"])
    model_cpu = statistics.median(cpus["model"])
    chunked_cpu = statistics.median(cpus["chunked"])
    return {
        "model": name,
        "track_s": seconds,
        "model_calls": len(batches),
        "threads": torch.get_num_threads(),
        "model_only_s": model_time,
        "apply_chunked_s": chunked_time,
        "overhead_pct": 100.0 * (chunked_time / model_time - 1.0),
        "cpu_overhead_pct": 100.0 * (chunked_cpu / model_cpu - 1.0),
        # cost of cutting + stitching per second of audio, whatever the model
        "overhead_ms_per_audio_s": 1000.0 * (chunked_time - model_time) / seconds,
        "realtime_factor": seconds / chunked_time,
        "model_only_cpu_s": model_cpu,
        "apply_chunked_cpu_s": chunked_cpu,
        "repeat": repeat,
    }


def _status_bytes(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024  # reported in kB
    raise RuntimeError(f"{field} not found in /proc/self/status")


def _reset_peak_rss() -> bool:
    """Reset the peak RSS (VmHWM) to the current RSS (Linux >= 4.0); False if not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")
    except OSError:
        return False
    return True


def _child(method: str, seconds: float, chunk_seconds: float, overlap: float, batch: int) -> None:
    """Run one method on one track length in this (fresh) process and print memory as JSON."""
    torch.manual_seed(0)
    model = SmallConv().eval()
    chunk_size = int(chunk_seconds * SAMPLE_RATE)

    def run(audio: torch.Tensor) -> torch.Tensor:
        if method == "apply_chunked":
            return apply_chunked(model, audio, chunk_size, overlap, batch, progress=False)
        # naive: keep every chunk's output, stitch at the end
        chunks, info = chunk(audio, chunk_size, overlap=overlap)
        outputs = torch.cat([model(chunks[i : i + batch]) for i in range(0, len(chunks), batch)])
        return overlap_add(outputs, target=info, chunk_dim=0)

    with torch.inference_mode():
        run(_track(3 * chunk_seconds))  # warm-up: thread pools, kernels, allocator
        gc.collect()
        audio = _track(seconds)
        reset = _reset_peak_rss()
        baseline = _status_bytes("VmRSS")  # includes the input buffer
        out = run(audio)
        peak = _status_bytes("VmHWM")
    out_bytes = out.numel() * out.element_size()
    in_bytes = audio.numel() * audio.element_size()
    stats = {"peak": peak, "baseline": baseline, "out": out_bytes, "in": in_bytes, "reset": reset}
    print(json.dumps(stats))


def measure_memory(
    method: str, seconds: float, chunk_seconds: float, overlap: float, batch_size: int
) -> dict:
    """Peak memory beyond the in/out buffers of one method, in a fresh subprocess."""
    cmd = [
        sys.executable,
        "-m",
        "bench.bench_chunked",
        "--child",
        method,
        "--seconds",
        str(seconds),
        "--chunk-seconds",
        str(chunk_seconds),
        "--overlap",
        str(overlap),
        "--batch-size",
        str(batch_size),
    ]
    # large blocks straight from/to the OS, so that RSS follows the live tensors (glibc would
    # otherwise keep freed blocks of up to 32 MiB in its heap)
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "65536"}
    result = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env)
    stats = json.loads(result.stdout.strip().splitlines()[-1])
    extra = stats["peak"] - stats["baseline"] - stats["out"]
    return {
        "method": method,
        "track_s": seconds,
        "input_mib": stats["in"] / MIB,
        "output_mib": stats["out"] / MIB,
        "peak_rss_mib": stats["peak"] / MIB,
        "extra_mib": extra / MIB,
        "peak_reset": stats["reset"],  # False: the peak may include the warm-up
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short smoke run")
    parser.add_argument("--chunk-seconds", type=float, default=4.0)
    parser.add_argument("--overlap", type=float, default=0.25)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=None, help="track length (timing)")
    parser.add_argument("--timing-only", action="store_true", help="skip the memory part")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (timing)")
    parser.add_argument("--child", choices=["apply_chunked", "naive"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        _child(args.child, args.seconds, args.chunk_seconds, args.overlap, args.batch_size)
        return

    if args.threads:
        torch.set_num_threads(args.threads)
    seconds = args.seconds or (60.0 if args.quick else 300.0)
    repeat = 3
    lengths = [20.0, 40.0, 80.0] if args.quick else [30.0, 60.0, 120.0, 240.0, 480.0]
    common = (args.chunk_seconds, args.overlap, args.batch_size)

    torch.manual_seed(0)
    models = {"SmallConv": SmallConv().eval(), "no compute (views)": _no_compute}
    timing = [measure_overhead(n, m, seconds, *common, repeat=repeat) for n, m in models.items()]
    print(
        f"## apply_chunked overhead: {CHANNELS} ch, {SOURCES} stems, {SAMPLE_RATE} Hz, chunk "
        f"{args.chunk_seconds} s, overlap {args.overlap}, batch {args.batch_size}\n"
    )
    columns = [k for k in timing[0] if not k.endswith("cpu_s") and k != "repeat"]
    print_table(timing, columns)
    memory = []
    if not args.timing_only:
        methods = ("apply_chunked", "naive")
        memory = [measure_memory(m, s, *common) for m in methods for s in lengths]
        print("\n## peak memory beyond the input and output buffers\n")
        print_table(memory)
    path = write_json(
        "bench_chunked",
        {
            "quick": args.quick,
            "model": "SmallConv(hidden=16, kernel=9), 3 conv layers",
            "config": {
                "chunk_s": args.chunk_seconds,
                "overlap": args.overlap,
                "batch_size": args.batch_size,
                "sample_rate": SAMPLE_RATE,
                "channels": CHANNELS,
                "sources": SOURCES,
            },
            "timing": timing,
            "memory": memory,
        },
    )
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
