"""Run one task of the benchmark and write its result file.

Layout of a benchmark folder (all paths relative to it)::

    plan.json               the tasks of the last run, in recipe order (keys, variants, items)
    recipe.yaml             the composed recipe of the last run
    tasks/<key>.json        the spec of every task (the resolved config its key hashes)
    results/<key>.json      status ("ok" or "failed"), metrics, timing, cost trace, error
    audio/<key>/estimate_<j>.wav   estimates aligned with the references (save.audio)
    logs/<key>.jsonl        per-iteration / per-block run log (save.runlog)

Every file is written atomically (a temporary file renamed into place), so a run that is
killed leaves complete files only, and a result file exists only for a task that finished.
"""

from __future__ import annotations

import json
import math
import os
import platform
import time
import traceback
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from torchbss.benchmark.methods import build_separator
from torchbss.benchmark.recipe import task_key
from torchbss.benchmark.sources import build_source

__all__ = [
    "SaveOptions",
    "run_task",
    "read_json",
    "write_json",
    "result_path",
    "task_path",
    "is_done",
    "RESULT_FORMAT",
]

RESULT_FORMAT = "torchbss.benchmark.result/1"


@dataclass(frozen=True)
class SaveOptions:
    """What a task saves besides its metrics.

    Attributes:
        audio: the estimates as float WAV files, aligned with the references.
        framewise: the frame-wise SI-SDR of every source (not only its summaries).
        runlog: a JSON-Lines run log with cost, time and SI-SDR per iteration / block.
    """

    audio: bool = False
    framewise: bool = False
    runlog: bool = False

    @classmethod
    def from_node(cls, node: Mapping[str, Any] | None) -> SaveOptions:
        node = dict(node or {})
        unknown = sorted(set(node) - {"audio", "framewise", "runlog"})
        if unknown:
            raise ValueError(f"unknown save option(s) {unknown}; known: audio, framewise, runlog")
        for key, value in node.items():
            if not isinstance(value, bool):
                raise ValueError(f"save.{key} must be true or false, got {value!r}")
        return cls(**node)


def task_path(folder: Path, key: str) -> Path:
    return folder / "tasks" / f"{key}.json"


def result_path(folder: Path, key: str) -> Path:
    return folder / "results" / f"{key}.json"


def audio_dir(folder: Path, key: str) -> Path:
    return folder / "audio" / key


def log_path(folder: Path, key: str) -> Path:
    return folder / "logs" / f"{key}.jsonl"


def write_json(path: Path, value: Any) -> None:
    """Write JSON atomically (temporary file + rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(value, indent=1, allow_nan=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def read_json(path: Path) -> Any:
    """Read a JSON file; a file that does not parse is reported with its path."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{str(path)!r} is not valid JSON ({err.msg})") from None


def is_done(folder: Path, key: str, save: SaveOptions, retry_failed: bool = True) -> bool:
    """Whether task ``key`` has a result that a re-run may keep.

    A result is kept when it finished (``"ok"``, or ``"failed"`` with ``retry_failed=False``)
    and holds what ``save`` asks for (audio files, frame-wise values, run log); a result file
    that cannot be read counts as not done.
    """
    path = result_path(folder, key)
    if not path.is_file():
        return False
    try:
        result = read_json(path)
    except (ValueError, OSError):
        return False
    if not isinstance(result, dict) or not isinstance(result.get("saved", {}), dict):
        return False  # not a result this engine wrote: run the task again
    status = result.get("status")
    if status == "failed":
        return not retry_failed
    if status != "ok":
        return False
    saved = result.get("saved", {})
    if save.audio and not saved.get("audio"):
        return False
    if save.audio and not all((folder / p).is_file() for p in saved["audio"]):
        return False
    if save.framewise and "framewise" not in result:
        return False
    if save.runlog and not (saved.get("runlog") and (folder / saved["runlog"]).is_file()):
        return False
    return True


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


#: (separator class, channels, dtype, device) already run once in this process
_WARMED: set[tuple[str, int, str, str]] = set()


def _call(separator, x: torch.Tensor, stft, callback=None):
    if getattr(separator, "input_domain", "stft") == "waveform":
        result = separator(x, callback=callback)
        return result, result.sources
    result = separator(stft(x), callback=callback)
    return result, stft.inverse(result.sources, length=x.shape[-1])


def _warm_up(separator, x: torch.Tensor, stft) -> None:
    """Run a separator once on a short noise input of the same layout, so that one-off costs
    of a process (loading linear-algebra kernels, first allocations) are not timed."""
    key = (type(separator).__qualname__, x.shape[0], str(x.dtype), str(x.device))
    if key in _WARMED:
        return
    _WARMED.add(key)
    g = torch.Generator().manual_seed(0)
    n = stft.n_fft + 16 * stft.hop_length
    noise = torch.randn(x.shape[0], n, generator=g, dtype=x.dtype).to(x.device)
    try:
        with torch.inference_mode():
            _call(separator, noise, stft)
    except Exception:  # the real call reports any error
        pass


def _separate(spec: Mapping[str, Any], mixture: torch.Tensor, n_src: int, stft, recorder):
    """Run the task's separator; returns ``(estimates (n_est, samples), result, seconds)``."""
    separator = build_separator(spec["separator"], n_fft=stft.n_fft, n_src=n_src)
    separator = separator.to(mixture.device)
    ref_mic = spec["metrics"]["ref_mic"]
    x = mixture[ref_mic : ref_mic + 1] if spec["mono"] else mixture
    n_samples = mixture.shape[-1]
    _warm_up(separator, x, stft)
    if recorder is not None:
        recorder.start()
    start = time.perf_counter()
    with torch.inference_mode():
        result, estimate = _call(separator, x, stft, recorder)
    seconds = time.perf_counter() - start
    if recorder is not None:
        seconds -= recorder.overhead_s
    return estimate.reshape(-1, n_samples), result, seconds


def _execute(spec: Mapping[str, Any], folder: Path, key: str, save: SaveOptions) -> dict:
    from torchbss.metrics import apply_permutation, compute_metrics, framewise_si_sdr
    from torchbss.signal.stft import STFT

    source = build_source(spec["data"])
    example = source.load(spec["item"])
    dtype = getattr(torch, spec["dtype"])
    device = torch.device(spec["device"])
    mixture = example.mixture.to(device, dtype)
    reference = example.reference.to(device, dtype)
    fs = int(example.sample_rate)
    m = spec["metrics"]
    stft = STFT(spec["stft"]["n_fft"], spec["stft"]["hop_length"]).to(device)
    recorder = None
    if save.runlog:
        from torchbss.runlog import record

        recorder = record(None, reference, stft, fields={"key": key})
    estimate, result, seconds = _separate(spec, mixture, reference.shape[0], stft, recorder)
    if estimate.shape[0] < reference.shape[0]:
        raise ValueError(
            f"the separator returned {estimate.shape[0]} source(s) for {reference.shape[0]} "
            "references"
        )
    if not bool(torch.isfinite(estimate).all()):
        raise ValueError("the separator returned NaN or inf samples")
    bundle = compute_metrics(
        reference,
        estimate,
        mixture,
        sample_rate=fs,
        ref_mic=m["ref_mic"],
        framewise=m["framewise"],
        filter_length=m["filter_length"],
        window_s=m["window_s"],
        hop_s=m["hop_s"],
    )
    duration = mixture.shape[-1] / fs
    cost = getattr(result, "cost", None)
    out: dict[str, Any] = {
        "metrics": bundle.to_dict(),
        "time_s": seconds,
        "duration_s": duration,
        "real_time_factor": seconds / duration,
        "sample_rate": fs,
        "n_mics": int(mixture.shape[0]),
        "n_sources": int(reference.shape[0]),
        "n_estimates": int(estimate.shape[0]),
        "samples": int(mixture.shape[-1]),
        "source_names": example.source_names,
        "cost": None if cost is None else [_finite(float(c)) for c in cost.reshape(-1)],
        "saved": {},
    }
    aligned = apply_permutation(estimate, bundle.permutation)
    if save.framewise:
        frames = framewise_si_sdr(reference, aligned, fs, window_s=m["window_s"], hop_s=m["hop_s"])
        out["framewise"] = {
            "window_s": m["window_s"],
            "hop_s": m["hop_s"],
            "si_sdr": [[_finite(v) for v in row] for row in frames.values.tolist()],
            "valid": frames.valid.tolist(),
        }
    if save.audio:
        from torchbss import io

        paths = []
        for j in range(aligned.shape[0]):
            path = audio_dir(folder, key) / f"estimate_{j}.wav"
            io.save(path, aligned[j : j + 1].to("cpu", torch.float32), fs, subtype="float")
            paths.append(str(path.relative_to(folder)))
        out["saved"]["audio"] = paths
    if recorder is not None:
        from torchbss.runlog import write_run_log

        records = recorder.finish(result)
        path = log_path(folder, key)
        write_run_log(path, records, overwrite=True)
        out["saved"]["runlog"] = str(path.relative_to(folder))
    return out


def run_task(
    folder: str | os.PathLike,
    key: str,
    *,
    save: SaveOptions = SaveOptions(),
    overwrite: bool = False,
    retry_failed: bool = True,
    threads: int | None = None,
) -> dict[str, Any]:
    """Run task ``key`` of a benchmark folder and write ``results/<key>.json``.

    Any exception of the task itself (loading, separating, scoring, saving) is caught and
    recorded in the result file (``status: "failed"``, the error and its traceback), so one
    failing task never stops the others. ``KeyboardInterrupt`` and other non-``Exception``
    errors pass through (nothing is written: the task counts as not run).

    Args:
        folder: the benchmark folder (holding ``tasks/<key>.json``).
        key: the task key.
        save: what to save besides the metrics.
        overwrite: run even if a result is already there.
        retry_failed: run a task whose previous result is a failure.
        threads: torch threads for this task (restored afterwards); ``None``: unchanged.

    Returns:
        ``{"key", "status"}`` with status ``"ok"``, ``"failed"`` or ``"skipped"``.
    """
    folder = Path(folder)
    spec = read_json(task_path(folder, key))
    if task_key(spec) != key:
        raise ValueError(
            f"{str(task_path(folder, key))!r} does not hash to its key {key}: the task file was "
            "edited or corrupted; delete it and run the benchmark again"
        )
    if not overwrite and is_done(folder, key, save, retry_failed):
        return {"key": key, "status": "skipped"}
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(int(threads))
    started = time.time()
    try:
        record = _execute(spec, folder, key, save)
        record = {"status": "ok", **record}
    except Exception as err:  # recorded, never raised: the other tasks go on
        message = str(err).strip().splitlines()[0] if str(err).strip() else ""
        record = {
            "status": "failed",
            "error": f"{type(err).__name__}: {message}" if message else type(err).__name__,
            "traceback": traceback.format_exc(),
        }
    finally:
        torch.set_num_threads(previous)
    from torchbss import __version__

    record.update(
        {
            "format": RESULT_FORMAT,
            "key": key,
            "spec": spec,
            "started_at": started,
            "wall_s": time.time() - started,
            "threads": threads if threads is not None else previous,
            "host": platform.node(),
            "torch": torch.__version__,
            "torchbss": __version__,
        }
    )
    write_json(result_path(folder, key), record)
    return {"key": key, "status": record["status"]}
