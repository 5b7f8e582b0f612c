"""Project commands: ``kedro transcribe`` (also installed as ``asr-transcribe``).

    kedro transcribe 1089-134686-0000 recording.mp3 --model models:/asr-librispeech@champion

LibriSpeech ids are looked up under ``--librispeech-dir`` (default: $LIBRISPEECH_DIR); their
reference transcript is printed beside the prediction. ``--json`` writes results with timings.
Exit status: 0 all transcribed, 1 some inputs failed (each says why), 2 the model cannot be loaded
(or cannot decode as asked).

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
import os
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

import click

PACKAGE = __name__.rpartition(".")[0]


@dataclass(frozen=True)
class ProjectDefaults:
    """What the command uses when ``--model`` / ``--tracking-uri`` are not given."""

    model: str
    tracking_uri: str | None  # None: MLflow's own default


def project_defaults(env: str | None = None, start: Path | None = None) -> ProjectDefaults:
    """The defaults of the project folder ``start`` (default: the working directory) is in.

    Read with the config loader class and arguments of the project's ``settings.py`` (resolvers,
    merge strategies), exactly as ``kedro run`` reads them; outside a project of this package, the
    fallback described in the module docstring.
    """
    from kedro.utils import find_kedro_project

    project = find_kedro_project((start or Path.cwd()).resolve())
    if project is None or _package_of(project) != PACKAGE:
        name = os.environ.get("ASR_MODEL_NAME", "asr-librispeech")
        return ProjectDefaults(model=f"models:/{name}@champion", tracking_uri=None)
    from kedro.framework.project import settings
    from kedro.framework.startup import bootstrap_project

    bootstrap_project(project)
    loader = settings.CONFIG_LOADER_CLASS(
        conf_source=str(project / settings.CONF_SOURCE), env=env, **settings.CONFIG_LOADER_ARGS
    )
    return ProjectDefaults(
        model=loader["catalog"]["inference_model"]["filepath"],
        tracking_uri=loader["mlflow"]["server"]["mlflow_tracking_uri"],
    )


def _package_of(project: Path) -> str | None:
    """``[tool.kedro] package_name`` of a project: another project's conf is not ours to read."""
    metadata = tomllib.loads((project / "pyproject.toml").read_text(encoding="utf-8"))
    return metadata.get("tool", {}).get("kedro", {}).get("package_name")


def default_cache_dir() -> Path:
    """Where downloaded models are kept between calls (see the module docstring)."""
    if configured := os.environ.get("ASR_MODEL_CACHE"):
        return Path(configured).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "asr-pipeline" / "models"


@click.group(name="asr_pipeline")
def cli() -> None:
    """asr-pipeline project commands."""


@cli.command()
@click.argument("inputs", nargs=-1, required=True)
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
@click.option(
    "--tracking-uri",
    default=None,
    help="MLflow tracking URI  [default: the project's, from conf mlflow.yml]",
)
@click.option(
    "--cache-dir",
    type=click.Path(path_type=Path),
    default=None,
    help="where registered models are kept between calls, by name and version  "
    "[default: $ASR_MODEL_CACHE, else ~/.cache/asr-pipeline/models]",
)
@click.option(
    "--env",
    envvar="KEDRO_ENV",
    default=None,
    help="Kedro conf environment the defaults are read from (as kedro run --env)",
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
    model: str | None,
    librispeech_dir: str,
    tracking_uri: str | None,
    cache_dir: Path | None,
    env: str | None,
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
    if model is None or tracking_uri is None:
        try:
            defaults = project_defaults(env)
        except Exception as error:  # noqa: BLE001 - any conf error: say which, and the way out
            click.echo(
                f"transcribe: cannot read the project's conf for the default model and tracking "
                f"URI ({error}); pass --model and --tracking-uri",
                err=True,
            )
            sys.exit(2)
        model = model or defaults.model
        tracking_uri = tracking_uri or defaults.tracking_uri
    cache = cache_dir or default_cache_dir()
    sys.exit(run_transcription(params, model, librispeech_dir, tracking_uri, json_path, cache))


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


def transcribe_main() -> None:
    """Entry point of the ``asr-transcribe`` console script."""
    transcribe(prog_name="asr-transcribe")
