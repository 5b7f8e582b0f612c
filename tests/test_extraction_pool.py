"""The extraction pool keeps a bounded number of chunks in flight, whatever the corpus size, and
hands results on in the jobs' order."""

from __future__ import annotations

from concurrent.futures import Executor, Future
from pathlib import Path

import soundfile as sf

from asr_pipeline.audio.extraction import ExtractionJob, bounded_map, extraction_pool
from asr_pipeline.audio.features import FeatureConfig
from tests.support import project_params


class CountingExecutor(Executor):
    """An executor that counts the chunks submitted through it to the real pool."""

    def __init__(self, pool: Executor) -> None:
        self.pool, self.submitted = pool, 0

    def submit(self, fn, /, *args, **kwargs) -> Future:
        self.submitted += 1
        return self.pool.submit(fn, *args, **kwargs)


def test_at_most_in_flight_chunks_are_submitted_ahead_of_the_consumer(
    librispeech_root: Path,
) -> None:
    config = FeatureConfig.from_params(project_params("feature_engineering")["features"])
    files = sorted((librispeech_root / "train-clean-100").glob("*/*/*.flac"))[:8]
    jobs = [ExtractionJob(f.stem, str(f), sf.info(str(f)).duration) for f in files]
    chunks = [jobs[i : i + 1] for i in range(len(jobs))]
    with extraction_pool(config, workers=2) as real_pool:
        pool = CountingExecutor(real_pool)
        results = bounded_map(pool, chunks, in_flight=3)
        first = next(results)
        # three submitted at the start, one more for the chunk handed on: not all eight
        assert pool.submitted == 4
        rest = list(results)
        assert pool.submitted == len(chunks)
    keys = [result.key for chunk in [first, *rest] for result in chunk]
    assert keys == [job.key for job in jobs]
    assert all(result.features is not None for chunk in [first, *rest] for result in chunk)
