"""A folder of per-utterance feature tensors, loaded lazily and memory-mapped.

Saving only adds files that are not there yet (each written to a temporary name, then renamed), so
the folder doubles as a cache: keys encode the audio file and the feature parameters, and extraction
skips the keys already present. Loading returns a mapping that opens a tensor only when asked, so
memory does not grow with the number of utterances.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
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


class FeatureStoreDataset(AbstractDataset[Mapping[str, torch.Tensor], FeatureStore]):
    """Kedro dataset over a :class:`FeatureStore` folder; ``save`` may be called once per chunk."""

    def __init__(self, path: str, metadata: dict[str, Any] | None = None) -> None:
        self._path = Path(path)
        self.metadata = metadata

    def load(self) -> FeatureStore:
        return FeatureStore(self._path)

    def save(self, data: Mapping[str, torch.Tensor]) -> None:
        self._path.mkdir(parents=True, exist_ok=True)  # the store exists even when empty
        for key, tensor in data.items():
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
