"""Benchmark of whole-song inference with BS-RoFormer / Mel-RoFormer against splifft.

1. Throughput (seconds of audio per second) and peak memory of
   :func:`torchbss.models.separate_song` and of splifft's own inference pipeline
   (``splifft.inference.InferenceEngine.run``: normalise, chunk, STFT, model, mask, iSTFT,
   overlap-add) on the same configuration, the same (random) weights and the same settings:
   chunk size of the config, overlap 0.5, Hann cross-fade (splifft's periodic window, passed
   to ours), reflect padding, mixture normalisation, float32, batch sizes 1/4/8, one thread.
   The song is a shared MUSDB-style mixture (first 4.5 s by default, 4 chunks of 3 s),
   trimmed to a multiple of the hop so that both
   pipelines see identical chunks; ``max_abs_diff`` is the largest difference between their
   stems (goal <= 1e-4). Configurations: the community configs
   ``config_vocals_bs_roformer.yaml`` (dim 192, depth 6) and
   ``config_vocals_mel_band_roformer.yaml`` (dim 192, depth 8) from
   ``../shared/data/music_model_configs``, and "small" variants (dim 64, depth 2) with the
   same bands and STFT. Runs alternate between the two pipelines; medians over ``--repeat``
   rounds. Throughput is given in wall time and in process CPU time (``*_cpu``: robust to
   other processes on a shared machine). Peak memory (``*_peak_mib``) is measured apart, one
   call in a fresh subprocess after a warm-up call: the peak resident set during the call
   beyond what was resident before it (``VmHWM``, reset through ``/proc/self/clear_refs``,
   with glibc returning freed blocks to the OS so that RSS follows the live tensors).
   Also timed: ours under bf16 autocast (``ours_bf16``; its relative difference to float32 is
   reported) - this CPU has AMX/avx512-bf16 units.
2. Memory against track length: peak memory beyond the input and the returned stems of
   :func:`separate_song` for a 30 s and a 10 min track (a tiny BS-RoFormer with the community
   bands, STFT and chunk, batch 4: the model's size does not change how memory scales with the
   track, and a bigger one would take an hour on one core), each in a fresh subprocess; the
   goal is the 10 min figure within 10 % of the 30 s one.

Run ``python -m bench.bench_music [--quick]``; writes ``bench/results/bench_music.json`` and
prints markdown tables. ``--quick``: small configs, a short song, batch 1 and 4, one round.
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
import warnings
from pathlib import Path
from typing import Any

import torch

from bench._common import print_table, write_json
from bench.bench_chunked import _reset_peak_rss, _status_bytes
from torchbss.models import from_config, separate_song

DATA = Path(
    os.environ.get("TORCHBSS_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")
)
CONFIGS = DATA / "music_model_configs"
SONG = DATA / "music" / "sunny_street" / "mixture.wav"
MIB = 2**20
SAMPLE_RATE = 44100

SETUPS = {
    "bs_small": ("config_vocals_bs_roformer.yaml", {"dim": 64, "depth": 2}),
    "bs_community": ("config_vocals_bs_roformer.yaml", {}),
    "mel_small": ("config_vocals_mel_band_roformer.yaml", {"dim": 64, "depth": 2}),
    "mel_community": ("config_vocals_mel_band_roformer.yaml", {}),
    # for the track-length memory measurement only (fast enough for a 10 min track)
    "bs_tiny": (
        "config_vocals_bs_roformer.yaml",
        {"dim": 32, "depth": 1, "heads": 2, "dim_head": 32, "mlp_expansion_factor": 1},
    ),
}
THROUGHPUT_SETUPS = ["bs_small", "bs_community", "mel_small", "mel_community"]


def _build(setup: str) -> tuple[Any, dict]:
    """Our model (from the MSST YAML, with the setup's overrides) and the config dict."""
    from torchbss.models import load_config

    name, overrides = SETUPS[setup]
    config = load_config(CONFIGS / name)
    config["model"] = {**config["model"], **overrides, "attn_dropout": 0.0, "ff_dropout": 0.0}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        spec = from_config(config)
    return spec, config


def _splifft_engine(spec: Any, config: dict, batch_size: int, overlap: float):
    """splifft's InferenceEngine for the same architecture, with our model's weights."""
    from splifft.config import Config
    from splifft.inference import InferenceEngine
    from splifft.models import bs_roformer as sbs

    from tests.test_models_roformer import _install_torchaudio_shim

    _install_torchaudio_shim()
    model_cfg = dict(config["model"])
    mel = spec.model_type == "mel_band_roformer"
    band = (
        {
            "kind": "mel",
            "num_bands": model_cfg["num_bands"],
            "sample_rate": spec.sample_rate,
            "stft_n_fft": spec.n_fft,
        }
        if mel
        else {"kind": "fixed", "freqs_per_bands": list(model_cfg["freqs_per_bands"])}
    )
    params = {
        "chunk_size": spec.chunk_size,
        "output_stem_names": list(spec.stems),
        "band_config": band,
        "stft_hop_length": spec.hop_length,
        "norm_output": mel,
        # splifft counts the mel MLP's linear layers, the community constructor its hidden ones
        "mask_estimator_depth": model_cfg["mask_estimator_depth"] + (1 if mel else 0),
    }
    for key in (
        "dim",
        "depth",
        "stereo",
        "time_transformer_depth",
        "freq_transformer_depth",
        "linear_transformer_depth",
        "dim_head",
        "heads",
        "attn_dropout",
        "ff_dropout",
        "mlp_expansion_factor",
        "skip_connection",
    ):
        if key in model_cfg:
            params[key] = model_cfg[key]
    cfg = Config.model_validate(
        {
            "identifier": "bench",
            "model_type": "bs_roformer",
            "model": params,
            "transform": {
                "kind": "stft",
                "n_fft": spec.n_fft,
                "hop_length": spec.hop_length,
                "win_length": spec.n_fft,
            },
            "inference": {"batch_size": batch_size},
            "normalization": {"enabled": True},
            "waveform_chunking": {"overlap_ratio": overlap},
        }
    )
    concrete = cfg.model.to_concrete(sbs.BSRoformerParams)
    model = sbs.BSRoformer(concrete).eval()
    model.load_state_dict(spec.model.state_dict(), strict=False)  # ours has the rotary freqs
    cpu = torch.device("cpu")
    return InferenceEngine(
        config=cfg,
        model=model,
        model_params_concrete=concrete,
        model_device=cpu,
        io_device=cpu,
        model_input_dtype=torch.float32,
    )


def _song(seconds: float | None, hop: int) -> torch.Tensor:
    import soundfile as sf

    data, rate = sf.read(SONG, dtype="float32", always_2d=True)
    assert rate == SAMPLE_RATE
    audio = torch.from_numpy(data.T.copy())
    if seconds is not None:
        audio = audio[:, : int(seconds * SAMPLE_RATE)]
    # a multiple of the hop: both pipelines then pad identically (reflect only)
    return audio[:, : audio.shape[-1] // hop * hop].contiguous()


def _timed(fn) -> tuple[Any, float, float]:
    """Run ``fn()``: (result, wall seconds, process CPU seconds)."""
    gc.collect()
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - wall, time.process_time() - cpu


def _pipelines(setup: str, batch: int, seconds: float | None, overlap: float = 0.5):
    """(song seconds, {name: callable}) for one setup and batch size."""
    torch.manual_seed(0)
    spec, config = _build(setup)
    hop = round(spec.chunk_size * (1 - overlap))
    audio = _song(seconds, hop)
    window = torch.hann_window(spec.chunk_size)  # splifft's cross-fade window
    engine = _splifft_engine(spec, config, batch, overlap)

    def ours(precision: str = "float32") -> torch.Tensor:
        stems = separate_song(
            spec.model,
            audio,
            chunk_size=spec.chunk_size,
            overlap=overlap,
            batch_size=batch,
            window=window,
            precision=precision,
            progress=False,
            stem_names=spec.stems,
        )
        return torch.stack(list(stems.values()))

    def splifft() -> torch.Tensor:
        return torch.stack(list(engine.run(audio).outputs.values()))

    pipelines = {"ours": ours, "splifft": splifft, "ours_bf16": lambda: ours("bf16")}
    return audio.shape[-1] / SAMPLE_RATE, pipelines


def _peak_child(name: str, setup: str, batch: int, seconds: float | None) -> None:
    """Peak memory of one pipeline call in this fresh process (printed as JSON)."""
    torch.set_num_threads(1)
    _, pipelines = _pipelines(setup, batch, seconds)
    pipelines[name]()  # warm-up: thread pool, kernels, allocator
    gc.collect()
    _reset_peak_rss()
    baseline = _status_bytes("VmRSS")
    pipelines[name]()
    print(json.dumps({"peak_mib": (_status_bytes("VmHWM") - baseline) / MIB}))


def _child_env() -> dict[str, str]:
    # large blocks straight from/to the OS, so that RSS follows the live tensors
    return {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "65536"}


def peak_memory(name: str, setup: str, batch: int, seconds: float | None) -> float:
    """Peak MiB beyond the resident set before the call, measured in a fresh subprocess."""
    cmd = [
        sys.executable,
        "-m",
        "bench.bench_music",
        "--peak-child",
        name,
        "--setups",
        setup,
        "--batch-size",
        str(batch),
    ]
    if seconds is not None:
        cmd += ["--seconds", str(seconds)]
    result = subprocess.run(cmd, capture_output=True, text=True, check=True, env=_child_env())
    return json.loads(result.stdout.strip().splitlines()[-1])["peak_mib"]


def run_throughput(
    setup: str, batches: list[int], repeat: int, seconds: float | None, memory: bool
) -> list[dict]:
    rows = []
    for batch in batches:
        started = time.perf_counter()
        duration, pipelines = _pipelines(setup, batch, seconds)
        timings: dict[str, list[tuple[float, float]]] = {name: [] for name in pipelines}
        results = {}
        for round_ in range(repeat):
            order = ["ours", "splifft"] if round_ % 2 == 0 else ["splifft", "ours"]
            for name in [*order, "ours_bf16"]:
                results[name], wall, cpu = _timed(pipelines[name])
                timings[name].append((wall, cpu))
        row: dict[str, Any] = {"config": setup, "batch": batch, "audio_s": round(duration, 2)}
        for name, values in timings.items():
            row[f"{name}_x_realtime"] = duration / statistics.median(v[0] for v in values)
            row[f"{name}_x_realtime_cpu"] = duration / statistics.median(v[1] for v in values)
        row["speedup"] = row["ours_x_realtime"] / row["splifft_x_realtime"]
        row["speedup_cpu"] = row["ours_x_realtime_cpu"] / row["splifft_x_realtime_cpu"]
        row["max_abs_diff"] = float((results["ours"] - results["splifft"]).abs().max())
        row["max_abs_out"] = float(results["splifft"].abs().max())  # scale of the stems
        ref = results["ours"]
        row["bf16_rel_diff"] = float((results["ours_bf16"] - ref).norm() / ref.norm())
        if memory:
            for name in ("ours", "splifft"):
                row[f"{name}_peak_mib"] = peak_memory(name, setup, batch, seconds)
        row["bench_s"] = round(time.perf_counter() - started, 1)
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def _child(setup: str, seconds: float, batch: int) -> None:
    """Separate a track of ``seconds`` in this fresh process and print its memory as JSON."""
    torch.set_num_threads(1)
    torch.manual_seed(0)
    spec, _ = _build(setup)
    n = int(seconds * SAMPLE_RATE)
    generator = torch.Generator().manual_seed(0)

    def track(samples: int) -> torch.Tensor:
        return 0.1 * torch.randn(2, samples, generator=generator)

    def run(audio: torch.Tensor) -> dict[str, torch.Tensor]:
        return separate_song(
            spec.model,
            audio,
            chunk_size=spec.chunk_size,
            overlap=0.5,
            batch_size=batch,
            progress=False,
        )

    run(track(3 * spec.chunk_size))  # warm-up: thread pool, kernels, allocator
    gc.collect()
    audio = track(n)
    _reset_peak_rss()
    baseline = _status_bytes("VmRSS")  # includes the input
    start = time.perf_counter()
    stems = run(audio)
    wall = time.perf_counter() - start
    peak = _status_bytes("VmHWM")
    out = sum(s.numel() * s.element_size() for s in stems.values())
    print(
        json.dumps(
            {
                "peak": peak,
                "baseline": baseline,
                "out": out,
                "wall": wall,
                "in": audio.numel() * audio.element_size(),
            }
        )
    )


def run_memory(setup: str, lengths: list[float], batch: int) -> list[dict]:
    rows = []
    env = _child_env()
    for seconds in lengths:
        cmd = [
            sys.executable,
            "-m",
            "bench.bench_music",
            "--child",
            setup,
            "--seconds",
            str(seconds),
            "--batch-size",
            str(batch),
        ]
        result = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env)
        stats = json.loads(result.stdout.strip().splitlines()[-1])
        row = {
            "config": setup,
            "batch": batch,
            "track_s": seconds,
            "input_mib": stats["in"] / MIB,
            "output_mib": stats["out"] / MIB,
            "peak_beyond_input_mib": (stats["peak"] - stats["baseline"]) / MIB,
            "working_mib": (stats["peak"] - stats["baseline"] - stats["out"]) / MIB,
            "x_realtime": seconds / stats["wall"],
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
    if len(rows) >= 2:
        rows[-1]["working_vs_shortest"] = rows[-1]["working_mib"] / rows[0]["working_mib"]
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short smoke run")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument(
        "--setups", default=None, help="comma-separated subset of " + ",".join(SETUPS)
    )
    parser.add_argument("--batches", default="1,4,8")
    parser.add_argument("--seconds", type=float, default=4.5, help="song length (s)")
    parser.add_argument("--no-memory", action="store_true", help="skip the track-length part")
    parser.add_argument(
        "--memory-only",
        action="store_true",
        help="only the track-length part, updating an existing bench_music.json",
    )
    parser.add_argument("--no-peak", action="store_true", help="skip the per-cell peak memory")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--peak-child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--batch-size", type=int, default=4, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        _child(args.child, args.seconds, args.batch_size)
        return
    if args.peak_child:
        _peak_child(args.peak_child, args.setups, args.batch_size, args.seconds)
        return
    torch.set_num_threads(1)
    if args.quick:
        setups, batches, repeat, seconds, lengths = (
            ["bs_small", "mel_small"],
            [1, 4],
            1,
            4.0,
            [10.0, 30.0],
        )
    else:
        setups = args.setups.split(",") if args.setups else THROUGHPUT_SETUPS
        batches = [int(b) for b in args.batches.split(",")]
        repeat, seconds, lengths = args.repeat, args.seconds, [30.0, 600.0]
    if args.memory_only:
        from bench._common import RESULTS_DIR

        memory_rows = run_memory("bs_tiny", lengths, batch=4)
        print()
        path = RESULTS_DIR / "bench_music.json"
        data = json.loads(path.read_text()) if path.is_file() else {}
        data.update(memory=memory_rows, memory_table=print_table(memory_rows))
        path.write_text(json.dumps(data, indent=2, default=str) + "\n")
        print(f"\nupdated {path}")
        return
    rows = []
    for setup in setups:
        rows += run_throughput(setup, batches, repeat, seconds, memory=not args.no_peak)
    columns = [
        "config",
        "batch",
        "audio_s",
        "ours_x_realtime",
        "splifft_x_realtime",
        "speedup",
        "speedup_cpu",
        "ours_peak_mib",
        "splifft_peak_mib",
        "max_abs_diff",
        "ours_bf16_x_realtime",
        "bf16_rel_diff",
    ]
    print()
    table = print_table(rows, columns)
    memory_rows: list[dict] = []
    memory_table = ""
    if not args.no_memory:
        memory_rows = run_memory("bs_tiny", lengths, batch=4)
        print()
        memory_table = print_table(memory_rows)
    path = write_json(
        "bench_music",
        {
            "quick": args.quick,
            "throughput": rows,
            "memory": memory_rows,
            "table": table,
            "memory_table": memory_table,
            "threads": 1,
        },
    )
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
