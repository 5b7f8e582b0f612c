"""The extraction pool keeps a bounded number of shards in flight, whatever the corpus size, hands
results on in order, and its workers write the shards themselves: the parent gets keys back."""

from __future__ import annotations

from concurrent.futures import Executor, Future
from functools import partial
from pathlib import Path

import soundfile as sf

from asr_pipeline.audio import extraction
from asr_pipeline.audio.extraction import ExtractionJob, bounded_map, extraction_pool, plan_shards
from asr_pipeline.audio.features import FeatureConfig
from asr_pipeline.audio.shards import ShardedFeatures
from tests.support import project_params

CONFIG = FeatureConfig.from_params(project_params("feature_engineering")["features"])


class CountingExecutor(Executor):
    """An executor that counts the shards submitted through it to the real pool."""

    def __init__(self, pool: Executor) -> None:
        self.pool, self.submitted = pool, 0

    def submit(self, fn, /, *args, **kwargs) -> Future:
        self.submitted += 1
        return self.pool.submit(fn, *args, **kwargs)


def jobs_of(librispeech_root: Path, count: int) -> list[ExtractionJob]:
    files = sorted((librispeech_root / "train-clean-100").glob("*/*/*.flac"))[:count]
    return [ExtractionJob(f.stem, str(f), sf.info(str(f)).duration) for f in files]


def test_at_most_in_flight_shards_are_submitted_ahead_of_the_consumer(
    librispeech_root: Path, tmp_path: Path
) -> None:
    jobs = jobs_of(librispeech_root, 8)
    shards = [jobs[i : i + 1] for i in range(len(jobs))]
    work = partial(extraction._extract_shard, root=str(tmp_path))
    with extraction_pool(CONFIG, workers=2) as real_pool:
        pool = CountingExecutor(real_pool)
        results = bounded_map(pool, work, shards, in_flight=3)
        first = next(results)
        # three submitted at the start, one more for the shard handed on: not all eight
        assert pool.submitted == 4
        rest = list(results)
        assert pool.submitted == len(shards)
    keys = [key for result in [first, *rest] for key in result.keys]
    assert keys == [job.key for job in jobs]
    assert all(not result.failures for result in [first, *rest])
    assert set(ShardedFeatures(tmp_path)) == set(keys)  # written by the workers


def float16_mb(job: ExtractionJob) -> float:
    frames = CONFIG.num_frames(round(job.duration_s * CONFIG.sample_rate))
    return frames * CONFIG.n_features * 2 / 2**20


def test_shards_follow_the_size_asked_for_and_give_every_worker_work(
    librispeech_root: Path,
) -> None:
    jobs = jobs_of(librispeech_root, 40)
    for shard_mb, workers in ((0.5, 1), (64.0, 2), (64.0, 1)):
        shards = plan_shards(jobs, CONFIG, shard_mb, workers)
        assert [job for shard in shards for job in shard] == jobs  # all, once, in order
        mb = [sum(float16_mb(job) for job in shard) for shard in shards]
        if shard_mb == 0.5:  # full shards: none over the size unless it is one utterance
            assert len(shards) > 8
            pairs = zip(mb, shards, strict=True)
            assert all(size <= 0.5 or len(shard) == 1 for size, shard in pairs)
            assert all(a + float16_mb(b[0]) > 0.5 for a, b in zip(mb, shards[1:], strict=False))
        else:  # a small corpus: about four shards per worker instead of one large one
            assert 4 * workers <= len(shards) <= 8 * workers
