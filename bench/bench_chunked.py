"""Benchmark of chunked inference (``torchbss.signal.apply_chunked``).

1. Overhead: ``apply_chunked`` on a long 44.1 kHz stereo track (default 120 s, one thread)
   against the same model run directly on the same chunks (pre-cut with
   ``iter_chunk_batches``: same batches, same order), i.e. the cost of cutting, cross-fading
   and stitching. Goal: < 5 %. Three models: a no-compute model (views of the input: the
   fixed cost of cutting and stitching alone, in ms per second of audio), ``SmallConv`` (3
   conv layers, 16 channels, ~35 ms per audio second) and ``SmallUNet`` (a Demucs-like
   waveform U-Net, ~0.1 s per audio second). Both are timed in paired, interleaved rounds
   (order alternating): ``overhead_pct`` is the median paired ratio in process CPU time
   (robust to other processes on a shared machine; ``overhead_pct_wall`` in wall time), and
   ``outside_model_pct`` the time ``apply_chunked`` spends outside the model calls relative to
   the time inside them in the same call (no pairing noise). ``intrinsic_overhead_pct`` is the
   no-compute model's cost divided by the model's own cost.
   Allocator note: with glibc's default malloc, the large activations of these conv models
   are mmapped and unmapped at every call, so a good part of their CPU time is page faults
   (kernel time); e.g. ``MALLOC_MMAP_THRESHOLD_=1073741824 MALLOC_TRIM_THRESHOLD_=4294967296``
   (or jemalloc/tcmalloc) made ``SmallConv`` about 3x faster on the reference machine. The
   figures here use the environment as given, so a faster allocator raises the overhead in %.
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

from bench._common import print_table, write_json
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


class SmallUNet(nn.Module):
    """A small waveform U-Net (Demucs-like layout): strided conv encoder, transposed-conv decoder.

    Widths ``(64, 128, 256)``, kernel 8, stride 4, a 1x1 conv after every encoder conv, a
    3-tap conv before every decoder layer, additive skip connections; about 1.2 M parameters
    and roughly 0.1 s of compute per second of 44.1 kHz stereo audio on one CPU thread. Maps
    ``(b, channels, t)`` to ``(b, sources, channels, t)`` for any ``t`` (padded internally to a
    multiple of ``stride ** depth`` and cropped back).
    """

    def __init__(
        self, widths: tuple[int, ...] = (64, 128, 256), kernel: int = 8, stride: int = 4
    ) -> None:
        super().__init__()
        self.stride = stride
        pad = (kernel - stride) // 2
        self.encoder = nn.ModuleList()
        in_ch = CHANNELS
        for width in widths:
            self.encoder.append(
                nn.Sequential(
                    nn.Conv1d(in_ch, width, kernel, stride, pad),
                    nn.ReLU(),
                    nn.Conv1d(width, width, 1),
                    nn.ReLU(),
                )
            )
            in_ch = width
        self.bottleneck = nn.Sequential(nn.Conv1d(in_ch, in_ch, 3, padding=1), nn.ReLU())
        outs = list(widths[-2::-1]) + [SOURCES * CHANNELS]
        self.decoder = nn.ModuleList(
            nn.Sequential(
                nn.Conv1d(width, width, 3, padding=1),
                nn.ReLU(),
                nn.ConvTranspose1d(width, out, kernel, stride, pad),
            )
            for width, out in zip(widths[::-1], outs)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, t = x.shape
        multiple = self.stride ** len(self.encoder)
        h = nn.functional.pad(x, (0, (-t) % multiple))
        skips = []
        for layer in self.encoder:
            h = layer(h)
            skips.append(h)
        h = self.bottleneck(h)
        for i, layer in enumerate(self.decoder):
            h = layer(h + skips.pop())
            if i < len(self.decoder) - 1:
                h = torch.relu(h)
        return h[..., :t].reshape(b, SOURCES, CHANNELS, t)


def _track(seconds: float) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    return torch.randn(CHANNELS, int(seconds * SAMPLE_RATE), generator=generator)


def _no_compute(x: torch.Tensor) -> torch.Tensor:
    """A 'model' that costs nothing: two sources that are views of the input."""
    return x.unsqueeze(1).expand(-1, SOURCES, -1, -1)


def _timed(fn) -> tuple[float, float]:
    """(wall, process CPU) seconds of one call of ``fn``."""
    cpu, wall = time.process_time(), time.perf_counter()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def measure_overhead(
    name: str,
    model: nn.Module | object,
    seconds: float,
    chunk_seconds: float,
    overlap: float,
    batch_size: int,
    repeat: int,
) -> dict:
    """Time of apply_chunked and of the model alone on the same chunks, in paired rounds.

    The model alone runs on exactly the batches that ``apply_chunked`` builds (pre-cut with
    ``iter_chunk_batches``: same sizes, same order). Each round times both (alternating which
    goes first, after a warm-up of both). Reported overheads, in process CPU time (one thread:
    not inflated when other processes take the core) unless said otherwise:

    - ``overhead_pct``: median over rounds of the paired ratio apply_chunked / model alone;
      ``overhead_pct_wall`` the same in wall-clock time. Both include any slow-down of the model
      itself inside ``apply_chunked``, but the difference of two long timings is noisy on a
      shared machine (a few %).
    - ``outside_model_pct``: within the same ``apply_chunked`` call, time outside the model
      calls relative to the time inside them (the model is wrapped in a timer), median over
      rounds. No pairing noise; it measures what ``apply_chunked`` adds around the model.
    """
    audio = _track(seconds)
    chunk_size = int(chunk_seconds * SAMPLE_RATE)
    inside = [0.0]

    def timed_model(x: torch.Tensor) -> torch.Tensor:
        start = time.process_time()
        y = model(x)
        inside[0] += time.process_time() - start
        return y

    with torch.inference_mode():
        batches = [
            b.chunks.contiguous()
            for b in iter_chunk_batches(audio, chunk_size, batch_size, overlap=overlap)
        ]

        def model_only() -> None:
            for inputs in batches:
                model(inputs)

        def chunked() -> None:
            inside[0] = 0.0
            apply_chunked(timed_model, audio, chunk_size, overlap, batch_size, progress=False)

        model_only()
        chunked()
        runs: dict[str, list[tuple[float, float]]] = {"model": [], "chunked": []}
        outside: list[float] = []
        for r in range(repeat):
            order = (("model", model_only), ("chunked", chunked))
            for key, fn in order if r % 2 == 0 else order[::-1]:
                runs[key].append(_timed(fn))
                if key == "chunked":
                    outside.append((runs[key][-1][1] - inside[0], inside[0]))

    def median(key: str, which: int) -> float:
        return statistics.median(v[which] for v in runs[key])

    def paired_overhead(which: int) -> float:
        ratios = [c[which] / m[which] - 1.0 for m, c in zip(runs["model"], runs["chunked"])]
        return 100.0 * statistics.median(ratios)

    model_cpu, chunked_cpu = median("model", 1), median("chunked", 1)
    outside_cpu = statistics.median(o for o, _ in outside)
    return {
        "model": name,
        "track_s": seconds,
        "model_calls": len(batches),
        "threads": torch.get_num_threads(),
        "model_ms_per_audio_s": 1000.0 * model_cpu / seconds,
        "model_only_cpu_s": model_cpu,
        "apply_chunked_cpu_s": chunked_cpu,
        "overhead_pct": paired_overhead(1),
        "overhead_pct_wall": paired_overhead(0),
        "outside_model_pct": 100.0 * statistics.median(o / max(i, 1e-9) for o, i in outside),
        # cost of cutting + stitching per second of audio (CPU), whatever the model
        "outside_model_ms_per_audio_s": 1000.0 * outside_cpu / seconds,
        "realtime_factor": seconds / median("chunked", 0),
        "model_only_s": median("model", 0),
        "apply_chunked_s": median("chunked", 0),
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
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads for the timing (default 1)"
    )
    parser.add_argument("--repeat", type=int, default=None, help="paired timing rounds")
    parser.add_argument("--child", choices=["apply_chunked", "naive"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        _child(args.child, args.seconds, args.chunk_seconds, args.overlap, args.batch_size)
        return

    if args.threads:
        torch.set_num_threads(args.threads)
    seconds = args.seconds or (20.0 if args.quick else 120.0)
    repeat = args.repeat or (3 if args.quick else 5)
    lengths = [20.0, 40.0, 80.0] if args.quick else [30.0, 60.0, 120.0, 240.0, 480.0]
    common = (args.chunk_seconds, args.overlap, args.batch_size)

    torch.manual_seed(0)
    models = {
        "no compute (views)": _no_compute,
        "SmallConv": SmallConv().eval(),
        "SmallUNet": SmallUNet().eval(),
    }
    timing = [measure_overhead(n, m, seconds, *common, repeat=repeat) for n, m in models.items()]
    intrinsic = timing[0]["outside_model_ms_per_audio_s"]
    for row in timing[1:]:
        # the fixed cost of cutting and stitching (measured with the no-compute model) relative
        # to the model's own cost
        row["intrinsic_overhead_pct"] = 100.0 * intrinsic / row["model_ms_per_audio_s"]
    print(
        f"## apply_chunked overhead: {CHANNELS} ch, {SOURCES} stems, {SAMPLE_RATE} Hz, track "
        f"{seconds:g} s, chunk {args.chunk_seconds} s, overlap {args.overlap}, batch "
        f"{args.batch_size}, {torch.get_num_threads()} thread(s), {repeat} paired rounds\n"
    )
    columns = [
        "model",
        "model_ms_per_audio_s",
        "outside_model_ms_per_audio_s",
        "outside_model_pct",
        "intrinsic_overhead_pct",
        "overhead_pct",
        "overhead_pct_wall",
        "realtime_factor",
        "model_calls",
    ]
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
            "models": {
                "SmallConv": "3 conv layers, 16 channels, kernel 9",
                "SmallUNet": "widths (64, 128, 256), kernel 8, stride 4, skips, 1.2 M params",
                "memory": "SmallConv",
            },
            "load_average": list(os.getloadavg()),
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
