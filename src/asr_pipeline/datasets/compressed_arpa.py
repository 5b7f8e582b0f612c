"""The beam search's word LM on disk: a gzip-compressed ARPA file (``word_lm.arpa.gz``).

kedro-datasets' ``TextDataset`` holds the whole text as one string (100 MB for the general-English
LM, copied again on every read and write); this dataset hands the compressed bytes on as they are
(:class:`asr_pipeline.decoding.compressed_arpa.CompressedArpa`). ``zcat`` reads the file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kedro.io import AbstractDataset, DatasetError

from asr_pipeline.common.atomic import atomic_write_bytes
from asr_pipeline.decoding.compressed_arpa import CompressedArpa


class CompressedArpaDataset(AbstractDataset[CompressedArpa, CompressedArpa]):
    """A ``.arpa.gz`` file, loaded and saved as :class:`CompressedArpa` (atomically)."""

    def __init__(self, filepath: str, metadata: dict[str, Any] | None = None) -> None:
        self._filepath = Path(filepath)
        self.metadata = metadata

    def load(self) -> CompressedArpa:
        if not self._filepath.exists():
            raise DatasetError(f"{self._filepath} does not exist: run the language_model pipeline")
        data = self._filepath.read_bytes()
        if data[:2] != b"\x1f\x8b":  # gzip's magic number
            raise DatasetError(f"{self._filepath} is not gzip-compressed (an ARPA LM .arpa.gz)")
        return CompressedArpa(data)

    def save(self, data: CompressedArpa) -> None:
        if not isinstance(data, CompressedArpa):
            raise DatasetError(f"expected a CompressedArpa, got {type(data).__name__}")
        atomic_write_bytes(data.data, self._filepath)

    def _exists(self) -> bool:
        return self._filepath.exists()

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath)}
