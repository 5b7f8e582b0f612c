"""Word frequencies of general text, read from the ``wordfreq`` package's data (read-only).

The transcripts of a few hours of audio hold a few thousand words; about a fifth of the words of
unseen LibriSpeech speakers are not among them, and a lexicon beam search cannot spell those. A
frequency list of general text lets the language model know common words it has never seen in a
transcript. ``wordfreq`` ships its lists inside the package (nothing is downloaded at run time);
any other source with the same two columns (a ``pandas.CSVDataset`` of your own corpus's counts,
say) can replace this entry in the catalog.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
from kedro.io import AbstractDataset, DatasetError


class WordFrequencyDataset(AbstractDataset[None, pd.DataFrame]):
    """A table ``word, frequency`` (most frequent first) of one ``wordfreq`` language."""

    def __init__(
        self, language: str = "en", wordlist: str = "best", metadata: dict[str, Any] | None = None
    ) -> None:
        self._language = language
        self._wordlist = wordlist
        self.metadata = metadata

    def load(self) -> pd.DataFrame:
        import wordfreq

        try:
            frequencies = wordfreq.get_frequency_dict(self._language, wordlist=self._wordlist)
        except (LookupError, ValueError) as error:
            raise DatasetError(
                f"wordfreq has no {self._wordlist!r} word list for language {self._language!r}: "
                f"{error}"
            ) from error
        finally:
            # wordfreq memoises every list it reads for the process's lifetime (~28 MB for
            # English), which training would carry: the table below is the copy that is used.
            wordfreq.get_frequency_dict.cache_clear()
            wordfreq.get_frequency_list.cache_clear()
        table = pd.DataFrame(list(frequencies.items()), columns=["word", "frequency"])
        return table.sort_values(["frequency", "word"], ascending=[False, True], ignore_index=True)

    def save(self, data: pd.DataFrame) -> None:
        raise DatasetError("word frequencies come from the wordfreq package and are read-only")

    def _exists(self) -> bool:
        return True

    def _describe(self) -> dict[str, Any]:
        return {"language": self._language, "wordlist": self._wordlist}
