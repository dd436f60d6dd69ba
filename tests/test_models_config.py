"""from_config: community MSST YAML files and splifft JSON configs build the right layout."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch

from torchbss.models import BSRoformer, MelBandRoformer, from_config, load_config

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.one_thread


SHARED = {
    # file: (model type, stems, chunk size, hop, parameters in millions)
    "config_musdb18_bs_roformer.yaml": ("bs_roformer", ("vocals",), 131584, 512, 24.6),
    "config_musdb18_bs_roformer_384_8_2_485100_sage.yaml": (
        "bs_roformer",
        ("drums", "bass", "other", "vocals"),
        485100,
        441,
        131.7,
    ),
    "config_musdb18_bs_roformer_with_lora.yaml": (
        "bs_roformer",
        ("drums", "bass", "other", "vocals"),
        485100,
        441,
        131.7,
    ),
    "config_musdb18_mel_band_roformer.yaml": ("mel_band_roformer", ("vocals",), 131584, 512, 69.1),
    "config_musdb18_mel_band_roformer_all_stems.yaml": (
        "mel_band_roformer",
        ("drums", "bass", "other", "vocals"),
        352800,
        441,
        832.6,
    ),
    "config_vocals_bs_roformer.yaml": ("bs_roformer", ("vocals",), 131584, 512, 24.6),
    "config_vocals_mel_band_roformer.yaml": ("mel_band_roformer", ("vocals",), 131584, 512, 69.1),
}


def _quiet_from_config(*args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return from_config(*args, **kwargs)


@pytest.mark.parametrize("name", sorted(SHARED))
def test_shared_community_configs(data_dir: Path, name: str) -> None:
    """All seven shared MSST files build (on the meta device: no memory) with their stems."""
    path = data_dir / "music_model_configs" / name
    kind, stems, chunk, hop, millions = SHARED[name]
    with torch.device("meta"):
        spec = _quiet_from_config(path)
    assert spec.model_type == kind
    assert spec.stems == stems
    assert (spec.chunk_size, spec.hop_length, spec.n_fft, spec.sample_rate) == (
        chunk,
        hop,
        2048,
        44100,
    )
    assert spec.channels == 2
    assert isinstance(spec.model, BSRoformer if kind == "bs_roformer" else MelBandRoformer)
    n_params = sum(p.numel() for p in spec.model.parameters())
    assert abs(n_params / 1e6 - millions) < 0.05


def test_shared_config_layout_matches_the_reference(data_dir: Path) -> None:
    """The layout from_config builds is the reference's for the same YAML options: same keys
    and shapes (lucidrains bs-roformer 0.3.10, which the community checkpoints use)."""
    ref = pytest.importorskip("bs_roformer")
    config = load_config(data_dir / "music_model_configs" / "config_vocals_mel_band_roformer.yaml")
    options = dict(config["model"])
    for key in (
        "linear_transformer_depth",
        "mlp_expansion_factor",
        "use_torch_checkpoint",
        "skip_connection",
    ):  # MSST additions unknown to 0.3.10 (defaults here)
        options.pop(key)
    options["dim"], options["depth"] = 32, 2  # layout per layer is what matters
    config["model"] = {**config["model"], "dim": 32, "depth": 2}
    ours = _quiet_from_config(config).model.state_dict()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = ref.MelBandRoformer(**options).state_dict()
    assert {k: tuple(v.shape) for k, v in ours.items()} == {
        k: tuple(v.shape) for k, v in theirs.items()
    }


def test_yaml_tuples_are_read_safely(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(
        "audio: {chunk_size: 8192, sample_rate: 44100}\n"
        "model:\n  dim: 16\n  depth: 1\n  stereo: true\n  num_stems: 2\n"
        "  freqs_per_bands: !!python/tuple [256, 257]\n  stft_n_fft: 1024\n"
        "  stft_win_length: 1024\n  stft_hop_length: 256\n"
        "training: {instruments: [vocals, other], target_instrument: null}\n"
        "inference: {batch_size: 2, num_overlap: 4}\n"
    )
    spec = from_config(path)
    assert spec.model.freqs_per_bands == (256, 257)
    assert spec.stems == ("vocals", "other") and spec.overlap == 0.75 and spec.batch_size == 2
    # arbitrary Python objects are refused, not built
    path.write_text("model: !!python/object/apply:os.system ['true']\n")
    with pytest.raises(ValueError, match="could not read"):
        from_config(path)


def _minimal(**model) -> dict:
    return {
        "audio": {"chunk_size": 4096, "sample_rate": 44100},
        "model": {
            "dim": 16,
            "depth": 1,
            "stereo": True,
            "num_stems": 1,
            "stft_n_fft": 512,
            "stft_win_length": 512,
            "stft_hop_length": 128,
            "num_bands": 8,
        }
        | model,
        "training": {"instruments": ["vocals", "other"], "target_instrument": "vocals"},
    }


def test_layout_changing_options_are_errors() -> None:
    with pytest.raises(ValueError, match="num_residual_streams.*hyper-connections"):
        from_config(_minimal(num_residual_streams=4))
    with pytest.raises(ValueError, match="'some_new_option' \\(unknown option\\)"):
        from_config(_minimal(some_new_option=1))
    with pytest.raises(ValueError, match="num_stems=2 but training lists 1"):
        from_config(_minimal(num_stems=2))
    with pytest.raises(ValueError, match="unsupported model type"):
        from_config(_minimal(), model_type="htdemucs")
    with pytest.raises(ValueError, match="no 'model' section"):
        from_config({"audio": {}})


def _with(section: str, **values) -> dict:
    config = _minimal()
    config[section] = {**config.get(section, {}), **values}
    return config


@pytest.mark.parametrize(
    ("config", "match"),
    [
        # YAML reads 1e-5 (no dot) as a string: it failed inside torch at the first forward
        (_minimal(rms_norm_eps="1e-5"), r"rms_norm_eps='1e-5' must be a number.*write 1\.0e-5"),
        (_minimal(stereo="false"), "stereo='false' must be true or false"),  # was stereo
        (_minimal(mask_estimator_depth="2"), "mask_estimator_depth='2' must be an integer"),
        (_minimal(attn_dropout=2.0), r"attn_dropout=2.0 must be a number in \[0, 1\)"),
        (_minimal(linear_transformer_depth=-1), "must be an integer >= 0"),
        (_with("inference", normalize="false"), "normalize option must be true or false"),
        (_with("inference", num_overlap=0), "num_overlap must be an integer >= 1"),  # was 0.5
        (_with("inference", num_overlap=0.5), "num_overlap must be an integer >= 1"),
        (_with("audio", num_channels=3), "num_channels must be 1 or 2"),  # was mono
        (_with("audio", num_channels=1), "num_channels=1 contradicts model.stereo=True"),
        (_with("audio", chunk_size=4096.7), "chunk size must be a positive integer"),  # was 4096
        (_with("audio", sample_rate=0), "sample rate must be a positive integer"),
        (
            _with("training", target_instrument=None, instruments=["vocals", "vocals"])
            | {"model": _minimal(num_stems=2)["model"]},
            "distinct",
        ),  # fmt: skip
        (_with("training", target_instrument="../vocals"), "without path separators"),
    ],
)
def test_config_values_are_checked_before_the_model_is_built(config, match) -> None:
    """Each of these was taken as something else (a string as true, 0 overlaps as 0.5, a
    fractional chunk truncated, a duplicate stem name found after the whole song), or failed
    deep inside torch."""
    with pytest.raises(ValueError, match=match):
        from_config(config)


def test_splifft_values_are_checked() -> None:
    base = {"model": {"dim": 16, "depth": 1, "chunk_size": 4096, "stft_hop_length": 128,
                      "band_config": {"kind": "mel", "num_bands": 8, "stft_n_fft": 512},
                      "output_stem_names": ["vocals"]},
            "transform": {"n_fft": 512, "hop_length": 128}}  # fmt: skip
    assert from_config(base).stems == ("vocals",)
    bad = json.loads(json.dumps(base))
    bad["model"]["output_stem_names"] = "vocals"  # was six stems ('v', 'o', 'c', ...)
    with pytest.raises(ValueError, match="output_stem_names must be a list"):
        from_config(bad)
    bad = json.loads(json.dumps(base))
    del bad["model"]["chunk_size"]
    with pytest.raises(ValueError, match="has no chunk_size"):
        from_config(bad)
    bad = json.loads(json.dumps(base))
    bad["model"]["mask_estimator_depth"] = 0  # was reported as -1
    with pytest.raises(ValueError, match="mask_estimator_depth must be an integer >= 2.*got 0"):
        from_config(bad)
    bad["model"]["band_config"] = None
    with pytest.raises(ValueError, match="band_config must be a mapping"):
        from_config(bad)


def test_harmless_options_warn_or_pass() -> None:
    with pytest.warns(UserWarning, match="sage_attention"):
        spec = from_config(_minimal(sage_attention=True, flash_attn=False))
    assert spec.model_type == "mel_band_roformer"
    config = _minimal()
    config["lora"] = {"r": 8, "lora_alpha": 16}
    with pytest.warns(UserWarning, match="lora"):
        spec = from_config(config)
    # the model has no adapter weights: the layout is the base model's
    assert not any("lora" in k for k in spec.model.state_dict())


def _splifft_configs() -> list[Path]:
    try:
        import splifft
    except ImportError:
        return []
    root = Path(splifft.__file__).parent / "data" / "config"
    return sorted(p for p in root.glob("*.json") if "roformer" in p.name)


@pytest.mark.slow  # ~20 s: builds 62 models on the meta device
def test_every_splifft_config_builds_or_names_its_unsupported_head() -> None:
    """splifft's 66 community RoFormer configs: all build (on the meta device) except the
    non-standard HyperACE / axial-refiner heads, which are named in the error."""
    paths = _splifft_configs()
    if not paths:
        pytest.skip("splifft not installed")
    built = refused = 0
    for path in paths:
        config = json.loads(path.read_text())
        head = config["model"].get("mask_estimator", {}).get("kind", "baseline")
        if head != "baseline":
            with pytest.raises(ValueError, match=head):
                _quiet_from_config(path)
            refused += 1
            continue
        with torch.device("meta"):
            spec = _quiet_from_config(path)
        assert spec.stems == tuple(config["model"]["output_stem_names"]), path.name
        assert spec.chunk_size == config["model"]["chunk_size"]
        built += 1
    assert built >= 60 and refused == 4


HYDRA_MODELS = {
    "bs_roformer_vocals.yaml": "config_vocals_bs_roformer.yaml",
    "bs_roformer_4stems.yaml": "config_musdb18_bs_roformer_384_8_2_485100_sage.yaml",
    "mel_band_roformer_vocals.yaml": "config_vocals_mel_band_roformer.yaml",
}


@pytest.mark.parametrize("name", sorted(HYDRA_MODELS))
def test_hydra_model_group_matches_community_config(data_dir: Path, name: str) -> None:
    """configs/model/*.yaml instantiate the same layout as from_config on the MSST file."""
    pytest.importorskip("hydra")
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    path = Path(__file__).resolve().parents[1] / "configs" / "model" / name
    with torch.device("meta"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = instantiate(OmegaConf.load(path))
        spec = from_config(data_dir / "music_model_configs" / HYDRA_MODELS[name])
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert shapes == {k: tuple(v.shape) for k, v in spec.model.state_dict().items()}
    assert (model.hop_length, model.n_fft, model.num_stems) == (
        spec.hop_length,
        spec.n_fft,
        len(spec.stems),
    )
