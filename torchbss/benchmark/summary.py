"""Summaries of a benchmark folder, built from its result files only.

:func:`summarize` reads ``results/*.json`` (the tasks of ``plan.json``, the last run's plan,
unless ``all_results=True``) and writes, next to them:

* ``summary.csv``: one row per task (method, variant, example, status, the mean over sources
  of every metric, time, real-time factor, error);
* ``summary.json``: those rows, one aggregate row per variant (count of finished / failed /
  missing tasks, mean of every metric, spread of the SI-SDR improvement, mean real-time
  factor) and the failures with their errors;
* ``summary.md``: the aggregate table and the failures, in Markdown;
* ``figures/metrics.png`` (:func:`torchbss.plot.benchmark_summary`: spread of the main metrics
  per variant; with more than 6 variants one ``figures/metrics_<metric>.png`` per metric) and
  ``figures/quality_vs_speed.png`` (:func:`torchbss.plot.quality_vs_speed`), when matplotlib is
  installed;
* ``report/index.html`` with ``report=True``: the listening report
  (:func:`torchbss.report.write_report`) with the table, the figures and audio players for the
  tasks that saved their estimates.

The summary depends on the result files only (never on which run wrote them or in which
order), so a benchmark killed half-way and resumed summarises exactly as an uninterrupted one
(timings aside).
"""

from __future__ import annotations

import csv
import io as _io
import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torchbss.benchmark.task import read_json, write_json

__all__ = ["summarize", "Summary", "SUMMARY_METRICS", "TIMING_FIELDS"]

#: Metrics of the task rows and aggregates (means over sources), in display order.
SUMMARY_METRICS = (
    "si_sdr_improvement",
    "sdr_improvement",
    "si_sdr",
    "sdr",
    "sir",
    "sar",
    "input_si_sdr",
    "framewise_si_sdr_second_half_mean",
)
#: Fields that change from run to run (left out when comparing summaries).
TIMING_FIELDS = ("time_s", "real_time_factor")
_TITLES = {
    "si_sdr_improvement": "SI-SDRi",
    "sdr_improvement": "SDRi",
    "si_sdr": "SI-SDR",
    "sdr": "SDR",
    "sir": "SIR",
    "sar": "SAR",
    "input_si_sdr": "input SI-SDR",
    "framewise_si_sdr_second_half_mean": "SI-SDR 2nd half",
}


@dataclass
class Summary:
    """What :func:`summarize` found and wrote.

    Attributes:
        folder: the benchmark folder.
        name: the recipe name (from ``plan.json``) or the folder name.
        rows: one row per task.
        methods: one aggregate row per variant, in plan order.
        files: the files written ``{kind: path}``.
    """

    folder: Path
    name: str
    rows: list[dict[str, Any]]
    methods: list[dict[str, Any]]
    files: dict[str, Path] = field(default_factory=dict)

    def count(self, status: str) -> int:
        """Number of tasks with ``status`` (``"ok"``, ``"failed"`` or ``"missing"``)."""
        return sum(1 for r in self.rows if r["status"] == status)

    @property
    def n_ok(self) -> int:
        return self.count("ok")

    @property
    def n_failed(self) -> int:
        return self.count("failed")

    @property
    def n_missing(self) -> int:
        return self.count("missing")

    def failures(self) -> list[dict[str, Any]]:
        """``{variant, item, key, error}`` of every failed task."""
        return [
            {k: r[k] for k in ("variant", "item", "key", "error")}
            for r in self.rows
            if r["status"] == "failed"
        ]

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "counts": {
                "tasks": len(self.rows),
                "ok": self.n_ok,
                "failed": self.n_failed,
                "missing": self.n_missing,
            },
            "methods": self.methods,
            "tasks": self.rows,
            "failures": self.failures(),
        }

    def table(self) -> str:
        """The aggregate table (Markdown): one row per variant, means in dB."""
        metrics = [
            m for m in SUMMARY_METRICS[:6] if any(a.get(m) is not None for a in self.methods)
        ]
        head = ["method", "done"] + [f"{_TITLES[m]} (dB)" for m in metrics] + ["RTF"]
        lines = ["| " + " | ".join(head) + " |", "|---|---|" + "---:|" * (len(metrics) + 1)]
        for a in self.methods:
            cells = [a["variant"], f"{a['ok']}/{a['tasks']}"]
            for m in metrics:
                value = a.get(m)
                text = "n/a" if value is None else f"{value:.2f}"
                if m == "si_sdr_improvement" and a.get(m + "_std") is not None and a["ok"] > 1:
                    text += f" ± {a[m + '_std']:.2f}"
                cells.append(text)
            rtf = a.get("real_time_factor")
            cells.append("n/a" if rtf is None else f"{rtf:.3g}")
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines)

    def markdown(self) -> str:
        """``summary.md``: counts, the aggregate table, the failures and the missing tasks."""
        out = [
            f"# Benchmark `{self.name}`",
            "",
            f"{len(self.rows)} tasks: {self.n_ok} finished, {self.n_failed} failed, "
            f"{self.n_missing} not run. Means over the examples of the means over sources; "
            "SI-SDRi with its standard deviation over examples; RTF: processing time / audio "
            "duration.",
            "",
            self.table(),
        ]
        if self.n_failed:
            out += ["", "## Failed tasks", "", "| method | example | key | error |",
                    "|---|---|---|---|"]  # fmt: skip
            for f in self.failures():
                error = str(f["error"]).replace("|", "\\|")
                out.append(f"| {f['variant']} | {f['item']} | `{f['key']}` | {error} |")
        if self.n_missing:
            out += ["", "## Not run", ""]
            out += [f"- {r['variant']} on {r['item']} (`{r['key']}`)" for r in self.rows
                    if r["status"] == "missing"]  # fmt: skip
        return "\n".join(out) + "\n"


def _mean(values: Sequence[float]) -> float | None:
    values = [v for v in values if v is not None and math.isfinite(v)]
    return sum(values) / len(values) if values else None


def _row(key: str, spec: Mapping[str, Any], result: Mapping[str, Any] | None) -> dict[str, Any]:
    row: dict[str, Any] = {
        "key": key,
        "method": spec["method"],
        "variant": spec["variant"],
        "item": spec["item"],
        "status": "missing" if result is None else result["status"],
    }
    means = ((result.get("metrics") or {}).get("mean") or {}) if result else {}
    for m in SUMMARY_METRICS:
        row[m] = means.get(m)
    for k in ("n_sources", "n_mics"):
        row[k] = (result or {}).get(k)
    for k in TIMING_FIELDS:
        row[k] = (result or {}).get(k)
    row["error"] = (result or {}).get("error")
    return row


def _aggregate(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault(r["variant"], []).append(r)
    out = []
    for variant, group in groups.items():
        ok = [r for r in group if r["status"] == "ok"]
        agg: dict[str, Any] = {
            "variant": variant,
            "method": group[0]["method"],
            "tasks": len(group),
            "ok": len(ok),
            "failed": sum(r["status"] == "failed" for r in group),
            "missing": sum(r["status"] == "missing" for r in group),
        }
        for m in SUMMARY_METRICS:
            agg[m] = _mean([r[m] for r in ok])
        values = [v for r in ok if (v := r["si_sdr_improvement"]) is not None and math.isfinite(v)]
        agg["si_sdr_improvement_std"] = statistics.pstdev(values) if len(values) > 1 else None
        agg["si_sdr_improvement_median"] = statistics.median(values) if values else None
        for k in TIMING_FIELDS:
            agg[k] = _mean([r[k] for r in ok])
        out.append(agg)
    return out


def _csv(rows: list[dict[str, Any]]) -> str:
    columns = list(rows[0])
    buffer = _io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if row.get(k) is None else row[k] for k in columns})
    return buffer.getvalue()


def _write_text(path: Path, text: str) -> None:
    import os

    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _load(folder: Path, all_results: bool) -> tuple[str, list[tuple[str, dict, dict | None]]]:
    """``(name, [(key, spec, result or None)])`` in plan order."""
    if not folder.exists():
        raise FileNotFoundError(f"benchmark folder not found: {str(folder)!r}")
    if not folder.is_dir():
        raise NotADirectoryError(f"benchmark folder {str(folder)!r} is not a folder")
    results_dir = folder / "results"
    found = sorted(results_dir.glob("*.json")) if results_dir.is_dir() else []
    if not found:
        raise ValueError(
            f"benchmark folder {str(folder)!r} is empty: no result files in "
            f"{str(results_dir)!r}; run `torchbss benchmark out_dir={folder}` first"
        )
    results = {p.stem: _checked_result(p, read_json(p)) for p in found}
    plan_path = folder / "plan.json"
    plan = read_json(plan_path) if plan_path.is_file() else None
    if plan is not None and not (
        isinstance(plan, dict)
        and isinstance(plan.get("name"), str)
        and isinstance(plan.get("keys"), list)
        and all(isinstance(k, str) for k in plan["keys"])
    ):
        raise ValueError(
            f"{str(plan_path)!r} is not a benchmark plan: expected an object with 'name' (text) "
            "and 'keys' (a list of task keys); pass all_results=True (--all) to summarise the "
            "result files alone"
        )
    name = plan["name"] if plan else folder.name
    entries: list[tuple[str, dict, dict | None]] = []
    if plan is not None and not all_results:
        for key in plan["keys"]:
            spec_path = folder / "tasks" / f"{key}.json"
            spec = read_json(spec_path) if spec_path.is_file() else results.get(key, {}).get("spec")
            if spec is None:
                raise ValueError(
                    f"{str(folder)!r}: plan.json names task {key} but its spec is gone"
                )
            entries.append((key, spec, results.get(key)))
    else:
        for key, result in results.items():
            entries.append((key, result["spec"], result))
        entries.sort(key=lambda e: (e[1]["variant"], e[1]["item"]))
    if not any(result is not None for _, _, result in entries):
        raise ValueError(
            f"benchmark folder {str(folder)!r} is empty: none of the {len(entries)} planned "
            "tasks has a result yet"
        )
    return name, entries


def _checked_result(path: Path, result: Any) -> dict[str, Any]:
    """A result file's content, checked for what the summary reads (a ``ValueError`` naming the
    file and the field otherwise: a hand-edited or foreign file is not a traceback)."""

    def bad(what: str) -> ValueError:
        return ValueError(f"{str(path)!r} is not a benchmark result: {what}")

    if not isinstance(result, dict):
        raise bad(f"expected a JSON object, got {type(result).__name__}")
    if result.get("status") not in ("ok", "failed"):
        raise bad(f'\'status\' must be "ok" or "failed", got {result.get("status")!r}')
    spec = result.get("spec")
    if not isinstance(spec, dict) or not all(k in spec for k in ("method", "variant", "item")):
        raise bad("'spec' must be an object with 'method', 'variant' and 'item'")
    metrics = result.get("metrics")
    if metrics is not None and not (
        isinstance(metrics, dict) and isinstance(metrics.get("mean", {}), dict)
    ):
        raise bad("'metrics' must be an object whose 'mean' is an object of numbers")
    means = (metrics or {}).get("mean", {})
    for key in (*SUMMARY_METRICS, *TIMING_FIELDS):
        value = means.get(key) if key in SUMMARY_METRICS else result.get(key)
        if value is not None and (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not math.isfinite(value)
        ):
            raise bad(f"{key!r} must be a finite number or null, got {value!r}")
    return result


def _figures(summary: Summary, folder: Path) -> dict[str, Path]:
    try:
        from torchbss.plot import benchmark_summary, quality_vs_speed
        from torchbss.plot._common import require_matplotlib

        require_matplotlib()
    except ImportError:
        return {}
    records = []
    for r in summary.rows:
        if r["status"] != "ok":
            continue
        rec = {"method": r["variant"]}
        for m in (*SUMMARY_METRICS, "real_time_factor"):
            if r.get(m) is not None and math.isfinite(r[m]):
                rec[m] = r[m]
        records.append(rec)
    if not records:
        return {}
    figures_dir = folder / "figures"
    figures_dir.mkdir(exist_ok=True)
    out = {}
    present = [m for m in ("si_sdr_improvement", "sdr_improvement", "sir", "si_sdr", "sdr")
               if all(m in rec for rec in records)][:3]  # fmt: skip
    n_variants = len({rec["method"] for rec in records})
    longest = max(len(rec["method"]) for rec in records)
    width = max(4.0, 0.5 * n_variants + 1.0)
    height = 3.6 + min(3.0, 0.05 * longest * (1 if n_variants > 3 else 0))  # rotated labels
    if present and n_variants <= 6:  # side by side
        path = figures_dir / "metrics.png"
        benchmark_summary(records, metrics=present, panel_size=(width, height),
                          title=f"{summary.name}: spread over examples", save=path)  # fmt: skip
        out["metrics"] = path
    else:  # many methods: one figure per metric, each as wide as the methods need
        for metric in present:
            path = figures_dir / f"metrics_{metric}.png"
            benchmark_summary(records, metrics=[metric], panel_size=(width, height),
                              title=f"{summary.name}: spread over examples", save=path)  # fmt: skip
            out[f"metrics_{metric}"] = path
    quality = "si_sdr_improvement" if "si_sdr_improvement" in present else (present or [None])[0]
    if quality is not None and all("real_time_factor" in rec and rec["real_time_factor"] > 0
                                   for rec in records):  # fmt: skip
        path = figures_dir / "quality_vs_speed.png"
        label = {"si_sdr_improvement": "SI-SDR improvement (dB)"}.get(quality, quality)
        quality_vs_speed(records, quality=quality, quality_label=label, title=summary.name,
                         figsize=(7.0, 4.8), save=path)  # fmt: skip
        out["quality_vs_speed"] = path
    return out


def _report(summary: Summary, folder: Path, entries, max_examples: int, plots: bool) -> Path:
    import torch

    from torchbss import io
    from torchbss.benchmark.sources import build_source
    from torchbss.report import ReportExample, write_report

    with_audio = [
        (k, s, r)
        for k, s, r in entries
        if r is not None and r["status"] == "ok" and (r.get("saved") or {}).get("audio")
    ]
    if not with_audio:
        raise ValueError(
            f"the listening report of {str(folder)!r} needs estimated audio, and no finished "
            "task saved any: run the benchmark with save.audio=true (report=true turns it on)"
        )
    # the best variant of each method (by mean SI-SDRi over the examples), example by example
    score = {a["variant"]: a.get("si_sdr_improvement") for a in summary.methods}
    if all(v is None for v in score.values()):
        score = {a["variant"]: a.get("si_sdr") for a in summary.methods}
    best: dict[str, str] = {}
    for _, spec, _ in with_audio:
        method, variant = spec["method"], spec["variant"]
        current = best.get(method)
        value = score.get(variant)
        if current is None or (value is not None and value > (score.get(current) or -math.inf)):
            best[method] = variant
    items = list(dict.fromkeys(s["item"] for _, s, _ in with_audio))
    chosen = set(best.values())
    ordered = [
        e
        for item in items
        for e in with_audio
        if e[1]["item"] == item and e[1]["variant"] in chosen
    ][:max_examples]
    rates = [r["sample_rate"] for _, _, r in ordered]
    sample_rate = max(set(rates), key=rates.count)
    examples, skipped = [], []
    for key, spec, result in ordered:
        if result["sample_rate"] != sample_rate:
            skipped.append(key)
            continue
        try:  # an example that cannot be shown is left out, and the reason kept
            example = build_source(spec["data"]).load(spec["item"])
            estimates = torch.cat([io.load(folder / p)[0] for p in result["saved"]["audio"]])
            per_source = result["metrics"]["per_source"]
            metrics = {m: per_source[m] for m in ("si_sdr_improvement", "si_sdr", "sdr", "sir",
                                                  "sar") if m in per_source}  # fmt: skip
            metrics = {
                m: [float("nan") if v is None else v for v in vals] for m, vals in metrics.items()
            }
            metrics["real-time factor"] = result["real_time_factor"]
            examples.append(
                ReportExample(
                    name=f"{spec['item']} · {spec['variant']}",
                    mixture=example.mixture,
                    estimates=estimates,
                    references=example.reference,
                    metrics=metrics,
                    source_names=example.source_names,
                    ref_mic=spec["metrics"]["ref_mic"],
                )
            )
        except (OSError, ValueError, RuntimeError, KeyError, TypeError) as err:
            skipped.append(f"{key} ({type(err).__name__}: {err})")
    if not examples:
        raise ValueError(
            f"the listening report of {str(folder)!r} has no example to show; every task with "
            f"saved audio was left out: {'; '.join(skipped)}"
        )
    rows = []
    for a in summary.methods:
        row = {"method": a["variant"], "done": f"{a['ok']}/{a['tasks']}"}
        for m in SUMMARY_METRICS[:6]:
            if a.get(m) is not None:
                row[_TITLES[m] + " (dB)"] = a[m]
        if a.get("real_time_factor") is not None:
            row["RTF"] = a["real_time_factor"]
        rows.append(row)
    figures = {}
    for kind, path in summary.files.items():
        if kind == "metrics":
            figures["Metrics per method (spread over examples)"] = path
        elif kind.startswith("metrics_"):
            name = _TITLES.get(kind.removeprefix("metrics_"), kind)
            figures[f"{name} per method (spread over examples)"] = path
        elif kind == "quality_vs_speed":
            figures["Quality against speed"] = path
    description = (
        f"{len(summary.rows)} tasks ({summary.n_ok} finished, {summary.n_failed} failed, "
        f"{summary.n_missing} not run); {len(examples)} examples with audio"
    )
    if skipped:
        description += f"; {len(skipped)} left out (other sample rate or unreadable)"
    if plots:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            plots = False
    return write_report(
        folder / "report",
        examples,
        sample_rate=sample_rate,
        summary_rows=rows,
        figures=figures,
        title=f"torchbss benchmark: {summary.name}",
        description=description,
        overwrite=True,
        plots=plots,
    )


def summarize(
    folder: str,
    *,
    report: bool = False,
    plots: bool = True,
    all_results: bool = False,
    max_report_examples: int = 12,
) -> Summary:
    """Summarise a benchmark folder from its result files (see the module docstring).

    Args:
        folder: the benchmark folder (``out_dir`` of the run).
        report: also write the listening report ``report/index.html`` (needs tasks run with
            ``save.audio=true``).
        plots: draw the figures, and the spectrograms of the report (skipped without
            matplotlib).
        all_results: summarise every result file in the folder, not only the tasks of the last
            run's ``plan.json``.
        max_report_examples: most (example, method) sections in the report: the best variant
            of every method (highest mean SI-SDR improvement) on the first examples.

    Returns:
        The :class:`Summary` (also written as ``summary.csv``, ``summary.json``, ``summary.md``).

    Raises:
        FileNotFoundError: no such folder.
        ValueError: the folder holds no results ("... is empty"), or ``report`` without saved
            audio.
    """
    folder = Path(folder)
    name, entries = _load(folder, all_results)
    rows = [_row(key, spec, result) for key, spec, result in entries]
    summary = Summary(folder, name, rows, _aggregate(rows))
    write_json(folder / "summary.json", summary.to_dict())
    _write_text(folder / "summary.csv", _csv(rows))
    _write_text(folder / "summary.md", summary.markdown())
    summary.files.update({k: folder / f"summary.{k}" for k in ("json", "csv", "md")})
    if plots:
        summary.files.update(_figures(summary, folder))
    if report:
        summary.files["report"] = _report(summary, folder, entries, max_report_examples, plots)
    return summary
