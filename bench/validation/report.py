"""Markdown tables from the validation results (``bench/results/validation_*.json``).

Run ``python -m bench.validation.report [FILES...] [--out FILE]``. For every result file: a
table per (method, case) with mean, median and collapsed runs over rooms x seeds, whole signal
and second half, and the ranking pooled over the cases; then a val-vs-test table for every
method present in a ``*_val`` and a ``*_test`` file. The output is meant to be pasted into (or
generated into) BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Sequence
from pathlib import Path

from bench.validation.choose_defaults import CASES, format_ranking, rank
from bench.validation.run import (
    COLLAPSE_DB,
    RESULTS_DIR,
    aggregate,
    format_table,
    load_results,
    run_score,
)

__all__ = ["file_report", "val_vs_test", "main"]


def _describe(data: dict) -> str:
    rows = data["rows"]
    rooms = {c: len({r[1] for r in rows if r[0] == c}) for c in CASES}
    seeds = sorted({r[2] for r in rows if r[2] is not None})
    commit = (data.get("torchbss") or {}).get("commit") or "unknown"
    split = "val" if all(r[1] % 2 == 0 for r in rows) else "test"
    return (
        f"{len(rows)} runs on the `{split}` rooms (rooms per case: "
        + ", ".join(f"{c} {n}" for c, n in rooms.items())
        + f"; seeds {seeds or '-'} for seeded methods), torchbss commit `{commit[:10]}`."
    )


def file_report(path: Path) -> str:
    """The per-(method, case) table and the pooled rankings of one result file."""
    data = load_results(path)
    rows = data["rows"]
    out = [f"### `{path.name}`", "", _describe(data), ""]
    out += [format_table(aggregate(rows)), ""]
    for key, label in (("whole", "whole signal"), ("second_half", "second half")):
        out += [f"Pooled over the cases, ranked by the mean ({label}):", ""]
        out += [format_ranking(rank(rows, key), key), ""]
    return "\n".join(out)


def _stats(rows: Sequence[Sequence], key: str) -> str:
    scores = [run_score(r, key) for r in rows]
    if not scores:
        return "–"
    bad = sum(s < COLLAPSE_DB for s in scores)
    return f"{statistics.fmean(scores):.2f} / {statistics.median(scores):.2f} / {bad}/{len(scores)}"


def val_vs_test(val_rows: Sequence[Sequence], test_rows: Sequence[Sequence]) -> str:
    """Methods present in both: mean / median / collapsed per case, val then test."""
    methods = [
        m for m in dict.fromkeys(r[3] for r in test_rows) if any(r[3] == m for r in val_rows)
    ]
    lines = [
        "| method | case | val whole | test whole | val 2nd half | test 2nd half |",
        "|---|---|---|---|---|---|",
    ]
    for m in methods:
        for case in [*CASES, "all"]:

            def sel(rows, m=m, case=case):
                return [r for r in rows if r[3] == m and (case == "all" or r[0] == case)]

            v, t = sel(val_rows), sel(test_rows)
            lines.append(
                f"| {m} | {case} | {_stats(v, 'whole')} | {_stats(t, 'whole')} | "
                f"{_stats(v, 'second_half')} | {_stats(t, 'second_half')} |"
            )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("files", nargs="*", type=Path, help="default: validation_*.json")
    parser.add_argument("--out", type=Path, default=None, help="write the markdown here")
    args = parser.parse_args(argv)
    files = args.files or sorted(RESULTS_DIR.glob("validation_*.json"))
    if not files:
        parser.error(f"no result files (looked for {RESULTS_DIR}/validation_*.json)")
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        parser.error(f"result file(s) not found: {', '.join(missing)}")
    parts = [
        "## Validation protocol (defaults are chosen here) — `python -m bench.validation.run`",
        "",
        "Cells: mean / median SI-SDR improvement (dB, mean over sources) and collapsed runs "
        f"(< {COLLAPSE_DB:g} dB) / runs, over rooms x seeds. Protocol: `bench/validation`.",
        "",
    ]
    parts += [file_report(f) for f in files]
    val = [r for f in files if f.stem.endswith("_val") for r in load_results(f)["rows"]]
    test = [r for f in files if f.stem.endswith("_test") for r in load_results(f)["rows"]]
    if val and test:
        parts += ["### Chosen configurations: val rooms vs unseen test rooms", ""]
        parts += ["Cells: mean / median / collapsed/runs.", "", val_vs_test(val, test), ""]
    text = "\n".join(parts)
    if args.out is not None:
        args.out.write_text(text + "\n")
        print(f"wrote {args.out}")
    else:
        print(text)


if __name__ == "__main__":
    main()
