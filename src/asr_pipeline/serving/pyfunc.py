"""The MLflow pyfunc that serves the recognizer: audio in a DataFrame in, transcripts out.

Input columns: ``audio`` (base64-encoded audio file bytes) and/or ``path`` (a file under the
configured ``allowed_root``; paths are refused when no root is configured). Each row gets its own
``text`` or ``error``: one bad item never fails the others, nor the server. A request over the
row limit is refused whole: a short HTTP 400 message naming the limit (:class:`RequestRefused`).

Each row also gets its ``words``: ``[{"word", "start", "end"}, ...]`` with seconds from the start
of the recording (``start``/``end`` null where a word could not be aligned), declared in the
signature as an array of objects. Long recordings are cut at pauses: ``model_config``'s
``segmentation`` (conf's ``inference.segmentation``), else conf/base's values.

The model declares its :data:`SIGNATURE` and an input example (a quarter second of silence), which
``registered_model`` logs with it: clients get the schema, and MLflow checks requests against it.
"""

from __future__ import annotations

import base64
import binascii
import io
import time
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import numpy as np
import pandas as pd
import soundfile as sf
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
from mlflow.types import ColSpec, Schema
from mlflow.types.schema import Array, Object, Property

from asr_pipeline.audio.loading import AudioError, load_audio, load_audio_bytes
from asr_pipeline.audio.segmentation import DEFAULT_SEGMENTATION, SegmentationConfig
from asr_pipeline.model.recognizer import Recognizer

DEFAULT_MAX_SECONDS = 600.0
DEFAULT_MAX_ROWS = 64
OUTPUT_COLUMNS = ("text", "error", "duration_s", "seconds", "words")
WORD = Object(
    [
        Property("word", "string"),
        Property("start", "double", required=False),
        Property("end", "double", required=False),
    ]
)
SIGNATURE = ModelSignature(
    inputs=Schema(
        [ColSpec("string", "audio", required=False), ColSpec("string", "path", required=False)]
    ),
    outputs=Schema(
        [
            ColSpec("string", "text"),
            ColSpec("string", "error"),
            ColSpec("double", "duration_s"),
            ColSpec("double", "seconds"),
            ColSpec(Array(WORD), "words"),
        ]
    ),
)


def input_example(sample_rate: int = 16_000, seconds: float = 0.25) -> pd.DataFrame:
    """One request row: ``seconds`` of silence as a base64 WAV file (and no path)."""
    wav = io.BytesIO()
    sf.write(wav, np.zeros(int(sample_rate * seconds), dtype=np.int16), sample_rate, format="WAV")
    return pd.DataFrame({"audio": [base64.b64encode(wav.getvalue()).decode()], "path": [""]})


class RequestRefused(MlflowException):
    """A whole request refused: the scoring server answers HTTP 400 with this message alone.

    Why a subclass: MLflow's scoring server (``mlflow.pyfunc.scoring_server.invocations``) answers
    any other exception from ``predict`` with a generic "unexpected error" and the full stack trace,
    and rewrites an ``MlflowException``'s message to "Failed to predict data '<the whole input
    DataFrame>'. Error: ..." before rendering it. This exception keeps its own short message.
    """

    def __init__(self, message: str) -> None:
        self._short = message
        super().__init__(message, error_code=INVALID_PARAMETER_VALUE)

    @property
    def message(self) -> str:  # type: ignore[override]
        return self._short

    @message.setter
    def message(self, value: str) -> None:
        """Ignored: the server's rewrite would echo the request (see the class docstring)."""


class SpeechRecognizerModel(mlflow.pyfunc.PythonModel):
    """pyfunc wrapper of :class:`Recognizer`; weights travel as the ``acoustic_model`` artifact."""

    signature = SIGNATURE

    @property
    def input_example(self) -> pd.DataFrame:
        return input_example()

    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        config = context.model_config or {}
        self.recognizer = Recognizer.from_file(
            context.artifacts["acoustic_model"], threads=config.get("threads")
        )
        # auto: the model's own beam search (LM + tuned settings) when it carries one, else
        # greedy. Built now, so that the first request does not pay for loading the LM.
        self.decoder = self.recognizer.decoder_name(config.get("decoder", "auto"))
        for name in {self.decoder, self.recognizer.words_decoder_name(self.decoder)} - {None}:
            self.recognizer.decoder(name)  # and the one that gives the words, if another
        segmentation = config.get("segmentation")
        self.segmentation = (
            SegmentationConfig.from_params(segmentation) if segmentation else DEFAULT_SEGMENTATION
        )
        self.max_seconds = float(config.get("max_seconds", DEFAULT_MAX_SECONDS))
        self.max_rows = int(config.get("max_rows", DEFAULT_MAX_ROWS))
        root = config.get("allowed_root")
        self.allowed_root = Path(root).resolve() if root else None

    def _signal(self, row: dict[str, Any]):
        audio, path = row.get("audio"), row.get("path")
        if isinstance(audio, str) and audio:
            try:
                data = base64.b64decode(audio, validate=True)
            except (binascii.Error, ValueError) as error:
                raise AudioError(f"audio is not valid base64 ({error})") from None
            return load_audio_bytes(data, self.recognizer.sample_rate, max_seconds=self.max_seconds)
        if isinstance(path, str) and path:
            if self.allowed_root is None:
                raise AudioError("file paths are not accepted by this server: send audio bytes")
            resolved = Path(path).resolve()
            if not resolved.is_relative_to(self.allowed_root):
                raise AudioError(f"{path} is outside the allowed root {self.allowed_root}")
            if not resolved.is_file():
                raise AudioError(f"{path}: no such file")
            return load_audio(resolved, self.recognizer.sample_rate, self.max_seconds)
        raise AudioError("each row needs 'audio' (base64 bytes) or 'path'")

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict | None = None):
        rows = model_input.to_dict(orient="records")
        if len(rows) > self.max_rows:
            raise RequestRefused(
                f"{len(rows)} rows in one request: at most {self.max_rows} (max_rows), split it"
            )
        results = []
        for row in rows:
            start = time.perf_counter()
            try:
                signal = self._signal(row)
                result = self.recognizer.transcribe_one(signal, self.decoder, self.segmentation)
                results.append(
                    {
                        "text": result.text,
                        "error": "",
                        "duration_s": len(signal) / self.recognizer.sample_rate,
                        "seconds": time.perf_counter() - start,
                        "words": result.word_dicts(),
                    }
                )
            except (AudioError, RuntimeError, ValueError) as error:
                results.append(
                    {
                        "text": "",
                        "error": str(error),
                        "duration_s": 0.0,
                        "seconds": time.perf_counter() - start,
                        "words": [],
                    }
                )
        return pd.DataFrame(results, columns=list(OUTPUT_COLUMNS))
