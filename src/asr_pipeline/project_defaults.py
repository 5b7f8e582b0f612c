"""Where the project's commands (``asr-transcribe``, ``asr-export``) find their defaults.

The default model and tracking URI are the project's, read from its conf with Kedro's config
loader and the project's settings (``--env`` or $KEDRO_ENV picks the environment, as for
``kedro run``); outside a project of this package, ``models:/$ASR_MODEL_NAME@champion`` and
MLflow's own default tracking URI. :func:`registry_options` gives every command the same
``--tracking-uri`` / ``--cache-dir`` / ``--env`` options.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

PACKAGE = __name__.rpartition(".")[0]  # asr_pipeline


@dataclass(frozen=True)
class ProjectDefaults:
    """What the command uses when ``--model`` / ``--tracking-uri`` are not given."""

    model: str
    tracking_uri: str | None  # None: MLflow's own default
    # conf's inference.segmentation; None (outside a project): conf/base's, which the package
    # keeps (asr_pipeline.audio.segmentation.DEFAULT_SEGMENTATION). Not what tells defaults apart.
    segmentation: dict[str, Any] | None = field(default=None, compare=False)


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
        segmentation=loader["parameters"]["inference"]["segmentation"],
    )


def _package_of(project: Path) -> str | None:
    """``[tool.kedro] package_name`` of a project: another project's conf is not ours to read."""
    metadata = tomllib.loads((project / "pyproject.toml").read_text(encoding="utf-8"))
    return metadata.get("tool", {}).get("kedro", {}).get("package_name")


def registry_options(command: Callable) -> Callable:
    """``--tracking-uri``, ``--cache-dir`` and ``--env``: how a command finds a registered model
    (shared by ``asr-transcribe`` and ``asr-export``)."""
    options = [
        click.option(
            "--tracking-uri",
            default=None,
            help="MLflow tracking URI for models:/ URIs  "
            "[default: the project's, from conf mlflow.yml]",
        ),
        click.option(
            "--cache-dir",
            type=click.Path(path_type=Path),
            default=None,
            help="where registered models are kept between calls, by name and version  "
            "[default: $ASR_MODEL_CACHE, else ~/.cache/asr-pipeline/models]",
        ),
        click.option(
            "--env",
            envvar="KEDRO_ENV",
            default=None,
            help="Kedro conf environment the defaults are read from (as kedro run --env)",
        ),
    ]
    for option in reversed(options):
        command = option(command)
    return command
