"""A folder of per-utterance feature tensors, loaded lazily and memory-mapped.

Saving only adds files that are not there yet (each written to a temporary name, then renamed), so
the folder doubles as a cache: keys encode the audio file and the feature parameters, and extraction
skips the keys already present. Loading returns a mapping that opens a tensor only when asked, so
memory does not grow with the number of utterances.

``save`` takes one chunk (a mapping) or a stream of chunks (any iterable of mappings, e.g. the
iterator the extraction node returns): each chunk is written as soon as the stream produces it, so
a long extraction is one Kedro save (one log line) with flat memory, and a crash keeps the chunks
already written.

Entries nobody asks for any more (audio that left the corpus, other feature parameters) are
removed through :class:`StaleFeaturesDataset`, the same folder seen as what to delete, so that the
maintenance pipeline's node stays a pure function that only names them.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from kedro.io import AbstractDataset

from asr_pipeline.common.atomic import TEMPORARY_PREFIX, atomic_torch_save

SUFFIX = ".pt"


class FeatureStore(Mapping[str, torch.Tensor]):
    """Read-only view of a feature folder: ``store[key]`` memory-maps one tensor."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._keys = (
            {
                p.name[: -len(SUFFIX)]
                for p in path.iterdir()
                if p.name.endswith(SUFFIX) and not p.name.startswith(TEMPORARY_PREFIX)
            }
            if path.is_dir()
            else set()
        )

    def __getitem__(self, key: str) -> torch.Tensor:
        if key not in self._keys:
            raise KeyError(f"no features for {key!r} in {self.path}")
        return torch.load(self.path / f"{key}{SUFFIX}", weights_only=True, mmap=True)

    def __contains__(self, key: object) -> bool:
        return key in self._keys

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._keys))

    def __len__(self) -> int:
        return len(self._keys)


Chunks = Mapping[str, torch.Tensor] | Iterable[Mapping[str, torch.Tensor]]


class FeatureStoreDataset(AbstractDataset[Chunks, FeatureStore]):
    """Kedro dataset over a :class:`FeatureStore` folder; saves a chunk or a stream of chunks."""

    def __init__(self, path: str, metadata: dict[str, Any] | None = None) -> None:
        self._path = Path(path)
        self.metadata = metadata

    def load(self) -> FeatureStore:
        return FeatureStore(self._path)

    def save(self, data: Chunks) -> None:
        self._path.mkdir(parents=True, exist_ok=True)  # the store exists even when empty
        for chunk in [data] if isinstance(data, Mapping) else data:
            self._save_chunk(chunk)

    def _save_chunk(self, chunk: Mapping[str, torch.Tensor]) -> None:
        for key, tensor in chunk.items():
            target = self._path / f"{key}{SUFFIX}"
            if target.exists():
                continue
            values = tensor.contiguous()
            if values.storage_offset() or values.untyped_storage().nbytes() != values.nbytes:
                values = values.clone()  # a view: save its own values, not the base storage
            atomic_torch_save(values, target)

    def _exists(self) -> bool:
        return self._path.is_dir()

    def _describe(self) -> dict[str, Any]:
        return {"path": str(self._path)}


class StaleFeaturesDataset(AbstractDataset[list[str], list[str]]):
    """A feature folder seen as what to remove from it: ``save(keys)`` deletes those keys' files,
    and temporary files a crashed writer left behind (older than ``temporary_max_age_s``, so that
    a writer at work keeps its own); ``load`` gives the keys present."""

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
        return list(FeatureStore(self._path))

    def save(self, data: list[str]) -> None:
        for key in data:
            (self._path / f"{key}{SUFFIX}").unlink(missing_ok=True)
        if not self._path.is_dir():
            return
        oldest = time.time() - self._temporary_max_age_s
        for leftover in self._path.glob(f"{TEMPORARY_PREFIX}*"):
            if leftover.stat().st_mtime < oldest:
                leftover.unlink(missing_ok=True)

    def _describe(self) -> dict[str, Any]:
        return {"path": str(self._path)}
