"""The served pyfunc and the recognizer on bad input and long audio, in process (fast)."""

from __future__ import annotations

import base64
import io
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch

from asr_pipeline.features import FeatureConfig, NormalisationStats
from asr_pipeline.model import AcousticModel, ModelConfig
from asr_pipeline.recognizer import Recognizer, make_bundle
from asr_pipeline.serving import SpeechRecognizerModel


@pytest.fixture(scope="module")
def bundle_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small randomly initialised model: what is tested here does not depend on the weights."""
    torch.manual_seed(0)
    config = ModelConfig(rnn_dim=32, n_rnn_layers=1, cnn_channels=8, n_features=80)
    stats = NormalisationStats(mean=[0.0] * 80, std=[1.0] * 80, frames=1)
    bundle = make_bundle(config, AcousticModel(config).state_dict(), FeatureConfig(), stats, {})
    path = tmp_path_factory.mktemp("model") / "acoustic_model.pt"
    torch.save(bundle, path)
    return path


def _served(bundle_file: Path, **model_config) -> SpeechRecognizerModel:
    model = SpeechRecognizerModel()
    context = SimpleNamespace(
        artifacts={"acoustic_model": str(bundle_file)}, model_config=model_config
    )
    model.load_context(context)
    return model


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_each_bad_item_gets_its_own_error(bundle_file, librispeech_root, tmp_path):
    audio = next((librispeech_root / "dev-clean-2").rglob("*.flac"))
    good = audio.read_bytes()
    silence = io.BytesIO()
    sf.write(silence, np.zeros(16000 * 3, dtype="float32"), 16000, format="WAV")
    served = _served(bundle_file, max_seconds=2.0)
    rows = pd.DataFrame(
        {
            "audio": [
                _b64(good[:5000]),  # truncated FLAC
                _b64(b""),  # empty
                _b64(b"%PDF-1.4 not audio"),  # not audio
                "***not base64***",
                _b64(silence.getvalue()),  # longer than the 2 s limit
                None,  # neither audio nor path
            ]
        }
    )
    out = served.predict(None, rows)
    assert len(out) == len(rows)
    assert out.error.str.len().gt(0).all(), out
    assert "longer than" in out.error[4] and "base64" in out.error[3]

    fine = _served(bundle_file).predict(None, pd.DataFrame({"audio": [_b64(good), "!!"]}))
    assert fine.error[0] == "" and fine.duration_s[0] > 1 and fine.error[1]


def test_paths_only_under_the_allowed_root(bundle_file, librispeech_root, tmp_path):
    inside = next((librispeech_root / "dev-clean-2").rglob("*.flac"))
    outside = tmp_path / "elsewhere.flac"
    outside.write_bytes(inside.read_bytes())
    no_root = _served(bundle_file).predict(None, pd.DataFrame({"path": [str(inside)]}))
    assert "not accepted" in no_root.error[0]
    served = _served(bundle_file, allowed_root=str(librispeech_root))
    out = served.predict(
        None,
        pd.DataFrame(
            {
                "path": [
                    str(inside),
                    str(outside),
                    str(librispeech_root / ".." / "x.flac"),
                    str(librispeech_root / "missing.flac"),
                ]
            }
        ),
    )
    assert out.error[0] == ""
    assert "outside the allowed root" in out.error[1] and "outside" in out.error[2]
    assert "no such file" in out.error[3]


def test_long_recordings_are_transcribed_in_chunks(bundle_file, librispeech_root, monkeypatch):
    files = sorted((librispeech_root / "train-clean-100").rglob("*.flac"))[:12]
    signal = torch.cat([torch.from_numpy(sf.read(f, dtype="float32")[0]) for f in files])
    assert len(signal) > 16000 * 90
    recognizer = Recognizer.from_file(bundle_file)
    seen: list[int] = []
    original = recognizer.log_probs

    def spy(signals):
        seen.extend(len(s) for s in signals)
        return original(signals)

    monkeypatch.setattr(recognizer, "log_probs", spy)
    text = recognizer.transcribe([signal], chunk_seconds=20.0)[0]
    assert isinstance(text, str)
    assert len(seen) == -(-len(signal) // (20 * 16000))  # one call per 20 s chunk
    assert max(seen) <= 20 * 16000 and sum(seen) == len(signal)
