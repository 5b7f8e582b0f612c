"""``asr-export``: a model bundle or a registered model, written as ONNX (see the writer).

    asr-export --model data/06_models/acoustic_model.pt --out exported/
    asr-export --model models:/asr-librispeech@champion

This module is glue, like ``asr_pipeline.cli`` beside it: a registry URI is resolved and
downloaded exactly as ``asr-transcribe`` does it (``asr_pipeline.project_defaults`` and the model
cache, ``asr_pipeline.serving.registry.load_bundle``), so both commands mean the same model by the
same URI; the export itself (:mod:`~asr_pipeline.export.writer`) imports neither Kedro nor MLflow.
Exit status: 0 written, 1 the export failed, 2 the model cannot be loaded.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from asr_pipeline.project_defaults import project_defaults, registry_options
from asr_pipeline.serving.registry import default_cache_dir, load_bundle

PROJECT_OUT = Path("data/06_models/onnx")  # inside a project folder
OTHER_OUT = Path("onnx-model")  # anywhere else


def default_out() -> Path:
    """``data/06_models/onnx`` where the working directory has ``data/06_models``, else
    ``onnx-model``."""
    return PROJECT_OUT if PROJECT_OUT.parent.is_dir() else OTHER_OUT


def _one_line(error: BaseException, model: str) -> str:
    """``asr-export: MODEL: first line of the error`` (the model named once)."""
    lines = str(error).strip().splitlines()
    text = lines[0] if lines else type(error).__name__
    return f"asr-export: {text}" if model in text else f"asr-export: {model}: {text}"


def _size(path: Path) -> str:
    size = path.stat().st_size
    return f"{size / 1e6:.1f} MB" if size >= 1e5 else f"{size / 1e3:.1f} kB"


@click.command(name="export")
@click.option(
    "--model",
    default=None,
    help="a model bundle file, models:/NAME@ALIAS or models:/NAME/VERSION  "
    "[default: the project's inference_model, the registered champion]",
)
@click.option(
    "--out",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="folder to write  [default: data/06_models/onnx in a project, else ./onnx-model]",
)
@registry_options
@click.option("--no-int8", is_flag=True, help="skip the int8 quantised copy")
def export(
    model: str | None,
    out: Path | None,
    tracking_uri: str | None,
    cache_dir: Path | None,
    env: str | None,
    no_int8: bool,
) -> None:
    """Write a model's acoustic network as ONNX (fp32 and int8) with its features, units and
    decoder settings."""
    needs_conf = model is None or (model.startswith("models:/") and tracking_uri is None)
    if needs_conf:
        try:
            defaults = project_defaults(env)
        except Exception as error:  # noqa: BLE001 - any conf error: say which, and the way out
            click.echo(
                f"asr-export: cannot read the project's conf ({_one_line(error, '')}); "
                "pass --model (and --tracking-uri for a models:/ URI)",
                err=True,
            )
            sys.exit(2)
        model = model or defaults.model
        tracking_uri = tracking_uri or defaults.tracking_uri
    if tracking_uri:  # read by MLflow when load_bundle resolves the URI (this process only)
        os.environ["MLFLOW_TRACKING_URI"] = tracking_uri
    try:
        bundle = load_bundle(model, cache_dir or default_cache_dir())
    except Exception as error:  # noqa: BLE001 - missing file, unknown model, not a bundle
        click.echo(_one_line(error, model), err=True)
        sys.exit(2)

    from asr_pipeline.export.writer import export_bundle  # torch and onnx: only when needed

    folder = out or default_out()
    try:
        result = export_bundle(bundle, folder, quantize=not no_int8)
    except Exception as error:  # noqa: BLE001 - e.g. an unsupported bundle or a failed check
        click.echo(_one_line(error, f"{model}: export failed"), err=True)
        sys.exit(1)
    click.echo(
        f"exported {model} to {folder}/ ({result.exporter} exporter; ONNX Runtime fp32 matches "
        f"PyTorch within {result.fp32_max_difference:.1g})"
    )
    for name, path in result.files.items():
        click.echo(f"  {name:<18} {_size(path)}")


def export_main() -> None:
    """Entry point of the ``asr-export`` console script."""
    export(prog_name="asr-export")
