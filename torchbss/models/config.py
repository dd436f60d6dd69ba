"""Build a model from a community configuration file, with the layout its checkpoints have.

Two formats are read:

- **Music-Source-Separation-Training (MSST) YAML**, the format the community ships next to
  its checkpoints: sections ``audio`` (``sample_rate``, ``chunk_size``, ...), ``model`` (the
  constructor options of :class:`~torchbss.models.BSRoformer` or
  :class:`~torchbss.models.MelBandRoformer`), ``training`` (``instruments``,
  ``target_instrument``), ``inference`` (``batch_size``, ``num_overlap``, ``normalize``), and
  optionally ``lora`` / ``augmentations`` / loss sections. Tuples written as
  ``!!python/tuple`` are read as tuples by a safe loader (no arbitrary Python objects are
  built). MSST gives the model type on its command line, so it is inferred: a ``num_bands``
  option means Mel-RoFormer, otherwise BS-RoFormer (``training.model_type``, when present, or
  the ``model_type`` argument take precedence).
- **splifft JSON** (``model_type``, ``model.band_config``, ``model.output_stem_names``), as in
  splifft's ``data/config/*.json`` registry configs. splifft counts the Mel-RoFormer's mask
  MLP depth one higher than the community constructor; this is translated.

Options are sorted into: constructor options (passed on); options that only steer training or
an attention kernel (accepted; ``sage_attention`` warns that exact attention is used instead);
and options that would change the weights' layout or the computation in a way torchbss does not
implement (hyper-connections, value residuals, HyperACE heads, ...), which raise a
``ValueError`` naming them. Unknown options raise too, since they may change the layout.

The ``lora`` section (MSST fine-tuning with low-rank adapters on the attention projections) is
a training setting: the model is built without adapters, so checkpoints whose adapters were
merged (or that were trained without LoRA) load; a checkpoint still holding unmerged
``lora_A``/``lora_B`` tensors fails to load with those keys named. A warning says so.
"""

from __future__ import annotations

import inspect
import json
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from torchbss.models.bs_roformer import BSRoformer
from torchbss.models.mel_band_roformer import MelBandRoformer

__all__ = ["ConfiguredModel", "from_config", "load_config", "MODEL_TYPES"]

MODEL_TYPES: dict[str, type[nn.Module]] = {
    "bs_roformer": BSRoformer,
    "mel_band_roformer": MelBandRoformer,
}
_ALIASES = {"mel_roformer": "mel_band_roformer", "melband_roformer": "mel_band_roformer"}

# Options of other RoFormer variants that change the weights or the computation.
_UNSUPPORTED = {
    "num_residual_streams": "hyper-connections (bs-roformer >= 0.6)",
    "num_residual_fracs": "hyper-connections (bs-roformer >= 0.6)",
    "mc_hyper_conn_sinkhorn_iters": "manifold-constrained hyper-connections (bs-roformer >= 1.0)",
    "add_value_residual": "learned value residual mixing (bs-roformer >= 0.5)",
    "learned_value_residual_mix": "learned value residual mixing (bs-roformer >= 0.5)",
    "use_pope": "polar positional embeddings (bs-roformer >= 1.1)",
    "zero_dc": "zeroing the DC bin (bs-roformer >= 1.0)",
    "use_shared_bias": "shared attention biases",
    "mask_estimator": "a non-standard mask estimator head",
    "norm_output": "a per-transformer output norm different from the community layout",
}
# splifft's defaults where they differ from the community constructors' defaults.
_SPLIFFT_DEFAULTS = {
    "stereo": True,
    "time_transformer_depth": 1,
    "freq_transformer_depth": 1,
    "attn_dropout": 0.0,
    "ff_dropout": 0.0,
}
# splifft options that only change numerical precision, not the layout or the maths.
_PRECISION_ONLY = ("rotary_embed_dtype", "transformer_residual_dtype", "debug")


@dataclass(frozen=True)
class ConfiguredModel:
    """A model built from a configuration, with what is needed to run it on songs.

    Attributes:
        model: the (untrained) :class:`~torchbss.models.BSRoformer` or
            :class:`~torchbss.models.MelBandRoformer`; load weights with
            :func:`~torchbss.models.load_checkpoint`.
        model_type: ``"bs_roformer"`` or ``"mel_band_roformer"``.
        stems: names of the model's outputs, in output order.
        sample_rate: sampling rate the model was trained at.
        chunk_size: samples per chunk for inference (the training chunk unless the
            config gives ``inference.chunk_size``).
        n_fft: STFT size of the model.
        hop_length: STFT hop of the model.
        channels: input channels (2 stereo, 1 mono).
        overlap: chunk overlap fraction suggested by the config (``1 - 1 / num_overlap``),
            or ``None``.
        batch_size: inference batch size suggested by the config, or ``None``.
        normalize: whether the config asks to normalise the mixture before inference, or
            ``None`` when it does not say.
        model_kwargs: the constructor arguments used.
        config: the parsed configuration.
    """

    model: nn.Module
    model_type: str
    stems: tuple[str, ...]
    sample_rate: int
    chunk_size: int
    n_fft: int
    hop_length: int
    channels: int
    overlap: float | None = None
    batch_size: int | None = None
    normalize: bool | None = None
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict, repr=False)


def _yaml_loader() -> type:
    try:
        import yaml
    except ImportError as err:  # optional dependency
        raise ImportError(
            "reading YAML configs needs PyYAML: pip install 'torchbss[models]' (or pyyaml)"
        ) from err

    class _Loader(yaml.SafeLoader):
        """Safe loader that also reads ``!!python/tuple`` sequences as tuples."""

    def _tuple(loader: yaml.SafeLoader, node: yaml.Node) -> tuple:
        return tuple(loader.construct_sequence(node, deep=True))

    _Loader.add_constructor("tag:yaml.org,2002:python/tuple", _tuple)
    return _Loader


def load_config(path_or_dict: str | Path | Mapping[str, Any]) -> dict[str, Any]:
    """Read a configuration file (YAML or JSON) into a dict, or copy a given mapping.

    Args:
        path_or_dict: path to a ``.yaml``/``.yml``/``.json`` file, or an already parsed mapping.

    Returns:
        The configuration as a plain dict.
    """
    if isinstance(path_or_dict, Mapping):
        return dict(path_or_dict)
    if not isinstance(path_or_dict, (str, Path)):
        raise TypeError(f"config must be a path or a dict, got {type(path_or_dict).__name__}")
    path = Path(path_or_dict)
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    text = path.read_text()
    if path.suffix.lower() == ".json":
        data = json.loads(text)
    else:
        import yaml

        try:
            data = yaml.load(text, Loader=_yaml_loader())  # noqa: S506 (a SafeLoader subclass)
        except yaml.YAMLError as err:
            raise ValueError(
                f"could not read {path} as a YAML config (only plain YAML and !!python/tuple "
                f"tags are accepted): {err}"
            ) from err
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold a mapping at the top level, got {type(data).__name__}")
    return data


def _model_type(config: dict[str, Any], model: dict[str, Any], requested: str | None) -> str:
    name = requested or config.get("model_type") or (config.get("training") or {}).get("model_type")
    if name is None:
        band_config = model.get("band_config") or {}
        if band_config.get("kind") == "mel" or "num_bands" in model:
            name = "mel_band_roformer"
        else:
            name = "bs_roformer"
    name = _ALIASES.get(str(name), str(name))
    if name not in MODEL_TYPES:
        raise ValueError(
            f"unsupported model type {name!r}; torchbss builds {sorted(MODEL_TYPES)} "
            "(give model_type=... if the config does not say)"
        )
    return name


def _from_splifft(config: dict[str, Any]) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """Translate a splifft JSON config into (model_type, constructor kwargs, metadata)."""
    model = dict(config["model"])
    band = model.pop("band_config", {"kind": "fixed"})
    if not isinstance(band, dict):
        raise ValueError(f"the config's model.band_config must be a mapping, got {band!r}")
    band = dict(band)
    kind = band.pop("kind", "fixed")
    transform = config.get("transform") or {}
    n_fft = transform.get("n_fft", 2048)
    kwargs: dict[str, Any] = {}
    if kind == "mel":
        model_type = "mel_band_roformer"
        kwargs["num_bands"] = band.pop("num_bands", 60)
        kwargs["sample_rate"] = band.pop("sample_rate", 44100)
        n_fft = band.pop("stft_n_fft", n_fft)
        # splifft's mel MLP depth counts linear layers; the community's counts hidden layers
        depth = model.pop("mask_estimator_depth", 2)
        if not _is_int(depth, 2):
            raise ValueError(
                f"the config's mask_estimator_depth must be an integer >= 2 for a Mel-RoFormer "
                f"(splifft counts the linear layers), got {depth!r}"
            )
        kwargs["mask_estimator_depth"] = depth - 1
        if model.pop("norm_output", True) is not True:
            raise ValueError("a Mel-RoFormer with norm_output=false is not a community layout")
    elif kind == "fixed":
        model_type = "bs_roformer"
        if "freqs_per_bands" in band:
            kwargs["freqs_per_bands"] = tuple(band.pop("freqs_per_bands"))
        if model.pop("norm_output", False) is not False:
            raise ValueError("a BS-RoFormer with norm_output=true is not a community layout")
    else:
        raise ValueError(f"unsupported band_config kind {kind!r} (expected 'fixed' or 'mel')")
    if band:
        raise ValueError(f"unsupported band_config options {sorted(band)}")
    head = model.pop("mask_estimator", {"kind": "baseline"})
    if (head or {}).get("kind", "baseline") != "baseline":
        raise ValueError(
            f"mask_estimator kind {head.get('kind')!r} (a non-standard head) is not supported; "
            "torchbss implements the community 'baseline' mask estimator"
        )
    missing = [key for key in ("output_stem_names", "chunk_size") if key not in model]
    if missing:
        raise ValueError(f"the splifft config's model section has no {' or '.join(missing)}")
    stems = model.pop("output_stem_names")
    if not isinstance(stems, (list, tuple)):
        raise ValueError(f"the config's output_stem_names must be a list of names, got {stems!r}")
    stems = tuple(stems)
    chunk_size = model.pop("chunk_size")
    if "ff_mult" in model:
        if model.pop("ff_mult") != 4:
            raise ValueError("ff_mult other than 4 is not a community layout")
    for key in _PRECISION_ONLY:
        if key in model and model.pop(key) not in (None, False):
            warnings.warn(
                f"config option {key!r} only sets a numerical precision; ignored (torchbss runs "
                "in the model's dtype, or autocast)",
                stacklevel=3,
            )
    for key, default in _SPLIFFT_DEFAULTS.items():
        model.setdefault(key, default)
    kwargs.update(model)
    kwargs["num_stems"] = len(stems)
    kwargs["stft_n_fft"] = n_fft
    kwargs["stft_win_length"] = transform.get("win_length", n_fft)
    hop = transform.get("hop_length", kwargs.get("stft_hop_length", 512))
    kwargs.setdefault("stft_hop_length", hop)
    inference = config.get("inference") or {}
    chunking = config.get("waveform_chunking") or {}
    meta = {
        "stems": stems,
        "chunk_size": chunk_size,
        "sample_rate": (config.get("audio_io") or {}).get("target_sample_rate", 44100),
        "overlap": chunking.get("overlap_ratio", 0.5),
        "batch_size": inference.get("batch_size"),
        "normalize": (config.get("normalization") or {}).get("enabled"),
    }
    return model_type, kwargs, meta


def _msst_stems(config: dict[str, Any], num_stems: int) -> tuple[str, ...]:
    training = config.get("training") or {}
    instruments = tuple(training.get("instruments") or ())
    target = training.get("target_instrument")
    if target is not None:
        stems: tuple[str, ...] = (str(target),)
    else:
        stems = tuple(str(s) for s in instruments)
    if not stems:
        stems = tuple(f"stem{i}" for i in range(num_stems))
    if len(stems) != num_stems:
        raise ValueError(
            f"the config's model has num_stems={num_stems} but training lists {len(stems)} "
            f"output stem(s) {list(stems)} (target_instrument={target!r}); they must agree"
        )
    return stems


def _from_msst(config: dict[str, Any], model_type: str) -> tuple[dict[str, Any], dict[str, Any]]:
    model = dict(config["model"])
    audio = config.get("audio") or {}
    inference = config.get("inference") or {}
    if "lora" in config:
        warnings.warn(
            "the config's 'lora' section is a fine-tuning setting: the model is built without "
            "LoRA adapters (checkpoints with merged adapters load; unmerged lora_A/lora_B keys "
            "are reported by load_checkpoint)",
            stacklevel=3,
        )
    if model_type == "mel_band_roformer" and "freqs_per_bands" in model:
        raise ValueError("a Mel-RoFormer config must not set freqs_per_bands (it uses num_bands)")
    if model_type == "bs_roformer" and "num_bands" in model:
        raise ValueError("a BS-RoFormer config must not set num_bands (it uses freqs_per_bands)")
    channels = audio.get("num_channels")
    if channels is not None:
        if channels not in (1, 2) or isinstance(channels, bool):
            raise ValueError(f"the config's audio.num_channels must be 1 or 2, got {channels!r}")
        if "stereo" not in model:
            model["stereo"] = channels == 2
        elif model["stereo"] is not (channels == 2):
            raise ValueError(
                f"the config's audio.num_channels={channels} contradicts model.stereo="
                f"{model['stereo']!r}"
            )
    num_overlap = inference.get("num_overlap")
    if num_overlap is not None and not _is_int(num_overlap, 1):
        raise ValueError(
            f"the config's inference.num_overlap must be an integer >= 1 (chunks covering each "
            f"sample), got {num_overlap!r}"
        )
    meta = {
        "stems": _msst_stems(config, int(model.get("num_stems", 1))),
        "chunk_size": inference.get("chunk_size", audio.get("chunk_size")),
        "sample_rate": audio.get("sample_rate", model.get("sample_rate", 44100)),
        "overlap": 1.0 - 1.0 / num_overlap if num_overlap is not None else None,
        "batch_size": inference.get("batch_size"),
        "normalize": inference.get("normalize"),
    }
    return model, meta


_YAML_NUMBER_HINT = " (YAML reads a number such as 1e-5, without a dot, as a string: write 1.0e-5)"


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == value


def _is_int(value: object, minimum: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def _option_problem(key: str, value: object, default: object) -> str | None:
    """What a constructor option must be (by its default's type), or None when it is that."""
    if key == "rms_norm_eps":
        return None if value is None or _is_number(value) and value > 0 else "a number > 0"
    if isinstance(default, bool):
        return None if isinstance(value, bool) else "true or false"
    if isinstance(default, float) and "dropout" in key:
        return None if _is_number(value) and 0 <= value < 1 else "a number in [0, 1)"
    if isinstance(default, float):
        return None if _is_number(value) and value >= 0 else "a number >= 0"
    if isinstance(default, int) or default is inspect.Parameter.empty:
        return None if _is_int(value, 0) else "an integer >= 0"
    return None


def _check_meta(meta: dict[str, Any]) -> None:
    """The inference settings read from a config: stems, chunk, rate, overlap, batch, normalize."""
    stems = meta["stems"]
    if (
        not all(isinstance(name, str) and name.strip() for name in stems)
        or len(set(stems)) != len(stems)
        or "mixture" in stems
        or any("/" in name or "\\" in name for name in stems)
    ):
        raise ValueError(
            f"the config's output stems must be distinct, non-empty names other than 'mixture' "
            f"and without path separators (a list, e.g. [vocals, other]), got {list(stems)}"
        )
    for key, where in (("chunk_size", "chunk size"), ("sample_rate", "sample rate")):
        value = meta[key]
        if not _is_int(value, 1):
            raise ValueError(
                f"the config's {where} must be a positive integer, got {value!r}"
                + (_YAML_NUMBER_HINT if isinstance(value, str) else "")
            )
    batch = meta["batch_size"]
    if batch is not None and not _is_int(batch, 1):
        raise ValueError(
            f"the config's inference batch_size must be a positive integer, got {batch!r}"
        )
    overlap = meta["overlap"]
    if overlap is not None and not (_is_number(overlap) and 0 <= overlap < 1):
        raise ValueError(f"the config's chunk overlap must be a number in [0, 1), got {overlap!r}")
    if meta["normalize"] is not None and not isinstance(meta["normalize"], bool):
        raise ValueError(
            f"the config's normalize option must be true or false, got {meta['normalize']!r}"
        )


def _check_options(model_type: str, kwargs: dict[str, Any]) -> None:
    cls = MODEL_TYPES[model_type]
    accepted = set(inspect.signature(cls.__init__).parameters) - {"self"}
    problems = []
    for key in kwargs:
        if key in accepted:
            continue
        if key in _UNSUPPORTED:
            problems.append(f"{key!r} ({_UNSUPPORTED[key]})")
        else:
            problems.append(f"{key!r} (unknown option)")
    if problems:
        raise ValueError(
            f"the config's model options {', '.join(problems)} change the {cls.__name__} layout "
            "or computation in ways torchbss does not implement; supported options: "
            f"{sorted(accepted)}"
        )
    params = inspect.signature(cls.__init__).parameters
    for key, value in kwargs.items():
        expected = _option_problem(key, value, params[key].default)
        if expected is not None:
            raise ValueError(
                f"the config's model option {key}={value!r} must be {expected}"
                + (_YAML_NUMBER_HINT if isinstance(value, str) else "")
            )


def from_config(
    path_or_dict: str | Path | Mapping[str, Any], *, model_type: str | None = None
) -> ConfiguredModel:
    """Build an untrained model with exactly the layout a checkpoint trained from a config has.

    Args:
        path_or_dict: an MSST YAML file or a splifft JSON file (see the module docstring), or
            the parsed mapping.
        model_type: ``"bs_roformer"`` or ``"mel_band_roformer"``; inferred when omitted.

    Returns:
        A :class:`ConfiguredModel` holding the model (in eval mode) and its stem names,
        sample rate, chunk size and STFT settings.

    Example:
        >>> spec = from_config("config_vocals_mel_band_roformer.yaml")  # doctest: +SKIP
        >>> spec.stems, spec.sample_rate, spec.chunk_size  # doctest: +SKIP
        (('vocals',), 44100, 131584)
    """
    config = load_config(path_or_dict)
    model_section = config.get("model")
    if not isinstance(model_section, dict):
        raise ValueError(
            "the config has no 'model' section (a mapping of the model's constructor options)"
        )
    if "band_config" in model_section or "output_stem_names" in model_section:
        name, kwargs, meta = _from_splifft(config)
        if model_type is not None and _ALIASES.get(model_type, model_type) != name:
            raise ValueError(f"model_type={model_type!r} contradicts the config's {name!r}")
    else:
        name = _model_type(config, model_section, model_type)
        kwargs, meta = _from_msst(config, name)
    _check_options(name, kwargs)
    if "dim" not in kwargs or "depth" not in kwargs:
        raise ValueError("the config's model section must give at least 'dim' and 'depth'")
    if meta["chunk_size"] is None:
        raise ValueError("the config gives no chunk size (audio.chunk_size)")
    _check_meta(meta)
    model = MODEL_TYPES[name](**kwargs).eval()
    return ConfiguredModel(
        model=model,
        model_type=name,
        stems=tuple(meta["stems"]),
        sample_rate=int(meta["sample_rate"]),
        chunk_size=int(meta["chunk_size"]),
        n_fft=model.n_fft,
        hop_length=model.hop_length,
        channels=model.audio_channels,
        overlap=meta["overlap"],
        batch_size=meta["batch_size"],
        normalize=meta["normalize"],
        model_kwargs=kwargs,
        config=config,
    )
