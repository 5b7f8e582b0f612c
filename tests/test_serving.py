"""The served pyfunc and the recognizer on bad input and long audio, in process (fast)."""

from __future__ import annotations

import asyncio
import base64
import io
import itertools
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch

from asr_pipeline.audio.features import FeatureConfig, NormalisationStats
from asr_pipeline.audio.segmentation import SegmentationConfig
from asr_pipeline.decoding.ctc import BeamSearchConfig
from asr_pipeline.decoding.language_model import build_arpa
from asr_pipeline.model.acoustic import AcousticModel, ModelConfig
from asr_pipeline.model.bundle import make_bundle, with_beam_search
from asr_pipeline.model.recognizer import Recognizer
from asr_pipeline.serving.pyfunc import (
    OUTPUT_COLUMNS,
    SIGNATURE,
    SpeechRecognizerModel,
    input_example,
)
from tests.support import project_params


@pytest.fixture(scope="module")
def bundle_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small randomly initialised model: what is tested here does not depend on the weights."""
    torch.manual_seed(0)
    features = FeatureConfig.from_params(project_params("feature_engineering")["features"])
    preset = project_params("training")["training"]["presets"]["default"]
    sizes = {"rnn_dim": 32, "n_rnn_layers": 1, "cnn_channels": 8, "n_features": 80}
    config = ModelConfig.from_dict({**preset, **sizes})
    stats = NormalisationStats(mean=[0.0] * 80, std=[1.0] * 80, frames=1)
    bundle = make_bundle(config, AcousticModel(config).state_dict(), features, stats, {})
    path = tmp_path_factory.mktemp("model") / "acoustic_model.pt"
    torch.save(bundle, path)
    return path


LM_SENTENCES = ["the cat sat on the mat", "a dog ran"]


@pytest.fixture(scope="module")
def bundle_with_lm_file(bundle_file: Path) -> Path:
    """The same model carrying a beam search over a tiny LM: its lexicon is eight words."""
    bundle = torch.load(bundle_file, weights_only=True)
    config = BeamSearchConfig(
        beam_size=8, lm_weight=0.5, word_score=0.0, lm_order=2, background_words=0, lexicon=True
    )
    lm = build_arpa(LM_SENTENCES, order=2)
    path = bundle_file.with_name("with_lm.pt")
    torch.save(with_beam_search(bundle, config, lm, {"split": None, "grid": []}), path)
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


def test_long_recordings_are_transcribed_a_segment_at_a_time(
    bundle_file, librispeech_root, monkeypatch
):
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
    segmentation = SegmentationConfig(max_seconds=20.0, min_silence_seconds=0.3, silence_db=30.0)
    result = recognizer.transcribe_one(signal, segmentation=segmentation)
    assert isinstance(result.text, str)
    # one model call per segment, each at most 20 s, together the whole signal, cut where said
    assert len(seen) == len(result.cuts) + 1 >= -(-len(signal) // (20 * 16000))
    assert max(seen) <= 20 * 16000 and sum(seen) == len(signal)
    assert [round(c * 16000) for c in result.cuts] == list(itertools.accumulate(seen[:-1]))
    seen.clear()
    assert recognizer.transcribe([signal], segmentation=segmentation) == [result.text]
    assert len(seen) == len(result.cuts) + 1


def test_the_served_model_gives_each_words_times(bundle_with_lm_file, librispeech_root) -> None:
    from mlflow.models.utils import _enforce_schema  # what MLflow checks a schema with

    audio = next((librispeech_root / "dev-clean-2").rglob("*.flac"))
    rows = pd.DataFrame({"audio": [_b64(audio.read_bytes()), "!!"]})
    out = _served(bundle_with_lm_file).predict(None, rows)
    assert list(out.columns) == list(OUTPUT_COLUMNS) == SIGNATURE.outputs.input_names()
    words, duration = out.words[0], out.duration_s[0]
    assert words and [w["word"] for w in words] == out.text[0].split()
    assert all(0 <= w["start"] < w["end"] <= duration for w in words)
    assert all(a["end"] <= b["start"] for a, b in zip(words, words[1:], strict=False))
    assert out.words[1] == [] and out.error[1]
    # the response is what the signature declares (MLflow's own check; it refuses a bad word)
    _enforce_schema(out, SIGNATURE.outputs)
    untimed = out.assign(words=[[{"word": "the", "start": None, "end": None}], []])
    _enforce_schema(untimed, SIGNATURE.outputs)
    with pytest.raises(Exception, match="word"):
        _enforce_schema(out.assign(words=[[{"word": 3}], []]), SIGNATURE.outputs)


def test_a_model_decodes_with_the_beam_search_it_carries(
    bundle_file, bundle_with_lm_file, librispeech_root
):
    audio = next((librispeech_root / "dev-clean-2").rglob("*.flac"))
    rows = pd.DataFrame({"audio": [_b64(audio.read_bytes())]})
    served = _served(bundle_with_lm_file).predict(None, rows).text[0]
    greedy = _served(bundle_with_lm_file, decoder="greedy").predict(None, rows).text[0]
    lexicon = {word for sentence in LM_SENTENCES for word in sentence.split()}
    # the lexicon beam search can only spell the LM's words; greedy spells characters
    assert served and set(served.split()) <= lexicon, served
    assert not set(greedy.split()) <= lexicon, greedy
    assert served == Recognizer.from_file(bundle_with_lm_file).transcribe_file(audio, "beam")

    # a model without an LM decodes greedily, and says so when asked for a beam search
    plain = Recognizer.from_file(bundle_file)
    assert plain.decoder_name("auto") == "greedy"
    assert _served(bundle_file).predict(None, rows).text[0] == greedy
    with pytest.raises(ValueError, match="carries no language model"):
        plain.decoder("beam")
    with pytest.raises(ValueError, match="unknown decoder 'viterbi'"):
        plain.decoder("viterbi")


def test_bundles_of_the_first_format_still_load(bundle_file):
    bundle = torch.load(bundle_file, weights_only=True)
    assert Recognizer({**bundle, "format": 1}).decoder_name() == "greedy"
    # format 3 carries the units (tests/test_units.py); a format this code does not know is refused
    with pytest.raises(ValueError, match="unsupported model bundle format 4"):
        Recognizer({**bundle, "format": 4})


def test_the_transcribe_command_decodes_as_asked(
    bundle_file, bundle_with_lm_file, librispeech_root
):
    from click.testing import CliRunner

    from asr_pipeline.cli import cli

    audio = str(next((librispeech_root / "dev-clean-2").rglob("*.flac")))
    runner = CliRunner()

    def transcribe(*args: str):
        return runner.invoke(cli, ["transcribe", audio, *args], catch_exceptions=False)

    with_lm = transcribe("--model", str(bundle_with_lm_file))
    assert with_lm.exit_code == 0, with_lm.output
    prediction = with_lm.output.split("prediction:")[1].split()
    assert prediction and set(prediction) <= {w for s in LM_SENTENCES for w in s.split()}
    assert transcribe("--model", str(bundle_file), "--decoder", "greedy").exit_code == 0
    refused = transcribe("--model", str(bundle_file), "--decoder", "beam")
    assert refused.exit_code == 2 and "carries no language model" in refused.output


def _post(app, path: str, body: dict) -> tuple[int, str]:
    """One POST through an ASGI app in process (starlette's TestClient needs httpx2: absent)."""
    messages = [{"type": "http.request", "body": json.dumps(body).encode(), "more_body": False}]
    sent: list[dict] = []

    async def receive() -> dict:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"content-type", b"application/json")],
        "client": ("test", 1),
        "server": ("test", 80),
    }
    asyncio.run(app(scope, receive, send))
    return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:]).decode()


def test_the_scoring_server_refuses_a_request_over_the_limit_briefly(
    bundle_file, librispeech_root, tmp_path
):
    import mlflow.pyfunc
    from mlflow.pyfunc import scoring_server

    folder = tmp_path / "served"
    mlflow.pyfunc.save_model(
        folder,
        python_model=SpeechRecognizerModel(),
        artifacts={"acoustic_model": str(bundle_file)},
        model_config={"max_rows": 2},
        signature=SIGNATURE,  # as registered_model logs it
        input_example=input_example(),
        pip_requirements=[],
    )
    app = scoring_server.init(mlflow.pyfunc.load_model(str(folder)))
    audio = _b64(next((librispeech_root / "dev-clean-2").rglob("*.flac")).read_bytes())

    status, body = _post(
        app, "/invocations", {"dataframe_split": {"columns": ["audio"], "data": [[audio]] * 3}}
    )
    assert status == 400, body
    error = json.loads(body)
    assert error["error_code"] == "INVALID_PARAMETER_VALUE"
    assert error["message"] == "3 rows in one request: at most 2 (max_rows), split it"
    assert "Traceback" not in body and "stack_trace" not in body and audio[:40] not in body

    status, body = _post(
        app, "/invocations", {"dataframe_split": {"columns": ["audio"], "data": [[audio]]}}
    )
    assert status == 200 and '"error": ""' in body, body
    (answer,) = json.loads(body)["predictions"]
    assert answer["words"] and {"word", "start", "end"} == set(answer["words"][0])


def test_a_real_model_server_answers_with_words(
    bundle_with_lm_file, librispeech_root, tmp_path
) -> None:
    """``mlflow models serve`` of a model saved with :data:`SIGNATURE`: the words column goes
    through the server's own schema handling and JSON encoding."""
    import os
    import signal
    import subprocess

    import mlflow.pyfunc

    from tests.support import BIN, free_port
    from tests.test_end_to_end import _post_when_ready

    folder = tmp_path / "served"
    mlflow.pyfunc.save_model(
        folder,
        python_model=SpeechRecognizerModel(),
        artifacts={"acoustic_model": str(bundle_with_lm_file)},
        signature=SIGNATURE,
        input_example=input_example(),
        code_paths=[str(Path(__file__).parents[1] / "src" / "asr_pipeline")],
        pip_requirements=[],
    )
    port = free_port()
    log_path = tmp_path / "server.log"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    with log_path.open("wb") as log:
        server = subprocess.Popen(
            [str(BIN / "mlflow"), "models", "serve", "-m", str(folder), "--env-manager", "local"]
            + ["-p", str(port), "-h", "127.0.0.1"],
            cwd=tmp_path,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            audio = next((librispeech_root / "dev-clean-2").rglob("*.flac"))
            payload = {
                "dataframe_split": {"columns": ["audio"], "data": [[_b64(audio.read_bytes())]]}
            }
            (answer,) = _post_when_ready(port, payload, server, log_path)["predictions"]
        finally:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=30)
    in_process = _served(bundle_with_lm_file).predict(
        None, pd.DataFrame({"audio": [_b64(audio.read_bytes())]})
    )
    assert answer["error"] == "" and answer["text"] == in_process.text[0]
    assert answer["words"] == in_process.words[0] and answer["words"]
