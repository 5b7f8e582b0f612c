"""A CMU Sphinx binary n-gram LM, read-only: by default the general-English 3-gram LM that the
``pocketsphinx`` wheel ships (``en-us.lm.bin``, BSD licence, as pocketsphinx).

The beam search reads it as its word LM when ``beam_search.lm_source`` is ``general``
(:func:`asr_pipeline.pipelines.language_model.nodes.build_word_lm`). Another LM in Sphinx's trie
format (``sphinx_lm_convert`` writes it) takes its place with ``filepath`` in the catalog.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kedro.io import AbstractDataset, DatasetError

from asr_pipeline.decoding.sphinx_lm import SphinxLM, SphinxLMError, read_sphinx_lm


def pocketsphinx_lm() -> Path:
    """The path of ``en-us.lm.bin`` inside the installed ``pocketsphinx`` package."""
    import pocketsphinx

    return Path(pocketsphinx.get_model_path()) / "en-us" / "en-us.lm.bin"


class SphinxLMDataset(AbstractDataset[None, SphinxLM]):
    """The LM's n-grams in arrays (:class:`asr_pipeline.decoding.sphinx_lm.SphinxLM`); its
    ``arpa()`` gives the ARPA text the beam search loads."""

    def __init__(self, filepath: str | None = None, metadata: dict[str, Any] | None = None) -> None:
        self._filepath = filepath
        self.metadata = metadata

    def _path(self) -> Path:
        return Path(self._filepath) if self._filepath else pocketsphinx_lm()

    def load(self) -> SphinxLM:
        path = self._path()
        if not path.is_file():
            raise DatasetError(f"Sphinx language model {path} not found")
        try:
            return read_sphinx_lm(path)
        except SphinxLMError as error:
            raise DatasetError(str(error)) from error

    def save(self, data: SphinxLM) -> None:
        raise DatasetError("the Sphinx language model is read-only")

    def _exists(self) -> bool:
        return self._path().is_file()

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._path())}
