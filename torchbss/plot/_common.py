"""Shared helpers of :mod:`torchbss.plot`: lazy matplotlib import, input conversion, saving.

matplotlib is optional (``pip install 'torchbss[plot]'``). It is imported on first use, and every
figure is a plain ``matplotlib.figure.Figure`` with its own Agg canvas: no pyplot, no global
backend switch, no figure kept alive by a figure manager.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from torchbss._validation import check_finite, check_positive

ArrayLike = Any  # torch.Tensor, numpy.ndarray or a (nested) sequence of numbers


def require_matplotlib() -> None:
    """Import matplotlib or raise an ``ImportError`` that says how to install it."""
    try:
        import matplotlib  # noqa: F401
        from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: F401
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "torchbss.plot needs matplotlib, which is not installed: "
            "pip install 'torchbss[plot]' (or pip install matplotlib)"
        ) from err


def new_figure(width: float, height: float, dpi: float):
    """A constrained-layout ``Figure`` of ``width x height`` inches on its own Agg canvas."""
    require_matplotlib()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    for name, value in {"width": width, "height": height, "dpi": dpi}.items():
        check_positive(value, f"figure {name}")
    if max(width, height) * dpi > 2**16:  # Agg's limit
        raise ValueError(
            f"a {width} x {height} inch figure at dpi={dpi} is {max(width, height) * dpi:.0f} "
            "pixels wide or high, more than the 65536 the renderer draws; lower dpi or the size"
        )
    fig = Figure(figsize=(width, height), dpi=dpi, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def to_tensor(
    x: ArrayLike,
    name: str,
    *,
    ndims: Sequence[int],
    layout: str,
    allow_complex: bool = False,
) -> torch.Tensor:
    """Convert a tensor (any device), array or sequence to a finite CPU float64/complex128 tensor.

    Args:
        x: the input.
        name: argument name used in error messages.
        ndims: accepted numbers of dimensions.
        layout: the expected layout, e.g. ``"(sources, frames)"``, for error messages.
        allow_complex: keep complex input complex (otherwise it is refused).

    Returns:
        A detached CPU tensor, float64 (or complex128).

    Raises:
        TypeError: not numeric, or complex where real values are expected.
        ValueError: wrong number of dimensions, no entries, or NaN/inf values (the message names
            ``name``).
    """
    if isinstance(x, torch.Tensor):
        t = x.detach().cpu()
    else:
        try:
            t = torch.as_tensor(np.asarray(x))
        except (TypeError, ValueError, RuntimeError) as err:
            raise TypeError(
                f"{name} must be a torch.Tensor or numpy array {layout}, got {type(x).__name__}"
            ) from err
    if t.is_complex():
        if not allow_complex:
            raise TypeError(f"{name} must be real {layout}, got complex dtype {t.dtype}")
        t = t.to(torch.complex128)
    elif not (t.is_floating_point() or _is_integer(t) or t.dtype == torch.bool):
        raise TypeError(f"{name} must hold real numbers {layout}, got dtype {t.dtype}")
    else:
        t = t.to(torch.float64)
    if t.ndim not in ndims:
        expected = " or ".join(str(n) for n in ndims)
        raise ValueError(
            f"{name} must have {expected} dimensions {layout}, got shape {tuple(t.shape)}"
        )
    if t.numel() == 0:
        raise ValueError(f"{name} is empty: got shape {tuple(t.shape)}, expected {layout}")
    check_finite(t, name)
    return t


def _is_integer(t: torch.Tensor) -> bool:
    return t.dtype in (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)


def check_sample_rate(sample_rate: object) -> float:
    """Check a positive, finite sampling rate in Hz."""
    if (
        isinstance(sample_rate, bool)
        or not isinstance(sample_rate, (int, float))
        or not np.isfinite(sample_rate)
        or sample_rate <= 0
    ):
        raise ValueError(f"sample_rate must be a positive number (Hz), got {sample_rate!r}")
    return float(sample_rate)


def names_for(names: Sequence[str] | None, count: int, default: str, what: str) -> list[str]:
    """``names`` as a list of ``count`` strings, or ``f"{default} {i}"``."""
    if names is None:
        return [f"{default} {i}" for i in range(count)]
    if isinstance(names, str) or len(names) != count:
        raise ValueError(f"{what} must be a sequence of {count} names (one per row), got {names!r}")
    return [str(n) for n in names]


def write_png(fig, path: str | os.PathLike, *, palette: bool = False) -> Path:
    """Write ``fig`` as a PNG of ``figsize * dpi`` pixels, atomically (temporary file + rename).

    Args:
        fig: a matplotlib ``Figure``.
        path: the ``.png`` file (parent folders are created).
        palette: store the 256 most frequent colours as a palette (via Pillow, which
            matplotlib requires), every other colour as its nearest one: a spectrogram grid
            shrinks about 3x. Lossless for figures of at most 256 colours; draw images with a
            colour map of at most 128 levels (``matplotlib.colormaps["magma"].resampled(128)``)
            so that anti-aliased text cannot push colour-bar levels out of the palette.

    Returns:
        ``path``.
    """
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise ValueError(f"save must be a .png path, got {str(path)!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    try:
        with open(tmp, "xb") as handle:
            if palette:
                _palette_image(fig).save(handle, format="png", optimize=True)
            else:
                fig.savefig(handle, format="png", dpi=fig.dpi)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def _palette_image(fig):
    """The rendered figure as a Pillow palette image of its 256 most frequent colours."""
    from PIL import Image

    fig.canvas.draw()
    rgb = np.ascontiguousarray(np.asarray(fig.canvas.buffer_rgba())[..., :3])
    keys = rgb.reshape(-1, 3).astype(np.uint32) @ np.array([1 << 16, 1 << 8, 1], np.uint32)
    colours, counts = np.unique(keys, return_counts=True)  # one 24-bit key per colour
    top = colours[np.argsort(-counts, kind="stable")[:256]]
    top = np.stack([top >> 16, (top >> 8) & 255, top & 255], axis=-1)
    palette = Image.new("P", (1, 1))
    palette.putpalette(top.astype(np.uint8).reshape(-1).tolist())
    return Image.fromarray(rgb).quantize(palette=palette, dither=Image.Dither.NONE)


def finish(fig, save: str | os.PathLike | None):
    """Write ``fig`` to ``save`` with :func:`write_png` when given; return ``fig``.

    The PNG has exactly ``figsize * dpi`` pixels (no tight bounding box), so callers can size
    pages and tests can check it.
    """
    if save is not None:
        write_png(fig, save)
    return fig


def db(power: torch.Tensor, floor: float = 1e-20) -> torch.Tensor:
    """``10 log10(max(power, floor))``."""
    return 10.0 * torch.log10(power.clamp_min(floor))
