"""feature_store_maintenance on a real feature store: what the last feature_engineering run did
not use goes, what it used stays, and a crashed writer's old temporary files go with it."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pandas as pd
import pytest

from asr_pipeline.pipelines import data_engineering, feature_engineering, feature_store_maintenance
from tests.in_memory import merged, persisted_datasets, run_in_memory
from tests.support import PROJECT_ROOT, base_parameters
from tests.test_pipelines import TINY


@pytest.fixture(scope="module")
def parameters(librispeech_root: Path) -> dict:
    local = {"librispeech": {"root": str(librispeech_root), "download": False}}
    return merged(merged(base_parameters(), TINY), local)


@pytest.fixture(scope="module")
def splits(parameters: dict) -> pd.DataFrame:
    return run_in_memory(data_engineering.create_pipeline(), parameters).load("manifest_splits")


def test_what_the_last_run_did_not_use_is_removed(
    parameters: dict, splits: pd.DataFrame, tmp_path: Path
) -> None:
    extraction = feature_engineering.create_pipeline()
    datasets = persisted_datasets(extraction, tmp_path)
    run_in_memory(extraction, parameters, {"manifest_splits": splits}, datasets)
    # a later run on fewer utterances: the one it dropped is stale
    first = splits.utterance_id.iloc[0]
    later = run_in_memory(
        extraction, parameters, {"manifest_splits": splits[splits.utterance_id != first]}, datasets
    )
    store = later.load("features")
    folder, stored = store.root, set(store)
    (dropped,) = [key for key in stored if key.startswith(f"{first}.")]
    shards = folder / "shards"
    old_leftover, new_leftover = shards / ".tmp-old.safetensors", shards / ".tmp-new.safetensors"
    old_leftover.write_bytes(b"half a tensor")
    new_leftover.write_bytes(b"a writer at work")
    day_ago = time.time() - 86_400
    os.utime(old_leftover, (day_ago, day_ago))

    maintenance = feature_store_maintenance.create_pipeline()
    index = later.load("feature_index")
    pruned = run_in_memory(
        maintenance, parameters, {"feature_index": index}, persisted_datasets(maintenance, tmp_path)
    )
    report = pruned.load("feature_prune_report")
    assert report == {
        "stored": len(stored),
        "kept": len(stored) - 1,
        "removed": 1,
        "removed_examples": [dropped],
    }
    assert set(pruned.load("stale_features")) == stored - {dropped}  # what the folder holds now
    assert set(index.feature_key) == stored - {dropped}
    # the shard that held it was written again without it; the others are untouched
    assert all(key in store for key in stored - {dropped})
    assert not any(dropped.encode() in path.read_bytes() for path in folder.rglob("*.safetensors"))
    assert not old_leftover.exists() and new_leftover.exists()


def test_the_maintenance_pipeline_is_not_in_the_default_run() -> None:
    from kedro.framework.project import pipelines
    from kedro.framework.startup import bootstrap_project

    bootstrap_project(PROJECT_ROOT)
    assert "feature_store_maintenance" in pipelines
    default_nodes = {node.name for node in pipelines["__default__"].nodes}
    assert "find_stale_features" not in default_nodes
