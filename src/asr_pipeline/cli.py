"""Project commands: ``kedro transcribe`` (also installed as ``asr-transcribe``).

    kedro transcribe 1089-134686-0000 recording.mp3 --model models:/asr-librispeech@champion

LibriSpeech ids are looked up under ``--librispeech-dir`` (default: $LIBRISPEECH_DIR); their
reference transcript is printed beside the prediction. ``--json`` writes results with timings:
each result's ``words`` (``{"word", "start", "end"}``, seconds from the start of the recording)
and ``cuts`` (where a long recording was cut at pauses, in seconds).
Exit status: 0 all transcribed, 1 some inputs failed (each says why), 2 the model cannot be loaded
(or cannot decode as asked).

How long recordings are cut (``inference.segmentation``) is read from the project's conf as well;
``--segment-seconds`` overrides its longest segment. Outside a project: the values of conf/base.

The default model and tracking URI are the project's, read from its conf with Kedro's config
loader and the project's settings (``--env`` or $KEDRO_ENV picks the environment, as for
``kedro run``): the model is the catalog's ``inference_model`` (the registered champion,
``models:/<registered_model_name>@<champion_alias>`` from ``globals.yml``) and the tracking URI is
``mlflow.yml``'s, so the command, ``kedro run`` and the inference pipeline cannot disagree. Outside
the project folder there is no conf: the model defaults to ``models:/$ASR_MODEL_NAME@champion``
(``asr-librispeech`` when unset) and the tracking URI to MLflow's own default
($MLFLOW_TRACKING_URI, else ``sqlite:///mlflow.db``).

A registered model is resolved to its version (``models:/NAME@ALIAS`` -> NAME/VERSION) on every
call, but downloaded once: into ``--cache-dir`` (default $ASR_MODEL_CACHE, else
``$XDG_CACHE_HOME/asr-pipeline/models``, else ``~/.cache/asr-pipeline/models``), where the next
call with the same version finds it. A new version under the alias is downloaded afresh.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

import click

from asr_pipeline.project_defaults import ProjectDefaults, project_defaults, registry_options


@click.group(name="asr_pipeline")
def cli() -> None:
    """asr-pipeline project commands."""


@cli.command()
@click.argument("inputs", nargs=-1)
@click.option(
    "--model",
    default=None,
    help="models:/NAME@ALIAS, models:/NAME/VERSION, or a model bundle file  "
    "[default: the project's inference_model, the registered champion]",
)
@click.option(
    "--librispeech-dir",
    envvar="LIBRISPEECH_DIR",
    default="data/01_raw/LibriSpeech",
    show_default=True,
    help="where LibriSpeech ids are looked up",
)
@registry_options
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
@click.option(
    "--segment-seconds",
    type=float,
    default=None,
    help="longest segment a long recording is cut into, at pauses  "
    "[default: the conf's inference.segmentation.max_seconds]",
)
@click.option("--max-seconds", default=1800.0, show_default=True)
@click.option("--threads", type=int, default=None)
@click.option(
    "--stream",
    is_flag=True,
    help="stream the files to a streaming server (asr-stream-server) at real-time pace, "
    "printing partial results in place",
)
@click.option(
    "--microphone",
    is_flag=True,
    help="stream the microphone to a streaming server until Ctrl+C (needs a sound device)",
)
@click.option(
    "--server",
    default=None,
    help="the streaming server's WebSocket URL  "
    "[default: ws://HOST:PORT/stream of the conf's streaming.server]",
)
@click.option(
    "--speed",
    type=float,
    default=1.0,
    show_default=True,
    help="with --stream: audio seconds sent per second (0: as fast as possible)",
)
def transcribe(
    inputs: tuple[str, ...],
    model: str | None,
    librispeech_dir: str,
    tracking_uri: str | None,
    cache_dir: Path | None,
    env: str | None,
    json_path: Path | None,
    decoder: str,
    segment_seconds: float | None,
    max_seconds: float,
    threads: int | None,
    stream: bool,
    microphone: bool,
    server: str | None,
    speed: float,
) -> None:
    """Transcribe audio files (FLAC, WAV, MP3, OGG) or LibriSpeech utterance ids; or stream
    them (``--stream``), or the microphone (``--microphone``), to a streaming server."""
    if stream or microphone:
        sys.exit(run_streaming(inputs, microphone, server or _stream_url(env), speed))
    if not inputs:
        raise click.UsageError("give audio files or LibriSpeech ids (or --microphone)")
    try:
        defaults = project_defaults(env)
    except Exception as error:  # noqa: BLE001 - any conf error: say which, and the way out
        if model is None or tracking_uri is None:
            click.echo(
                f"transcribe: cannot read the project's conf for the default model and tracking "
                f"URI ({error}); pass --model and --tracking-uri",
                err=True,
            )
            sys.exit(2)
        defaults = ProjectDefaults(model, tracking_uri)  # both given: the conf is not needed
    model = model or defaults.model
    tracking_uri = tracking_uri or defaults.tracking_uri
    params = {  # as the inference pipeline's parameters
        "inputs": list(inputs),
        "decoder": decoder,
        "segmentation": _segmentation(defaults.segmentation, segment_seconds),
        "max_seconds": max_seconds,
        "threads": threads,
    }
    from asr_pipeline.serving.registry import default_cache_dir  # torch, MLflow: when needed

    cache = cache_dir or default_cache_dir()
    sys.exit(run_transcription(params, model, librispeech_dir, tracking_uri, json_path, cache))


def _segmentation(conf: dict[str, Any] | None, segment_seconds: float | None) -> dict[str, Any]:
    """The conf's ``inference.segmentation`` (conf/base's outside a project), with
    ``--segment-seconds`` as its longest segment when given."""
    from asr_pipeline.audio.segmentation import DEFAULT_SEGMENTATION

    values = dict(conf) if conf is not None else DEFAULT_SEGMENTATION.to_dict()
    if segment_seconds is not None:
        values["max_seconds"] = segment_seconds
    return values


def run_transcription(
    params: dict,
    model: str,
    librispeech_dir: str,
    tracking_uri: str | None,
    json_path: Path | None,
    cache_dir: Path | None = None,
) -> int:
    """Transcribe ``params["inputs"]`` with ``model``; the exit status.

    ``tracking_uri`` None leaves MLflow's own default ($MLFLOW_TRACKING_URI, else SQLite);
    ``cache_dir`` None downloads a registered model afresh into a temporary folder.
    """
    import mlflow
    from kedro.io import DatasetError

    from asr_pipeline.pipelines.inference.nodes import (
        describe_result,
        resolve_audio_inputs,
        transcribe_audio,
    )
    from asr_pipeline.serving.registry import load_bundle

    # Every result (errors included) is echoed below. The node also logs each one, at ERROR for a
    # failed item, and with no logging configured Python's last-resort handler prints WARNING and
    # above to stderr: each error would show twice. Nothing the node logs is news here.
    logging.getLogger("asr_pipeline.pipelines.inference").setLevel(logging.CRITICAL)
    if tracking_uri:
        mlflow.set_tracking_uri(tracking_uri)
    try:
        bundle = load_bundle(model, cache_dir)
    except DatasetError as error:
        click.echo(f"transcribe: {error}", err=True)  # it names the model and why
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


def _stream_url(env: str | None) -> str:
    """``ws://HOST:PORT/stream`` of the conf's ``streaming.server`` (conf/base outside a
    project)."""
    from asr_pipeline.serving.stream_server import streaming_params

    try:
        settings = streaming_params(Path("conf"), env)["server"]
    except Exception:  # noqa: BLE001 - outside a project: the client's own default
        from asr_pipeline.streaming.client import DEFAULT_URL

        return DEFAULT_URL
    return f"ws://{settings['host']}:{settings['port']}/stream"


def run_streaming(inputs: tuple[str, ...], microphone: bool, url: str, speed: float) -> int:
    """Stream each file (or the microphone) to ``url``; the exit status."""
    from asr_pipeline.streaming.client import StreamClientError, stream_file, stream_microphone

    if microphone and inputs:
        raise click.UsageError("--microphone takes no files")
    if not microphone and not inputs:
        raise click.UsageError("--stream needs audio files")
    status = 0
    try:
        if microphone:
            stream_microphone(url)
        for path in inputs:
            click.echo(f"{path}:")
            stream_file(path, url, speed=speed)
    except StreamClientError as error:
        click.echo(f"transcribe: {error}", err=True)
        status = 1
    except OSError as error:  # no server at the URL, connection lost
        click.echo(f"transcribe: {url}: {error}", err=True)
        status = 1
    except KeyboardInterrupt:
        pass
    return status


def transcribe_main() -> None:
    """Entry point of the ``asr-transcribe`` console script."""
    transcribe(prog_name="asr-transcribe")
