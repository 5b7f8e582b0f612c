"""The streaming preset's network: bounded look-ahead, and chunked streaming == whole forward."""

from __future__ import annotations

import pytest
import torch

from asr_pipeline.model.factory import build_acoustic_model, model_config_from_dict
from asr_pipeline.model.streaming_gru import StreamingGRUConfig, StreamingGRUModel
from tests.support import project_params

PRESET = project_params("training")["training"]["presets"]["streaming"]
SMALL = {"cnn_channels": 4, "rnn_dim": 16, "n_rnn_layers": 2, "n_features": 20}


def small_model(**overrides) -> StreamingGRUModel:
    torch.manual_seed(0)
    config = model_config_from_dict({**PRESET, **SMALL, **overrides})
    model = build_acoustic_model(config)
    assert isinstance(model, StreamingGRUModel)
    # random batch-norm statistics, so that eval mode is not the identity
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    return model.eval()


def test_the_preset_parses_and_round_trips_through_the_bundle_dict() -> None:
    config = model_config_from_dict({**PRESET, "n_features": 80})
    assert isinstance(config, StreamingGRUConfig)
    assert config.to_dict()["lookahead_ms"] == PRESET["lookahead_ms"]
    assert model_config_from_dict(config.to_dict()) == config
    assert config.lookahead_frames * config.time_stride * config.frame_ms == config.lookahead_ms
    with pytest.raises(ValueError, match="multiple of one output frame"):
        model_config_from_dict({**PRESET, "n_features": 80, "lookahead_ms": 50})
    with pytest.raises(ValueError, match=r"missing model setting\(s\) \['lookahead_ms'\]"):
        without = {k: v for k, v in PRESET.items() if k != "lookahead_ms"}
        model_config_from_dict({**without, "n_features": 80})


def test_gru_blocks_add_their_input_back_and_older_bundles_keep_theirs_without() -> None:
    assert PRESET["residual_rnn"] is True
    model = small_model()
    x = torch.randn(1, 7, SMALL["rnn_dim"])
    block = model.gru_blocks[0].eval()
    plain, _ = block.gru(block.activation(block.norm(x)))
    assert torch.allclose(block(x)[0], x + plain)
    # a bundle written before the skips existed has no residual_rnn: read as trained, without
    older = {k: v for k, v in model.config.to_dict().items() if k != "residual_rnn"}
    config = model_config_from_dict(older)
    assert config.residual_rnn is False
    block = StreamingGRUModel(config).gru_blocks[0].eval()
    assert torch.allclose(block(x)[0], block.gru(block.activation(block.norm(x)))[0])


@pytest.mark.parametrize("chunk", [1, 2, 7, 16, 45, 1000])
@pytest.mark.parametrize("lookahead_ms", [0, 90])
def test_chunked_stream_gives_the_whole_forward(chunk: int, lookahead_ms: int) -> None:
    model = small_model(lookahead_ms=lookahead_ms)
    features = torch.randn(1, 20, 101)
    with torch.inference_mode():
        full, lengths = model(features, torch.tensor([101]))
        state = model.initial_state()
        pieces = [
            model.stream(features[0, :, i : i + chunk], state)
            for i in range(0, features.shape[-1], chunk)
        ]
        pieces.append(model.stream(features[0, :, :0], state, final=True))
    streamed = torch.cat(pieces)
    assert streamed.shape == (int(lengths[0]), full.shape[-1]) == (34, full.shape[-1])
    torch.testing.assert_close(streamed, full[0], atol=1e-4, rtol=0)
    assert state.frames_out == 34
    with pytest.raises(RuntimeError, match="has ended"):
        model.stream(features[0, :, :5], state)


def test_the_look_ahead_is_bounded() -> None:
    # changing features after frame (j + lookahead) * stride leaves output frames <= j unchanged,
    # and changing the ones just inside changes frame j
    model = small_model(lookahead_ms=90)
    stride, ahead = model.config.time_stride, model.config.lookahead_frames
    features = torch.randn(1, 20, 90)
    j = 10
    later = features.clone()
    later[..., (j + ahead) * stride + 1 :] += 3.0
    inside = features.clone()
    inside[..., (j + ahead) * stride] += 3.0
    with torch.inference_mode():
        base, _ = model(features, torch.tensor([90]))
        changed_late, _ = model(later, torch.tensor([90]))
        changed_inside, _ = model(inside, torch.tensor([90]))
    torch.testing.assert_close(changed_late[0, : j + 1], base[0, : j + 1])
    assert not torch.allclose(changed_inside[0, j], base[0, j])


def test_a_batch_gives_what_each_utterance_gives_alone() -> None:
    model = small_model()
    a, b = torch.randn(20, 60), torch.randn(20, 41)
    batch = torch.zeros(2, 20, 60)
    batch[0], batch[1, :, :41] = a, b
    with torch.inference_mode():
        together, lengths = model(batch, torch.tensor([60, 41]))
        alone, _ = model(b.unsqueeze(0), torch.tensor([41]))
    assert lengths.tolist() == [20, 14]
    torch.testing.assert_close(together[1, :14], alone[0], atol=1e-5, rtol=0)


def test_it_trains() -> None:
    model = small_model()
    model.train()
    features, targets = torch.randn(2, 20, 60), torch.randint(1, 28, (2, 6))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(15):
        log_probs, lengths = model(features, torch.tensor([60, 60]))
        loss = torch.nn.functional.ctc_loss(
            log_probs.transpose(0, 1), targets, lengths, torch.tensor([6, 6])
        )
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0], losses
