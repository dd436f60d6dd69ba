"""Where the time of a batch separation goes, before (previous implementation) and after.

Run ``python -m bench.bench_profile [--quick] [--previous REV]``; writes
``bench/results/bench_profile.json`` and prints markdown tables.

The pipeline is the one of a command-line separation: waveform -> ``signal.stft.stft``
(2048 / 512) -> separator -> ``signal.stft.istft``, on the 8 s speech mixture 2x2_00 (float32),
one thread, for AuxIVA-IP1, -IP2, -ISS (50 iterations) and ILRMA-IP1 (100 iterations, 2
bases), with the current torchbss and the previous one (git ``--previous``, default
:data:`bench.bench_batch.PREVIOUS_REV`, imported in the same process as ``torchbss_prev``).

1. The total: median process CPU time of ``repeat`` unprofiled runs, current and previous
   interleaved.
2. The split: one more run with every function and method of the package wrapped by a timer
   that records its *self* CPU time (its own time minus that of the package functions it
   calls; Python, dispatch and the tensor operators it runs directly). Each function's self time
   goes to a category:

   - ``stft``: ``signal/stft.py`` (analysis and synthesis);
   - ``covariances``: ``updates/covariance.py`` (weighted covariances, outer products);
   - ``updates``: ``updates/ip.py``, ``iss.py``, ``hermitian.py``, ``overiva.py`` (IP1, IP2,
     ISS, small inverses);
   - ``source model``: ``source_models/`` (Laplace / Gauss weights, NMF);
   - ``demixing``: ``Y = W X`` and the output powers (``updates/base.py`` demixing,
     ``covariance.packed_output_power``);
   - ``cost``: everything under the separator's cost tracking (``_cost``, ``_packed_cost``);
   - ``scaling``: ``updates/scaling.py`` (projection back);
   - ``loop``: the rest of ``separators/`` and ``_validation.py`` (checks, layout, state,
     normalisation, results): the loop's own overhead;
   - ``other``: the total minus all of the above (outside the package).

   The timers add about a microsecond per call; the categories are rescaled to the unprofiled
   total.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import inspect
import os
import statistics
import sys
import time
import types
from collections import defaultdict
from pathlib import Path

import soundfile as sf
import torch

from bench._common import machine_info, print_table, write_json
from bench.bench_batch import (
    DATA,
    HOP,
    N_FFT,
    PREVIOUS_REV,
    import_previous,
    make_separator,
    separate,
)

CATEGORIES = (
    "stft",
    "covariances",
    "updates",
    "source model",
    "demixing",
    "cost",
    "scaling",
    "loop",
    "other",
)
CONFIGS = {
    # the iterations only (no frequency-permutation alignment), as profiled before stop 22
    "auxiva-ip1": ("AuxIVA", {"update": "ip1", "align_permutations": False}, 50),
    "auxiva-ip2": ("AuxIVA", {"update": "ip2", "align_permutations": False}, 50),
    "auxiva-iss": ("AuxIVA", {"update": "iss", "align_permutations": False}, 50),
    "ilrma-ip1": ("ILRMA", {"update": "ip1", "n_basis": 2, "align_permutations": False}, 100),
}
_DEMIX_FUNCTIONS = {
    "demix",
    "demix_power",
    "demix_outer_products",
    "_block_demix",
    "planar_mixture",
    "packed_output_power",
}
_COST_FUNCTIONS = {"_cost", "_packed_cost"}


def categorize(path: str, function: str) -> str:
    """The category of the self time of ``function`` in ``path`` (inside the package)."""
    if function.rsplit(".", 1)[-1] in _COST_FUNCTIONS:
        return "cost"
    if path.startswith("signal/stft"):
        return "stft"
    if function.rsplit(".", 1)[-1] in _DEMIX_FUNCTIONS:
        return "demixing"
    if path.startswith("updates/covariance"):
        return "covariances"
    if path.startswith(("updates/ip", "updates/iss", "updates/hermitian", "updates/overiva")):
        return "updates"
    if path.startswith("updates/scaling"):
        return "scaling"
    if path.startswith("source_models/"):
        return "source model"
    if path.startswith("updates/base"):
        return "demixing"
    return "loop"


class SelfTimer:
    """Self CPU time per category of the functions of a package, by wrapping them."""

    def __init__(self) -> None:
        self.stack: list[list] = []  # [category, time spent in wrapped callees]
        self.seconds: dict[str, float] = defaultdict(float)
        self.wrapped: dict[int, object] = {}

    def _wrap(self, fn, category: str):
        if id(fn) in self.wrapped:
            return self.wrapped[id(fn)]

        @functools.wraps(fn)
        def timed(*args, **kwargs):
            parent = self.stack[-1][0] if self.stack else None
            cat = "cost" if parent == "cost" else category  # the cost owns all it calls
            self.stack.append([cat, 0])
            start = time.thread_time_ns()
            try:
                return fn(*args, **kwargs)
            finally:
                elapsed = time.thread_time_ns() - start
                _, inner = self.stack.pop()
                self.seconds[cat] += (elapsed - inner) / 1e9
                if self.stack:
                    self.stack[-1][1] += elapsed

        self.wrapped[id(fn)] = timed
        return timed

    def instrument(self, package: types.ModuleType) -> None:
        """Wrap every function and method defined in ``package`` (in every module's namespace)."""
        prefix = package.__name__ + "."
        root = Path(package.__file__).parent
        for module in [m for n, m in list(sys.modules.items()) if n.startswith(prefix)]:
            path = str(Path(module.__file__).relative_to(root)) if module.__file__ else ""
            for name, obj in list(vars(module).items()):
                if inspect.isfunction(obj) and obj.__module__.startswith(prefix):
                    fpath = _module_path(obj.__module__, prefix)
                    setattr(module, name, self._wrap(obj, categorize(fpath, obj.__qualname__)))
                elif inspect.isclass(obj) and obj.__module__ == module.__name__:
                    for attr, member in list(vars(obj).items()):
                        if attr.startswith("__") and attr not in ("__call__",):
                            continue
                        raw = member.__func__ if isinstance(member, staticmethod) else member
                        if inspect.isfunction(raw):
                            timed = self._wrap(raw, categorize(path, raw.__qualname__))
                            wrapped = staticmethod(timed) if raw is not member else timed
                            setattr(obj, attr, wrapped)


def _module_path(module: str, prefix: str) -> str:
    return module[len(prefix) :].replace(".", "/") + ".py"


def _pipeline(package: types.ModuleType, config: str, x: torch.Tensor):
    name, kwargs, n_iter = CONFIGS[config]
    sep = make_separator(package, name, n_iter, kwargs)
    stft = importlib.import_module(f"{package.__name__}.signal.stft")

    def run() -> torch.Tensor:
        with torch.inference_mode():
            X = stft.stft(x, N_FFT, HOP)
            Y = separate(sep, X)
            return stft.istft(Y, N_FFT, HOP, length=x.shape[-1])

    return run


def measure(configs: list[str], repeat: int, frames: int | None, previous: str | None) -> list:
    """Rows of milliseconds per category, current and previous, for each configuration."""
    import torchbss

    mix, _ = sf.read(DATA / "2x2_00_mix.flac", always_2d=True, dtype="float32")
    x = torch.from_numpy(mix.T.copy())
    if frames:
        x = x[..., : frames * HOP]
    packages = {"current": torchbss}
    errors = {}
    if previous:
        try:
            packages["previous"] = import_previous(previous)
        except Exception as exc:  # no git, unknown revision: reported, not raised
            errors["previous"] = f"{type(exc).__name__}: {exc}"[:200]
    runs = {
        (config, label): _pipeline(pkg, config, x)
        for config in configs
        for label, pkg in packages.items()
    }
    for run in runs.values():
        run()  # warm-up
    totals: dict[tuple, list[float]] = {key: [] for key in runs}
    for _ in range(repeat):  # interleaved
        for key, run in runs.items():
            start = time.process_time()
            run()
            totals[key].append(time.process_time() - start)
    timers = {label: SelfTimer() for label in packages}
    for label, pkg in packages.items():
        timers[label].instrument(pkg)
    rows = []
    for (config, label), run in runs.items():
        timer = timers[label]
        timer.seconds.clear()
        start = time.process_time()
        run()
        profiled = time.process_time() - start
        total = statistics.median(totals[(config, label)])
        scale = total / profiled
        row: dict[str, object] = {
            "config": config,
            "implementation": label,
            "total_ms": 1e3 * total,
        }
        inside = 0.0
        for category in CATEGORIES[:-1]:
            row[category] = 1e3 * scale * timer.seconds.get(category, 0.0)
            inside += row[category]
        row["other"] = max(1e3 * total - inside, 0.0)
        rows.append(row)
    return rows, errors


def _percent(rows: list[dict]) -> list[dict]:
    out = []
    for row in rows:
        total = sum(row[c] for c in CATEGORIES) or 1.0
        new = {"config": row["config"], "implementation": row["implementation"]}
        new.update({c: f"{100 * row[c] / total:.0f} %" for c in CATEGORIES})
        out.append(new)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="4 s, AuxIVA-IP1 and ILRMA only")
    parser.add_argument("--previous", default=PREVIOUS_REV, help="git revision ('' to skip)")
    parser.add_argument("--repeat", type=int, default=3, help="unprofiled runs per config")
    parser.add_argument(
        "--configs", default=",".join(CONFIGS), help=f"comma-separated subset of {list(CONFIGS)}"
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    configs = ["auxiva-ip1", "ilrma-ip1"] if args.quick else args.configs.split(",")
    frames = 128 if args.quick else None
    load_before = os.getloadavg()
    rows, errors = measure(configs, 1 if args.quick else args.repeat, frames, args.previous)
    load_after = os.getloadavg()
    length = "4 s" if args.quick else "8 s"
    print(f"## Where the time goes: 2x2_00 ({length}), STFT + separator + iSTFT, 1 thread, ms\n")
    print_table(rows, ["config", "implementation", "total_ms", *CATEGORIES])
    print("\nShares:\n")
    print_table(_percent(rows), ["config", "implementation", *CATEGORIES])
    print(f"\nload average before / after: {load_before} / {load_after}")
    path = write_json(
        "bench_profile",
        {
            "quick": args.quick,
            "previous_rev": args.previous,
            "configs": {c: {"separator": CONFIGS[c][0], **CONFIGS[c][1]} for c in configs},
            "rows": rows,
            "errors": errors,
            "load_average_before_after": [list(load_before), list(load_after)],
            "worker_machine": machine_info(),
            "script": str(Path(__file__).name),
            "time": time.strftime("%Y-%m-%d %H:%M:%S"),
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
