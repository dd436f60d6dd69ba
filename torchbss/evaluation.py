"""Score separated files against references: one file, or folders matched by name.

What ``torchbss evaluate`` runs. Each example is scored with
:func:`torchbss.metrics.compute_metrics` (SDR, SIR, SAR and the permutation from BSS-Eval,
SI-SDR, improvements over the mixture, frame-wise SI-SDR summaries); the result is an
:class:`Evaluation` with per-file rows and the mean over files, printed as a readable table
(:meth:`Evaluation.table`) or written as JSON (:meth:`Evaluation.to_dict`) and CSV
(:meth:`Evaluation.to_csv`).

Folders are matched by example name (audio files ``.wav``, ``.flac``, ``.ogg``, not recursive):

* references: ``<name>.wav`` or ``<name>_ref.flac`` (``reference_suffix``; the
  ``shared/data/mixtures`` layout), one channel per source;
* mixtures (optional, for the improvements): ``<name>.wav`` or ``<name>_mix.flac``;
* estimates: one multichannel file per example (``<name>.wav``), or one file per source
  ``<name>_source<k>.wav`` as ``torchbss separate`` writes them (a ``_mix`` ending of
  ``<name>`` is dropped, so ``2x2_00_mix_source0.wav`` is source 0 of ``2x2_00``).

Signals must agree: the same sample rate everywhere, and the same length, unless
``truncate=True`` scores the common part (the result says so: ``samples`` and ``lengths``).
"""

from __future__ import annotations

import csv
import io as _io
import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from torchbss.metrics.bundle import MetricBundle, compute_metrics

__all__ = [
    "evaluate_files",
    "evaluate_folders",
    "Evaluation",
    "FileEvaluation",
    "AUDIO_SUFFIXES",
    "TABLE_METRICS",
]

#: File endings read as audio.
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg")
#: Metrics shown by :meth:`Evaluation.table` (when present), with their column titles.
TABLE_METRICS = {
    "sdr": "SDR",
    "sir": "SIR",
    "sar": "SAR",
    "si_sdr": "SI-SDR",
    "sdr_improvement": "SDRi",
    "si_sdr_improvement": "SI-SDRi",
}
_SOURCE_FILE = re.compile(r"^(?P<name>.*)_source(?P<index>\d+)$")


@dataclass
class FileEvaluation:
    """Scores of one example.

    Attributes:
        name: the example name.
        metrics: the :class:`~torchbss.metrics.MetricBundle` (per-source metrics ordered by
            reference; ``metrics.permutation[j]`` is the estimate channel matched to reference
            ``j``).
        samples: number of samples scored.
        sample_rate: Hz.
        lengths: samples of every input file before truncation ``{path: samples}``.
        files: ``{"reference": path, "estimates": [paths], "mixture": path or None}``.
    """

    name: str
    metrics: MetricBundle
    samples: int
    sample_rate: int
    lengths: dict[str, int]
    files: dict[str, Any]

    @property
    def truncated(self) -> bool:
        """Whether some input was longer than the part scored."""
        return any(n != self.samples for n in self.lengths.values())

    def mean(self) -> dict[str, float | None]:
        """Mean of every metric over the sources of this example."""
        return self.metrics.mean()

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (the bundle's :meth:`~torchbss.metrics.MetricBundle.to_dict`)."""
        return {
            "name": self.name,
            "samples": self.samples,
            "sample_rate": self.sample_rate,
            "truncated": self.truncated,
            "lengths": dict(self.lengths),
            "files": self.files,
            "metrics": self.metrics.to_dict(),
        }


@dataclass
class Evaluation:
    """Scores of one or more examples: per-file results and the mean over files.

    Attributes:
        files: one :class:`FileEvaluation` per example, in name order.
        settings: the scoring settings (``ref_mic``, ``filter_length``, ``truncate``).
    """

    files: list[FileEvaluation]
    settings: dict[str, Any] = field(default_factory=dict)

    def mean(self) -> dict[str, float | None]:
        """Mean over files of each file's mean over sources (NaN/None left out)."""
        names = list(dict.fromkeys(k for f in self.files for k in f.metrics.names))
        out: dict[str, float | None] = {}
        for name in names:
            values = [f.mean().get(name) for f in self.files]
            values = [v for v in values if v is not None and math.isfinite(v)]
            out[name] = sum(values) / len(values) if values else None
        return out

    def rows(self, per_source: bool = True) -> list[dict[str, Any]]:
        """Flat rows: per source (``per_source``) and per file (``source == "mean"``), then the
        mean over files (``file == "mean"``, only with several files)."""
        rows = []
        for f in self.files:
            bundle = f.metrics
            if per_source:
                perm = bundle.permutation.reshape(-1).tolist()
                for j in range(bundle.n_sources):
                    row: dict[str, Any] = {"file": f.name, "source": str(j)}
                    row["estimate"] = str(perm[j])
                    for name in bundle.names:
                        value = float(getattr(bundle, name).reshape(-1, bundle.n_sources)[0, j])
                        row[name] = value if math.isfinite(value) else None
                    rows.append(row)
            rows.append({"file": f.name, "source": "mean", "estimate": "", **f.mean()})
        if len(self.files) > 1:
            rows.append({"file": "mean", "source": "mean", "estimate": "", **self.mean()})
        return rows

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form: settings, per-file results and the mean over files."""
        return {
            "settings": dict(self.settings),
            "files": [f.to_dict() for f in self.files],
            "mean": self.mean(),
        }

    def to_csv(self, path: str | os.PathLike | None = None) -> str:
        """CSV of :meth:`rows` (one row per file and source, the per-file means with
        ``source == "mean"`` and the mean over files); written to ``path`` when given."""
        rows = self.rows(per_source=True)
        columns = list(dict.fromkeys(k for r in rows for k in r))
        buffer = _io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in columns})
        text = buffer.getvalue()
        if path is not None:
            write_text_atomic(Path(path), text)
        return text

    def table(self, per_source: bool | None = None, digits: int = 2) -> str:
        """A readable Markdown table of the main metrics in dB (see :data:`TABLE_METRICS`).

        Args:
            per_source: one row per source (default: only when one file was scored), else
                one row per file.
            digits: decimals shown.
        """
        if per_source is None:
            per_source = len(self.files) == 1
        rows = self.rows(per_source=per_source)
        present = {k for r in rows for k, v in r.items() if v is not None}
        metrics = [m for m in TABLE_METRICS if m in present]
        head = ["file", "source", "estimate"] if per_source else ["file"]
        titles = head + [f"{TABLE_METRICS[m]} (dB)" for m in metrics]
        lines = []
        for row in rows:
            if not per_source and row["file"] != "mean" and row["source"] != "mean":
                continue
            cells = [str(row[h]) for h in head]
            for m in metrics:
                value = row.get(m)
                cells.append("n/a" if value is None else f"{value:.{digits}f}")
            lines.append(cells)
        widths = [max(len(t), *(len(c[i]) for c in lines)) for i, t in enumerate(titles)]
        numeric = [False] * len(head) + [True] * len(metrics)

        def fmt(cells: list[str]) -> str:
            parts = [c.rjust(w) if num else c.ljust(w) for c, w, num in zip(cells, widths, numeric)]
            return "| " + " | ".join(parts) + " |"

        rule = (
            "|"
            + "|".join(
                ("-" * (w + 1) + ":") if num else ("-" * (w + 2)) for w, num in zip(widths, numeric)
            )
            + "|"
        )
        out = [fmt(titles), rule, *(fmt(c) for c in lines)]
        notes = [f.name for f in self.files if f.truncated]
        if notes:
            out.append(f"truncated to the common length: {', '.join(notes)}")
        return "\n".join(out)


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename (no partial file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _load(path: Path) -> tuple[torch.Tensor, int]:
    from torchbss import io

    return io.load(path, dtype=torch.float64)


def _score(
    name: str,
    reference: Path,
    estimates: Sequence[Path],
    mixture: Path | None,
    *,
    truncate: bool,
    ref_mic: int,
    filter_length: int,
    framewise: bool,
) -> FileEvaluation:
    ref, fs = _load(reference)
    signals: list[tuple[Path, torch.Tensor]] = [(reference, ref)]
    for path in estimates:
        est, fs_e = _load(path)
        if fs_e != fs:
            raise ValueError(
                f"{name}: estimate {str(path)!r} is at {fs_e} Hz but the reference "
                f"{str(reference)!r} is at {fs} Hz; resample first (sample rates must match)"
            )
        signals.append((path, est))
    mix = None
    if mixture is not None:
        mix, fs_m = _load(mixture)
        if fs_m != fs:
            raise ValueError(
                f"{name}: mixture {str(mixture)!r} is at {fs_m} Hz but the reference "
                f"{str(reference)!r} is at {fs} Hz; resample first (sample rates must match)"
            )
        if not 0 <= ref_mic < mix.shape[0]:
            raise ValueError(
                f"{name}: ref_mic={ref_mic} but the mixture {str(mixture)!r} has "
                f"{mix.shape[0]} channel(s)"
            )
        signals.append((mixture, mix))
    lengths = {str(p): int(x.shape[-1]) for p, x in signals}
    n = min(lengths.values())
    if len(set(lengths.values())) > 1 and not truncate:
        desc = ", ".join(f"{p}: {k}" for p, k in lengths.items())
        raise ValueError(
            f"{name}: lengths differ ({desc} samples); refusing to score signals of different "
            "lengths: pass truncate=True (--truncate) to score the common part"
        )
    if n < filter_length:
        raise ValueError(
            f"{name}: only {n} samples to score; BSS-Eval needs at least filter_length="
            f"{filter_length} (--filter-length)"
        )
    if len(estimates) > 1:  # one file per source: each holds one channel
        multi = [
            (str(p), x.shape[0]) for p, x in signals[1 : 1 + len(estimates)] if x.shape[0] != 1
        ]
        if multi:
            raise ValueError(
                f"{name}: with one estimate file per source each must hold one channel, but "
                f"{multi[0][0]!r} has {multi[0][1]}; give one multichannel file instead, or "
                "split it"
            )
    est = torch.cat([x[:, :n] for _, x in signals[1 : 1 + len(estimates)]], dim=0)
    ref = ref[:, :n]
    if est.shape[0] < ref.shape[0]:
        raise ValueError(
            f"{name}: {est.shape[0]} estimated channel(s) for {ref.shape[0]} reference "
            f"channel(s) in {str(reference)!r}; every reference needs an estimate"
        )
    bundle = compute_metrics(
        ref,
        est,
        None if mix is None else mix[:, :n],
        sample_rate=fs,
        ref_mic=ref_mic,
        filter_length=filter_length,
        framewise=framewise,
    )
    files = {
        "reference": str(reference),
        "estimates": [str(p) for p in estimates],
        "mixture": None if mixture is None else str(mixture),
    }
    return FileEvaluation(name, bundle, n, fs, lengths, files)


def evaluate_files(
    reference: str | os.PathLike,
    estimates: Sequence[str | os.PathLike],
    mixture: str | os.PathLike | None = None,
    *,
    name: str | None = None,
    truncate: bool = False,
    ref_mic: int = 0,
    filter_length: int = 512,
    framewise: bool = True,
) -> Evaluation:
    """Score one example: a references file against one or more estimate files.

    Args:
        reference: audio file with one reference per channel ``(samples, sources)`` on disk.
        estimates: estimate files; their channels are concatenated in order (one file per
            source, or one multichannel file). There may be more estimates than references
            (the best ones are matched).
        mixture: optional mixture file, for the improvements (SDRi, SI-SDRi).
        name: name of the example (default: the reference file's stem).
        truncate: score the common part when lengths differ (otherwise an error).
        ref_mic: mixture channel the references are images at.
        filter_length: BSS-Eval distortion filter taps.
        framewise: add the frame-wise SI-SDR summaries (1 s windows).

    Returns:
        An :class:`Evaluation` with one file.

    Raises:
        FileNotFoundError: a file does not exist.
        ValueError: sample rates differ, lengths differ without ``truncate``, too few estimated
            channels, too short signals, bad ``ref_mic``.
    """
    if isinstance(estimates, (str, os.PathLike)):
        estimates = [estimates]
    if not estimates:
        raise ValueError("no estimate files given; pass at least one")
    reference = Path(reference)
    name = name or _strip(reference.stem, "_ref")
    result = _score(
        name,
        reference,
        [Path(p) for p in estimates],
        None if mixture is None else Path(mixture),
        truncate=truncate,
        ref_mic=ref_mic,
        filter_length=filter_length,
        framewise=framewise,
    )
    return Evaluation([result], _settings(ref_mic, filter_length, truncate))


def _settings(ref_mic: int, filter_length: int, truncate: bool) -> dict[str, Any]:
    return {"ref_mic": ref_mic, "filter_length": filter_length, "truncate": truncate}


def _audio_files(folder: Path, what: str) -> list[Path]:
    if not folder.exists():
        raise FileNotFoundError(f"{what} folder not found: {str(folder)!r}")
    if not folder.is_dir():
        raise NotADirectoryError(f"{what} folder {str(folder)!r} is not a folder")
    files = sorted(
        p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES
    )
    if not files:
        raise ValueError(
            f"{what} folder {str(folder)!r} is empty: no {'/'.join(AUDIO_SUFFIXES)} files"
        )
    return files


def _strip(stem: str, suffix: str) -> str:
    return stem[: -len(suffix)] if suffix and stem.endswith(suffix) and stem != suffix else stem


def _by_name(files: list[Path], suffix: str, what: str) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for path in files:
        name = _strip(path.stem, suffix)
        if name in out:
            raise ValueError(
                f"two {what} files for example {name!r}: {str(out[name])!r} and {str(path)!r}"
            )
        out[name] = path
    return out


def _estimates_by_name(files: list[Path], mixture_suffix: str) -> dict[str, list[Path]]:
    whole: dict[str, Path] = {}
    parts: dict[str, dict[int, Path]] = {}
    for path in files:
        match = _SOURCE_FILE.match(path.stem)
        if match:
            name = _strip(match["name"], mixture_suffix)
            index = int(match["index"])
            if index in parts.setdefault(name, {}):
                raise ValueError(
                    f"two estimate files for source {index} of {name!r}: "
                    f"{str(parts[name][index])!r} and {str(path)!r}"
                )
            parts[name][index] = path
        else:
            name = _strip(path.stem, mixture_suffix)
            if name in whole:
                raise ValueError(
                    f"two estimate files for example {name!r}: {str(whole[name])!r} and "
                    f"{str(path)!r}"
                )
            whole[name] = path
    both = sorted(set(whole) & set(parts))
    if both:
        raise ValueError(
            f"example {both[0]!r} has both a whole estimate file {str(whole[both[0]])!r} and "
            "per-source files (<name>_source<k>); keep one of the two"
        )
    out = {name: [path] for name, path in whole.items()}
    for name, by_index in parts.items():
        missing = sorted(set(range(max(by_index) + 1)) - set(by_index))
        if missing:
            raise ValueError(
                f"estimates of {name!r} lack source file(s) {missing} (found "
                f"{[p.name for _, p in sorted(by_index.items())]}); sources are numbered from 0"
            )
        out[name] = [by_index[k] for k in sorted(by_index)]
    return out


def evaluate_folders(
    estimates: str | os.PathLike,
    references: str | os.PathLike,
    mixtures: str | os.PathLike | None = None,
    *,
    reference_suffix: str = "_ref",
    mixture_suffix: str = "_mix",
    truncate: bool = False,
    ref_mic: int = 0,
    filter_length: int = 512,
    framewise: bool = True,
) -> Evaluation:
    """Score a folder of estimates against a folder of references, matching files by name.

    See the module docstring for the naming rules. Every estimate needs a reference and every
    reference an estimate (and a mixture, when ``mixtures`` is given); unmatched files are an
    error that lists them.

    Args:
        estimates: folder of estimates (whole files or ``<name>_source<k>`` files).
        references: folder of references (``<name>`` or ``<name>_ref``).
        mixtures: optional folder of mixtures (``<name>`` or ``<name>_mix``).
        reference_suffix: ending dropped from reference file names.
        mixture_suffix: ending dropped from mixture (and estimate) file names.
        truncate: score the common part when lengths differ (otherwise an error).
        ref_mic: mixture channel the references are images at.
        filter_length: BSS-Eval distortion filter taps.
        framewise: add the frame-wise SI-SDR summaries.

    Returns:
        An :class:`Evaluation` with one :class:`FileEvaluation` per example, by name.

    Raises:
        FileNotFoundError / NotADirectoryError: a folder is missing.
        ValueError: an empty folder, unmatched or duplicated files, and everything
            :func:`evaluate_files` refuses.
    """
    est_files = _estimates_by_name(_audio_files(Path(estimates), "estimates"), mixture_suffix)
    ref_files = _by_name(
        _audio_files(Path(references), "references"), reference_suffix, "reference"
    )
    mix_files = None
    if mixtures is not None:
        mix_files = _by_name(_audio_files(Path(mixtures), "mixtures"), mixture_suffix, "mixture")
    no_ref = sorted(set(est_files) - set(ref_files))
    no_est = sorted(set(ref_files) - set(est_files))
    if no_ref or no_est:
        parts = []
        if no_ref:
            parts.append(f"estimates without a reference in {str(references)!r}: {no_ref}")
        if no_est:
            parts.append(f"references without estimates in {str(estimates)!r}: {no_est}")
        raise ValueError(
            "files do not match by name (" + "; ".join(parts) + "); names are the file names "
            f"without the {reference_suffix!r} / {mixture_suffix!r} endings and the "
            "_source<k> ending of per-source estimates"
        )
    if mix_files is not None:
        no_mix = sorted(set(ref_files) - set(mix_files))
        if no_mix:
            raise ValueError(f"examples without a mixture in {str(mixtures)!r}: {no_mix}")
    results = [
        _score(
            name,
            ref_files[name],
            est_files[name],
            None if mix_files is None else mix_files[name],
            truncate=truncate,
            ref_mic=ref_mic,
            filter_length=filter_length,
            framewise=framewise,
        )
        for name in sorted(ref_files)
    ]
    return Evaluation(results, _settings(ref_mic, filter_length, truncate))
