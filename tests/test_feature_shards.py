"""The sharded feature store: whole shards or none, sums that give the statistics, keys removed
shard by shard, and an extraction killed mid-way that loses only the shards in flight."""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from safetensors import safe_open

from asr_pipeline.audio.extraction import ExtractionJob, ExtractionPlan, compute_features
from asr_pipeline.audio.features import FeatureConfig, FeatureExtractor, RunningStats
from asr_pipeline.audio.shards import (
    ShardedFeatures,
    remove_keys,
    shard_files,
    utterance_sums,
    write_shard,
)
from asr_pipeline.datasets.feature_store import FeatureStoreDataset
from tests.support import PROJECT_ROOT, project_params

CONFIG = FeatureConfig.from_params(project_params("feature_engineering")["features"])


def random_features(count: int, seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {
        f"utt-{seed}-{i}": (torch.randn(8, 50 + 13 * i, generator=generator) * 3 + i).half()
        for i in range(count)
    }


def test_a_shard_holds_its_tensors_their_sums_and_nothing_half_written(tmp_path: Path) -> None:
    tensors = random_features(5)
    path = write_shard(tmp_path, tensors)
    assert path is not None and path.parent.parent == tmp_path / "shards"
    assert len(path.parent.name) == 2 and path.name.startswith(path.parent.name)
    assert write_shard(tmp_path, {}) is None
    assert not list(tmp_path.rglob(".tmp-*"))
    store = ShardedFeatures(tmp_path)
    assert sorted(store) == sorted(tensors)
    for key, tensor in tensors.items():
        assert torch.equal(store[key], tensor)
    keys = list(tensors)
    assert store.num_frames(keys).tolist() == [t.shape[1] for t in tensors.values()]
    sums, squares, frames = store.sums(keys[::-1])  # any order
    for row, key in enumerate(keys[::-1]):
        expected_sum, expected_squares = utterance_sums(tensors[key])
        np.testing.assert_array_equal(sums[row], expected_sum)
        np.testing.assert_array_equal(squares[row], expected_squares)
        assert frames[row] == tensors[key].shape[1]
    # readable by any safetensors reader, with its keys in the metadata
    with safe_open(path, framework="pt") as shard:
        assert json.loads(shard.metadata()["keys"]) == keys
        assert torch.equal(shard.get_tensor(keys[2]), tensors[keys[2]])
    # no open file inside: it travels to DataLoader workers
    copy = pickle.loads(pickle.dumps(store))
    assert torch.equal(copy[keys[1]], tensors[keys[1]])
    with pytest.raises(ValueError, match="n_features, frames"):
        write_shard(tmp_path, {"flat": torch.zeros(5)})


@pytest.mark.parametrize("utterance_mean", [False, True])
def test_statistics_from_the_stored_sums_equal_those_from_the_tensors(
    tmp_path: Path, utterance_mean: bool
) -> None:
    tensors = {**random_features(6, seed=1), **random_features(4, seed=2)}
    write_shard(tmp_path, dict(list(tensors.items())[:6]))
    write_shard(tmp_path, dict(list(tensors.items())[6:]))
    store = ShardedFeatures(tmp_path)
    from_sums = RunningStats(8)
    from_sums.add_sums(*store.sums(list(tensors)), centred=utterance_mean)
    direct = RunningStats(8)
    for tensor in tensors.values():
        values = tensor.double()
        direct.update(values - values.mean(dim=1, keepdim=True) if utterance_mean else values)
    got, want = from_sums.result(utterance_mean), direct.result(utterance_mean)
    assert got.frames == want.frames
    np.testing.assert_allclose(got.mean, want.mean, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(got.std, want.std, rtol=1e-9)


def test_removing_keys_rewrites_only_the_shards_that_held_them(tmp_path: Path) -> None:
    first, second, third = random_features(4, 3), random_features(3, 4), random_features(2, 5)
    for tensors in (first, second, third):
        write_shard(tmp_path, tensors)
    # a key written twice (two writers): both copies go
    twice = next(iter(first))
    write_shard(tmp_path, {twice: first[twice]})
    untouched = {p: p.stat().st_mtime_ns for p in shard_files(tmp_path)}
    gone = [twice, *list(second)]  # a key of the first shard, every key of the second
    remove_keys(tmp_path, gone)
    store = ShardedFeatures(tmp_path)
    everything = {**first, **second, **third}
    assert set(store) == set(everything) - set(gone)
    for key in store:
        assert torch.equal(store[key], everything[key])
    after = {p: p.stat().st_mtime_ns for p in shard_files(tmp_path)}
    assert len(after) == 2  # the first written again without the key, the third as it was
    assert {p: t for p, t in after.items() if p in untouched} == {
        p: t for p, t in untouched.items() if p in after
    }


CHILD = """
import sys, time
from pathlib import Path
import soundfile as sf
from asr_pipeline.audio import extraction
from asr_pipeline.audio.extraction import ExtractionJob, ExtractionPlan
from asr_pipeline.audio.features import FeatureConfig
from asr_pipeline.datasets.feature_store import FeatureStoreDataset
from tests.support import project_params

real = extraction.compute_features

def slow(*args, **kwargs):  # a long extraction, in a short test
    time.sleep(0.2)
    return real(*args, **kwargs)

extraction.compute_features = slow  # the forked workers inherit it
config = FeatureConfig.from_params(project_params("feature_engineering")["features"])
files = [Path(line) for line in Path(sys.argv[2]).read_text().split()]
jobs = tuple(ExtractionJob(f.stem, str(f), sf.info(str(f)).duration) for f in files)
FeatureStoreDataset(sys.argv[1]).save(ExtractionPlan(jobs, config, workers=2, shard_mb=0.3))
"""


def test_an_extraction_killed_mid_way_loses_only_the_shards_in_flight(
    librispeech_root: Path, tmp_path: Path
) -> None:
    files = sorted((librispeech_root / "train-clean-100").glob("*/*/*.flac"))[:40]
    listing = tmp_path / "files.txt"
    listing.write_text("\n".join(map(str, files)))
    store_dir = tmp_path / "store"
    script = tmp_path / "extract.py"
    script.write_text(textwrap.dedent(CHILD))
    child = subprocess.Popen(
        [sys.executable, str(script), str(store_dir), str(listing)],
        cwd=PROJECT_ROOT,
        env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)},
        start_new_session=True,  # its own process group: the workers die with it
    )
    try:
        deadline = time.monotonic() + 90
        while len(list(shard_files(store_dir))) < 2:
            assert child.poll() is None, "the extraction ended before it could be killed"
            assert time.monotonic() < deadline, "no shard written in 90 s"
            time.sleep(0.05)
    finally:
        os.killpg(child.pid, signal.SIGKILL)  # the parent and its workers, at once
        child.wait()
    assert child.returncode == -signal.SIGKILL

    survivors = list(shard_files(store_dir))
    store = ShardedFeatures(store_dir)
    assert 0 < len(store) < len(files)
    for path in survivors:  # every shard there is whole: each tensor reads in full
        with safe_open(path, framework="pt") as shard:
            for key in json.loads(shard.metadata()["keys"]):
                assert torch.equal(shard.get_tensor(key), store[key])

    # the next run computes what is missing, and only that
    jobs = tuple(ExtractionJob(f.stem, str(f), sf.info(str(f)).duration) for f in files)
    missing = tuple(job for job in jobs if job.key not in store)
    assert len(missing) == len(files) - len(store)
    dataset = FeatureStoreDataset(str(store_dir))
    dataset.save(ExtractionPlan(missing, CONFIG, workers=2, shard_mb=0.3))
    assert set(dataset.load()) == {job.key for job in jobs}
    assert set(survivors) <= set(shard_files(store_dir))  # what was written stays as it was
    extractor = FeatureExtractor(CONFIG)
    for job in (jobs[0], missing[-1]):
        assert torch.equal(dataset.load()[job.key], compute_features(job.path, extractor))
