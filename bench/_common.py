"""Small helpers shared by the benchmark scripts: machine info, timing, tables, JSON output."""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

RESULTS_DIR = Path(__file__).resolve().parent / "results"

__all__ = ["RESULTS_DIR", "machine_info", "time_fn", "markdown_table", "print_table", "write_json"]


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _cpu_id() -> str | None:
    """``family F model M`` from ``/proc/cpuinfo`` (virtual machines often name the CPU only
    by its line, "AMD EPYC", whatever its generation), or ``None`` where it is not known."""
    fields = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key in ("cpu family", "model") and key not in fields:
                fields[key] = value.strip()
            if not line.strip() and fields:
                break
    except OSError:
        return None
    if len(fields) < 2:
        return None
    return f"family {fields['cpu family']} model {fields['model']}"


def machine_info() -> dict[str, Any]:
    """Describe the machine a benchmark ran on (CPU model, threads, torch version, GPU)."""
    info: dict[str, Any] = {
        "cpu": _cpu_model(),
        "cpu_id": _cpu_id(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def _synchronize() -> None:
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def time_fn(fn: Callable[[], object], repeat: int = 5, warmup: int = 1) -> float:
    """Median wall-clock seconds of ``fn()`` over ``repeat`` runs after ``warmup`` runs.

    CUDA work is synchronized before and after each run when CUDA is in use.
    """
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(max(1, repeat)):
        _synchronize()
        start = time.perf_counter()
        fn()
        _synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def markdown_table(rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None) -> str:
    """Format a list of dicts as a markdown table (columns default to the first row's keys)."""
    if not rows:
        return ""
    columns = list(columns) if columns is not None else list(rows[0])
    lines = [
        "| " + " | ".join(columns) + " |",
        "|" + "|".join("---" for _ in columns) + "|",
    ]
    lines += ["| " + " | ".join(_fmt(row.get(c, "")) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def print_table(rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None) -> str:
    """Print (and return) :func:`markdown_table` of ``rows``."""
    table = markdown_table(rows, columns)
    print(table)
    return table


def write_json(name: str, payload: dict[str, Any]) -> Path:
    """Write ``payload`` plus :func:`machine_info` to ``bench/results/<name>.json``."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    data = {"benchmark": name, "machine": machine_info(), **payload}
    path.write_text(json.dumps(data, indent=2, default=str) + "\n")
    return path
