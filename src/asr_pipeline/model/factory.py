"""Which acoustic network a preset or a bundle describes, and building it.

Model settings are a plain dict (a preset of ``parameters_training.yml`` with ``n_features``, or
a bundle's ``model_config``); its ``architecture`` key picks the network. A dict without one is
the DeepSpeech2-like model: every bundle saved before there was a choice, and
``ModelConfig.to_dict()`` itself, which stays as it was so that the checkpoints of runs under
way still resume (their fingerprint hashes it).
"""

from __future__ import annotations

from typing import Any

from torch import nn

from asr_pipeline.model.acoustic import AcousticModel, ModelConfig
from asr_pipeline.model.conformer import ConformerConfig, ConformerModel
from asr_pipeline.model.streaming_gru import StreamingGRUConfig, StreamingGRUModel

AnyModelConfig = ModelConfig | ConformerConfig | StreamingGRUConfig

DEFAULT_ARCHITECTURE = ModelConfig.ARCHITECTURE
ARCHITECTURES: dict[str, tuple[type[AnyModelConfig], type[nn.Module]]] = {
    ModelConfig.ARCHITECTURE: (ModelConfig, AcousticModel),
    ConformerConfig.ARCHITECTURE: (ConformerConfig, ConformerModel),
    StreamingGRUConfig.ARCHITECTURE: (StreamingGRUConfig, StreamingGRUModel),
}


def model_config_from_dict(values: dict[str, Any]) -> AnyModelConfig:
    """The checked config of the network ``values["architecture"]`` names (default: DeepSpeech2).

    The chosen config refuses settings it does not know and reports those it misses, so that a
    DeepSpeech2 setting left over in a Conformer preset (or the reverse) fails with its name.
    """
    architecture = values.get("architecture", DEFAULT_ARCHITECTURE)
    if architecture not in ARCHITECTURES:
        raise ValueError(
            f"unknown model architecture {architecture!r}; choose one of {sorted(ARCHITECTURES)}"
        )
    config_class, _ = ARCHITECTURES[architecture]
    return config_class.from_dict(values)


def build_acoustic_model(config: AnyModelConfig) -> nn.Module:
    """The untrained network of ``config``: ``forward(features, lengths) -> (log_probs,
    out_lengths)``, ``output_lengths(lengths)`` and ``.config``, whichever the architecture."""
    _, model_class = ARCHITECTURES[config.ARCHITECTURE]
    return model_class(config)
