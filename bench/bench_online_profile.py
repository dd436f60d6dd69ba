"""Where the time of an online frame goes: the running realignment against the frame itself.

``python -m bench.bench_online_profile`` times the steady-state frames of ``bench_online``
(same configurations, one stream, one thread, best of 3 blocks of 96 frames after 132, the
two interleaved) with and without the running frequency-permutation alignment, and splits the
realignment's cost (every 8 frames, amortised per frame) into its parts by timing each call
(the parts of the best block with it):

- ``window_features``: the current demixing applied to the 128 stored frames and the
  alignment's features of their output powers (normalised power ratios, bin weights; one
  compiled kernel with ``compile=True``);
- ``cluster_permutation``: the permutation search on those features;
- ``permute_state``: the permutation applied to the state (``W``, ``A``, covariances, NMF);
- ``realign_other``: the rest of a realignment call (masks, chunking, layout conversions);
- ``frame_overhead``: what the option costs outside the calls (``with - without - realign``:
  storing every frame in the window buffer, and frames that run on the permuted state).

Writes ``bench/results/bench_online_profile.json``.
"""

from __future__ import annotations

import argparse
import itertools
import time
from collections.abc import Callable

import torch

from bench._common import print_table, write_json
from bench.bench_online import FS, HOP, N_FFT, TIMED_FRAMES, WARMUP_FRAMES, _make
from torchbss.separators.online import spatial

#: the realignment's parts: (name in the table, attribute of the spatial module, or of the
#: separator when it starts with "sep.")
PARTS = (
    ("window_features", "sep.window_features"),
    ("cluster_permutation", "sep.window_permutation"),
    ("permute_state", "sep.permute_internal"),
)


class _PartTimers:
    """Accumulates the seconds spent in the realignment and in each of :data:`PARTS` while
    active (the module functions and the separator's ``realign`` wrapped)."""

    def __init__(self, sep) -> None:
        self.totals: dict[str, float] = {}
        self._restore: list[Callable[[], None]] = []
        for key, attr in PARTS:
            if attr.startswith("sep."):
                self._wrap(sep, attr.removeprefix("sep."), key)
            else:
                self._wrap(spatial, attr, key)
        self._wrap(sep, "realign", "realign")

    def _wrap(self, owner, attr: str, key: str) -> None:
        fn = getattr(owner, attr)

        def timed(*args, **kwargs):
            start = time.perf_counter()
            out = fn(*args, **kwargs)
            self.totals[key] = self.totals.get(key, 0.0) + time.perf_counter() - start
            return out

        setattr(owner, attr, timed)
        if owner is spatial:
            self._restore.append(lambda: setattr(owner, attr, fn))
        else:  # an instance attribute shadowing the method
            self._restore.append(lambda: delattr(owner, attr))

    def close(self) -> None:
        for restore in self._restore:
            restore()


def measure(name: str, mics: int, compile: bool, X: torch.Tensor, warmup: int) -> dict:
    """Per-frame seconds without and with the realignment (blocks interleaved, best of 3) and,
    for the best block with it, the seconds of each part per frame."""
    if compile:  # as in bench_online: a reset cache, then both share the compiled kernels
        torch._dynamo.reset()
    seps = {False: _make(name, mics, compile, realign=False), True: _make(name, mics, compile)}
    frames = X.shape[-1] - warmup
    best = {False: (float("inf"), {}), True: (float("inf"), {})}
    with torch.no_grad():
        states = {k: sep.step(X[..., :warmup], sep.init_state(X)).state for k, sep in seps.items()}
        for _ in range(3):
            for realign, sep in seps.items():
                timers = _PartTimers(sep) if realign else None
                start = time.perf_counter()
                sep.step(X[..., warmup:], states[realign])
                elapsed = (time.perf_counter() - start) / frames
                if timers is not None:
                    timers.close()
                if elapsed < best[realign][0]:
                    parts = {} if timers is None else timers.totals
                    best[realign] = (elapsed, {k: v / frames for k, v in parts.items()})
    return {"without": best[False][0], "with": best[True][0], "parts": best[True][1]}


def rows(quick: bool = False) -> list[dict]:
    """One row per configuration (``quick``: online ILRMA 2x2 only, a smoke run)."""
    out = []
    warmup, n_frames = WARMUP_FRAMES, WARMUP_FRAMES + TIMED_FRAMES
    hop_ms = 1e3 * HOP / FS
    names = (
        ("online_ilrma",) if quick else ("online_auxiva", "online_ilrma", "online_ilrma_correction")
    )
    for mics, name, compile in itertools.product((2,) if quick else (2, 4), names, (False, True)):
        X = torch.randn(
            (1, mics, N_FFT // 2 + 1, n_frames),
            dtype=torch.complex64,
            generator=torch.Generator().manual_seed(0),
        )
        m = measure(name, mics, compile, X, warmup)
        without, with_realign = m["without"], m["with"]
        ms = {key: 1e3 * value for key, value in m["parts"].items()}
        realign = ms.pop("realign", 0.0)
        row = {
            "method": name,
            "setup": f"{mics}x{mics}",
            "compile": compile,
            "ms_per_frame_without": 1e3 * without,
            "ms_per_frame_with": 1e3 * with_realign,
            "realign_calls": realign,
            **{key: ms.get(key, 0.0) for key, _ in PARTS},
            "realign_other": realign - sum(ms.get(key, 0.0) for key, _ in PARTS),
            "frame_overhead": 1e3 * (with_realign - without) - realign,
            "rtf_without": 1e3 * without / hop_ms,
            "rtf_with": 1e3 * with_realign / hop_ms,
        }
        out.append(row)
        print(row, flush=True)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="online ILRMA 2x2 only")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    table = rows(args.quick)
    print_table(table)
    if args.quick:  # a smoke run: no result file
        return
    path = write_json(
        "bench_online_profile",
        {
            "tables": [
                {
                    "title": "Online frame time with and without the running realignment, and "
                    "the realignment's parts (ms per frame, one stream, one thread)",
                    "rows": table,
                    "note": "Realignment every 8 frames over the last 128, amortised per frame. "
                    "`python -m bench.bench_online_profile`.",
                }
            ]
        },
    )
    print("wrote", path)


if __name__ == "__main__":
    main()
