"""The registered version as a dataset: what promotion depends on, on a real SQLite registry.

``registered_model`` is saved by the training pipeline (the pyfunc is logged and registered) and
loaded by evaluation's ``promote_model`` (as ``{name, version, run_id, uri}``), so promotion follows
registration through a pipeline edge rather than through Kedro's layer order.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlflow
import mlflow.pyfunc
import pytest
from kedro.config import OmegaConfigLoader
from kedro.io import DataCatalog, DatasetError
from mlflow.tracking import MlflowClient

from asr_pipeline.datasets import MlflowRegisteredModelDataset
from asr_pipeline.settings import CONFIG_LOADER_ARGS

pytestmark = [
    # Kedro 1.7 calls OmegaConf's deprecated register_new_resolver itself
    pytest.mark.filterwarnings("ignore:register_new_resolver:UserWarning"),
]
PROJECT_ROOT = Path(__file__).resolve().parents[1]
NAME = "asr-registered-model-test"


class _Echo(mlflow.pyfunc.PythonModel):
    """Stands in for the recognizer: what is registered does not matter here."""

    def predict(self, model_input: list[str], params: dict[str, Any] | None = None) -> list[str]:
        return model_input


@pytest.fixture
def registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> MlflowClient:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    yield MlflowClient(uri)
    mlflow.set_tracking_uri(None)


@pytest.fixture
def experiment(registry: MlflowClient, tmp_path: Path) -> str:
    """An experiment whose artifacts stay under tmp_path (the default is ./mlruns)."""
    return registry.create_experiment("registered", (tmp_path / "artifacts").as_uri())


def _dataset(model_uri: str | None = None) -> MlflowRegisteredModelDataset:
    return MlflowRegisteredModelDataset(
        flavor="mlflow.pyfunc",
        pyfunc_workflow="python_model",
        load_args={"model_uri": model_uri},
        save_args={"name": "recognizer", "registered_model_name": NAME, "pip_requirements": []},
    )


def test_save_registers_and_load_names_that_version(
    registry: MlflowClient, experiment: str
) -> None:
    dataset = _dataset()
    assert dataset.load() is None  # nothing registered in this session yet: nothing to promote
    versions = []
    for _ in range(2):
        with mlflow.start_run(experiment_id=experiment) as run:
            dataset.save(_Echo())
        versions.append(dataset.load())
        assert versions[-1]["run_id"] == run.info.run_id
    assert [str(v["version"]) for v in versions] == ["1", "2"]
    assert versions[1] == {
        "name": NAME,
        "version": versions[1]["version"],
        "run_id": versions[1]["run_id"],
        "uri": f"models:/{NAME}/2",
    }
    registered = registry.get_model_version(NAME, "2")
    assert registered.run_id == versions[1]["run_id"]
    assert registered.version == versions[1]["version"]  # the same type as the registry's


def test_model_uri_resolves_without_downloading(
    registry: MlflowClient, experiment: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with mlflow.start_run(experiment_id=experiment):
        _dataset().save(_Echo())
    registry.set_registered_model_alias(NAME, "champion", "1")
    champion = registry.get_model_version_by_alias(NAME, "champion").version

    def no_download(*args, **kwargs):
        raise AssertionError("the registered version is resolved, the model never downloaded")

    monkeypatch.setattr(mlflow.artifacts, "download_artifacts", no_download)
    by_alias = _dataset(f"models:/{NAME}@champion").load()
    assert by_alias["version"] == champion and by_alias["uri"] == f"models:/{NAME}/1"
    assert _dataset(f"models:/{NAME}/1").load() == by_alias
    # a file or a run is no registered version: there is nothing to promote
    assert _dataset("data/06_models/acoustic_model.pt").load() is None
    with pytest.raises(DatasetError, match="nobody"):
        _dataset(f"models:/{NAME}@nobody").load()
    with pytest.raises(DatasetError, match="model_uri"):
        _dataset(f"models:/{NAME}@champion").save(_Echo())  # a registered version is read-only


def test_registered_model_name_is_required() -> None:
    with pytest.raises(DatasetError, match="registered_model_name"):
        MlflowRegisteredModelDataset(flavor="mlflow.pyfunc", pyfunc_workflow="python_model")


def _project_catalog(runtime_params: dict | None) -> DataCatalog:
    loader = OmegaConfigLoader(
        conf_source=str(PROJECT_ROOT / "conf"),
        env="local",
        runtime_params=runtime_params,
        **CONFIG_LOADER_ARGS,
    )
    return DataCatalog.from_config(loader["catalog"])


def test_catalog_entry_follows_model_uri(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ASR_MODEL_NAME", "asr-from-env")
    plain = _project_catalog(None)["registered_model"]
    assert isinstance(plain, MlflowRegisteredModelDataset)
    assert plain._user_defined_model_uri is None  # the version this run registers
    assert plain._save_args["registered_model_name"] == "asr-from-env"
    evaluating = _project_catalog({"model_uri": "models:/asr@champion"})["registered_model"]
    assert evaluating._user_defined_model_uri == "models:/asr@champion"


def test_promotion_depends_on_registration_through_an_edge() -> None:
    from kedro.framework.project import pipelines
    from kedro.framework.startup import bootstrap_project

    bootstrap_project(PROJECT_ROOT)
    training, evaluation = pipelines["training"], pipelines["evaluation"]
    assert "registered_model" in training.outputs()
    assert "registered_model" in evaluation.inputs()
    promote = next(node for node in evaluation.nodes if node.name == "promote_model")
    assert "registered_model" in promote.inputs
    assert not any(name.startswith("params:training") for name in promote.inputs)
    # in the full run the edge orders promotion after registration
    full = pipelines["__default__"]
    order = [node.name for node in full.nodes]
    assert order.index("package_recognizer") < order.index("promote_model")
