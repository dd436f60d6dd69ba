"""Evaluate named separator configurations on the validation protocol (resumable).

Run ``python -m bench.validation.run --methods ilrma_b2_ip1_init0 'auxiva_*' --cases 2x2 3x3
2s4m --split val --rooms 50 --seeds 0 1 2 [--out NAME]``. Method names may be shell-style
patterns over :data:`METHODS`; ``--list`` prints the table; ``--export NAME=PATH`` also
scores an exported separator file (e.g. a training run's ``export.pt``). Results go to
``bench/results/<NAME>.json`` (default ``validation_<split>``); runs already in that file are
skipped, so an interrupted run resumes where it stopped. The aggregate table (mean, median,
collapsed/total, whole signal and second half) is printed at the end.

Every separator is called through :func:`separate` (one adapter, so API changes touch one
place). Each run: STFT 2048/hop 512 (:class:`torchbss.STFT`, periodic Hann) of the float32
mixture, complex64, the separator, inverse STFT, then the SI-SDR improvement at mic 0 per source
with the permutation solved by :func:`torchbss.metrics.solve_permutation` (maximum mean SI-SDR),
separately on the whole signal and on its second half (samples ``N // 2 ..``).
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

import torchbss
from bench.validation.dataset import (
    CASES,
    PROTOCOL_VERSION,
    SAMPLE_RATE,
    SPLITS,
    ValidationMixture,
    load_mixture,
    room_indices,
    split_of,
)
from torchbss.metrics import si_sdr, solve_permutation

__all__ = [
    "COLLAPSE_DB",
    "COLUMNS",
    "FAILED_SCORE_DB",
    "METHODS",
    "Method",
    "aggregate",
    "evaluate",
    "evaluate_run",
    "load_results",
    "resolve_methods",
    "run_score",
    "separate",
]

N_FFT, HOP = 2048, 512
COLLAPSE_DB = 2.0
RESULTS_DIR = Path(__file__).resolve().parents[1] / "results"
#: one run = one row: case, room index, seed (None: deterministic), method, per-source SI-SDRi
#: (dB) on the whole signal and on the second half (``None``: the separator returned NaN/inf),
#: separation seconds (STFT excluded)
COLUMNS = ("case", "room", "seed", "method", "whole", "second_half", "time_s")
#: score given to a failed run (non-finite output) in the aggregates: 0 dB, as if the separator
#: had returned the unprocessed mic-0 mixture; failed runs also count as collapsed
FAILED_SCORE_DB = 0.0


@dataclass(frozen=True)
class Method:
    """A named separator configuration.

    Attributes:
        name: unique name (used on the command line and in the results).
        cls: class name in :mod:`torchbss` (``"AuxIVA"``, ``"ILRMA"``, ``"OnlineAuxIVA"``,
            ``"OnlineILRMA"``).
        kwargs: constructor keyword arguments besides ``n_src``, ``n_freq`` and ``seed``, which
            the adapter adds (an empty dict = the class defaults, whatever they are now).
        seeded: the class takes ``seed=`` (its result depends on it): run once per seed;
            otherwise once per room.
    """

    name: str
    cls: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    seeded: bool = False

    def describe(self) -> dict[str, Any]:
        return {"class": self.cls, "kwargs": dict(self.kwargs), "seeded": self.seeded}


def _fmt(v: float) -> str:
    return f"{v:g}"


def _method_table() -> dict[str, Method]:
    table: list[Method] = [
        # the class defaults as they are in the installed torchbss (moves with the code)
        Method("auxiva_default", "AuxIVA"),
        Method("ilrma_default", "ILRMA", seeded=True),
        Method("online_auxiva_default", "OnlineAuxIVA"),
        Method("online_ilrma_default", "OnlineILRMA", seeded=True),
    ]
    # trained separators shipped with the package (issue 12), beside the classic ones with the
    # same number of iterations: as shipped (its config: with the frequency-permutation
    # alignment since stop 22), and without the alignment
    table.append(Method("neural_auxiva_shipped", "pretrained:neural-auxiva"))
    no_align = {"align_permutations": False}
    table.append(Method("neural_auxiva_unaligned", "pretrained:neural-auxiva", no_align))
    # the fine-tuned online ILRMA with its learned weight correction, shipped since stop 29 (the
    # stage-2 export of configs/experiment/online_ilrma_neural.yaml, scored at stop 28 as
    # online_ilrma_neural through --export)
    table.append(Method("online_ilrma_tuned_shipped", "pretrained:online-ilrma-tuned"))
    # the alignment inside the run too, every align_every iterations (shipped since stop 27:
    # every 10), against the alignment at the end only (shipped at stops 22-26), for the model
    # and its classic baseline
    for every in (0, 5, 10):
        name = "neural_auxiva_end_aligned" if every == 0 else f"neural_auxiva_align{every}"
        table.append(Method(name, "pretrained:neural-auxiva", {"align_every": every}))
    for every in (5, 10):
        kw = {"n_iter": 20, "update": "ip2", "source_model": "laplace", "align_every": every}
        table.append(Method(f"auxiva_ip2_laplace_it20_align{every}", "AuxIVA", kw))
    # the class defaults (100 iterations) with the alignment inside the run too
    for every in (0, 20, 50):
        table.append(Method(f"auxiva_default_align{every}", "AuxIVA", {"align_every": every}))
        kw = {"align_every": every}
        table.append(Method(f"ilrma_default_align{every}", "ILRMA", kw, seeded=True))
    # near-silent frames left out of the alignment (align_silence), for the shipped model and
    # its classic baseline
    for silence in (0.03, 0.1, 0.2, 0.4):
        kw = {"align_silence": silence}
        table.append(Method(f"neural_auxiva_s{_fmt(silence)}", "pretrained:neural-auxiva", kw))
        kw = {"n_iter": 20, "update": "ip2", "source_model": "laplace", "align_silence": silence}
        table.append(Method(f"auxiva_ip2_laplace_it20_aligned_s{_fmt(silence)}", "AuxIVA", kw))
    # grid 1: ILRMA warm start x bases x update (100 iterations); the grids pin
    # align_permutations=False (how their rows were computed) and the *_aligned methods add it
    for nb in (2, 10):
        for upd in ("ip1", "ip2"):
            for init in (0, 10):
                kw = {"n_iter": 100, "n_basis": nb, "update": upd, "init_iter": init, **no_align}
                table.append(Method(f"ilrma_b{nb}_{upd}_init{init}", "ILRMA", kw, seeded=True))
                kw = {**kw, "align_permutations": True}
                name = f"ilrma_b{nb}_{upd}_init{init}_aligned"
                table.append(Method(name, "ILRMA", kw, seeded=True))
    # grid 2: AuxIVA update x source model x iterations
    for upd in ("ip1", "ip2", "iss"):
        for model in ("laplace", "gauss"):
            for n_iter in (20, 50, 100, 200):
                kw = {"n_iter": n_iter, "update": upd, "source_model": model, **no_align}
                table.append(Method(f"auxiva_{upd}_{model}_it{n_iter}", "AuxIVA", kw))
                kw = {**kw, "align_permutations": True}
                table.append(Method(f"auxiva_{upd}_{model}_it{n_iter}_aligned", "AuxIVA", kw))
    # grid 3: online AuxIVA / online ILRMA (the plain algorithm, as the grid ran: no running
    # realignment, no warm-up sweeps)
    plain = {"realign_every": 0, "warmup_sweeps": 1}
    for forget in (0.96, 0.98, 0.99, 0.995):
        for model in ("laplace", "gauss"):
            kw = {"forget": forget, "source_model": model, **plain}
            table.append(Method(f"online_auxiva_{model}_f{_fmt(forget)}", "OnlineAuxIVA", kw))
        for load in (1e-3, 1e-2, 3e-2):
            for nb in (2, 10):
                kw = {"forget": forget, "load": load, "n_basis": nb, **plain}
                name = f"online_ilrma_b{nb}_f{_fmt(forget)}_l{_fmt(load)}"
                table.append(Method(name, "OnlineILRMA", kw, seeded=True))
    # grid 4: the running frequency-permutation alignment of the online separators
    # (realign_every frames, over the last realign_window frames; 0: off, the paper's algorithm);
    # the grids pin what they ran with (every / window: 10 rounds, realign_silence=0; all of
    # them without the warm-up sweeps, which came later)
    for cls, short, seeded in (("OnlineAuxIVA", "auxiva", False), ("OnlineILRMA", "ilrma", True)):
        no_warmup = {"warmup_sweeps": 1}
        kw = {"realign_every": 0, **no_warmup}
        table.append(Method(f"online_{short}_norealign", cls, kw, seeded))
        for every in (4, 8, 16, 32):
            for window in (64, 128, 250):
                kw = {"realign_every": every, "realign_window": window, **no_warmup}
                kw.update(realign_rounds=10, realign_silence=0.0)  # as the grid ran
                table.append(Method(f"online_{short}_realign_e{every}_w{window}", cls, kw, seeded))
        for rounds in (1, 2, 3):  # fewer alignment rounds per realignment (cheaper)
            kw = {"realign_every": 8, "realign_window": 128, "realign_rounds": rounds}
            kw.update(realign_silence=0.0, **no_warmup)
            table.append(Method(f"online_{short}_realign_e8_w128_r{rounds}", cls, kw, seeded))
        for silence in (1e-3, 1e-2, 3e-2, 1e-1, 0.2, 0.4):  # quiet frames left out (every 8, r2)
            kw = {"realign_silence": silence, **no_warmup}
            table.append(Method(f"online_{short}_realign_s{_fmt(silence)}", cls, kw, seeded))
        # grid 5: more IP1 sweeps per frame on a stream's first frames (with the realignment
        # defaults: every 8, window 128, 2 rounds, silence 0.1)
        for frames, sweeps in ((16, 4), (32, 4), (64, 2), (64, 4), (64, 8), (128, 4), (250, 4)):
            kw = {"warmup_frames": frames, "warmup_sweeps": sweeps, "realign_silence": 0.1}
            table.append(Method(f"online_{short}_warmup_f{frames}_s{sweeps}", cls, kw, seeded))
        # grid 7 (stop 29, commit acf46d2, since removed): the realignment's window keeping
        # every realign_stride-th frame (cost proportional to the frames kept), the other
        # defaults unchanged; online AuxIVA on the 60 `val` rooms per case
        # (validation_online_stride_auxiva_val): stride 2 whole -0.03 dB, second half -0.18 dB;
        # stride 4 -0.72 / -0.91 dB (3x3 1.58 -> 0.73 dB whole; collapsed 92 -> 113 of 180)
        # grid 6 (stop 28, commit a00aa9c, since removed): the realignment on the outputs'
        # powers as the frames produced them (realign_powers="stored") instead of the window
        # demixed again by the current W; every 4, 8, 16 frames. 3x3 whole signal 1.58 -> 0.15
        # dB (validation_online_stored_auxiva_val): a flipped band shows in the stored powers
        # only as the window fills with its new frames
    return {m.name: m for m in table}


METHODS: dict[str, Method] = _method_table()


def resolve_methods(patterns: Iterable[str]) -> list[Method]:
    """Methods whose names match any of ``patterns`` (shell-style), in table order.

    Raises:
        ValueError: a pattern matches no method (lists the known names).
    """
    chosen: dict[str, Method] = {}
    for pat in patterns:
        hits = [m for name, m in METHODS.items() if fnmatch.fnmatchcase(name, pat)]
        if not hits:
            raise ValueError(
                f"no method matches {pat!r}; known methods: {', '.join(sorted(METHODS))}"
            )
        chosen.update((m.name, m) for m in hits)
    return [m for name, m in METHODS.items() if name in chosen]


def separate(method: Method, X: torch.Tensor, n_src: int, seed: int | None) -> torch.Tensor:
    """The one adapter between the protocol and the separators.

    Args:
        method: the configuration.
        X: ``(mics, freq, frames)`` complex mixture STFT.
        n_src: number of sources.
        seed: the separator's seed (``None`` for deterministic methods).

    Returns:
        ``(n_src, freq, frames)`` complex source estimates scaled to mic 0.
    """
    if method.cls.startswith(("pretrained:", "file:")):  # an exported trained separator
        from torchbss.export import load_separator, pretrained

        kind, _, name = method.cls.partition(":")
        if kind == "pretrained":  # shipped in torchbss/assets, by its name
            sep = pretrained(name, n_src=n_src)
        else:  # any export file
            sep = load_separator(name)[0].separator
            sep.n_src = n_src
        for key, value in method.kwargs.items():  # e.g. align_permutations: an attribute
            if not hasattr(sep, key):
                raise ValueError(f"{method.name}: {type(sep).__name__} has no attribute {key!r}")
            setattr(sep, key, value)
        with torch.no_grad():
            return sep(X).sources
    cls = getattr(torchbss, method.cls)
    kwargs = dict(method.kwargs)
    kwargs["n_src"] = n_src
    if method.cls == "OnlineILRMA":
        kwargs["n_freq"] = X.shape[-2]
    if method.seeded and seed is not None:
        kwargs["seed"] = seed
    init_iter = kwargs.pop("init_iter", 0)
    sep = cls(**kwargs)
    with torch.no_grad():
        state = None
        if init_iter:  # warm start: AuxIVA-IP2 (Laplace) iterations give ILRMA's initial W
            warm = torchbss.AuxIVA(
                n_iter=init_iter, update="ip2", source_model="laplace", n_src=n_src
            )
            state = sep.init_state(X, demixing=warm(X).state.demixing)
        out = sep(X, state)
    return getattr(out, "sources", out)


def _si_sdri_best(ref: torch.Tensor, est: torch.Tensor, mix0: torch.Tensor) -> list[float]:
    """Per-reference SI-SDR improvement with the permutation of maximum mean SI-SDR."""
    ref, est, mix0 = ref.double(), est.double(), mix0.double()
    k = ref.shape[0]
    score = si_sdr(ref[:, None, :].expand(k, k, -1), est[None, :, :].expand(k, k, -1))
    perm = solve_permutation(score)
    best = score.gather(-1, perm[:, None])[:, 0]
    base = si_sdr(ref, mix0.expand_as(ref))
    return [round(float(v), 2) for v in best - base]


_STFT = torchbss.STFT(n_fft=N_FFT, hop_length=HOP)


def mixture_stft(item: ValidationMixture) -> torch.Tensor:
    """The protocol's input of a mixture: ``(mics, freq, frames)`` complex64."""
    return _STFT(item.mixture).to(torch.complex64)


def score_estimates(item: ValidationMixture, Y: torch.Tensor) -> tuple[list, list] | None:
    """SI-SDR improvements (dB) of the estimates ``Y`` ``(sources, freq, frames)`` of a
    mixture, per source, whole signal and second half; ``None`` when ``Y`` is not finite."""
    if not bool(torch.isfinite(torch.view_as_real(Y)).all()):
        return None
    mix, ref = item.mixture, item.images
    n = mix.shape[-1]
    y = _STFT.inverse(Y, length=n)
    half = n // 2
    whole = _si_sdri_best(ref, y, mix[0])
    second = _si_sdri_best(ref[:, half:], y[:, half:], mix[0, half:])
    return whole, second


def evaluate_run(method: Method, case: str, room: int, seed: int | None, **load_kwargs) -> list:
    """One run (one row of :data:`COLUMNS`)."""
    item = load_mixture(case, room, **load_kwargs)
    X = mixture_stft(item)
    t0 = time.perf_counter()
    Y = separate(method, X, item.images.shape[0], seed)
    elapsed = time.perf_counter() - t0
    scores = score_estimates(item, Y)
    if scores is None:  # a failed run: kept as null
        return [case, room, seed, method.name, None, None, round(elapsed, 3)]
    return [case, room, seed, method.name, *scores, round(elapsed, 3)]


# ------------------------------------------------------------------------------ results file
def _git_commit() -> str | None:
    try:
        root = Path(torchbss.__file__).resolve().parents[1]
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10
        )
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def _protocol() -> dict[str, Any]:
    return {
        "version": PROTOCOL_VERSION,
        "cases": {k: {"n_src": s, "n_mics": m} for k, (s, m) in CASES.items()},
        "sample_rate": SAMPLE_RATE,
        "stft": {"n_fft": N_FFT, "hop": HOP, "window": "periodic hann", "dtype": "complex64"},
        "metric": "SI-SDR improvement at mic 0, permutation solved per segment (whole, 2nd half)",
        "collapse_threshold_db": COLLAPSE_DB,
    }


def load_results(path: Path) -> dict[str, Any]:
    """Read a results JSON (an empty skeleton when the file does not exist)."""
    if path.is_file():
        return json.loads(path.read_text())
    return {"benchmark": path.stem, "columns": list(COLUMNS), "methods": {}, "rows": []}


def _save(path: Path, data: dict[str, Any]) -> None:
    from bench._common import machine_info

    data["machine"] = machine_info()
    data["protocol"] = _protocol()
    data["torchbss"] = {"version": torchbss.__version__, "commit": _git_commit()}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    # one row per line: small, diff-friendly, still plain JSON
    rows = data["rows"]
    head = json.dumps({k: v for k, v in data.items() if k != "rows"}, indent=1)[:-2]
    body = ",\n".join(json.dumps(r, separators=(",", ":")) for r in rows)
    tmp.write_text(f'{head},\n "rows": [\n{body}\n ]\n}}\n')
    tmp.replace(path)


# ------------------------------------------------------------------------------ aggregation
def run_score(row: Sequence[Any], key: str) -> float:
    """A run's score: mean SI-SDRi over its sources (``key``: ``"whole"``/``"second_half"``).

    A failed run (``None``) scores :data:`FAILED_SCORE_DB`.
    """
    values = row[COLUMNS.index(key)]
    return FAILED_SCORE_DB if values is None else statistics.fmean(values)


def aggregate(rows: Sequence[Sequence[Any]]) -> list[dict[str, Any]]:
    """Per (method, case): runs, mean, median and collapsed runs, whole and second half.

    A run's score is the mean SI-SDRi over its sources (:func:`run_score`); a run has collapsed
    when that score is below :data:`COLLAPSE_DB`; ``failed`` counts runs whose output was not
    finite. Order: methods and cases as they first appear.
    """
    groups: dict[tuple[str, str], list[Sequence[Any]]] = {}
    for r in rows:
        groups.setdefault((r[3], r[0]), []).append(r)
    out = []
    for (method, case), sel in groups.items():
        entry: dict[str, Any] = {"method": method, "case": case, "runs": len(sel)}
        for key in ("whole", "second_half"):
            scores = [run_score(r, key) for r in sel]
            entry[f"{key}_mean"] = statistics.fmean(scores)
            entry[f"{key}_median"] = statistics.median(scores)
            entry[f"{key}_collapsed"] = sum(s < COLLAPSE_DB for s in scores)
        entry["failed"] = sum(r[4] is None for r in sel)
        entry["time_s"] = statistics.fmean(r[6] for r in sel)
        out.append(entry)
    return out


def format_table(summary: Sequence[dict[str, Any]]) -> str:
    """Markdown table of :func:`aggregate` output."""
    lines = [
        "| method | case | whole: mean | median | collapsed | 2nd half: mean | median | "
        "collapsed | failed | s/run |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for e in summary:
        n = e["runs"]
        lines.append(
            f"| {e['method']} | {e['case']} | {e['whole_mean']:.2f} | {e['whole_median']:.2f} | "
            f"{e['whole_collapsed']}/{n} | {e['second_half_mean']:.2f} | "
            f"{e['second_half_median']:.2f} | {e['second_half_collapsed']}/{n} | "
            f"{e['failed']} | {e['time_s']:.2f} |"
        )
    return "\n".join(lines)


# ------------------------------------------------------------------------------ driver
def evaluate(
    methods: Sequence[Method],
    cases: Sequence[str],
    split: str,
    n_rooms: int,
    seeds: Sequence[int],
    out: Path,
    *,
    first_room: int = 0,
    save_every_s: float = 30.0,
    verbose: bool = True,
) -> dict[str, Any]:
    """Run every (case, room, method, seed) not yet in ``out`` and save the rows there.

    Runs are ordered room by room (every method on one room before the next), so a partial
    file compares methods on the same rooms.

    Returns:
        The results dict (``rows`` include those already in the file).
    """
    for case in cases:
        if case not in CASES:
            raise ValueError(f"case must be one of {sorted(CASES)}, got {case!r}")
    data = load_results(out)
    data.setdefault("methods", {})
    for m in methods:
        data["methods"][m.name] = m.describe()
    done = {(r[0], r[1], r[2], r[3]) for r in data["rows"]}
    todo = []
    for room_pos in range(n_rooms):
        for case in cases:
            room = room_indices(split, 1, first=first_room + room_pos)[0]
            for m in methods:
                for seed in seeds if m.seeded else [None]:
                    if (case, room, seed, m.name) not in done:
                        todo.append((case, room, seed, m))
    if verbose:
        print(f"{out.name}: {len(done)} runs done, {len(todo)} to do", flush=True)
    last_save, t_start = time.perf_counter(), time.perf_counter()
    for i, (case, room, seed, m) in enumerate(todo):
        assert split_of(room) == split
        row = evaluate_run(m, case, room, seed)
        data["rows"].append(row)
        if verbose:
            eta = (time.perf_counter() - t_start) / (i + 1) * (len(todo) - i - 1)
            print(
                f"[{i + 1}/{len(todo)} eta {eta / 60:.0f} min] {case} room {room} seed {seed} "
                f"{m.name}: whole {run_score(row, 'whole'):.2f} dB, 2nd half "
                f"{run_score(row, 'second_half'):.2f} dB, {row[6]:.2f} s"
                + (" FAILED (non-finite output)" if row[4] is None else ""),
                flush=True,
            )
        if time.perf_counter() - last_save > save_every_s:
            _save(out, data)
            last_save = time.perf_counter()
    _save(out, data)
    return data


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--methods", nargs="*", default=["*_default"], help="names or patterns")
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--split", default="val", choices=SPLITS)
    parser.add_argument("--rooms", type=int, default=50, help="rooms per case (default 50)")
    parser.add_argument("--first-room", type=int, default=0, help="skip this many rooms")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--out", default=None, help="results name (default validation_<split>)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--list", action="store_true", help="print the method table and exit")
    parser.add_argument("--quiet", action="store_true")
    parser.add_argument(
        "--export",
        nargs="+",
        default=[],
        metavar="NAME=PATH",
        help="also score these exported separators (e.g. a training run's export.pt)",
    )
    args = parser.parse_args(argv)
    if args.list:
        for m in METHODS.values():
            print(f"{m.name}: {m.cls}({m.kwargs}){' seeded' if m.seeded else ''}")
        return
    if args.rooms < 1:
        parser.error(f"--rooms must be >= 1, got {args.rooms}")
    torch.set_num_threads(args.threads)
    try:
        methods = resolve_methods(args.methods) if args.methods else []
    except ValueError as exc:
        parser.error(str(exc))
    for spec in args.export:
        name, sep, path = spec.partition("=")
        if not sep or not name or not Path(path).is_file():
            parser.error(f"--export takes NAME=PATH with an existing file, got {spec!r}")
        methods.append(Method(name, f"file:{path}"))
    if not methods:
        parser.error("nothing to score: give --methods NAMES and/or --export NAME=PATH")
    out = RESULTS_DIR / f"{args.out or 'validation_' + args.split}.json"
    data = evaluate(
        methods,
        args.cases,
        args.split,
        args.rooms,
        args.seeds,
        out,
        first_room=args.first_room,
        verbose=not args.quiet,
    )
    names = {m.name for m in methods}
    rooms = set(room_indices(args.split, args.rooms, args.first_room))
    rows = [r for r in data["rows"] if r[3] in names and r[0] in args.cases and r[1] in rooms]
    print()
    print(format_table(aggregate(rows)))
    print(f"\nwrote {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
