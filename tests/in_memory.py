"""Running a pipeline in memory with ``SequentialRunner``, as Kedro's starters test theirs.

The catalog is built from the pipeline's own dataset names (``pipeline.datasets()``): the inputs
a test gives, the ``params:`` entries looked up in a parameters dict, real datasets only where a
MemoryDataset cannot stand in (the feature stores), and a MemoryDataset for everything else. A
renamed intermediate dataset therefore needs no change in the tests.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
from kedro.io import DataCatalog, MemoryDataset
from kedro.pipeline import Pipeline
from kedro.runner import SequentialRunner

from tests.support import catalog_config, project_dataset

# Catalog types that must really persist: extraction's workers write the feature store's shards,
# read back as one mapping, which a MemoryDataset cannot do; the maintenance pipeline deletes from
# the same folder.
PERSISTED_TYPES = {
    "asr_pipeline.datasets.FeatureStoreDataset",
    "asr_pipeline.datasets.StaleFeaturesDataset",
}


class KeptDataset(MemoryDataset):
    """A MemoryDataset the runner does not empty after its last use, so that a test can read the
    intermediate outputs (the manifest, the feature index) as well as the free ones."""

    def _release(self) -> None:
        pass


def merged(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``override`` merged in, nested mappings key by key (as Kedro's --params)."""
    result = dict(base)
    for key, value in override.items():
        both = isinstance(value, Mapping) and isinstance(base.get(key), Mapping)
        result[key] = merged(base[key], value) if both else value
    return result


def _param(parameters: Mapping[str, Any], name: str) -> Any:
    """The value of ``params:a.b.c``, looked up as Kedro does."""
    value: Any = parameters
    for part in name.removeprefix("params:").split("."):
        value = value[part]
    return copy.deepcopy(value)


def persisted_datasets(pipeline: Pipeline, root: Path) -> dict[str, Any]:
    """The pipeline's datasets of a persisted type, built from catalog.yml with their folders
    moved under ``root`` (two names over one folder stay one folder)."""
    datasets = {}
    for name in sorted(pipeline.datasets()):
        if name.startswith("params:"):
            continue
        try:
            config = catalog_config(name)
        except KeyError:
            continue
        if config.get("type") in PERSISTED_TYPES:
            config = {**config, "path": str(root / config["path"])}
            datasets[name] = project_dataset(name, config=config)
    return datasets


def run_in_memory(
    pipeline: Pipeline,
    parameters: Mapping[str, Any],
    inputs: Mapping[str, Any] = (),
    datasets: Mapping[str, Any] = (),
) -> DataCatalog:
    """Run ``pipeline`` on a catalog of ``datasets``, ``inputs`` (as MemoryDatasets) and
    ``parameters``; every other dataset is in memory. Returns the catalog, outputs and all.

    Built from ``pipeline.datasets()``, so a renamed intermediate dataset needs no change here;
    a free input nobody gave is named in the error.
    """
    datasets, inputs = dict(datasets), dict(inputs)
    missing = pipeline.inputs() - set(datasets) - set(inputs)
    missing = {name for name in missing if not name.startswith("params:")}
    assert not missing, f"give the pipeline's free inputs {sorted(missing)}"
    for name in pipeline.datasets() - set(datasets):
        if name.startswith("params:"):
            datasets[name] = MemoryDataset(_param(parameters, name), copy_mode="assign")
        elif name in inputs:
            datasets[name] = KeptDataset(inputs[name], copy_mode="assign")
        else:
            datasets[name] = KeptDataset(copy_mode="assign")
    catalog = DataCatalog(datasets=datasets)
    SequentialRunner().run(pipeline, catalog)
    plt.close("all")  # pyplot would keep every figure open; the catalog still holds its own
    return catalog


def outputs_of(pipeline: Pipeline, node_name: str) -> list[str]:
    """The dataset names a node writes: tests find an output by its node, not its name."""
    (node,) = [n for n in pipeline.nodes if n.name == node_name]
    return node.outputs
