"""Input checks shared by every public entry point.

Each check raises a ``TypeError`` or ``ValueError`` whose message names the argument, what was
received (shape, dtype, value) and what was expected, so that bad input never surfaces as a NaN
or as an error deep inside torch.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import torch

__all__ = [
    "check_tensor",
    "check_complex",
    "check_real_float",
    "check_finite",
    "finite_items",
    "check_freq_bins",
    "check_same_shape",
    "check_positive",
    "check_positive_int",
    "check_range",
    "check_choice",
    "check_bool",
]


def _describe(x: torch.Tensor) -> str:
    return f"shape {tuple(x.shape)} and dtype {x.dtype}"


def check_tensor(
    x: object,
    name: str,
    *,
    min_ndim: int = 1,
    layout: str | None = None,
    min_last: int | None = None,
) -> torch.Tensor:
    """Check that ``x`` is a tensor with at least ``min_ndim`` dimensions.

    Args:
        x: the object to check.
        name: argument name used in the error message.
        min_ndim: minimum number of dimensions.
        layout: human-readable expected layout, e.g. ``"(..., channels, samples)"``.
        min_last: if given, the last dimension must have at least this many entries.

    Returns:
        ``x`` unchanged.
    """
    expected = f" {layout}" if layout else ""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor{expected}, got {type(x).__name__}")
    if x.ndim < min_ndim:
        raise ValueError(
            f"{name} must have at least {min_ndim} dimensions{expected}, got {_describe(x)}"
        )
    if min_last is not None and x.shape[-1] < min_last:
        raise ValueError(
            f"{name} must have at least {min_last} entries along its last dimension{expected}, "
            f"got {_describe(x)}"
        )
    return x


def check_real_float(x: torch.Tensor, name: str) -> torch.Tensor:
    """Check that ``x`` is a real floating point tensor (not integer, bool or complex)."""
    if x.is_complex():
        raise TypeError(
            f"{name} must be a real floating point tensor, got complex dtype {x.dtype}; "
            "pass the time-domain signal, or use the STFT-domain function"
        )
    if not x.is_floating_point():
        hint = " (convert int16 PCM with x.float() / 32768)" if x.dtype == torch.int16 else ""
        raise TypeError(
            f"{name} must be a floating point tensor (float32 or float64), got {x.dtype}{hint}"
        )
    return x


def check_complex(x: torch.Tensor, name: str) -> torch.Tensor:
    """Check that ``x`` is a complex tensor (an STFT), not a real one; return it with a lazy
    conjugate (e.g. ``X.conj()``) resolved, as the real-view arithmetic needs."""
    if not x.is_complex():
        raise TypeError(
            f"{name} must be a complex STFT tensor (complex64 or complex128), got {x.dtype}; "
            "compute it with torchbss.STFT first"
        )
    if x.dtype == torch.complex32:
        raise TypeError(
            f"{name} has dtype complex32, which is not supported (too few digits for the "
            f"covariance solves); convert it with {name}.to(torch.complex64)"
        )
    return x.resolve_conj()


def check_finite(x: torch.Tensor, name: str) -> torch.Tensor:
    """Raise if ``x`` holds NaN or inf values (counts them in the message)."""
    if x.numel() == 0:
        return x
    if not (x.is_floating_point() or x.is_complex()) or bool(finite_items(x).all()):
        return x
    finite = torch.isfinite(x)
    if not bool(finite.all()):
        n_bad = int((~finite).sum())
        raise ValueError(
            f"{name} contains {n_bad} NaN/inf value(s) out of {x.numel()}; "
            "expected finite values (clean the input, e.g. torch.nan_to_num)"
        )
    return x


def finite_items(x: torch.Tensor, item_ndim: int | None = None) -> torch.Tensor:
    """Whether each item of a float or complex ``x`` holds no NaN or inf.

    NaN and inf propagate through max and min: two reductions over each item, in ``x``'s own
    layout, and no full-size temporary (``torch.isfinite`` writes one the size of ``x``; on CPU
    its fresh pages cost more than the reductions).

    Args:
        x: real floating-point or complex tensor.
        item_ndim: an item is the last ``item_ndim`` dims of ``x`` (``None``: all of ``x``).

    Returns:
        bool tensor of the leading ``x.ndim - item_ndim`` dims (0-dim for ``None``).
    """
    if x.numel() == 0:  # (an empty item is finite; max and min have nothing to reduce)
        lead = () if item_ndim is None else x.shape[: x.ndim - item_ndim]
        return torch.ones(lead, dtype=torch.bool, device=x.device)
    if x.numel() <= 1 << 16 and not x.is_contiguous():  # e.g. one frame of a block: a
        x = x.contiguous()  # reduction over a strided view is several times slower than a copy
    if x.is_complex() and x.is_conj():  # (a lazy conjugate, e.g. X.conj(): the same finiteness;
        x = x.conj()  # view_as_real refuses its conjugate bit)
    values = torch.view_as_real(x) if x.is_complex() else x
    n = values.ndim if item_ndim is None else item_ndim + (values.ndim - x.ndim)
    dims = tuple(range(-n, 0))
    return torch.isfinite(torch.stack([values.amax(dims), values.amin(dims)])).all(0)


def check_mask(mask: object, name: str, shape: tuple[int, ...], layout: str) -> torch.Tensor:
    """Check a ``{0, 1}`` mask: a bool or real (integer or floating) tensor of exactly
    ``shape``, every value 0 or 1 (NaN is neither).

    Returns:
        ``mask`` unchanged.
    """
    check_tensor(mask, name, min_ndim=1, layout=layout)
    if tuple(mask.shape) != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)} {layout}, got {_describe(mask)}")
    if mask.is_complex():
        raise TypeError(f"{name} must be a bool or real tensor {layout}, got {mask.dtype}")
    if mask.dtype != torch.bool and not bool(((mask == 0) | (mask == 1)).all()):
        raise ValueError(
            f"{name} must hold only 0 and 1 (valid frames 1) {layout}; got values such as "
            f"{mask[(mask != 0) & (mask != 1)].flatten()[:3].tolist()}"
        )
    return mask


def check_freq_bins(X: torch.Tensor, layout: str) -> None:
    """Raise if the STFT ``X`` (frequency at dim ``-2``, as in ``layout``) has no bin."""
    if X.shape[-2] == 0:
        raise ValueError(f"X has 0 frequency bins (shape {tuple(X.shape)}, expected {layout})")


def check_same_shape(
    a: torch.Tensor, b: torch.Tensor, name_a: str = "reference", name_b: str = "estimate"
) -> None:
    """Raise if two tensors do not have the same shape."""
    if a.shape != b.shape:
        raise ValueError(
            f"{name_a} and {name_b} must have the same shape, got {tuple(a.shape)} and "
            f"{tuple(b.shape)}"
        )


def check_positive(value: object, name: str) -> float:
    """Check a finite number ``> 0`` (numpy scalars too; not a bool); returns it as a float."""
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not math.isfinite(value)
        or not value > 0
    ):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)


def check_positive_int(value: object, name: str, *, minimum: int = 1) -> int:
    """Check that ``value`` is an integer ``>= minimum``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an integer >= {minimum}, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value}")
    return value


def check_range(
    value: float,
    name: str,
    low: float,
    high: float,
    *,
    low_inclusive: bool = True,
    high_inclusive: bool = False,
) -> float:
    """Check that ``low <(=) value <(=) high``; the message prints the interval."""
    interval = f"{'[' if low_inclusive else '('}{low}, {high}{']' if high_inclusive else ')'}"
    if isinstance(value, bool) or not isinstance(value, numbers.Real):  # (numpy scalars are)
        raise TypeError(
            f"{name} must be a number in {interval}, got {type(value).__name__} {value!r}"
        )
    lo_ok = value >= low if low_inclusive else value > low
    hi_ok = value <= high if high_inclusive else value < high
    if not (lo_ok and hi_ok):
        raise ValueError(f"{name} must be in {interval}, got {value}")
    return float(value)


def check_choice(value: str, name: str, choices: Sequence[str]) -> str:
    """Check that a string option is one of ``choices`` (listed in the message)."""
    if value not in choices:
        raise ValueError(f"unknown {name} {value!r}; valid options are {sorted(choices)}")
    return value


def check_bool(value: object, name: str) -> bool:
    """Check that ``value`` is ``True`` or ``False`` (not a truthy number or string)."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return value


# --------------------------------------------------------------------------------------------
# Signals, sample rates and eps (metrics, losses)
# --------------------------------------------------------------------------------------------

__all__ += ["check_signal", "check_signal_pair", "check_sample_rate", "check_eps"]


def check_signal(
    x: object, name: str, layout: str = "(..., samples)", min_ndim: int = 1
) -> torch.Tensor:
    """Check a real, finite, floating point signal with at least one sample.

    Args:
        x: the object to check.
        name: argument name used in the error message.
        layout: human-readable expected layout, e.g. ``"(..., sources, samples)"``.
        min_ndim: minimum number of dimensions.

    Returns:
        ``x`` unchanged.
    """
    x = check_tensor(x, name, min_ndim=min_ndim, layout=layout, min_last=1)
    check_real_float(x, name)
    check_finite(x, name)
    return x


def check_signal_pair(
    reference: object, estimate: object, layout: str = "(..., samples)", min_ndim: int = 1
) -> tuple[torch.Tensor, torch.Tensor]:
    """Check a ``(reference, estimate)`` pair of same-shape signals (see :func:`check_signal`).

    Returns:
        ``(reference, estimate)`` cast to their common (promoted) dtype, at least float32:
        half-precision signals are scored in float32 (their energies overflow float16's range,
        65504, within a second of audio: NaN or inf scores).
    """
    reference = check_signal(reference, "reference", layout, min_ndim)
    estimate = check_signal(estimate, "estimate", layout, min_ndim)
    check_same_shape(reference, estimate)
    dtype = torch.promote_types(torch.promote_types(reference.dtype, estimate.dtype), torch.float32)
    return reference.to(dtype), estimate.to(dtype)


def check_sample_rate(sample_rate: object) -> float:
    """Check that ``sample_rate`` is a finite positive number of Hz; return it as a float."""
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, float)):
        raise TypeError(f"sample_rate must be a positive number in Hz, got {sample_rate!r}")
    if not 0 < sample_rate < float("inf"):
        raise ValueError(f"sample_rate must be a positive number in Hz, got {sample_rate}")
    return float(sample_rate)


def check_eps(eps: object, dtype: torch.dtype) -> float:
    """Check a positive ``eps``; None gives the machine epsilon of ``dtype``.

    Args:
        eps: a positive number, or None.
        dtype: floating point dtype whose ``torch.finfo(dtype).eps`` is the default.

    Returns:
        ``eps`` as a float.
    """
    if eps is None:
        return float(torch.finfo(dtype).eps)
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not 0 < eps < float("inf"):
        raise ValueError(
            f"eps must be a positive finite float (or None for the dtype's eps), got {eps!r}"
        )
    return float(eps)
