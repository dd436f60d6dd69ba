"""Screenshot of a report page with headless Chromium (to check it renders, or for docs).

Needs a Chromium (or Chrome) binary on ``PATH``: Debian/Ubuntu ``apt-get install chromium``.
Usage: ``python -m torchbss.report.browser report/index.html out.png [--size 1200x1600]``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

__all__ = ["find_chromium", "screenshot"]

_BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_chromium() -> str | None:
    """Path of a Chromium/Chrome executable on ``PATH``, or ``None``."""
    for name in _BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    return None


def screenshot(
    html_path: str | os.PathLike,
    png_path: str | os.PathLike,
    *,
    window_size: tuple[int, int] = (1200, 1600),
    browser: str | None = None,
    timeout_s: float = 120.0,
) -> Path:
    """Render a local HTML file in headless Chromium and save a PNG of the window.

    The browser runs with a throw-away profile, no network services (sync, component updates,
    background networking) and no sandbox (so it also runs as root in containers).

    Args:
        html_path: the page, e.g. ``report/index.html``.
        png_path: the PNG to write (``window_size`` pixels).
        window_size: ``(width, height)`` of the window in CSS pixels.
        browser: the executable (default: :func:`find_chromium`).
        timeout_s: give up after this many seconds.

    Returns:
        ``png_path``.

    Raises:
        FileNotFoundError: no page, or no browser found.
        RuntimeError: the browser failed or wrote no PNG (its output is in the message).
    """
    html_path = Path(html_path).resolve()
    if not html_path.is_file():
        raise FileNotFoundError(f"page not found: {str(html_path)!r}")
    browser = browser or find_chromium()
    if browser is None:
        raise FileNotFoundError(
            f"no Chromium found on PATH (looked for {list(_BROWSERS)}); "
            "install it, e.g. apt-get install chromium"
        )
    png_path = Path(png_path).resolve()
    png_path.parent.mkdir(parents=True, exist_ok=True)
    if png_path.exists():
        png_path.unlink()
    width, height = (int(v) for v in window_size)
    with tempfile.TemporaryDirectory(prefix="torchbss-chromium-") as profile:
        cmd = [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            f"--user-data-dir={profile}",
            f"--screenshot={png_path}",
            f"--window-size={width},{height}",
            html_path.as_uri(),
        ]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
        except subprocess.TimeoutExpired as err:
            raise RuntimeError(f"{browser} did not finish within {timeout_s} s") from err
    if proc.returncode != 0 or not png_path.is_file():
        raise RuntimeError(
            f"{browser} failed (exit code {proc.returncode}) to write {str(png_path)!r}:\n"
            f"{proc.stderr[-2000:]}"
        )
    return png_path


def main(argv: list[str] | None = None) -> None:
    """Command line: ``python -m torchbss.report.browser PAGE PNG [--size WxH]``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("page", help="HTML file, e.g. report/index.html")
    parser.add_argument("png", help="PNG to write")
    parser.add_argument("--size", default="1200x1600", help="window WIDTHxHEIGHT in pixels")
    args = parser.parse_args(argv)
    try:
        size = tuple(int(v) for v in args.size.lower().split("x"))
        if len(size) != 2 or min(size) < 1:
            raise ValueError
    except ValueError:
        parser.error(f"--size must look like 1200x1600, got {args.size!r}")
    print(screenshot(args.page, args.png, window_size=size))


if __name__ == "__main__":
    main()
