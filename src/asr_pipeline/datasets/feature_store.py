"""The feature store as Kedro datasets: a folder of safetensors shards
(:mod:`asr_pipeline.audio.shards`), loaded lazily, written by extraction workers.

The folder doubles as a cache: keys encode the audio's identity and the feature parameters, the
extraction node plans only the keys the store lacks, and saving a mapping adds only new keys.

``save`` takes what the extraction node returns, an :class:`ExtractionPlan`: its worker processes
compute the features and write their own shards, so a long extraction is one Kedro save (one log
line), the parent process never holds features, and a crash keeps every shard already written. It
also takes a mapping of key -> tensor (one shard) or any iterable of such mappings (one shard
each), for features computed elsewhere.

Entries nobody asks for any more (audio that left the corpus, other feature parameters) are
removed through :class:`StaleFeaturesDataset`, the same folder seen as what to delete, so that the
maintenance pipeline's node stays a pure function that only names them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from kedro.io import AbstractDataset

from asr_pipeline.audio.extraction import ExtractionPlan, extract_shards
from asr_pipeline.audio.shards import ShardedFeatures, remove_keys, write_shard
from asr_pipeline.common.atomic import TEMPORARY_PREFIX
from asr_pipeline.common.progress import progress_bar

logger = logging.getLogger(__name__)

Saved = ExtractionPlan | Mapping[str, torch.Tensor] | Iterable[Mapping[str, torch.Tensor]]


class FeatureStoreDataset(AbstractDataset[Saved, ShardedFeatures]):
    """Kedro dataset over a folder of feature shards."""

    def __init__(self, path: str, metadata: dict[str, Any] | None = None) -> None:
        self._path = Path(path)
        self.metadata = metadata

    def load(self) -> ShardedFeatures:
        return ShardedFeatures(self._path)

    def save(self, data: Saved) -> None:
        self._path.mkdir(parents=True, exist_ok=True)  # the store exists even when empty
        if isinstance(data, ExtractionPlan):
            self._extract(data)
            return
        present = set(ShardedFeatures(self._path))
        for chunk in [data] if isinstance(data, Mapping) else data:
            new = {key: tensor for key, tensor in chunk.items() if key not in present}
            write_shard(self._path, new)
            present.update(new)

    def _extract(self, plan: ExtractionPlan) -> None:
        """Run the plan's workers with a progress bar (in audio-seconds) and one closing line."""
        if not plan.jobs:
            return
        computed = failed = 0
        with progress_bar(
            total=round(sum(job.duration_s for job in plan.jobs), 1),
            unit="audio-s",
            desc="features",
            unit_scale=True,
        ) as progress:
            for shard in extract_shards(plan, self._path):
                for path, error in shard.failures:
                    logger.error("Feature extraction failed for %s: %s", path, error)
                computed += len(shard.keys)
                failed += len(shard.failures)
                progress.update(min(shard.audio_s, progress.total - progress.n))  # float sums drift
        logger.info("Features: computed %d, %d failed (left out)", computed, failed)

    def _exists(self) -> bool:
        return self._path.is_dir()

    def _describe(self) -> dict[str, Any]:
        return {"path": str(self._path)}


class StaleFeaturesDataset(AbstractDataset[list[str], list[str]]):
    """A feature store seen as what to remove from it: ``save(keys)`` removes those keys (shards
    that keep other keys are written again without them), and temporary files a crashed writer
    left behind (older than ``temporary_max_age_s``, so that a writer at work keeps its own);
    ``load`` gives the keys present."""

    def __init__(
        self,
        path: str,
        temporary_max_age_s: float = 3600.0,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        self._path = Path(path)
        self._temporary_max_age_s = temporary_max_age_s
        self.metadata = metadata

    def load(self) -> list[str]:
        return list(ShardedFeatures(self._path))

    def save(self, data: list[str]) -> None:
        if not self._path.is_dir():
            return
        remove_keys(self._path, data)
        oldest = time.time() - self._temporary_max_age_s
        for leftover in self._path.rglob(f"{TEMPORARY_PREFIX}*"):
            if leftover.stat().st_mtime < oldest:
                leftover.unlink(missing_ok=True)

    def _describe(self) -> dict[str, Any]:
        return {"path": str(self._path)}
