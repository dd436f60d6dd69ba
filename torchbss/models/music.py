"""Whole-song inference with a separation model, and checkpoint loading.

:func:`separate_song` runs a waveform model (``(b, channels, chunk) -> (b, stems, channels,
chunk)``, e.g. :class:`~torchbss.models.BSRoformer`) over a song in overlapping chunks with
:func:`torchbss.signal.apply_chunked` (unfold-style chunking, batched model calls, cross-faded
overlap-add), normalising the mixture with the statistics of
:func:`torchbss.signal.normalize`, and derives extra stems with
:func:`torchbss.signal.derive_stems`. The mixture is normalised and the estimates denormalised
chunk by chunk (the statistics are pooled over blocks), so besides the song and the separated
stems, memory is bounded by one batch of chunks whatever the song's length.

:func:`load_checkpoint` loads community checkpoints (plain state dicts or the usual wrappers)
and names every missing, unexpected or mis-shaped key when they do not fit the model.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from torchbss.signal import apply_chunked, denormalize, derive_stems, normalize
from torchbss.signal.normalization import NormalizationStats

__all__ = ["separate_song", "load_checkpoint", "PRECISIONS"]

PRECISIONS = {
    "float32": None,
    "fp32": None,
    "32": None,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
    "16": torch.float16,
}
_WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "module", "net", "ema")
_PREFIXES = ("module.", "model.", "_orig_mod.")
_MAX_LISTED = 12


def _autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {sorted(PRECISIONS)}, got {precision!r}")
    dtype = PRECISIONS[precision]
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def _model_device(model: nn.Module) -> torch.device:
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


def separate_song(
    model: nn.Module,
    audio: torch.Tensor,
    *,
    chunk_size: int,
    overlap: float = 0.5,
    batch_size: int = 4,
    device: torch.device | str | None = None,
    precision: str = "float32",
    progress: bool | None = None,
    normalize_input: bool = True,
    stem_names: Sequence[str] | None = None,
    derived_stems: Mapping[str, str | Sequence[str]] | None = None,
    mono_to_stereo: bool = False,
    window: str | torch.Tensor | None = "hann",
    padding_mode: str = "reflect",
) -> dict[str, torch.Tensor]:
    """Separate one song into stems with a chunked, batched model.

    Args:
        model: waveform separation model ``(b, channels, chunk) -> (b, stems, channels, chunk)``
            with ``audio_channels`` and ``n_fft`` attributes (as the RoFormers have). It is
            put in eval mode, and moved to ``device`` when one is given.
        audio: song ``(channels, samples)``, float32 or float64, finite.
        chunk_size: samples per model call (the config's ``chunk_size`` is what the model was
            trained on); at least the model's ``n_fft``.
        overlap: fraction in ``[0, 1)`` shared by neighbouring chunks.
        batch_size: chunks per model call.
        device: device the model runs on (default: the model's); stems are returned on
            ``audio``'s device.
        precision: ``"float32"``, ``"bf16"``/``"bfloat16"`` or ``"fp16"``/``"float16"``
            (autocast on ``device``).
        progress: progress bar (``None``: only for tracks of a minute or more).
        normalize_input: normalise the mixture to zero mean and unit variance (statistics of
            its mono downmix, :func:`torchbss.signal.normalize`) and undo it on the stems.
        stem_names: names of the model's outputs (default ``stem0``, ``stem1``, ...).
        derived_stems: extra stems as :func:`torchbss.signal.derive_stems` rules, e.g.
            ``{"instrumental": "mixture - vocals"}``.
        mono_to_stereo: feed a mono song to a stereo model on both channels (otherwise that
            is an error); stems are then stereo.
        window: cross-fade window of :func:`torchbss.signal.apply_chunked`.
        padding_mode: padding of the song's ends, see :func:`torchbss.signal.chunk`.

    Returns:
        ``{stem_name: (channels, samples)}`` for every model output, then the derived stems;
        dtype of the model's output (float32 for a float32 model).

    Example:
        >>> spec = from_config("config_vocals_bs_roformer.yaml")  # doctest: +SKIP
        >>> load_checkpoint(spec.model, "model.ckpt")  # doctest: +SKIP
        >>> stems = separate_song(spec.model, song, chunk_size=spec.chunk_size,
        ...     stem_names=spec.stems, derived_stems={"instrumental": "mixture - vocals"})
        ... # doctest: +SKIP
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(audio, torch.Tensor) or audio.ndim != 2:
        shape = tuple(audio.shape) if isinstance(audio, torch.Tensor) else type(audio).__name__
        raise ValueError(f"audio must be one song (channels, samples), got {shape}")
    channels = audio.shape[0]
    expected = getattr(model, "audio_channels", channels)
    if channels != expected:
        if channels == 1 and expected == 2 and mono_to_stereo:
            audio = audio.expand(2, -1)
        elif channels == 1 and expected == 2:
            raise ValueError(
                "the model is stereo (2 channels) but the song is mono (1 channel); pass "
                "mono_to_stereo=True (--mono-to-stereo) to feed it on both channels"
            )
        else:
            raise ValueError(
                f"the model expects {expected} channel(s) but the song has {channels} (audio of "
                f"shape {tuple(audio.shape)}); downmix or pick a model for {channels} channels"
            )
    if isinstance(stem_names, str) or (
        stem_names is not None
        and (
            not all(isinstance(name, str) and name for name in stem_names)
            or len(set(stem_names)) != len(stem_names)
        )
    ):
        raise ValueError(
            f"stem_names must be a sequence of distinct, non-empty names, got {stem_names!r}"
        )
    n_outputs = getattr(model, "num_stems", None)
    if stem_names is not None and isinstance(n_outputs, int) and len(stem_names) != n_outputs:
        raise ValueError(
            f"stem_names must name the model's {n_outputs} output(s), got {list(stem_names)}"
        )
    n_fft = getattr(model, "n_fft", 1)
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int):
        raise TypeError(f"chunk_size must be an int (samples), got {chunk_size!r}")
    if chunk_size < n_fft:
        raise ValueError(
            f"chunk_size={chunk_size!r} is shorter than the model's STFT (n_fft={n_fft}); use at "
            f"least {n_fft} samples, ideally the config's chunk_size"
        )
    run_device = torch.device(device) if device is not None else _model_device(model)
    model = model.to(run_device).eval()
    autocast = _autocast(run_device, precision)

    stats = None
    if normalize_input:  # statistics only; each chunk is normalised on its way to the model
        song_stats = _song_statistics(audio)
        stats = NormalizationStats(song_stats.mean.to(run_device), song_stats.std.to(run_device))

    def run(chunks: torch.Tensor) -> torch.Tensor:  # (b, channels, chunk) on run_device
        if stats is not None:
            chunks = (chunks - stats.mean) / stats.std  # the affine map of normalize()
        with autocast:
            estimates = model(chunks)  # (b, stems, channels, chunk)
        if stats is not None:
            estimates = denormalize(estimates, stats)
        return estimates

    with torch.inference_mode():
        separated = apply_chunked(
            run,
            audio,
            chunk_size=chunk_size,
            overlap=overlap,
            batch_size=batch_size,
            window=window,
            padding_mode=padding_mode,
            progress=progress,
            device=run_device,
        )
    if separated.ndim == 2:  # a model with a single, squeezed output
        separated = separated.unsqueeze(0)
    n_stems = separated.shape[0]
    names = (
        tuple(stem_names) if stem_names is not None else tuple(f"stem{i}" for i in range(n_stems))
    )
    if len(names) != n_stems or len(set(names)) != n_stems:
        raise ValueError(
            f"stem_names must be {n_stems} distinct names for the model's {n_stems} outputs, got "
            f"{list(names)}"
        )
    stems = dict(zip(names, separated.unbind(0)))
    broken = [name for name, stem in stems.items() if not bool(stem.isfinite().all())]
    if broken:  # the song is finite (checked): the model or its precision made these
        raise ValueError(
            f"the model's output stem(s) {broken} hold NaN/inf values although the song is "
            f"finite: check the checkpoint's weights (torch.isfinite on each tensor) or run at "
            f"higher precision (precision={precision!r})"
        )
    if not derived_stems:
        return stems
    return derive_stems(stems, mixture=audio.to(separated.dtype), rules=derived_stems)


def _song_statistics(
    audio: torch.Tensor, eps: float = 1e-8, block: int = 2**18
) -> NormalizationStats:
    """The statistics :func:`torchbss.signal.normalize` computes for ``audio`` (mean and
    population std of the mono downmix, std at least ``eps``), with memory bounded by one
    block: :func:`normalize` runs on blocks of ``block`` samples and the block moments are
    pooled (law of total variance), so no temporary as long as the song is made.

    Args:
        audio: ``(channels, samples)`` song.
        eps: lower bound on the std, as in :func:`normalize`.
        block: samples per block.

    Returns:
        :class:`~torchbss.signal.NormalizationStats` with ``(1, 1)`` mean and std.
    """
    counts, means, variances = [], [], []
    for part in audio.split(block, dim=-1):
        _, part_stats = normalize(part, eps)
        counts.append(part.shape[-1])
        means.append(part_stats.mean.reshape(()))
        variances.append(part_stats.std.reshape(()).square())
    n = torch.tensor(counts, dtype=torch.float64, device=audio.device)
    m = torch.stack(means).double()
    v = torch.stack(variances).double()
    mean = (n * m).sum() / n.sum()
    var = (n * (v + (m - mean).square())).sum() / n.sum()
    std = var.clamp_min(eps**2).sqrt()
    return NormalizationStats(mean.to(audio.dtype).reshape(1, 1), std.to(audio.dtype).reshape(1, 1))


def _unwrap(obj: Any) -> dict[str, torch.Tensor]:
    """Find the state dict inside a checkpoint object (plain, or wrapped once or twice)."""
    for _ in range(3):
        if isinstance(obj, nn.Module):
            obj = obj.state_dict()
        if not isinstance(obj, Mapping):
            raise TypeError(
                f"checkpoint must hold a state dict (name -> tensor), got {type(obj).__name__}"
            )
        if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            return dict(obj)
        inner = next((obj[k] for k in _WRAPPER_KEYS if k in obj), None)
        if inner is None:
            tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
            if tensors:
                return tensors
            raise ValueError(
                "checkpoint holds no tensors; expected a state dict or a wrapper with one of "
                f"the keys {list(_WRAPPER_KEYS)}, got keys {sorted(map(str, obj))[:_MAX_LISTED]}"
            )
        obj = inner
    raise ValueError("checkpoint nests state dicts too deeply to find the weights")


def _strip_prefixes(state: dict[str, torch.Tensor], expected: set[str]) -> dict[str, torch.Tensor]:
    """Remove a ``module.``/``model.``/``_orig_mod.`` prefix (DDP, Lightning, torch.compile)
    when the model's own keys do not have it: from every key that has it, when more of the
    model's keys are found that way than among the keys without it (a Lightning checkpoint
    also holds e.g. its loss's buffers, which then remain, and are reported, unprefixed)."""
    changed = True
    while changed and state:
        changed = False
        for prefix in _PREFIXES:
            if any(k.startswith(prefix) for k in expected):
                continue
            stripped = {k[len(prefix) :] for k in state if k.startswith(prefix)}
            plain = {k for k in state if not k.startswith(prefix)}
            if stripped and len(stripped & expected) >= max(len(plain & expected), 1):
                state = {k.removeprefix(prefix): v for k, v in state.items()}
                changed = True
    return state


def _listed(keys: Sequence[str]) -> str:
    keys = sorted(keys)
    more = f" ... and {len(keys) - _MAX_LISTED} more" if len(keys) > _MAX_LISTED else ""
    return ", ".join(keys[:_MAX_LISTED]) + more


def load_checkpoint(
    model: nn.Module,
    checkpoint: str | Path | Mapping[str, Any],
    *,
    map_location: torch.device | str = "cpu",
    new: Sequence[str] = (),
) -> nn.Module:
    """Load weights into ``model``, checking that they fit exactly.

    Accepts a plain state dict and the usual wrappers (``{"state_dict": ...}``,
    ``{"model": ...}``, ``{"model_state_dict": ...}``, ``{"ema": ...}``), and strips a
    ``module.``/``model.``/``_orig_mod.`` prefix that every key carries. Files are read with
    ``torch.load(weights_only=True)`` (no arbitrary code). RoPE frequency buffers may be
    absent (they are constants).

    Args:
        model: the model, built with the checkpoint's configuration.
        checkpoint: path to a ``.ckpt``/``.pt``/``.pth`` file, or a loaded object.
        map_location: where tensors are loaded before being copied into the model.
        new: key prefixes of parameters the model adds to the checkpoint's (e.g. a new
            branch to fine-tune from a trained model, ``"correction."``): they may
            be missing from it and keep their initial values. Every other key must fit.

    Returns:
        ``model``, with the weights loaded.

    Raises:
        ValueError: naming the missing keys, unexpected keys and shape mismatches when the
            checkpoint does not fit (typically a config that differs from the one the
            checkpoint was trained with); nothing is loaded then.
    """
    if isinstance(checkpoint, (str, Path)):
        path = Path(checkpoint)
        if not path.is_file():
            raise FileNotFoundError(f"checkpoint file not found: {path}")
        try:
            obj = torch.load(path, map_location=map_location, weights_only=True)
        except Exception as err:  # unpickling errors carry long, unhelpful messages
            raise ValueError(
                f"could not read {path} as a PyTorch checkpoint of tensors (torch.load with "
                f"weights_only=True): {str(err).splitlines()[0]}"
            ) from err
    else:
        obj = checkpoint
    own = model.state_dict()
    state = _strip_prefixes(_unwrap(obj), set(own))
    optional = {k for k in own if k.endswith("rotary_embed.freqs")}
    optional |= {k for k in own if any(k.startswith(prefix) for prefix in new)}
    missing = [k for k in own if k not in state and k not in optional]
    unexpected = [k for k in state if k not in own]
    mismatched = [
        f"{k} (checkpoint {tuple(state[k].shape)}, model {tuple(own[k].shape)})"
        for k in own
        if k in state and tuple(state[k].shape) != tuple(own[k].shape)
    ]
    if missing or unexpected or mismatched:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing key(s): {_listed(missing)}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected key(s): {_listed(unexpected)}")
        if mismatched:
            parts.append(f"{len(mismatched)} shape mismatch(es): {_listed(mismatched)}")
        hint = (
            "; the checkpoint holds unmerged LoRA adapters: merge them into the base weights first"
            if any("lora_" in k for k in unexpected)
            else "; build the model from the config the checkpoint was trained with"
        )
        raise ValueError(
            f"checkpoint does not fit {type(model).__name__}: " + "; ".join(parts) + hint
        )
    model.load_state_dict(state, strict=not new)
    return model
