"""HTML of the listening report: one self-contained page (inline CSS, no script, no network)."""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from html import escape
from urllib.parse import quote

__all__ = ["render_page", "render_table", "format_value", "audio_tag", "figure_tag", "href"]

CSS = """
:root { --fg: #1d2430; --muted: #5b6472; --line: #d9dee5; --head: #f1f4f8; --accent: #2c5fa8; }
* { box-sizing: border-box; }
body { font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial,
  sans-serif; color: var(--fg); background: #fff; max-width: 1140px; margin: 0 auto;
  padding: 20px 24px 48px; }
h1 { font-size: 1.6em; margin: 0 0 2px; }
h2 { font-size: 1.25em; margin: 28px 0 8px; border-bottom: 2px solid var(--line);
  padding-bottom: 4px; }
h3 { font-size: 1.1em; margin: 0 0 8px; }
a { color: var(--accent); }
p.meta, p.note, figcaption { color: var(--muted); font-size: 0.92em; margin: 2px 0 8px; }
nav ol { margin: 4px 0; padding-left: 22px; columns: 3 220px; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; font-variant-numeric: tabular-nums; margin: 4px 0 8px; }
th, td { border-bottom: 1px solid var(--line); padding: 5px 10px; text-align: left;
  vertical-align: middle; white-space: nowrap; }
th { background: var(--head); font-weight: 600; }
td.num { text-align: right; }
tr.mean td { font-weight: 600; border-top: 2px solid var(--fg); }
section.example { border: 1px solid var(--line); border-radius: 8px; padding: 14px 16px;
  margin: 18px 0; }
audio { width: 250px; height: 34px; vertical-align: middle; }
figure { margin: 0; }
.gallery { display: flex; flex-wrap: wrap; gap: 14px; align-items: flex-start; margin: 10px 0; }
.gallery figure { flex: 0 1 auto; max-width: 100%; }
img { max-width: 100%; height: auto; border: 1px solid var(--line); border-radius: 4px; }
span.dl { font-size: 0.85em; margin-left: 6px; }
footer { margin-top: 32px; color: var(--muted); font-size: 0.85em; }
"""


def format_value(value: object) -> tuple[str, bool]:
    """Text of a table cell and whether it is a number (right-aligned).

    Floats get two decimals, non-finite numbers ``n/a``, anything else ``str``.
    """
    if isinstance(value, bool) or value is None:
        return ("" if value is None else str(value)), False
    if isinstance(value, numbers.Integral):
        return str(int(value)), True
    if isinstance(value, numbers.Real):
        v = float(value)
        return (f"{v:.2f}" if math.isfinite(v) else "n/a"), True
    return str(value), False


def href(path: str) -> str:
    """An escaped, URL-quoted relative link (forward slashes)."""
    return escape(quote(path.replace("\\", "/")), quote=True)


def render_table(
    rows: Sequence[Mapping[str, object]],
    *,
    columns: Sequence[str] | None = None,
    mean_row: Mapping[str, object] | None = None,
) -> str:
    """An HTML table of ``rows`` (``{column: value}``), columns in order of first appearance."""
    if columns is None:
        columns = list(dict.fromkeys(key for row in rows for key in row))
    head = "".join(f"<th>{escape(str(c))}</th>" for c in columns)
    body = []
    for row, css in [(r, "") for r in rows] + ([(mean_row, "mean")] if mean_row else []):
        cells = []
        for c in columns:
            text, is_num = format_value(row.get(c))
            cells.append(
                f'<td class="num">{escape(text)}</td>' if is_num else f"<td>{escape(text)}</td>"
            )
        cls = f' class="{css}"' if css else ""
        body.append(f"<tr{cls}>{''.join(cells)}</tr>")
    return (
        f'<div class="scroll"><table><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table></div>"
    )


def audio_tag(path: str, label: str) -> str:
    """An ``<audio controls>`` player for a relative WAV path, with a download link."""
    return (
        f'<audio controls preload="none" src="{href(path)}" aria-label="{escape(label)}">'
        f'<a href="{href(path)}">{escape(label)}</a></audio>'
    )


def figure_tag(path: str, caption: str) -> str:
    """A ``<figure>`` with a linked image and its caption."""
    return (
        f'<figure><a href="{href(path)}"><img src="{href(path)}" alt="{escape(caption)}"></a>'
        f"<figcaption>{escape(caption)}</figcaption></figure>"
    )


def render_page(
    title: str, meta: str, nav: Sequence[tuple[str, str]], body: str, generator: str
) -> str:
    """The whole page: header, a table of contents of ``nav`` ``(anchor, label)``, ``body``."""
    links = "".join(f'<li><a href="#{escape(a)}">{escape(label)}</a></li>' for a, label in nav)
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f'<meta name="generator" content="{escape(generator)}">\n'
        f"<title>{escape(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n"
        f'<header><h1>{escape(title)}</h1><p class="meta">{escape(meta)}</p></header>\n'
        f"<nav><ol>{links}</ol></nav>\n{body}\n"
        f"<footer>Written by {escape(generator)}.</footer>\n</body>\n</html>\n"
    )
