"""The recognizer in the MLflow model registry: saving registers it, loading says which version.

Promotion needs the model version the training run registered. Finding it through the active MLflow
run, after trusting Kedro to have run the registering node first, hid that dependency; this dataset
makes it an edge of the pipeline instead:
``package_recognizer -> registered_model -> promote_model``.

- ``save`` is kedro-mlflow's :class:`MlflowModelTrackingDataset`: the pyfunc is logged to the
  active run and registered under ``save_args.registered_model_name``, with the ``signature`` and
  ``input_example`` the model object declares (as attributes) unless ``save_args`` gives them: the
  schema belongs to the code that reads the requests, not to the YAML.
- ``load`` returns ``{"name", "version", "run_id", "uri"}`` of a registered version, without
  downloading the model: the version this dataset registered in this session, or, with
  ``load_args.model_uri`` (``models:/NAME@ALIAS`` or ``models:/NAME/VERSION``, e.g. from
  ``--params model_uri=...``), the version that URI points at now. ``None`` when there is none: a
  session that registered nothing (tracking off, or an evaluation of a local file) or a
  ``model_uri`` that is not a registry URI (a file or ``runs:/``), so there is nothing to promote.

The class name starts with ``Mlflow`` so that kedro-mlflow switches its logging off where tracking
is disabled, as it does for its own datasets.
"""

from __future__ import annotations

from typing import Any

from kedro.io import DatasetError
from kedro_mlflow.io.models import MlflowModelTrackingDataset
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from asr_pipeline.serving.registry import resolve_version

# {"name", "version", "run_id", "uri"}; the version as MLflow's client gives it, so that it
# compares equal to the champion's.
RegisteredVersion = dict[str, Any]


class MlflowRegisteredModelDataset(MlflowModelTrackingDataset):
    """An MLflow model tracking dataset whose load is the registered version, not the model."""

    def __init__(
        self,
        flavor: str,
        pyfunc_workflow: str | None = None,
        load_args: dict[str, Any] | None = None,
        save_args: dict[str, Any] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(flavor, pyfunc_workflow, load_args, save_args, metadata)
        if not self._save_args.get("registered_model_name"):
            raise DatasetError(
                "MlflowRegisteredModelDataset needs save_args.registered_model_name: "
                "without it nothing is registered"
            )

    def _save(self, model: Any) -> None:
        for declared in ("signature", "input_example"):
            if declared not in self._save_args and getattr(model, declared, None) is not None:
                self._save_args[declared] = getattr(model, declared)
        super()._save(model)

    def _load(self) -> RegisteredVersion | None:
        if self._user_defined_model_uri is not None:
            return _version_of_uri(self._user_defined_model_uri)
        info = self.model_info
        if info is None or info.registered_model_version is None:
            return None  # nothing was registered in this session
        name, version = self._save_args["registered_model_name"], info.registered_model_version
        return {
            "name": name,
            "version": version,
            "run_id": info.run_id,
            "uri": f"models:/{name}/{version}",
        }

    def _exists(self) -> bool:
        # What load answers never needs a file: "no registered version" is an answer too.
        return True


def _version_of_uri(uri: str) -> RegisteredVersion | None:
    """The registered version a ``models:/`` URI means now; ``None`` for other model URIs."""
    if not uri.startswith("models:/"):
        return None
    client = MlflowClient()
    try:
        name, version = resolve_version(client, uri)
        run_id = client.get_model_version(name, version).run_id
    except (ValueError, MlflowException) as error:
        raise DatasetError(f"cannot resolve {uri} in the MLflow model registry: {error}") from error
    return {"name": name, "version": version, "run_id": run_id, "uri": f"models:/{name}/{version}"}
