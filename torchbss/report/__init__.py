"""HTML listening report: hear and see separations side by side in a browser.

:func:`write_report` writes a self-contained folder (``index.html`` with relative links, WAV
files, PNG figures; no external CSS, script or font) from a list of :class:`ReportExample`:
a summary table, extra figures, and per example ``<audio>`` players for the mixture, references
and estimates with their metrics and spectrograms. :func:`screenshot` renders a page with
headless Chromium (a check that it displays, or a picture for docs).

Writing audio needs soundfile (``torchbss[io]``); the figures need matplotlib
(``torchbss[plot]``, or pass ``plots=False``).
"""

from torchbss.report.example import ReportExample
from torchbss.report.writer import MARKER, check_report_target, write_report

__all__ = [
    "ReportExample",
    "write_report",
    "check_report_target",
    "screenshot",
    "find_chromium",
    "MARKER",
]


def __getattr__(name: str):
    # imported on demand, so that `python -m torchbss.report.browser` runs it cleanly
    if name in ("screenshot", "find_chromium"):
        import importlib

        return getattr(importlib.import_module("torchbss.report.browser"), name)
    raise AttributeError(f"module 'torchbss.report' has no attribute {name!r}")
