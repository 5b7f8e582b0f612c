"""Project commands: ``kedro transcribe`` (also installed as ``asr-transcribe``).

    kedro transcribe 1089-134686-0000 recording.mp3 --model models:/asr-librispeech@champion

LibriSpeech ids are looked up under ``--librispeech-dir`` (default: $LIBRISPEECH_DIR); their
reference transcript is printed beside the prediction. ``--json`` writes results with timings.
Exit status: 0 all transcribed, 1 some inputs failed (each says why), 2 the model cannot be loaded
(or cannot decode as asked).
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path

import click

DEFAULT_MODEL = f"models:/{os.environ.get('ASR_MODEL_NAME', 'asr-librispeech')}@champion"


@click.group(name="asr_pipeline")
def cli() -> None:
    """asr-pipeline project commands."""


@cli.command()
@click.argument("inputs", nargs=-1, required=True)
@click.option(
    "--model",
    default=DEFAULT_MODEL,
    show_default=True,
    help="models:/NAME@ALIAS, models:/NAME/VERSION, or a model bundle file",
)
@click.option(
    "--librispeech-dir",
    envvar="LIBRISPEECH_DIR",
    default="data/01_raw/LibriSpeech",
    show_default=True,
    help="where LibriSpeech ids are looked up",
)
@click.option(
    "--tracking-uri", envvar="MLFLOW_TRACKING_URI", default="sqlite:///mlflow.db", show_default=True
)
@click.option(
    "--json",
    "json_path",
    type=click.Path(path_type=Path),
    help="write the results (with timings) to this file",
)
@click.option(
    "--decoder",
    type=click.Choice(["auto", "beam", "greedy"]),
    default="auto",
    show_default=True,
    help="auto: the model's own beam search (LM + tuned settings) when it has one, else greedy",
)
@click.option("--chunk-seconds", default=30.0, show_default=True)
@click.option("--max-seconds", default=1800.0, show_default=True)
@click.option("--threads", type=int, default=None)
def transcribe(
    inputs: tuple[str, ...],
    model: str,
    librispeech_dir: str,
    tracking_uri: str,
    json_path: Path | None,
    decoder: str,
    chunk_seconds: float,
    max_seconds: float,
    threads: int | None,
) -> None:
    """Transcribe audio files (FLAC, WAV, MP3, OGG) or LibriSpeech utterance ids."""
    params = {  # as the inference pipeline's parameters
        "inputs": list(inputs),
        "decoder": decoder,
        "chunk_seconds": chunk_seconds,
        "max_seconds": max_seconds,
        "threads": threads,
    }
    sys.exit(run_transcription(params, model, librispeech_dir, tracking_uri, json_path))


def run_transcription(
    params: dict, model: str, librispeech_dir: str, tracking_uri: str, json_path: Path | None
) -> int:
    """Transcribe ``params["inputs"]`` with ``model``; the exit status."""
    import mlflow
    from kedro.io import DatasetError

    from asr_pipeline.pipelines.inference.nodes import (
        describe_result,
        resolve_audio_inputs,
        transcribe_audio,
    )
    from asr_pipeline.serving.registry import load_bundle

    # the results are echoed below; the node's own log lines would repeat them
    logging.getLogger("asr_pipeline.pipelines.inference").setLevel(logging.WARNING)
    mlflow.set_tracking_uri(tracking_uri)
    try:
        bundle = load_bundle(model)
    except DatasetError as error:
        click.echo(f"transcribe: cannot load model {model}: {error}", err=True)
        return 2
    try:
        results = transcribe_audio(
            bundle, resolve_audio_inputs(params, {"root": librispeech_dir}), params
        )
    except ValueError as error:  # e.g. --decoder beam for a model without an LM
        click.echo(f"transcribe: {model}: {error}", err=True)
        return 2
    for result in results:
        for line in describe_result(result):
            click.echo(line, err=bool(result["error"]))
    if json_path:
        json_path.write_text(json.dumps(results, indent=2))
    return 1 if any(r["error"] for r in results) else 0


def transcribe_main() -> None:
    """Entry point of the ``asr-transcribe`` console script."""
    transcribe(prog_name="asr-transcribe")
