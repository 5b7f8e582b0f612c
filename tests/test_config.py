"""Configuration: conf/base is the one source of every default, parsers refuse keys they do not
know, and the environments (conf/shared, conf/full) hold only what differs from conf/base."""

from __future__ import annotations

import re
from dataclasses import MISSING, fields
from pathlib import Path
from typing import Any

import pytest
import yaml
from kedro.config import OmegaConfigLoader

from asr_pipeline.audio.features import PIPELINE_SETTINGS, FeatureConfig
from asr_pipeline.corpus.librispeech import LIBRISPEECH_SETTINGS
from asr_pipeline.decoding.ctc import LM_BUILD_SETTINGS, TUNE_SETTINGS, BeamSearchConfig
from asr_pipeline.model.acoustic import ModelConfig
from asr_pipeline.model.factory import ARCHITECTURES, model_config_from_dict
from asr_pipeline.pipelines.data_engineering.nodes import (
    DATA_ENGINEERING_SETTINGS,
    prepare_librispeech,
)
from asr_pipeline.pipelines.evaluation.nodes import EVALUATION_SETTINGS, transcribe_split
from asr_pipeline.pipelines.inference.nodes import INFERENCE_SETTINGS, resolve_audio_inputs
from asr_pipeline.pipelines.training.decoder_nodes import tune_beam_search
from asr_pipeline.settings import CONFIG_LOADER_ARGS
from asr_pipeline.units.characters import VOCABULARY
from tests.support import CONF, base_parameters

# Kedro registers OmegaConf resolvers the deprecated way; nothing for this project to act on.
pytestmark = pytest.mark.filterwarnings("ignore:register_new_resolver:UserWarning")

BASE = base_parameters()
FEATURES = BASE["features"]
BEAM_SEARCH = BASE["beam_search"]
PRESETS = BASE["training"]["presets"]
N_FEATURES = FeatureConfig.from_params(FEATURES).n_features


def _defaults(cls: type) -> dict[str, Any]:
    return {f.name: f.default for f in fields(cls) if f.default is not MISSING}


def _model_values(**overrides: Any) -> dict[str, Any]:
    return {**PRESETS["default"], "n_features": N_FEATURES, **overrides}


# -- one source of each default ---------------------------------------------------------------
def test_dataclass_defaults_agree_with_conf_base() -> None:
    # settings come from the YAML only; a default left in a dataclass would be a second source
    assert _defaults(FeatureConfig) == {}
    assert _defaults(BeamSearchConfig) == {}
    # the one default of each network's config is the vocabulary's size, which no parameter sets
    for config_class, _ in ARCHITECTURES.values():
        assert _defaults(config_class) == {"n_classes": len(VOCABULARY)}, config_class


def test_parsers_know_exactly_the_keys_of_conf_base() -> None:
    assert {f.name for f in fields(FeatureConfig)} | PIPELINE_SETTINGS == set(FEATURES)
    known = {f.name for f in fields(BeamSearchConfig)} | {"tune"} | LM_BUILD_SETTINGS
    assert known == set(BEAM_SEARCH)
    assert set(BEAM_SEARCH["tune"]) == TUNE_SETTINGS
    for name, preset in PRESETS.items():  # each preset: its network's sizes, and its name
        config_class, _ = ARCHITECTURES[preset["architecture"]]
        sizes = {f.name for f in fields(config_class)} - {"n_features", "n_classes"}
        # and, optionally, the units it is made for (seed: characters, whatever units.kind says)
        assert set(preset) - {"units"} == sizes | {"architecture"}, name
    assert PRESETS["seed"]["units"] == "characters"
    assert set(BASE["evaluation"]) == EVALUATION_SETTINGS
    assert set(BASE["inference"]) == INFERENCE_SETTINGS
    assert set(BASE["data_engineering"]) == DATA_ENGINEERING_SETTINGS
    assert set(BASE["librispeech"]) == LIBRISPEECH_SETTINGS


def test_conf_base_parses() -> None:
    assert FeatureConfig.from_params(FEATURES).kind == FEATURES["kind"]
    beam = BeamSearchConfig.from_params(BEAM_SEARCH)
    decoding = {k: v for k, v in BEAM_SEARCH.items() if k not in {"tune", *LM_BUILD_SETTINGS}}
    assert beam.to_dict() == decoding
    for name, preset in PRESETS.items():
        config = model_config_from_dict({**preset, "n_features": N_FEATURES})
        values = {**config.to_dict(), "architecture": config.ARCHITECTURE}
        network = {k: v for k, v in preset.items() if k != "units"}
        assert {k: v for k, v in values.items() if k in preset} == network, name


# -- unknown and missing keys ----------------------------------------------------------------
def _refusal(section: str, unknown: str, known: set[str]) -> str:
    return re.escape(f"unknown {section} setting(s) {[unknown]}; known: {sorted(known)}")


def test_feature_parameters_refuse_unknown_and_missing_keys() -> None:
    known = {f.name for f in fields(FeatureConfig)} | PIPELINE_SETTINGS
    with pytest.raises(ValueError, match=_refusal("features", "n_mel", known)):
        FeatureConfig.from_params({**FEATURES, "n_mel": 64})
    without = {k: v for k, v in FEATURES.items() if k != "hop_length"}
    with pytest.raises(ValueError, match=re.escape("missing features setting(s) ['hop_length']")):
        FeatureConfig.from_params(without)
    # the pipeline's own keys may be left out where only the transform is wanted
    transform = {f.name: FEATURES[f.name] for f in fields(FeatureConfig)}
    assert FeatureConfig.from_params(transform) == FeatureConfig.from_params(FEATURES)


def test_beam_search_parameters_refuse_unknown_and_missing_keys() -> None:
    known = {f.name for f in fields(BeamSearchConfig)} | {"tune"} | LM_BUILD_SETTINGS
    with pytest.raises(ValueError, match=_refusal("beam_search", "beam_width", known)):
        BeamSearchConfig.from_params({**BEAM_SEARCH, "beam_width": 64})
    tune = {**BEAM_SEARCH["tune"], "splits": "validation"}
    with pytest.raises(ValueError, match=_refusal("beam_search.tune", "splits", TUNE_SETTINGS)):
        BeamSearchConfig.from_params({**BEAM_SEARCH, "tune": tune})
    without = {k: v for k, v in BEAM_SEARCH.items() if k != "background_words"}
    with pytest.raises(ValueError, match=re.escape("missing beam_search setting(s)")):
        BeamSearchConfig.from_params(without)
    assert BeamSearchConfig.from_params(
        {**BEAM_SEARCH, "tune": None}
    ) == BeamSearchConfig.from_params(BEAM_SEARCH)
    # refused before the acoustic model runs (there is none here)
    with pytest.raises(ValueError, match="unknown beam_search setting"):
        tune_beam_search(None, None, "", {**BEAM_SEARCH, "beam_width": 64}, "test")


def test_model_settings_refuse_unknown_and_missing_keys() -> None:
    known = {f.name for f in fields(ModelConfig)}
    with pytest.raises(ValueError, match=_refusal("model", "rnn_size", known)):
        ModelConfig.from_dict(_model_values(rnn_size=64))
    with pytest.raises(ValueError, match=re.escape("missing model setting(s) ['n_features']")):
        ModelConfig.from_dict(PRESETS["default"])


def test_evaluation_and_inference_parameters_refuse_unknown_keys() -> None:
    evaluation = {**BASE["evaluation"], "decoder": "beam"}  # the key is `decoders`
    with pytest.raises(ValueError, match=_refusal("evaluation", "decoder", EVALUATION_SETTINGS)):
        transcribe_split(None, None, evaluation)
    inference = {**BASE["inference"], "decoders": ["beam"]}  # the key is `decoder`
    with pytest.raises(ValueError, match=_refusal("inference", "decoders", INFERENCE_SETTINGS)):
        resolve_audio_inputs(inference, {})


def test_data_engineering_parameters_refuse_unknown_and_missing_keys(tmp_path: Path) -> None:
    # refused by the pipeline's first node, before it looks for (or downloads) any subset
    librispeech = {**BASE["librispeech"], "root": str(tmp_path), "download": False}
    data = BASE["data_engineering"]
    misspelt = {**data, "train_subset": ["dev-clean-2"]}  # the key is `train_subsets`
    with pytest.raises(
        ValueError, match=_refusal("data_engineering", "train_subset", DATA_ENGINEERING_SETTINGS)
    ):
        prepare_librispeech(librispeech, misspelt)
    without = {k: v for k, v in data.items() if k != "split_seed"}
    with pytest.raises(
        ValueError, match=re.escape("missing data_engineering setting(s) ['split_seed']")
    ):
        prepare_librispeech(librispeech, without)
    assert not any(tmp_path.iterdir())


def test_librispeech_parameters_refuse_unknown_and_missing_keys(tmp_path: Path) -> None:
    librispeech = {**BASE["librispeech"], "root": str(tmp_path), "download": False}
    misspelt = {**librispeech, "mirror": "elsewhere"}  # the key is `mirror_dir`
    refusal = _refusal("librispeech", "mirror", LIBRISPEECH_SETTINGS)
    # checked by the first node of each pipeline that reads them
    with pytest.raises(ValueError, match=refusal):
        prepare_librispeech(misspelt, BASE["data_engineering"])
    with pytest.raises(ValueError, match=refusal):
        resolve_audio_inputs(BASE["inference"], misspelt)
    # only the root is always needed (asr-transcribe gives it alone)
    without = {k: v for k, v in librispeech.items() if k != "root"}
    with pytest.raises(ValueError, match=re.escape("missing librispeech setting(s) ['root']")):
        prepare_librispeech(without, BASE["data_engineering"])
    with pytest.raises(ValueError, match=re.escape("missing librispeech setting(s) ['root']")):
        resolve_audio_inputs(BASE["inference"], without)
    assert not any(tmp_path.iterdir())


# -- environments ----------------------------------------------------------------------------
def _parameters(env: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """The parameters a `kedro run --env ENV` gets (without a developer's own environment)."""
    monkeypatch.delenv("LIBRISPEECH_DIR", raising=False)
    loader = OmegaConfigLoader(conf_source=str(CONF), env=env, **CONFIG_LOADER_ARGS)
    return loader["parameters"]


# What each environment changes; everything else is conf/base's.
ENVIRONMENTS = {
    "shared": {
        "librispeech": {"root": "../shared/librispeech/LibriSpeech", "download": False},
        "data_engineering": {
            "train_subsets": ["train-clean-100", "dev-clean"],
            "test_subsets": ["dev-clean"],
        },
    },
    "full": {
        "data_engineering": {
            "train_subsets": ["train-clean-100"],
            "test_subsets": ["test-clean"],
            "validation_fraction": 0.02,
        },
    },
}


@pytest.mark.parametrize("env", sorted(ENVIRONMENTS))
def test_environments_change_only_their_own_values(
    env: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    base = _parameters("base", monkeypatch)
    merged = _parameters(env, monkeypatch)
    assert set(merged) == set(base)
    for section, values in merged.items():
        assert values == {**base[section], **ENVIRONMENTS[env].get(section, {})}, section


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Dotted keys of nested mappings; lists and scalars are the values."""
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            flat |= _flatten(value, f"{prefix}{key}.")
        else:
            flat[f"{prefix}{key}"] = value
    return flat


@pytest.mark.parametrize("env", sorted(ENVIRONMENTS))
def test_environment_files_hold_only_what_differs_from_base(env: str) -> None:
    base = _flatten(BASE)
    files = sorted((CONF / env).glob("parameters*.yml"))
    assert files
    for path in files:
        for key, value in _flatten(yaml.safe_load(path.read_text()) or {}).items():
            assert key in base, f"{path.name}: {key} is not a parameter of conf/base"
            assert value != base[key], f"{path.name}: {key} repeats conf/base's value {value!r}"
