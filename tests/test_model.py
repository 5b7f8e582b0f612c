"""The acoustic model: batch independence, the BiGRU against packed sequences, output-length
arithmetic, sizes, config validation, and the factory that picks the network of a preset or
bundle (the Conformer's own tests are in tests/test_conformer.py)."""

from __future__ import annotations

import random

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from asr_pipeline.audio.features import FeatureConfig, RunningStats
from asr_pipeline.model.acoustic import (
    AcousticModel,
    BiGRUBlock,
    ModelConfig,
    conv_output_length,
    count_parameters,
    reverse_within_lengths,
)
from asr_pipeline.model.bundle import make_bundle
from asr_pipeline.model.conformer import ConformerConfig
from asr_pipeline.model.factory import ARCHITECTURES, build_acoustic_model, model_config_from_dict
from tests.support import project_params

PRESETS = project_params("training")["training"]["presets"]
FEATURE_CONFIG = FeatureConfig.from_params(project_params("feature_engineering")["features"])
N_FEATURES = FEATURE_CONFIG.n_features


def default_config(**overrides) -> ModelConfig:
    """The default preset on the project's features, with ``overrides``."""
    return ModelConfig.from_dict({**PRESETS["default"], "n_features": N_FEATURES, **overrides})


def seed_config(**overrides) -> ModelConfig:
    return ModelConfig.from_dict({**PRESETS["seed"], "n_features": 128, **overrides})


@pytest.mark.parametrize(
    "config",
    [default_config(), seed_config()],
    ids=["default-preset", "seed-preset-128"],
)
def test_utterance_output_does_not_depend_on_its_batch(config: ModelConfig) -> None:
    torch.manual_seed(0)
    model = AcousticModel(config).eval()
    lengths = [23, 41, 30]  # the utterance under test is the middle-length one, in the middle
    features = [torch.randn(config.n_features, n) for n in lengths]
    padded = torch.zeros(len(lengths), config.n_features, max(lengths))
    for i, f in enumerate(features):
        padded[i, :, : f.shape[1]] = f
    with torch.inference_mode():
        batch_out, batch_lengths = model(padded, torch.tensor(lengths))
        for i, f in enumerate(features):
            alone, alone_length = model(f.unsqueeze(0), torch.tensor([f.shape[1]]))
            n = int(alone_length[0])
            assert n == alone.shape[1] == int(batch_lengths[i])
            torch.testing.assert_close(batch_out[i, :n], alone[0], atol=1e-5, rtol=0)


def test_reverse_within_lengths_reverses_real_frames_and_keeps_padding() -> None:
    x = torch.arange(2 * 4, dtype=torch.float32).reshape(2, 4, 1)  # frames 0..3 and 4..7
    reversed_x = reverse_within_lengths(x, torch.tensor([4, 2]))
    assert reversed_x.squeeze(-1).tolist() == [[3, 2, 1, 0], [5, 4, 6, 7]]
    torch.testing.assert_close(reverse_within_lengths(reversed_x, torch.tensor([4, 2])), x)


def _packed_bidirectional_gru(block: BiGRUBlock, x: torch.Tensor, lengths: torch.Tensor):
    """The reference: a bidirectional ``nn.GRU`` with the block's weights over packed sequences."""
    gru = nn.GRU(x.shape[-1], block.forward_gru.hidden_size, batch_first=True, bidirectional=True)
    gru.load_state_dict(_bidirectional_state(block))
    packed = pack_padded_sequence(
        block.activation(block.norm(x)), lengths, batch_first=True, enforce_sorted=False
    )
    output, _ = gru(packed)
    return pad_packed_sequence(output, batch_first=True, total_length=x.shape[1])[0]


def _bidirectional_state(block: BiGRUBlock) -> dict[str, torch.Tensor]:
    """The block's GRU weights under a bidirectional ``nn.GRU``'s names (the old bundle layout)."""
    state = dict(block.forward_gru.state_dict())
    state |= {f"{name}_reverse": p for name, p in block.backward_gru.state_dict().items()}
    return state


def test_bigru_block_equals_a_packed_bidirectional_gru() -> None:
    torch.manual_seed(0)
    block = BiGRUBlock(input_dim=8, hidden_dim=6, dropout=0.0).eval()
    lengths = torch.tensor([9, 4, 7])
    x = torch.randn(3, 9, 8)
    with torch.inference_mode():
        output = block(x, lengths)
        reference = _packed_bidirectional_gru(block, x, lengths)
    for i, n in enumerate(lengths.tolist()):
        torch.testing.assert_close(output[i, :n], reference[i, :n], atol=1e-6, rtol=0)


def test_bundles_saved_with_one_bidirectional_gru_still_load() -> None:
    torch.manual_seed(0)
    model = AcousticModel(default_config(n_features=16, rnn_dim=8, n_rnn_layers=2)).eval()
    old_layout = {
        key.replace("forward_gru.", "gru.").replace("backward_gru.", "gru.")
        + ("_reverse" if "backward_gru." in key else ""): value
        for key, value in model.state_dict().items()
    }
    assert any(k.endswith("gru.weight_hh_l0_reverse") for k in old_layout)
    restored = AcousticModel(default_config(n_features=16, rnn_dim=8, n_rnn_layers=2)).eval()
    restored.load_state_dict(old_layout)
    features, lengths = torch.randn(2, 16, 30), torch.tensor([30, 21])
    with torch.inference_mode():
        torch.testing.assert_close(restored(features, lengths)[0], model(features, lengths)[0])


def test_output_lengths_match_the_real_output() -> None:
    rng = random.Random(0)
    torch.manual_seed(0)
    checked = 0
    for n_features in (13, 40, 80, 128):
        for kernel in (3, 5, 7):
            for stride in (1, 2, 3, 4):
                config = ModelConfig.from_dict(
                    {
                        "n_features": n_features,
                        "frontend_kernel": kernel,
                        "time_stride": stride,
                        "freq_stride": rng.choice((1, 2, 3)),
                        "cnn_channels": 2,
                        "n_residual_blocks": 1,
                        "rnn_dim": 4,
                        "n_rnn_layers": 1,
                        "dropout": 0.0,
                    }
                )
                model = AcousticModel(config).eval()
                lengths = {1, 2, 3, kernel, kernel + 1, 400, *rng.sample(range(1, 401), 6)}
                for length in sorted(lengths):
                    with torch.inference_mode():
                        out, out_lengths = model(
                            torch.randn(1, n_features, length), torch.tensor([length])
                        )
                    expected = int(model.output_lengths(torch.tensor([length]))[0])
                    assert expected == out.shape[1] == int(out_lengths[0]), (config, length)
                    assert out.shape[2] == config.n_classes
                    checked += 1
    assert checked > 400


@pytest.mark.parametrize("kernel", [1, 3, 5, 7, 9])
@pytest.mark.parametrize("stride", [1, 2, 3, 4])
def test_conv_output_length_matches_conv1d(kernel: int, stride: int) -> None:
    conv = torch.nn.Conv1d(1, 1, kernel, stride=stride, padding=kernel // 2)
    lengths = torch.arange(1, 120)
    with torch.no_grad():
        real = [conv(torch.zeros(1, 1, int(n))).shape[-1] for n in lengths]
    assert conv_output_length(lengths, kernel, stride).tolist() == real
    assert [conv_output_length(int(n), kernel, stride) for n in lengths] == real


def test_parameter_counts() -> None:
    seed = count_parameters(AcousticModel(seed_config()))
    assert 33.5e6 <= seed <= 34.0e6, seed
    default = count_parameters(AcousticModel(default_config()))
    assert default < seed / 10, (default, seed)


def test_config_rejects_unknown_and_missing_keys_and_even_kernels() -> None:
    with pytest.raises(ValueError, match=r"unknown model setting\(s\) \['rnn_size'\]; known: "):
        default_config(rnn_size=64)
    without_dropout = {k: v for k, v in default_config().to_dict().items() if k != "dropout"}
    with pytest.raises(ValueError, match=r"missing model setting\(s\) \['dropout'\]"):
        ModelConfig.from_dict(without_dropout)
    for kernel in (2, 4, 6):
        with pytest.raises(ValueError, match="odd"):
            default_config(frontend_kernel=kernel)
    config = ModelConfig.from_dict({**PRESETS["seed"], "n_features": 128})
    assert ModelConfig.from_dict(config.to_dict()) == config


# -- the factory --------------------------------------------------------------------------------
def test_every_preset_names_its_network_and_parses_through_the_factory() -> None:
    for name, preset in PRESETS.items():
        config = model_config_from_dict({**preset, "n_features": N_FEATURES})
        assert preset["architecture"] == config.ARCHITECTURE, name
        config_class, model_class = ARCHITECTURES[preset["architecture"]]
        assert type(config) is config_class
        assert type(build_acoustic_model(config)) is model_class
    assert isinstance(
        model_config_from_dict({**PRESETS["conformer"], "n_features": 80}), ConformerConfig
    )


def test_deepspeech2_settings_are_what_they_were_before_there_was_a_choice() -> None:
    # a DeepSpeech2 config says nothing of its architecture: bundles and the checkpoint
    # fingerprints of runs under way (they hash to_dict()) stay the same
    for name in ("default", "seed"):
        values = {k: v for k, v in PRESETS[name].items() if k not in ("architecture", "units")}
        config = model_config_from_dict({**PRESETS[name], "n_features": N_FEATURES})
        assert config == ModelConfig.from_dict({**values, "n_features": N_FEATURES})
        assert config.to_dict() == {
            **values,
            "n_features": N_FEATURES,
            "n_classes": config.n_classes,
        }
        assert model_config_from_dict(config.to_dict()) == config


def test_bundles_without_an_architecture_load_as_deepspeech2() -> None:
    torch.manual_seed(0)
    config = default_config(n_features=16, cnn_channels=4, rnn_dim=8, n_rnn_layers=1)
    model = AcousticModel(config).eval()
    stats = RunningStats(16)
    stats.update(torch.randn(16, 50))
    bundle = make_bundle(config, model.state_dict(), FEATURE_CONFIG, stats.result(), {})
    assert "architecture" not in bundle["model_config"]
    restored = build_acoustic_model(model_config_from_dict(bundle["model_config"])).eval()
    assert type(restored) is AcousticModel
    restored.load_state_dict(bundle["state_dict"])
    features, lengths = torch.randn(2, 16, 30), torch.tensor([30, 21])
    with torch.inference_mode():
        torch.testing.assert_close(restored(features, lengths), model(features, lengths))


def test_the_factory_refuses_unknown_and_mismatched_architectures() -> None:
    values = {**PRESETS["default"], "n_features": N_FEATURES}
    with pytest.raises(ValueError, match=r"unknown model architecture 'transformer'; choose one"):
        model_config_from_dict({**values, "architecture": "transformer"})
    with pytest.raises(ValueError, match="'deepspeech2' network, not 'conformer'"):
        ModelConfig.from_dict({**values, "architecture": "conformer"})
    # DeepSpeech2 settings under the Conformer's name are refused by name, not silently ignored
    with pytest.raises(ValueError, match=r"unknown model setting\(s\) \['cnn_channels'"):
        model_config_from_dict({**values, "architecture": "conformer"})
