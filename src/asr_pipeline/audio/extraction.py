"""Parallel feature extraction: audio files -> feature tensors, in worker processes.

Each worker runs one torch thread (on a small machine, several single-threaded workers beat one
multi-threaded process for per-utterance work) and builds its transform once.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import torch
import torchaudio.functional as AF

from asr_pipeline.audio.features import FeatureConfig, FeatureExtractor
from asr_pipeline.audio.loading import AudioError, load_audio

_worker_extractor: FeatureExtractor | None = None


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
    """Key of an utterance's features: changes with the file (size, mtime), the parameters and
    the speed perturbation."""
    stat = Path(path).stat()
    payload = f"{path}|{stat.st_size}|{stat.st_mtime_ns}|{config.fingerprint()}"
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
    # fork starts workers in milliseconds; torch resets its thread pool in forked children.
    context = multiprocessing.get_context("fork" if os.name == "posix" else "spawn")
    pool = ProcessPoolExecutor(
        workers, mp_context=context, initializer=_init_worker, initargs=(config,)
    )
    try:
        yield from pool.map(_run_jobs, chunks)
    finally:  # on an error or Ctrl-C, drop the chunks not started instead of waiting for them
        pool.shutdown(wait=True, cancel_futures=True)
