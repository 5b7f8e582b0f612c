"""An ARPA language model held gzip-compressed, never whole as text.

The general-English LM is 100 MB of ARPA text and 30 MB gzip-compressed. As a Python string it
was copied whole each time it was encoded, written, pickled into a model bundle or read back
(two copies at once on each of those steps), in every node that held it. KenLM reads an LM from a
file, so the text needs to exist only there: :meth:`CompressedArpa.write` streams it to disk and
:meth:`CompressedArpa.lines` reads it line by line. The bytes are a standard ``.arpa.gz`` file
(``zcat`` or KenLM's own tools read them) and Python's ``gzip`` does all the work.
"""

from __future__ import annotations

import gzip
import io
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

_CHUNK_CHARS = 1 << 22  # compress a few MB of text at a time
_READ_BYTES = 1 << 20
# what a damaged or cut gzip stream raises (BadGzipFile is an OSError; zlib.error is not)
_DAMAGED = (OSError, EOFError, zlib.error)
_LEVEL = 6  # zlib's default: 100 MB of ARPA in ~3 s, to 30 MB (level 1: 1 s, 35 MB)


@dataclass(frozen=True)
class CompressedArpa:
    """ARPA text, gzip-compressed (``data``: the bytes of a ``.arpa.gz`` file)."""

    data: bytes = field(repr=False)  # ~30 MB: never in a log line

    @classmethod
    def from_chunks(cls, chunks: Iterable[str]) -> CompressedArpa:
        """Compress ARPA text given in pieces (a writer's output, one piece at a time).

        ``mtime=0``: the same text gives the same bytes, so a bundle's digest stays reproducible.
        """
        buffer = io.BytesIO()
        with gzip.GzipFile(fileobj=buffer, mode="wb", compresslevel=_LEVEL, mtime=0) as packed:
            for chunk in chunks:
                packed.write(chunk.encode("utf-8"))
        return cls(buffer.getvalue())

    @classmethod
    def from_text(cls, text: str) -> CompressedArpa:
        """Compress ARPA text held as one string."""
        return cls.from_chunks(
            text[start : start + _CHUNK_CHARS] for start in range(0, len(text), _CHUNK_CHARS)
        )

    def _open(self, mode: str) -> io.IOBase:
        return gzip.open(io.BytesIO(self.data), mode, encoding="utf-8" if "t" in mode else None)

    def lines(self) -> Iterator[str]:
        """The text's lines (with their line ends), read as they are decompressed."""
        with self._open("rt") as text:
            try:
                yield from text
            except (*_DAMAGED, UnicodeDecodeError) as error:
                raise ValueError(f"damaged gzip-compressed ARPA LM: {error}") from None

    def write(self, path: str | Path) -> Path:
        """Decompress the LM into the ARPA file ``path`` (a few MB in memory at a time)."""
        path = Path(path)
        with self._open("rb") as source, path.open("wb") as target:
            while True:
                try:  # only reading: an error writing the file (a full disk) is not the LM's
                    piece = source.read(_READ_BYTES)
                except _DAMAGED as error:
                    raise ValueError(f"damaged gzip-compressed ARPA LM: {error}") from None
                if not piece:
                    return path
                target.write(piece)

    def text(self) -> str:
        """The whole ARPA text (for small LMs and tests: a large one is better written)."""
        return "".join(self.lines())

    def __len__(self) -> int:
        """Size of the compressed bytes."""
        return len(self.data)
