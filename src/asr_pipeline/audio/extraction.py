"""Parallel feature extraction: audio files -> feature tensors, in worker processes.

Each worker runs one torch thread (on a small machine, several single-threaded workers beat one
multi-threaded process for per-utterance work) and builds its transform once.
"""

from __future__ import annotations

import hashlib
import itertools
import multiprocessing
import os
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from dataclasses import dataclass

import torch
import torchaudio.functional as AF

from asr_pipeline.audio.features import FeatureConfig, FeatureExtractor
from asr_pipeline.audio.identity import audio_identity
from asr_pipeline.audio.loading import AudioError, load_audio

_worker_extractor: FeatureExtractor | None = None
# chunks submitted to the pool per worker and not yet handed on: enough to keep every worker busy
# while the parent saves, few enough that memory does not grow with the corpus
IN_FLIGHT_PER_WORKER = 2


@dataclass(frozen=True)
class ExtractionJob:
    key: str
    path: str
    duration_s: float
    speed: float = 1.0


@dataclass
class ExtractionResult:
    key: str
    path: str
    duration_s: float
    features: torch.Tensor | None
    error: str = ""


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


def _run_jobs(jobs: Sequence[ExtractionJob]) -> list[ExtractionResult]:
    assert _worker_extractor is not None, "worker not initialised"
    results = []
    for job in jobs:
        try:
            features = compute_features(job.path, _worker_extractor, job.speed)
            results.append(ExtractionResult(job.key, job.path, job.duration_s, features))
        except (AudioError, RuntimeError) as error:
            results.append(ExtractionResult(job.key, job.path, job.duration_s, None, str(error)))
    return results


def extract_in_workers(
    jobs: Sequence[ExtractionJob], config: FeatureConfig, workers: int | None, chunk_size: int
) -> Iterator[list[ExtractionResult]]:
    """Results of ``jobs`` chunk by chunk, in order, computed by ``workers`` processes."""
    workers = workers or os.cpu_count() or 1
    chunks = [jobs[i : i + chunk_size] for i in range(0, len(jobs), chunk_size)]
    if workers == 1:
        threads = torch.get_num_threads()
        _init_worker(config)
        try:
            yield from map(_run_jobs, chunks)
        finally:
            torch.set_num_threads(threads)
        return
    pool = extraction_pool(config, workers)
    try:
        yield from bounded_map(pool, chunks, in_flight=IN_FLIGHT_PER_WORKER * workers)
    finally:  # on an error or Ctrl-C, drop the chunks not started instead of waiting for them
        pool.shutdown(wait=True, cancel_futures=True)


def extraction_pool(config: FeatureConfig, workers: int) -> ProcessPoolExecutor:
    """``workers`` processes, each with its feature extractor and one torch thread."""
    # fork starts workers in milliseconds; torch resets its thread pool in forked children.
    context = multiprocessing.get_context("fork" if os.name == "posix" else "spawn")
    return ProcessPoolExecutor(
        workers, mp_context=context, initializer=_init_worker, initargs=(config,)
    )


def bounded_map(
    pool: Executor, chunks: Sequence[Sequence[ExtractionJob]], in_flight: int
) -> Iterator[list[ExtractionResult]]:
    """The results of each chunk, in order, computed by ``pool`` (of :func:`extraction_pool`)
    with at most ``in_flight`` chunks submitted and not yet handed on. ``pool.map`` would submit
    every chunk at once: when the consumer (the store writing to disk) falls behind, finished
    features would pile up in memory, as many as the corpus has."""
    pending: deque[Future[list[ExtractionResult]]] = deque()
    remaining = iter(chunks)
    for chunk in itertools.islice(remaining, in_flight):
        pending.append(pool.submit(_run_jobs, chunk))
    while pending:
        results = pending.popleft().result()
        for chunk in itertools.islice(remaining, 1):
            pending.append(pool.submit(_run_jobs, chunk))
        yield results
