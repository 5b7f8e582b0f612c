"""A pronunciation dictionary in the CMU format, read-only: by default the CMU Pronouncing
Dictionary that the ``pocketsphinx`` wheel ships (``cmudict-en-us.dict``, BSD licence).

Phone units read it (:mod:`asr_pipeline.units.phones`); the core never imports ``pocketsphinx``,
so another dictionary in the same format (``word PH O N E S`` per line, variants as ``word(2)``,
``;;;`` comments) takes its place with ``filepath`` in the catalog. (The ``cmudict`` package on
PyPI holds the same data, but its code is GPL-3.0: not used.)
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pandas as pd
from kedro.io import AbstractDataset, DatasetError

_VARIANT = re.compile(r"\(\d+\)$")


def pocketsphinx_dictionary() -> Path:
    """The path of ``cmudict-en-us.dict`` inside the installed ``pocketsphinx`` package."""
    import pocketsphinx

    return Path(pocketsphinx.get_model_path()) / "en-us" / "cmudict-en-us.dict"


class PronunciationDictionaryDataset(AbstractDataset[None, pd.DataFrame]):
    """A table ``word, pronunciation`` (phones separated by spaces), a row per variant, in the
    dictionary's order (a word's first row is its main pronunciation)."""

    def __init__(self, filepath: str | None = None, metadata: dict[str, Any] | None = None) -> None:
        self._filepath = filepath
        self.metadata = metadata

    def _path(self) -> Path:
        return Path(self._filepath) if self._filepath else pocketsphinx_dictionary()

    def load(self) -> pd.DataFrame:
        path = self._path()
        if not path.is_file():
            raise DatasetError(f"pronunciation dictionary {path} not found")
        rows = []
        with path.open(encoding="utf-8", errors="replace") as lines:
            for raw in lines:
                line = raw.split("#", 1)[0].strip()
                if not line or line.startswith(";;;"):
                    continue
                word, _, phones = line.partition(" ")
                if phones.strip():
                    rows.append((_VARIANT.sub("", word).lower(), " ".join(phones.split())))
        if not rows:
            raise DatasetError(f"{path} holds no pronunciation")
        return pd.DataFrame(rows, columns=["word", "pronunciation"])

    def save(self, data: pd.DataFrame) -> None:
        raise DatasetError("the pronunciation dictionary is read-only")

    def _exists(self) -> bool:
        return self._path().is_file()

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._path())}
