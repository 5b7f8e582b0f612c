"""The training DataLoader (planned batches built by worker processes, the same for any number)
and validation sharded over ranks (the same figures as one process)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import pytest
import soundfile as sf
import torch
import yaml

from asr_pipeline.audio.computed import ComputedFeatures
from asr_pipeline.audio.extraction import compute_features
from asr_pipeline.audio.features import FeatureConfig, FeatureExtractor, RunningStats
from asr_pipeline.corpus.buckets import bucket_batches
from asr_pipeline.datasets.feature_store import FeatureStoreDataset
from asr_pipeline.model.acoustic import ModelConfig
from asr_pipeline.model.factory import build_acoustic_model
from asr_pipeline.trainer import validation
from asr_pipeline.trainer.augment import SpecAugment
from asr_pipeline.trainer.batching import BatchLoader, UtteranceDataset
from asr_pipeline.trainer.loader import LoaderSettings, PlannedBatchSampler, batch_loader
from asr_pipeline.trainer.ranks import Ranks
from asr_pipeline.trainer.validation import Validator
from asr_pipeline.units.characters import normalise
from tests.support import free_port

PROJECT_ROOT = Path(__file__).resolve().parents[1]
PARAMS = yaml.safe_load((PROJECT_ROOT / "conf/base/parameters_training.yml").read_text())
FEATURES = FeatureConfig.from_params(
    yaml.safe_load((PROJECT_ROOT / "conf/base/parameters_feature_engineering.yml").read_text())[
        "features"
    ]
)
SPEC_AUGMENT = SpecAugment(**PARAMS["training"]["spec_augment"])


@pytest.fixture(scope="module")
def dataset_parts(librispeech_root: Path, tmp_path_factory: pytest.TempPathFactory):
    """Eight real train-clean-100 utterances in a feature store, their index and statistics."""
    files = sorted((librispeech_root / "train-clean-100").glob("*/*/*.flac"))
    shortest = sorted((sf.info(str(f)).duration, f) for f in files)[:8]
    extractor = FeatureExtractor(FEATURES)
    chunk, rows = {}, []
    for _, path in shortest:
        transcripts = dict(
            line.split(" ", 1)
            for line in next(path.parent.glob("*.trans.txt")).read_text().splitlines()
        )
        key = f"{path.stem}.{FEATURES.fingerprint()}"
        chunk[key] = compute_features(str(path), extractor)
        text = normalise(transcripts[path.stem])[0]
        rows.append(
            {"utterance_id": path.stem, "feature_key": key, "text": text,
             "num_frames": chunk[key].shape[1], "path": str(path), "speed": 1.0}
        )  # fmt: skip
    store_path = tmp_path_factory.mktemp("features")
    FeatureStoreDataset(str(store_path)).save(chunk)
    running = RunningStats(FEATURES.n_features)
    for tensor in chunk.values():
        running.update(tensor.float())
    store = FeatureStoreDataset(str(store_path)).load()
    return pd.DataFrame(rows), store, running.result()


def _batches(index: pd.DataFrame) -> list[list[int]]:
    return bucket_batches(index.num_frames.tolist(), 2 * int(index.num_frames.max()), seed=3)


def _loaded(dataset, batches, workers: int) -> list:
    settings = LoaderSettings(workers=workers, prefetch_batches=2)
    return list(batch_loader(dataset, batches, settings))


def test_workers_build_the_batches_one_process_builds(dataset_parts) -> None:
    index, store, stats = dataset_parts
    dataset = UtteranceDataset(index, store, stats, SPEC_AUGMENT, seed=7)
    batches = _batches(index)
    assert len(batches) > 2, "too few batches to tell the workers apart"
    alone, two_workers = _loaded(dataset, batches, 0), _loaded(dataset, batches, 2)
    assert len(alone) == len(two_workers) == len(batches)
    for a, b, rows in zip(alone, two_workers, batches, strict=True):
        assert a.utterance_ids == index.utterance_id.iloc[rows].tolist() == b.utterance_ids
        assert torch.equal(a.features, b.features)
        assert torch.equal(a.targets, b.targets) and torch.equal(a.target_lengths, b.target_lengths)
    # ... and what the one-batch-at-a-time loader builds
    direct = BatchLoader(index, store, stats, SPEC_AUGMENT, seed=7).load(batches[0])
    assert torch.equal(direct.features, alone[0].features)


def test_workers_compute_features_on_the_fly_as_the_store_holds_them(dataset_parts) -> None:
    index, store, stats = dataset_parts
    batches = _batches(index)
    computed = ComputedFeatures(index, FEATURES)
    from_store = _loaded(UtteranceDataset(index, store, stats, SPEC_AUGMENT, seed=7), batches, 0)
    on_the_fly = _loaded(UtteranceDataset(index, computed, stats, SPEC_AUGMENT, seed=7), batches, 2)
    for a, b in zip(from_store, on_the_fly, strict=True):
        assert torch.equal(a.features, b.features)


def test_masks_belong_to_the_utterance_and_the_epoch(dataset_parts) -> None:
    index, store, stats = dataset_parts
    dataset = UtteranceDataset(index, store, stats, SPEC_AUGMENT, seed=7)
    first = dataset[3].features
    assert torch.equal(first, dataset[3].features)  # drawn again: the same masks
    plain = UtteranceDataset(index, store, stats, seed=7)[3].features
    assert not torch.equal(first, plain)  # masked somewhere
    assert ((first == 0) | (first == plain)).all()  # masks only zero values
    dataset.set_epoch(1)
    assert not torch.equal(first, dataset[3].features)  # another epoch, other masks
    other_seed = UtteranceDataset(index, store, stats, SPEC_AUGMENT, seed=8)
    assert not torch.equal(first, other_seed[3].features)


def test_each_rank_takes_its_share_of_every_batch() -> None:
    batches = [[0, 1, 2, 3, 4], [5], [6, 7]]
    cpu = torch.device("cpu")
    shares = [list(PlannedBatchSampler(batches, Ranks(cpu, rank, 2))) for rank in (0, 1)]
    assert shares == [[[0, 2, 4], [5], [6]], [[1, 3], [5], [7]]]
    # validation: every rank runs every batch whole
    assert list(PlannedBatchSampler(batches, Ranks(cpu, 1, 2), share=False)) == batches
    assert len(PlannedBatchSampler(batches)) == 3


@pytest.mark.parametrize(
    "params, message",
    [
        ({"workers": -1, "prefetch_batches": 2}, "workers >= 0"),
        ({"workers": 1, "prefetch_batches": 0}, "prefetch_batches >= 1"),
        ({"workers": 1}, "prefetch_batches"),
        ({"workers": 1, "prefetch_batches": 2, "pin": True}, "pin"),
    ],
)
def test_loader_settings_are_checked(params, message) -> None:
    with pytest.raises(ValueError, match=message):
        LoaderSettings.from_params(params)


TINY = ModelConfig.from_dict(
    {**PARAMS["training"]["presets"]["default"], "n_features": FEATURES.n_features,
     "cnn_channels": 8, "rnn_dim": 32, "n_rnn_layers": 1}
)  # fmt: skip
NO_WORKERS = LoaderSettings(workers=0, prefetch_batches=2)


def _figures(parts, ranks: Ranks) -> tuple[dict[str, float], int]:
    """The validation figures of a seeded untrained model, and how many batches this rank ran."""
    index, store, stats = parts
    torch.manual_seed(0)
    model = build_acoustic_model(TINY)
    validator = Validator(UtteranceDataset(index, store, stats), 300, ranks, NO_WORKERS)
    assert len(validator.batches) >= 4, "too few validation batches to share"
    calls = 0
    original = validation.batch_loss

    def counted(*args):
        nonlocal calls
        calls += 1
        return original(*args)

    validation.batch_loss = counted
    try:
        return validator(model), calls
    finally:
        validation.batch_loss = original


def _rank_worker(rank: int, parts, port: int, out_dir: str) -> None:
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE="2")
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        figures, calls = _figures(parts, Ranks(torch.device("cpu"), rank, 2))
        Path(out_dir, f"rank{rank}.json").write_text(json.dumps([figures, calls]))
    finally:
        dist.destroy_process_group()


def test_two_ranks_share_validation_and_agree_with_one_process(dataset_parts, tmp_path) -> None:
    alone, alone_calls = _figures(dataset_parts, Ranks(torch.device("cpu")))
    torch.multiprocessing.spawn(
        _rank_worker, args=(dataset_parts, free_port(), str(tmp_path)), nprocs=2, join=True
    )
    ranks = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in (0, 1)]
    # each rank decodes half of the batches ...
    assert [calls for _, calls in ranks] == [(alone_calls + 1) // 2, alone_calls // 2]
    # ... and every rank reports what one process does, to the last bit
    assert ranks[0][0] == ranks[1][0] == alone
    assert 0 < alone["val_cer"] <= 1
