"""The acoustic model: batch independence, output-length arithmetic, sizes, config validation."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch
import yaml

from asr_pipeline.model import AcousticModel, ModelConfig, conv_output_length, count_parameters

PRESETS = yaml.safe_load(
    (Path(__file__).resolve().parents[1] / "conf/base/parameters_training.yml").read_text()
)["training"]["presets"]


def seed_config(**overrides) -> ModelConfig:
    return ModelConfig.from_dict({**PRESETS["seed"], "n_features": 128, **overrides})


@pytest.mark.parametrize(
    "config",
    [ModelConfig(), ModelConfig.from_dict(PRESETS["default"]), seed_config()],
    ids=["ModelConfig()", "default-preset", "seed-preset-128"],
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
    default = count_parameters(AcousticModel(ModelConfig.from_dict(PRESETS["default"])))
    assert default == count_parameters(AcousticModel(ModelConfig()))
    assert default < seed / 10, (default, seed)


def test_config_rejects_unknown_keys_and_even_kernels() -> None:
    with pytest.raises(ValueError, match="unknown model setting"):
        ModelConfig.from_dict({"rnn_dim": 64, "rnn_size": 64})
    for kernel in (2, 4, 6):
        with pytest.raises(ValueError, match="odd"):
            ModelConfig.from_dict({"frontend_kernel": kernel})
    config = ModelConfig.from_dict({**PRESETS["seed"], "n_features": 128})
    assert ModelConfig.from_dict(config.to_dict()) == config
