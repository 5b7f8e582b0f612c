"""What an audio file holds, in a few bytes read from it: the part of a feature cache key that
follows the audio's content, not where the file lies or when it was copied.

A FLAC file's STREAMINFO block carries the MD5 of its decoded samples (the encoder computes it;
LibriSpeech's files have it): two files with the same digest hold the same audio, whatever their
path, modification time or compression level, and any edit of the samples changes it. Reading
it takes 42 bytes. No audio library exposes the digest (soundfile, torchaudio), hence this small
reader of the format's fixed header (https://xiph.org/flac/format.html#metadata_block_streaminfo).
Other formats (and FLAC files written without a digest) are identified by their size: hashing
their content would read the whole corpus at every run.
"""

from __future__ import annotations

from pathlib import Path

_FLAC_MAGIC = b"fLaC"
# "fLaC", then the first metadata block's 4-byte header; STREAMINFO (always first) is 34 bytes,
# the last 16 of them the MD5 of the unencoded audio
_MD5_START, _MD5_END = 4 + 4 + 18, 4 + 4 + 34
_STREAMINFO = 0


def audio_identity(path: str | Path) -> str:
    """``flac-md5:<hex>`` for a FLAC file with its digest, else ``size:<bytes>``."""
    with open(path, "rb") as file:
        head = file.read(_MD5_END)
    is_flac = head[:4] == _FLAC_MAGIC and len(head) == _MD5_END
    if is_flac and head[4] & 0x7F == _STREAMINFO:
        digest = head[_MD5_START:_MD5_END]
        if any(digest):  # all zeros: written without a digest
            return f"flac-md5:{digest.hex()}"
    return f"size:{Path(path).stat().st_size}"
