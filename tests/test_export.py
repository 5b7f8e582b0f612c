"""ONNX export: the exported files reproduce ``Recognizer.log_probs`` on real audio (fp32 tightly,
int8 within a measured bound), for both networks; the runner needs no torch; the ``asr-export``
command writes the folder and fails with one clear line.

The models are small and untrained: what is tested (the same computation in another runtime)
does not depend on the weights, and random weights make near-ties, so argmax agreement here is a
harder test than on a trained model.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from asr_pipeline.audio.features import FeatureConfig, FeatureExtractor, RunningStats
from asr_pipeline.audio.loading import load_audio
from asr_pipeline.decoding.ctc import BeamSearchConfig, greedy_decode
from asr_pipeline.decoding.language_model import build_arpa
from asr_pipeline.export import graph, writer
from asr_pipeline.export.runner import OnnxRecognizer, best_path
from asr_pipeline.export.spectral import SpectralFeatures
from asr_pipeline.model.bundle import make_bundle, with_beam_search
from asr_pipeline.model.factory import build_acoustic_model, model_config_from_dict
from asr_pipeline.model.recognizer import Recognizer
from tests.support import BIN, project_params

FEATURES = FeatureConfig.from_params(project_params("feature_engineering")["features"])
PRESETS = project_params("training")["training"]["presets"]
# the presets' structure (2 BiGRU / 2 Conformer layers, the 31-frame kernel), small sizes
TINY = {
    "default": {"cnn_channels": 8, "rnn_dim": 48, "n_rnn_layers": 2},
    "conformer": {
        "subsampling_channels": 8,
        "d_model": 32,
        "n_heads": 4,
        "ffn_dim": 64,
        "n_layers": 2,
    },
}
FP32_TOLERANCE = 1e-3
# int8 (weights int8 per tensor, activations uint8 per tensor at run time): on these models the
# largest difference measured was 0.005 (deepspeech2) and 0.03 (conformer) on the utterance below,
# and 96-98% of frames kept their argmax. The bounds leave room for other random weights; a
# broken quantised file (wrong graph, wrong scale) is off by whole units of log-probability.
INT8_MAX_DIFFERENCE = 0.25
INT8_ARGMAX_AGREEMENT = 0.9


@pytest.fixture(scope="module")
def utterance(librispeech_root: Path) -> torch.Tensor:
    """A real 3-second utterance of dev-clean-2 (the first in sorted order)."""
    flac = sorted((librispeech_root / "dev-clean-2").glob("*/*/*.flac"))[0]
    return load_audio(flac, FEATURES.sample_rate)


def tiny_bundle(preset: str, signal: torch.Tensor, feature_config: FeatureConfig = FEATURES):
    """An untrained bundle of ``preset``'s network, normalised with statistics of ``signal``
    (per-utterance mean removal, as the project's conf): realistic inputs, not unit noise."""
    torch.manual_seed(0)
    config = model_config_from_dict(
        {**PRESETS[preset], "n_features": feature_config.n_features, **TINY[preset]}
    )
    model = build_acoustic_model(config)
    stats = RunningStats(feature_config.n_features)
    features = FeatureExtractor(feature_config)(signal)
    stats.update(features - features.mean(dim=1, keepdim=True))
    return make_bundle(config, model.state_dict(), feature_config, stats.result(True), {})


@pytest.fixture(scope="module", params=["default", "conformer"])
def exported(
    request: pytest.FixtureRequest, utterance: torch.Tensor, tmp_path_factory
) -> tuple[dict[str, Any], Path]:
    bundle = tiny_bundle(request.param, utterance)
    folder = tmp_path_factory.mktemp(f"export-{request.param}")
    result = writer.export_bundle(bundle, folder)
    assert result.exporter == ("dynamo" if request.param == "conformer" else "torchscript")
    assert result.fp32_max_difference <= FP32_TOLERANCE
    return bundle, folder


def test_fp32_reproduces_the_recognizer_on_real_audio(exported, utterance) -> None:
    bundle, folder = exported
    recognizer = Recognizer(bundle)
    runner = OnnxRecognizer(folder, "fp32")
    # the utterance, and a signal shorter than the STFT's padding (the padded path)
    for signal in (utterance, utterance[:150]):
        expected, lengths = recognizer.log_probs([signal])
        got = runner.log_probs(signal.numpy())
        assert got.shape == (int(lengths[0]), len(recognizer.units.tokens))
        difference = float(np.abs(got - expected[0].numpy()).max())
        assert difference <= FP32_TOLERANCE, difference
    # and so the same greedy text
    text = greedy_decode(torch.from_numpy(got[None]), lengths, recognizer.units)
    assert text == greedy_decode(expected, lengths, recognizer.units)


def test_int8_stays_close_and_is_smaller(exported, utterance) -> None:
    bundle, folder = exported
    expected = Recognizer(bundle).log_probs([utterance])[0][0].numpy()
    got = OnnxRecognizer(folder, "int8").log_probs(utterance.numpy())
    assert got.shape == expected.shape
    difference = float(np.abs(got - expected).max())
    agreement = float((got.argmax(-1) == expected.argmax(-1)).mean())
    assert 0 < difference <= INT8_MAX_DIFFERENCE, difference  # 0: nothing was quantised
    assert agreement >= INT8_ARGMAX_AGREEMENT, agreement
    assert (folder / "model.int8.onnx").stat().st_size < (folder / "model.onnx").stat().st_size


def test_config_describes_the_model(exported) -> None:
    bundle, folder = exported
    config = json.loads((folder / "config.json").read_text())
    assert config["vocabulary"] == bundle["vocabulary"]
    assert config["feature_config"] == bundle["feature_config"]
    assert config["normalisation"] == bundle["normalisation"]
    assert config["model_config"] == model_config_from_dict(bundle["model_config"]).to_dict()
    assert config["decoder"] is None and not (folder / "lm.arpa").exists()
    assert config["frame_seconds"] == Recognizer(bundle).frame_seconds


@pytest.mark.parametrize("kind", ["log_mel", "mfcc"])
def test_numpy_features_match_the_recognizer(kind: str, utterance: torch.Tensor, tmp_path) -> None:
    """The torch-free features, for both kinds: equal but for the float16 round trip, where a
    value on a rounding boundary may land one float16 step apart."""
    feature_config = FeatureConfig(**{**FEATURES.__dict__, "kind": kind})
    recognizer = Recognizer(tiny_bundle("default", utterance, feature_config))
    np.savez(tmp_path / "features.npz", **writer.spectral_matrices(feature_config))
    config = {
        "feature_config": feature_config.__dict__,
        "normalisation": recognizer.stats.to_dict(),
    }
    features = SpectralFeatures.load(tmp_path / "features.npz", config)(utterance.numpy())
    expected = recognizer.features(utterance).numpy()
    assert features.shape == expected.shape
    difference = np.abs(features - expected)
    assert float(np.mean(difference)) < 1e-4
    assert float(difference.max()) < 0.02  # one float16 step of the largest values, normalised


def test_export_refuses_a_graph_that_disagrees(utterance, tmp_path, monkeypatch) -> None:
    """The check on every export: a one-utterance graph that misses a model change fails it."""

    class Shifted(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, features: torch.Tensor) -> torch.Tensor:
            return self.inner(features) + 0.01

    real = graph.inference_graph
    monkeypatch.setattr(
        "asr_pipeline.export.onnx_model.inference_graph", lambda m: Shifted(real(m))
    )
    with pytest.raises(ValueError, match="differs from PyTorch"):
        writer.export_bundle(tiny_bundle("default", utterance), tmp_path, quantize=False)


def test_runner_does_not_import_torch(exported, utterance) -> None:
    _, folder = exported
    code = (
        "import sys, numpy as np\n"
        "from asr_pipeline.export.runner import OnnxRecognizer, best_path\n"
        f"runner = OnnxRecognizer({str(folder)!r}, 'int8')\n"
        f"log_probs = runner.log_probs(np.load({str(folder / 'signal.npy')!r}))\n"
        "print(log_probs.shape[1], len(best_path(log_probs)) >= 0, 'torch' in sys.modules)\n"
    )
    np.save(folder / "signal.npy", utterance.numpy())
    source = Path(writer.__file__).parents[2]  # src/, whichever folder pytest runs from
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(source)}
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=False
    )
    assert result.returncode == 0, result.stderr[-2000:]
    n_classes = len(json.loads((folder / "config.json").read_text())["vocabulary"])
    assert result.stdout.split() == [str(n_classes), "True", "False"]


def test_units_bytes_become_files(tmp_path: Path) -> None:
    """A subword model's sentencepiece model (bytes) is written beside config.json."""
    files: dict[str, Path] = {}
    units = {"kind": "subwords", "tokens": ["-", "|"], "sentencepiece": b"\x00model"}
    plain = writer._plain_units(units, tmp_path, files)
    assert plain == {**units, "sentencepiece": {"file": "units.sentencepiece"}}
    assert (tmp_path / "units.sentencepiece").read_bytes() == b"\x00model"
    assert files == {"units.sentencepiece": tmp_path / "units.sentencepiece"}
    json.dumps(plain)


def test_best_path_merges_repeats_and_drops_blanks() -> None:
    frames = np.full((7, 4), -10.0)
    for frame, token in enumerate([0, 2, 2, 0, 2, 3, 3]):
        frames[frame, token] = 0.0
    assert best_path(frames) == [2, 2, 3]
    assert best_path(np.zeros((0, 4))) == []


# -- the asr-export command ----------------------------------------------------------------------
def _export_command(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "KEDRO_DISABLE_TELEMETRY": "1",
        "ASR_MODEL_CACHE": str(cwd / "model_cache"),
    }
    return subprocess.run(
        [str(BIN / "asr-export"), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_command_exports_a_bundle_file_with_its_lm(utterance, tmp_path: Path) -> None:
    bundle = tiny_bundle("default", utterance)
    beam = BeamSearchConfig(
        beam_size=8, lm_weight=0.5, word_score=0.0, lm_order=2, background_words=0, lexicon=True
    )
    lm = build_arpa(["the cat sat on the mat", "a dog ran"], order=2)
    bundle = with_beam_search(bundle, beam, lm, {"split": None, "grid": []})
    torch.save(bundle, tmp_path / "acoustic_model.pt")

    result = _export_command(["--model", "acoustic_model.pt"], tmp_path)  # default --out
    assert result.returncode == 0, result.stderr[-3000:]
    folder = tmp_path / "onnx-model"
    written = {"model.onnx", "model.int8.onnx", "config.json", "features.npz", "lm.arpa"}
    assert written <= {p.name for p in folder.iterdir()}
    for name in written:  # each file it wrote is named in what it printed
        assert name in result.stdout
    config = json.loads((folder / "config.json").read_text())
    assert config["decoder"]["beam"] == beam.to_dict()
    assert config["decoder"]["lm_arpa"] == "lm.arpa"
    assert (folder / "lm.arpa").read_text() == lm
    assert config["vocabulary"] == bundle["vocabulary"]
    expected = Recognizer(bundle).log_probs([utterance])[0][0].numpy()
    got = OnnxRecognizer(folder).log_probs(utterance.numpy())
    assert float(np.abs(got - expected).max()) <= FP32_TOLERANCE


@pytest.mark.parametrize(
    ("model", "message"),
    [
        ("missing/acoustic_model.pt", "does not exist"),
        ("models:/no-such-model@champion", "cannot resolve model"),
    ],
)
def test_command_fails_with_one_clear_line(model: str, message: str, tmp_path: Path) -> None:
    args = ["--model", model, "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"]
    result = _export_command([*args, "--out", "out"], tmp_path)
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("asr-export:")]
    assert len(errors) == 1, result.stderr[-3000:]
    assert model in errors[0] and message in errors[0]
    assert not (tmp_path / "out").exists()
