"""A feature extraction leaves a readable log: one save of ``features``, a few lines in all.

``extract_features`` returns one plan that ``FeatureStoreDataset.save`` carries out with its
workers; a generator node would make Kedro save (and log "Saving data to features") once per
chunk. The workers still write every shard as it is done, so a crash keeps them.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import torch
from kedro.io import DataCatalog, DatasetError, MemoryDataset
from kedro.runner import SequentialRunner

from asr_pipeline.datasets.feature_store import FeatureStoreDataset
from asr_pipeline.pipelines.data_engineering.nodes import scan_librispeech, validate_utterances
from asr_pipeline.pipelines.feature_engineering import create_pipeline
from tests.support import base_parameters

NODES_LOGGER = "asr_pipeline.pipelines.feature_engineering.nodes"
STORE_LOGGER = "asr_pipeline.datasets.feature_store"


@pytest.fixture(scope="module")
def few_utterances(librispeech_root: Path) -> pd.DataFrame:
    """The ten utterances of dev-clean-2, six of them as training ones."""
    params = {
        **base_parameters()["data_engineering"],
        "train_subsets": ["dev-clean-2"],
        "test_subsets": [],
    }
    manifest, _ = validate_utterances(scan_librispeech(str(librispeech_root), params), params)
    split = ["train"] * 6 + ["validation"] * 2 + ["test"] * (len(manifest) - 8)
    return manifest.assign(split=split)


def _run(manifest: pd.DataFrame, store: Path, params: dict) -> None:
    catalog = DataCatalog(
        {
            "manifest_splits": MemoryDataset(manifest),
            "feature_cache": FeatureStoreDataset(str(store)),
            "features": FeatureStoreDataset(str(store)),
            "params:features": MemoryDataset(params),
        }
    )
    pipeline = create_pipeline().only_nodes(
        "assign_feature_keys", "extract_features", "index_features"
    )
    SequentialRunner().run(pipeline, catalog)


def test_an_extraction_logs_one_save_and_a_few_lines(
    few_utterances: pd.DataFrame, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    params = {
        **base_parameters()["features"],
        "speed_perturbation": [],
        "workers": 1,  # still about four shards (what four workers would get)
    }
    store = tmp_path / "features"
    with caplog.at_level(logging.INFO):
        _run(few_utterances, store, params)
    messages = [record.getMessage() for record in caplog.records]
    saves = [m for m in messages if m.startswith("Saving data to features ")]
    assert len(saves) == 1, saves
    assert len(FeatureStoreDataset(str(store)).load()) == len(few_utterances)
    assert len(list(store.rglob("*.safetensors"))) >= 4  # several shards, one save
    extraction = [r.getMessage() for r in caplog.records if r.name in (NODES_LOGGER, STORE_LOGGER)]
    assert len(extraction) == 2, extraction  # what is computed, and what came of it
    assert "computing 10" in extraction[0] and "computed 10, 0 failed" in extraction[1]

    caplog.clear()
    with caplog.at_level(logging.INFO):
        _run(few_utterances, store, params)  # everything cached: still one save, nothing computed
    messages = [record.getMessage() for record in caplog.records]
    assert sum(m.startswith("Saving data to features ") for m in messages) == 1
    extraction = [r.getMessage() for r in caplog.records if r.name in (NODES_LOGGER, STORE_LOGGER)]
    assert extraction == ["Features: 10 of 10 feature rows cached, computing 0 (0.00 h of audio)"]


def test_a_crash_keeps_the_chunks_already_written(tmp_path: Path) -> None:
    def stream() -> Iterator[dict[str, torch.Tensor]]:
        yield {"a": torch.zeros(2, 3)}
        yield {"b": torch.ones(2, 3)}
        raise RuntimeError("the extraction died")

    dataset = FeatureStoreDataset(str(tmp_path / "store"))
    with pytest.raises(DatasetError, match="died") as error:  # Kedro wraps it: a failed save
        dataset.save(stream())
    assert isinstance(error.value.__cause__, RuntimeError)
    assert set(dataset.load()) == {"a", "b"}
    assert not list((tmp_path / "store").rglob(".tmp-*")), "temporary files left behind"
