"""Write a listening report: a self-contained folder with ``index.html``, WAV files and PNGs.

Layout of the folder (every link in ``index.html`` is relative, so the folder can be moved,
zipped or served as is; no CSS, script or font is fetched from anywhere)::

    report/
      index.html                       summary table, plots, one section per example
      .torchbss-report                 marker: this folder is a report (see ``overwrite``)
      audio/<example>/mixture.wav      the reference mic of the mixture (16-bit PCM)
      audio/<example>/mixture_all_mics.wav   every mic (only with more than one)
      audio/<example>/reference_<k>.wav, estimate_<k>.wav
      figures/<example>_spectrograms.png, <example>_si_sdr.png, <figure>.png

The report is built in a temporary sibling folder and moved into place at the end, so a failure
leaves no half-written report, and a reader never sees one.
"""

from __future__ import annotations

import math
import os
import re
import secrets
import shutil
from collections.abc import Mapping, Sequence
from html import escape
from pathlib import Path
from typing import Any

import torch

from torchbss._validation import check_positive_int
from torchbss.report.example import ReportExample
from torchbss.report.html import (
    audio_tag,
    figure_tag,
    format_value,
    href,
    render_page,
    render_table,
)

__all__ = ["write_report", "check_report_target", "MARKER"]

#: File that marks a folder as a torchbss report (only such a folder is replaced by ``overwrite``).
MARKER = ".torchbss-report"
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".svg")
#: Peak level the audio of one example is scaled down to when it would clip.
PEAK = 0.99


def _slug(text: str, limit: int = 40) -> str:
    """A file-name-safe version of ``text`` (letters, digits, ``.``, ``_``, ``-``)."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._-")[:limit]
    return slug or "item"


def _check_examples(examples: object) -> list[ReportExample]:
    if isinstance(examples, ReportExample):
        examples = [examples]
    if not isinstance(examples, Sequence) or isinstance(examples, str):
        raise TypeError(
            f"examples must be a sequence of ReportExample, got {type(examples).__name__}"
        )
    if len(examples) == 0:
        raise ValueError(
            "no examples: the report needs at least one ReportExample (got an empty list; "
            "was the folder of estimates empty?)"
        )
    for i, example in enumerate(examples):
        if not isinstance(example, ReportExample):
            raise TypeError(
                f"examples[{i}] must be a torchbss.report.ReportExample, "
                f"got {type(example).__name__}"
            )
    return list(examples)


def _check_rows(rows: object) -> list[Mapping[str, object]] | None:
    if rows is None:
        return None
    if not isinstance(rows, Sequence) or isinstance(rows, str):
        raise TypeError(f"summary_rows must be a sequence of mappings, got {type(rows).__name__}")
    for i, row in enumerate(rows):
        if not isinstance(row, Mapping):
            raise TypeError(
                f"summary_rows[{i}] must be a mapping {{column: value}}, got {type(row).__name__}"
            )
    return list(rows)


def _check_figures(figures: object) -> dict[str, Any]:
    if figures is None:
        return {}
    if not isinstance(figures, Mapping):
        raise TypeError(
            "figures must be a mapping {caption: matplotlib Figure or image path}, "
            f"got {type(figures).__name__}"
        )
    for caption, value in figures.items():
        if isinstance(value, (str, os.PathLike)):
            path = Path(value)
            if path.suffix.lower() not in _IMAGE_SUFFIXES or not path.is_file():
                raise ValueError(
                    f"figures[{caption!r}] must be an existing image file {_IMAGE_SUFFIXES}, "
                    f"got {str(path)!r}"
                )
        elif not hasattr(value, "savefig"):
            raise TypeError(
                f"figures[{caption!r}] must be a matplotlib Figure or an image path, "
                f"got {type(value).__name__}"
            )
    return dict(figures)


def check_report_target(out_dir: str | os.PathLike, overwrite: bool) -> bool:
    """Check that :func:`write_report` may write ``out_dir``; return whether it holds an old
    report to replace.

    Raises:
        FileExistsError: ``out_dir`` is a file, or a non-empty folder without ``overwrite``,
            or a non-empty folder that is not a torchbss report.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise FileExistsError(f"report folder {str(out_dir)!r} exists and is not a folder")
    if not out_dir.exists() or not any(out_dir.iterdir()):
        return False
    if not overwrite:
        raise FileExistsError(
            f"report folder {str(out_dir)!r} exists and is not empty; pass overwrite=True "
            "to replace a previous report, or choose another folder"
        )
    if not (out_dir / MARKER).is_file():
        raise FileExistsError(
            f"report folder {str(out_dir)!r} is not empty and is not a torchbss report (no "
            f"{MARKER} file); overwrite=True only replaces a previous report, so choose "
            "another folder or empty this one"
        )
    return True


def _umask() -> int:
    """The process umask (read from /proc where possible, so it is never changed)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _open_permissions(root: Path) -> None:
    """Give every file and folder under ``root`` the permissions the umask allows.

    Atomic writers (temporary file + rename) create files readable by their owner only; a
    report is meant to be shared or served, like any file written with ``open``.
    """
    mask = _umask()
    for path in [root, *root.rglob("*")]:
        path.chmod((0o777 if path.is_dir() else 0o666) & ~mask)


def _sibling(path: Path, kind: str) -> Path:
    """A fresh hidden name beside ``path``."""
    return path.with_name(f".{path.name}.{secrets.token_hex(6)}.{kind}")


def _write_text(path: Path, text: str) -> None:
    path.write_text(text, encoding="utf-8")


def _save_audio(path: Path, audio: torch.Tensor, sample_rate: int) -> None:
    from torchbss.io import save

    save(path, audio.to("cpu", torch.float32), sample_rate, subtype="int16")


def _example_section(
    example: ReportExample,
    anchor: str,
    slug: str,
    root: Path,
    sample_rate: int,
    *,
    plots: bool,
    framewise: bool,
    n_fft: int,
    hop_length: int,
) -> str:
    """Write one example's audio and figures under ``root``; return its HTML section."""
    signals = [example.mixture, example.estimates]
    if example.references is not None:
        signals.append(example.references)
    peak = max(float(s.abs().max()) for s in signals)
    gain = min(1.0, PEAK / peak) if peak > 0 else 1.0

    def wav(name: str, audio: torch.Tensor) -> str:
        rel = f"audio/{slug}/{name}.wav"
        _save_audio(root / rel, audio * gain, sample_rate)
        return rel

    names = example.names
    n_mics = example.mixture.shape[0]
    mixture_rel = wav("mixture", example.mixture[example.ref_mic : example.ref_mic + 1])
    mixture_cell = audio_tag(mixture_rel, "mixture")
    if n_mics > 1:
        all_rel = wav("mixture_all_mics", example.mixture)
        mixture_cell += (
            f'<span class="dl">mic {example.ref_mic}; '
            f'<a href="{href(all_rel)}" download>all {n_mics} mics (WAV)</a></span>'
        )
    per_source = [k for k, v in example.metrics.items() if isinstance(v, tuple)]
    scalars = [k for k, v in example.metrics.items() if not isinstance(v, tuple)]
    has_ref = example.references is not None
    head = ["source"] + (["reference"] if has_ref else []) + ["estimate"] + per_source
    rows = [
        "<tr>"
        + "<td>mixture</td>"
        + f'<td colspan="{2 if has_ref else 1}">{mixture_cell}</td>'
        + "<td></td>" * len(per_source)
        + "</tr>"
    ]
    for k in range(example.n_sources):
        cells = [f"<td>{_esc(names[k])}</td>"]
        if has_ref:
            rel = wav(f"reference_{k}", example.references[k : k + 1])
            cells.append(f"<td>{audio_tag(rel, f'reference: {names[k]}')}</td>")
        rel = wav(f"estimate_{k}", example.estimates[k : k + 1])
        cells.append(f"<td>{audio_tag(rel, f'estimate: {names[k]}')}</td>")
        for key in per_source:
            text, _ = format_value(example.metrics[key][k])
            cells.append(f'<td class="num">{_esc(text)}</td>')
        rows.append("<tr>" + "".join(cells) + "</tr>")
    table = (
        '<div class="scroll"><table><thead><tr>'
        + "".join(f"<th>{_esc(h)}</th>" for h in head)
        + "</tr></thead><tbody>"
        + "".join(rows)
        + "</tbody></table></div>"
    )
    parts = [f'<section class="example" id="{anchor}"><h3>{_esc(example.name)}</h3>']
    seconds = example.mixture.shape[-1] / sample_rate
    note = f"{seconds:.2f} s, {n_mics} mic(s), {example.n_sources} source(s)"
    if gain < 1.0:
        gain_db = 20 * math.log10(gain)
        note += f"; all signals of this example scaled by {gain_db:.1f} dB to avoid clipping"
    parts.append(f'<p class="note">{_esc(note)}</p>')
    if scalars:
        items = ", ".join(
            f"{_esc(k)}: {_esc(format_value(example.metrics[k])[0])}" for k in scalars
        )
        parts.append(f'<p class="note">{items}</p>')
    parts.append(table)
    if plots:
        import matplotlib

        from torchbss.plot import si_sdr_over_time, spectrogram_grid
        from torchbss.plot._common import write_png

        rel = f"figures/{slug}_spectrograms.png"
        fig = spectrogram_grid(
            example.mixture,
            references=example.references,
            estimates=example.estimates,
            sample_rate=sample_rate,
            n_fft=n_fft,
            hop_length=hop_length,
            source_names=names,
            cmap=matplotlib.colormaps["magma"].resampled(128),
        )
        write_png(fig, root / rel, palette=True)
        parts.append('<div class="gallery">')
        parts.append(figure_tag(rel, f"{example.name}: power spectrograms (dB, one colour scale)"))
        if framewise and has_ref:
            from torchbss.metrics import framewise_si_sdr

            window_s, hop_s = 1.0, 0.5
            result = framewise_si_sdr(
                example.references.double(),
                example.estimates.double(),
                sample_rate,
                window_s=window_s,
                hop_s=hop_s,
            )
            n_frames = result.values.shape[-1]
            window = min(window_s, seconds)
            times = torch.arange(n_frames, dtype=torch.float64) * hop_s + window / 2
            rel = f"figures/{slug}_si_sdr.png"
            width = fig.get_figwidth()  # as wide as the spectrograms above it
            fig = si_sdr_over_time(result, times, source_names=names, figsize=(width, 2.6))
            write_png(fig, root / rel, palette=True)
            parts.append(
                figure_tag(rel, f"{example.name}: SI-SDR over 1 s windows every 0.5 s (dB)")
            )
        parts.append("</div>")
    parts.append("</section>")
    return "\n".join(parts)


def _esc(text: object) -> str:
    return escape(str(text), quote=True)


def _summary_from_examples(examples: list[ReportExample]) -> tuple[list[dict], dict | None]:
    """One row per example with every metric (per-source metrics as their mean), and the mean."""
    rows = []
    keys: list[str] = list(dict.fromkeys(k for e in examples for k in e.metrics))
    for e in examples:
        row: dict[str, object] = {"example": e.name}
        for key in keys:
            if key in e.metrics:
                row[key] = e.metric_mean(key)
        rows.append(row)
    if not keys:
        return rows, None
    mean: dict[str, object] = {"example": "mean"}
    for key in keys:
        values = [r[key] for r in rows if key in r and math.isfinite(r[key])]
        mean[key] = sum(values) / len(values) if values else math.nan
    return rows, (mean if len(rows) > 1 else None)


def write_report(
    out_dir: str | os.PathLike,
    examples: Sequence[ReportExample],
    *,
    sample_rate: int,
    summary_rows: Sequence[Mapping[str, object]] | None = None,
    figures: Mapping[str, Any] | None = None,
    title: str = "torchbss listening report",
    description: str | None = None,
    overwrite: bool = False,
    plots: bool = True,
    framewise: bool = True,
    n_fft: int = 1024,
    hop_length: int = 256,
) -> Path:
    """Write a self-contained listening report folder and return the path of its ``index.html``.

    The page has a summary table, the extra ``figures``, and one section per example with
    ``<audio controls>`` players for the mixture (its reference mic, with a link to all mics),
    every reference and every estimate, the per-source metrics beside them, a spectrogram grid
    (mixture, references, estimates on one dB scale) and, with references, the SI-SDR over 1 s
    windows. The audio of one example is written as 16-bit WAV with one common gain, lowered
    only when the loudest signal would clip (the page says so), so levels stay comparable.

    Args:
        out_dir: the report folder (created; its parents too).
        examples: the :class:`ReportExample` items, in page order (at least one).
        sample_rate: sampling rate of every signal, in Hz.
        summary_rows: rows ``{column: value}`` of the summary table (e.g. one per method of a
            benchmark); default: one row per example with every metric (per-source metrics as
            their mean) and a mean row.
        figures: ``{caption: matplotlib Figure or image path}`` shown in a "Plots" section
            (e.g. from :mod:`torchbss.plot`); Figures are saved as PNG, files are copied.
        title: page title.
        description: optional sentence under the title (e.g. the command that made it).
        overwrite: replace a previous report in ``out_dir`` (a folder with the
            ``.torchbss-report`` marker). A non-empty folder is refused without it, and a
            non-empty folder that is not a report is always refused.
        plots: draw spectrograms (and frame-wise SI-SDR) per example; needs matplotlib
            (``pip install 'torchbss[plot]'``).
        framewise: with ``plots`` and references, add the frame-wise SI-SDR plot.
        n_fft: FFT size of the spectrograms.
        hop_length: hop of the spectrograms.

    Returns:
        Path of ``out_dir / "index.html"``.

    Raises:
        ValueError: no examples ("no examples"), bad arguments.
        FileExistsError: ``out_dir`` is not empty (see ``overwrite``).
        ImportError: ``plots=True`` without matplotlib, or no soundfile (``torchbss[io]``).

    Example:
        >>> import tempfile, torch
        >>> from torchbss.report import ReportExample, write_report
        >>> mix = torch.randn(2, 8000) * 0.1
        >>> ex = ReportExample("demo", mix, estimates=mix, metrics={"si_sdr": [1.0, 2.0]})
        >>> index = write_report(tempfile.mkdtemp() + "/r", [ex], sample_rate=8000, plots=False)
        >>> index.name
        'index.html'
    """
    examples = _check_examples(examples)
    check_positive_int(sample_rate, "sample_rate")
    rows = _check_rows(summary_rows)
    figures = _check_figures(figures)
    for name, value in (("n_fft", n_fft), ("hop_length", hop_length)):
        check_positive_int(value, name)
    if plots:
        from torchbss.plot._common import require_matplotlib

        require_matplotlib()
    from torchbss.io import _soundfile

    _soundfile()  # fail before writing anything when soundfile is missing
    out_dir = Path(out_dir)
    replace_old = check_report_target(out_dir, overwrite)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = _sibling(out_dir, "tmp")
    tmp.mkdir()  # not tempfile.mkdtemp: the report gets the umask's permissions, not 0700
    try:
        _build(
            tmp,
            examples,
            sample_rate,
            rows,
            figures,
            title,
            description,
            plots,
            framewise,
            n_fft,
            hop_length,
        )
        _open_permissions(tmp)
        if replace_old:
            old = _sibling(out_dir, "old")
            os.replace(out_dir, old)
            os.replace(tmp, out_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            if out_dir.exists():
                out_dir.rmdir()  # empty
            os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir / "index.html"


def _build(
    root: Path,
    examples: list[ReportExample],
    sample_rate: int,
    rows: list[Mapping[str, object]] | None,
    figures: dict[str, Any],
    title: str,
    description: str | None,
    plots: bool,
    framewise: bool,
    n_fft: int,
    hop_length: int,
) -> None:
    """Write every file of the report under ``root``."""
    from torchbss import __version__

    (root / "figures").mkdir()
    (root / "audio").mkdir()
    nav: list[tuple[str, str]] = [("summary", "Summary")]
    body: list[str] = []
    if rows is None:
        rows, mean = _summary_from_examples(examples)
    else:
        mean = None
    body.append('<section id="summary"><h2>Summary</h2>')
    body.append(render_table(rows, mean_row=mean) if rows and rows[0] else "<p>No metrics.</p>")
    body.append("</section>")
    if figures:
        nav.append(("plots", "Plots"))
        body.append('<section id="plots"><h2>Plots</h2><div class="gallery">')
        for i, (caption, value) in enumerate(figures.items()):
            if hasattr(value, "savefig"):
                rel = f"figures/{i:02d}_{_slug(str(caption))}.png"
                value.savefig(root / rel, format="png", dpi=value.dpi)
            else:
                src = Path(value)
                rel = f"figures/{i:02d}_{_slug(src.stem)}{src.suffix.lower()}"
                shutil.copyfile(src, root / rel)
            body.append(figure_tag(rel, str(caption)))
        body.append("</div></section>")
    body.append('<section id="examples"><h2>Examples</h2>')
    for i, example in enumerate(examples):
        anchor = f"example-{i}"
        nav.append((anchor, example.name))
        body.append(
            _example_section(
                example,
                anchor,
                f"{i:02d}_{_slug(example.name)}",
                root,
                sample_rate,
                plots=plots,
                framewise=framewise,
                n_fft=n_fft,
                hop_length=hop_length,
            )
        )
    body.append("</section>")
    n = len(examples)
    meta = f"{n} example{'s' if n != 1 else ''}, {sample_rate} Hz"
    if description:
        meta += f". {description}"
    page = render_page(title, meta, nav, "\n".join(body), f"torchbss {__version__}")
    _write_text(root / "index.html", page)
    _write_text(root / MARKER, f"torchbss {__version__} listening report\n")
