"""Parallel feature extraction: audio files -> feature shards, written by worker processes.

Each worker runs one torch thread (on a small machine, several single-threaded workers beat one
multi-threaded process for per-utterance work), builds its transform once, and writes the shards
it computes itself: the parent only hands out work and collects the keys written, so its memory
does not depend on the corpus, and a bounded number of shards is in flight at any time.
"""

from __future__ import annotations

import hashlib
import itertools
import multiprocessing
import os
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TypeVar

import torch
import torchaudio.functional as AF

from asr_pipeline.audio.features import FeatureConfig, FeatureExtractor
from asr_pipeline.audio.identity import audio_identity
from asr_pipeline.audio.loading import AudioError, load_audio
from asr_pipeline.audio.shards import write_shard

T = TypeVar("T")
R = TypeVar("R")

_worker_extractor: FeatureExtractor | None = None
# shards submitted to the pool per worker and not yet handed on: enough to keep every worker busy,
# few enough that the work in flight does not grow with the corpus
IN_FLIGHT_PER_WORKER = 2
# a small extraction still gets this many shards per worker, so that every worker has some
SHARDS_PER_WORKER = 4


@dataclass(frozen=True)
class ExtractionJob:
    key: str
    path: str
    duration_s: float
    speed: float = 1.0


@dataclass(frozen=True)
class ExtractionPlan:
    """What to extract, and how: the jobs, their features, the worker processes (None: one per
    core) and the size a shard aims at. Data only: the feature store carries it out."""

    jobs: tuple[ExtractionJob, ...]
    config: FeatureConfig
    workers: int | None
    shard_mb: float


@dataclass(frozen=True)
class ShardResult:
    """What a worker hands back for one shard: the keys it wrote, the files that failed
    (path, error) and the audio it covered. Never the tensors: the worker wrote them."""

    keys: tuple[str, ...]
    failures: tuple[tuple[str, str], ...]
    audio_s: float


def cache_key(utterance_id: str, path: str, config: FeatureConfig, speed: float = 1.0) -> str:
    """Key of an utterance's features: its identity and its audio's (:func:`audio_identity`: a
    FLAC file's MD5 of its samples, else its size), the parameters and the speed perturbation.

    Not the file's path or modification time: a moved project, a second clone or a fresh mirror of
    the same corpus (new paths, new times) finds its features again instead of extracting them
    all anew.
    """
    payload = f"{utterance_id}|{audio_identity(path)}|{config.fingerprint()}"
    if speed != 1.0:
        payload += f"|speed={speed:g}"
    return f"{utterance_id}.{hashlib.sha1(payload.encode()).hexdigest()[:16]}"


def perturb_speed(signal: torch.Tensor, sample_rate: int, speed: float) -> torch.Tensor:
    """The signal played ``speed`` times faster, pitch and tempo together (sox ``speed``).

    Speed perturbation (Ko et al., 2015) makes new voices and speaking rates from the same
    transcripts, which is what a few hours of training audio lack most.
    """
    if speed == 1.0:
        return signal
    return AF.speed(signal, sample_rate, speed)[0]


def compute_features(path: str, extractor: FeatureExtractor, speed: float = 1.0) -> torch.Tensor:
    """float16 ``(n_features, frames)`` features of one audio file (as serving computes them),
    optionally of its speed-perturbed version (training only)."""
    signal = load_audio(path, extractor.config.sample_rate)
    signal = perturb_speed(signal, extractor.config.sample_rate, speed)
    return extractor(signal).to(torch.float16)


def _init_worker(config: FeatureConfig) -> None:
    global _worker_extractor
    torch.set_num_threads(1)
    _worker_extractor = FeatureExtractor(config)


def plan_shards(
    jobs: Sequence[ExtractionJob], config: FeatureConfig, shard_mb: float, workers: int
) -> list[list[ExtractionJob]]:
    """The jobs in shards of about ``shard_mb`` of features each (float16, estimated from the
    audio's duration), in the jobs' order (neighbours in the manifest, read together later,
    share a shard); smaller where that leaves a worker without work."""
    sizes = [
        config.num_frames(round(job.duration_s * config.sample_rate)) * config.n_features * 2
        for job in jobs
    ]
    target = min(shard_mb * 2**20, sum(sizes) / (SHARDS_PER_WORKER * workers))
    shards: list[list[ExtractionJob]] = [[]]
    filled = 0.0
    for job, size in zip(jobs, sizes, strict=True):
        if shards[-1] and filled + size > target:
            shards.append([])
            filled = 0.0
        shards[-1].append(job)
        filled += size
    return [shard for shard in shards if shard]


def _extract_shard(jobs: Sequence[ExtractionJob], root: str) -> ShardResult:
    """In a worker: compute the jobs' features and write them as one shard under ``root``."""
    assert _worker_extractor is not None, "worker not initialised"
    tensors, failures = {}, []
    for job in jobs:
        try:
            tensors[job.key] = compute_features(job.path, _worker_extractor, job.speed)
        except (AudioError, RuntimeError) as error:
            failures.append((job.path, str(error)))
    write_shard(Path(root), tensors)
    return ShardResult(tuple(tensors), tuple(failures), sum(job.duration_s for job in jobs))


def extract_shards(plan: ExtractionPlan, root: Path) -> Iterator[ShardResult]:
    """Carry out ``plan``: worker processes compute and write shards under ``root``, at most
    :data:`IN_FLIGHT_PER_WORKER` shards each submitted ahead; one result per shard, in order."""
    workers = plan.workers or os.cpu_count() or 1
    shards = plan_shards(plan.jobs, plan.config, plan.shard_mb, workers)
    if workers == 1:
        threads = torch.get_num_threads()
        _init_worker(plan.config)
        try:
            for jobs in shards:
                yield _extract_shard(jobs, str(root))
        finally:
            torch.set_num_threads(threads)
        return
    pool = extraction_pool(plan.config, workers)
    try:
        yield from bounded_map(
            pool, partial(_extract_shard, root=str(root)), shards, IN_FLIGHT_PER_WORKER * workers
        )
    finally:  # on an error or Ctrl-C, drop the shards not started instead of waiting for them
        pool.shutdown(wait=True, cancel_futures=True)


def extraction_pool(config: FeatureConfig, workers: int) -> ProcessPoolExecutor:
    """``workers`` processes, each with its feature extractor and one torch thread."""
    # fork starts workers in milliseconds; torch resets its thread pool in forked children.
    context = multiprocessing.get_context("fork" if os.name == "posix" else "spawn")
    return ProcessPoolExecutor(
        workers, mp_context=context, initializer=_init_worker, initargs=(config,)
    )


def bounded_map(
    pool: Executor, function: Callable[[T], R], items: Sequence[T], in_flight: int
) -> Iterator[R]:
    """``function`` of each item, in order, computed by ``pool`` with at most ``in_flight`` items
    submitted and not yet handed on. ``pool.map`` would submit every item at once: results the
    consumer has not taken yet would pile up, as many as the corpus has shards."""
    pending: deque[Future[R]] = deque()
    remaining = iter(items)
    for item in itertools.islice(remaining, in_flight):
        pending.append(pool.submit(function, item))
    while pending:
        result = pending.popleft().result()
        for item in itertools.islice(remaining, 1):
            pending.append(pool.submit(function, item))
        yield result
