"""The Conformer model: output lengths, batch and padding independence, torchaudio's layers,
the preset's size, overfitting real utterances, and bundles through the factory."""

from __future__ import annotations

import random
from pathlib import Path

import pandas as pd
import pytest
import soundfile as sf
import torch

from asr_pipeline.audio.extraction import compute_features
from asr_pipeline.audio.features import FeatureConfig, FeatureExtractor, RunningStats
from asr_pipeline.decoding.ctc import greedy_decode
from asr_pipeline.decoding.metrics import error_rates
from asr_pipeline.model.acoustic import count_parameters
from asr_pipeline.model.bundle import make_bundle
from asr_pipeline.model.conformer import ConformerConfig, ConformerModel, subsampled_length
from asr_pipeline.model.factory import build_acoustic_model, model_config_from_dict
from asr_pipeline.trainer.batching import Batch, BatchLoader, batch_loss
from asr_pipeline.units.characters import normalise
from tests.support import project_params

PRESETS = project_params("training")["training"]["presets"]
FEATURE_CONFIG = FeatureConfig.from_params(project_params("feature_engineering")["features"])
N_FEATURES = FEATURE_CONFIG.n_features


def preset_config(**overrides) -> ConformerConfig:
    """The ``conformer`` preset on the project's features, with ``overrides``."""
    config = model_config_from_dict({**PRESETS["conformer"], "n_features": N_FEATURES, **overrides})
    assert isinstance(config, ConformerConfig)
    return config


def tiny_config(**overrides) -> ConformerConfig:
    sizes = {"subsampling_channels": 8, "d_model": 32, "n_heads": 4, "ffn_dim": 64, "n_layers": 2}
    return preset_config(**{**sizes, "dropout": 0.0, **overrides})


def padded_batch(features: list[torch.Tensor], frames: int | None = None) -> torch.Tensor:
    """``features`` zero-padded to ``frames`` (default: the longest) as ``(B, F, T)``."""
    frames = frames or max(f.shape[1] for f in features)
    padded = torch.zeros(len(features), features[0].shape[0], frames)
    for i, f in enumerate(features):
        padded[i, :, : f.shape[1]] = f
    return padded


# -- shapes and lengths -------------------------------------------------------------------------
def test_output_lengths_match_the_real_output() -> None:
    rng = random.Random(0)
    torch.manual_seed(0)
    checked = 0
    for n_features in (13, 40, 80, 128):
        model = ConformerModel(tiny_config(n_features=n_features, n_layers=1)).eval()
        lengths = {1, 2, 3, 4, 5, 7, 8, 9, 400, *rng.sample(range(1, 401), 12)}
        for length in sorted(lengths):
            with torch.inference_mode():
                out, out_lengths = model(torch.randn(1, n_features, length), torch.tensor([length]))
            expected = int(model.output_lengths(torch.tensor([length]))[0])
            assert expected == out.shape[1] == int(out_lengths[0]) == -(-length // 4), length
            assert out.shape[2] == model.config.n_classes
            assert subsampled_length(length) == expected
            checked += 1
        # and in a batch: every utterance gets its own length, the tensor the longest's
        batch_lengths = torch.tensor(rng.sample(range(1, 401), 5))
        frames = int(batch_lengths.max())
        with torch.inference_mode():
            out, out_lengths = model(torch.randn(5, n_features, frames), batch_lengths)
        assert out_lengths.tolist() == model.output_lengths(batch_lengths).tolist()
        assert out.shape[1] == int(out_lengths.max())
    assert checked > 80


# -- batch and padding independence ------------------------------------------------------------
@pytest.mark.parametrize("config", [preset_config(), tiny_config(conv_kernel=31)])
def test_utterance_output_does_not_depend_on_its_batch(config: ConformerConfig) -> None:
    # torchaudio's own Conformer.forward differs by up to ~0.23 in log-probability here (its
    # convolution module reads padding); with padding zeroed the difference is float rounding.
    torch.manual_seed(0)
    model = ConformerModel(config).eval()
    lengths = [230, 411, 300]  # the middle-length utterance in the middle; 411 is not 4k
    features = [torch.randn(config.n_features, n) for n in lengths]
    with torch.inference_mode():
        batch_out, batch_lengths = model(padded_batch(features), torch.tensor(lengths))
        for i, f in enumerate(features):
            alone, alone_length = model(f.unsqueeze(0), torch.tensor([f.shape[1]]))
            n = int(alone_length[0])
            assert n == alone.shape[1] == int(batch_lengths[i])
            torch.testing.assert_close(batch_out[i, :n], alone[0], atol=1e-5, rtol=0)


def test_training_output_does_not_depend_on_padding() -> None:
    # In training, batch norm's statistics are the batch's real frames: extra padding (a longer
    # batch-mate) changes nothing, so training sees what evaluation will.
    torch.manual_seed(0)
    model = ConformerModel(tiny_config(n_layers=2)).train()
    features = torch.randn(N_FEATURES, 97)
    lengths = torch.tensor([97])
    alone, _ = model(features.unsqueeze(0), lengths)
    padded, _ = model(padded_batch([features], frames=160), lengths)
    torch.testing.assert_close(padded[0, : alone.shape[1]], alone[0], atol=1e-5, rtol=0)


def test_layers_are_torchaudios_when_nothing_is_padded() -> None:
    torch.manual_seed(0)
    model = ConformerModel(tiny_config(n_layers=3)).eval()
    x, lengths = torch.randn(3, 40, model.config.d_model), torch.tensor([40, 40, 40])
    with torch.inference_mode():
        reference, _ = model.conformer(x, lengths)
        torch.testing.assert_close(model.encode(x, lengths), reference, atol=1e-6, rtol=0)


# -- configuration ------------------------------------------------------------------------------
def test_preset_size() -> None:
    config = preset_config()
    assert config.to_dict()["architecture"] == "conformer"
    parameters = count_parameters(ConformerModel(config))
    assert 2.5e6 <= parameters <= 4.0e6, parameters


def test_config_rejects_unknown_missing_and_inconsistent_settings() -> None:
    with pytest.raises(ValueError, match=r"unknown model setting\(s\) \['rnn_dim'\]"):
        preset_config(rnn_dim=256)
    without = {k: v for k, v in preset_config().to_dict().items() if k != "n_layers"}
    with pytest.raises(ValueError, match=r"missing model setting\(s\) \['n_layers'\]"):
        model_config_from_dict(without)
    with pytest.raises(ValueError, match="odd"):
        preset_config(conv_kernel=16)
    with pytest.raises(ValueError, match="multiple of n_heads"):
        preset_config(d_model=146)
    with pytest.raises(ValueError, match="not 'deepspeech2'"):
        ConformerConfig.from_dict({**preset_config().to_dict(), "architecture": "deepspeech2"})
    assert model_config_from_dict(preset_config().to_dict()) == preset_config()


# -- bundles ------------------------------------------------------------------------------------
def test_bundle_round_trip_through_the_factory(tmp_path: Path) -> None:
    torch.manual_seed(0)
    config = tiny_config()
    model = build_acoustic_model(config).eval()
    assert isinstance(model, ConformerModel)
    stats = RunningStats(N_FEATURES)
    stats.update(torch.randn(N_FEATURES, 50))
    bundle = make_bundle(config, model.state_dict(), FEATURE_CONFIG, stats.result(), {})
    torch.save(bundle, tmp_path / "bundle.pt")
    loaded = torch.load(tmp_path / "bundle.pt", weights_only=True)
    assert loaded["model_config"]["architecture"] == "conformer"
    restored = build_acoustic_model(model_config_from_dict(loaded["model_config"])).eval()
    restored.load_state_dict(loaded["state_dict"])
    features, lengths = torch.randn(2, N_FEATURES, 70), torch.tensor([70, 45])
    with torch.inference_mode():
        torch.testing.assert_close(restored(features, lengths), model(features, lengths))


# -- training on real audio ----------------------------------------------------------------------
def _transcripts(chapter_dir: Path) -> dict[str, str]:
    lines = next(chapter_dir.glob("*.trans.txt")).read_text(encoding="utf-8").splitlines()
    return dict(line.split(" ", 1) for line in lines if line.strip())


@pytest.fixture(scope="module")
def short_utterances(librispeech_root: Path) -> tuple[Batch, list[str]]:
    """The 6 shortest train-clean-100 utterances of the shared sample (about 2 s each), as one
    batch of normalised features, with their texts."""
    files = sorted((librispeech_root / "train-clean-100").glob("*/*/*.flac"))
    shortest = sorted((sf.info(str(f)).duration, f.name, f) for f in files)[:6]
    extractor = FeatureExtractor(FEATURE_CONFIG)
    features, rows = {}, []
    for _, _, path in shortest:
        text, unknown = normalise(_transcripts(path.parent)[path.stem])
        assert text and not unknown
        features[path.stem] = compute_features(str(path), extractor)
        rows.append({"utterance_id": path.stem, "feature_key": path.stem, "text": text})
    stats = RunningStats(N_FEATURES)
    for tensor in features.values():
        stats.update(tensor.float())
    index = pd.DataFrame(rows)
    batch = BatchLoader(index, features, stats.result()).load(range(len(index)))
    return batch, index.text.tolist()


def test_a_tiny_conformer_overfits_short_utterances(
    short_utterances: tuple[Batch, list[str]],
) -> None:
    # ~150k parameters, 150 full-batch steps of AdamW on a one-cycle rate: a few seconds on one
    # thread. It learns the texts, so subsampling, masks and CTC lengths fit together.
    batch, texts = short_utterances
    torch.manual_seed(0)
    model = ConformerModel(tiny_config(d_model=64, ffn_dim=128, subsampling_channels=16))
    steps = 150
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, 3e-3, total_steps=steps)
    model.train()
    losses = []
    for _ in range(steps):
        loss, _, _ = batch_loss(model, batch, torch.device("cpu"))
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
    assert losses[-1] < 0.05 * losses[0], losses[::10]
    model.eval()
    with torch.inference_mode():
        hypotheses = greedy_decode(*model(batch.features, batch.feature_lengths))
    assert error_rates(texts, hypotheses).cer < 0.05, list(zip(texts, hypotheses, strict=True))
    # trained weights too: each utterance alone gives what it gave beside its batch-mates
    with torch.inference_mode():
        together, lengths = model(batch.features, batch.feature_lengths)
        for i, n in enumerate(batch.feature_lengths.tolist()):
            alone, _ = model(batch.features[i : i + 1, :, :n], torch.tensor([n]))
            torch.testing.assert_close(together[i, : lengths[i]], alone[0], atol=1e-5, rtol=0)
