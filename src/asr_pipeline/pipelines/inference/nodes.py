"""Nodes of the inference pipeline."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from asr_pipeline.audio.loading import AudioError, load_audio
from asr_pipeline.audio.segmentation import SegmentationConfig
from asr_pipeline.common.settings import check_settings
from asr_pipeline.corpus.librispeech import (
    LIBRISPEECH_REQUIRED,
    LIBRISPEECH_SETTINGS,
    UTTERANCE_ID,
    find_transcript,
    find_utterance,
)
from asr_pipeline.model.recognizer import Recognizer
from asr_pipeline.units.characters import normalise

logger = logging.getLogger(__name__)

AUDIO_EXTENSIONS = ("flac", "wav", "mp3", "ogg")
# The ``inference`` parameters (parameters_inference.yml); any other key is refused, so that a
# misspelt setting fails the run instead of being ignored.
INFERENCE_SETTINGS = frozenset({"inputs", "decoder", "segmentation", "max_seconds", "threads"})


def resolve_audio_inputs(params: dict[str, Any], librispeech_params: dict[str, Any]) -> list[dict]:
    """Each input as ``{"input", "path", "error"}``: a file path, or a LibriSpeech id looked up.

    The first node to read ``inference`` and ``librispeech``: both are checked here.
    """
    check_settings("inference", params, INFERENCE_SETTINGS)
    SegmentationConfig.from_params(params.get("segmentation") or {})  # refused before any work
    check_settings("librispeech", librispeech_params, LIBRISPEECH_SETTINGS, LIBRISPEECH_REQUIRED)
    inputs = params.get("inputs") or []
    if isinstance(inputs, str):  # from --params: space-separated (commas separate parameters)
        inputs = inputs.replace(",", " ").split()
    if not inputs:
        raise ValueError(
            "nothing to transcribe: pass --params 'inference.inputs=a.flac 1089-134686-0000'"
        )
    root = Path(librispeech_params["root"])
    resolved = []
    for item in map(str, inputs):
        entry = {"input": item, "path": "", "error": ""}
        if UTTERANCE_ID.match(item) and not Path(item).exists():
            try:
                entry["path"] = str(find_utterance(root, item, AUDIO_EXTENSIONS))
            except FileNotFoundError as error:
                entry["error"] = str(error)
        elif Path(item).is_file():
            entry["path"] = str(Path(item).resolve())
        else:
            entry["error"] = f"{item}: no such file, and not a LibriSpeech utterance id"
        resolved.append(entry)
    return resolved


def transcribe_audio(
    inference_model: dict[str, Any], audio_inputs: list[dict], params: dict[str, Any]
) -> list[dict]:
    """Transcribe each input; a failing item gets an error and the others go on.

    Each result has the text, its ``words`` with their start and end (seconds from the start of
    the recording; None where they could not be aligned, ``words_note`` says why) and the
    ``cuts`` (seconds) where a long recording was cut at pauses.
    """
    recognizer = Recognizer(inference_model, threads=params.get("threads"))
    decoder = recognizer.decoder_name(params.get("decoder", "auto"))
    recognizer.decoder(decoder)  # built now: a beam search the model lacks fails the run here
    segmentation = SegmentationConfig.from_params(params["segmentation"])
    logger.info(
        "Transcribing %d input(s) with %s (%s decoding)",
        len(audio_inputs),
        inference_model.get("source"),
        decoder,
    )
    results = []
    for entry in audio_inputs:
        result = {
            **entry,
            "text": "",
            "words": [],
            "words_note": "",
            "cuts": [],
            "decoder": decoder,
            "reference": None,
            "duration_s": 0.0,
            "seconds": 0.0,
        }
        if not entry["error"]:
            start = time.perf_counter()
            try:
                signal = load_audio(entry["path"], recognizer.sample_rate, params["max_seconds"])
                transcription = recognizer.transcribe_one(signal, decoder, segmentation)
                result["text"] = transcription.text
                result["words"] = transcription.word_dicts()
                result["words_note"] = transcription.note
                result["cuts"] = transcription.cuts
                result["duration_s"] = len(signal) / recognizer.sample_rate
            except (AudioError, RuntimeError) as error:
                result["error"] = str(error)
            result["seconds"] = time.perf_counter() - start
            if UTTERANCE_ID.match(Path(entry["path"]).stem):
                raw = find_transcript(Path(entry["path"]))
                result["reference"] = normalise(raw)[0] if raw else None
        results.append(result)
        for line in describe_result(result):
            (logger.error if result["error"] else logger.info)("%s", line)
    return results


def describe_result(result: dict) -> list[str]:
    """The lines a person reads for one transcription (shared by the node's log and the CLI)."""
    if result["error"]:
        return [f"{result['input']}: ERROR {result['error']}"]
    lines = [
        f"{result['input']} ({result['duration_s']:.1f} s of audio in {result['seconds']:.2f} s)"
    ]
    if result["reference"] is not None:
        lines.append(f"  reference:  {result['reference']}")
    lines.append(f"  prediction: {result['text']}")
    if result.get("cuts"):
        cuts = ", ".join(f"{cut:.1f}" for cut in result["cuts"])
        lines.append(f"  cut at pauses (s): {cuts}")
    return lines
