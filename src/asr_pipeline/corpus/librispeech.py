"""Reading a LibriSpeech-layout folder: ``<subset>/<speaker>/<chapter>/<utterance>.<ext>``.

Each chapter folder holds ``<speaker>-<chapter>.trans.txt`` with one ``<utterance-id> <TEXT>``
line per utterance. Only file headers are read (``soundfile.info``, and a one-frame seek to the end
to catch truncation), so that scanning hours of audio takes seconds.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import soundfile as sf

from asr_pipeline.audio.loading import AudioError, AudioInfo, read_info
from asr_pipeline.common.quiet import quiet_c_stderr

logger = logging.getLogger(__name__)

UTTERANCE_ID = re.compile(r"^(\d+)-(\d+)-(\d+)$")
# The ``librispeech`` parameters (conf/base/parameters.yml): where the corpus is, and how a missing
# subset is fetched (downloaded, or mirrored from object storage). Read by the data_engineering
# pipeline and by the inference pipeline, each of which refuses any other key, so that a misspelt
# setting fails the run instead of being ignored. Only ``root`` is always needed: the CLI's
# ``asr-transcribe`` gives that alone, and the others matter only when a subset is fetched.
LIBRISPEECH_SETTINGS = frozenset({"root", "download", "base_url", "mirror_dir"})
LIBRISPEECH_REQUIRED = frozenset({"root"})


class AudioIssue(StrEnum):
    """Why an audio file cannot be used; the values are the data-quality report's issue names."""

    EMPTY = "empty_audio"  # no bytes, or a header that promises no samples
    UNREADABLE = "unreadable_audio"  # no header libsndfile can parse
    TRUNCATED = "truncated_audio"  # fewer samples (or a broken stream) than the header promises


@dataclass
class ScannedUtterance:
    """One utterance as found on disk: its transcript line and/or its audio header."""

    utterance_id: str
    subset: str
    speaker_id: int
    chapter_id: int
    path: str | None
    transcript: str | None
    sample_rate: int = 0
    channels: int = 0
    num_samples: int = 0
    audio_format: str = ""
    # An AudioIssue value ("" when the audio is fine) and what exactly was found.
    audio_issue: str = ""
    audio_error: str = ""


def parse_utterance_id(utterance_id: str) -> tuple[int, int]:
    """``"1089-134686-0000"`` -> ``(1089, 134686)``; raises ``ValueError`` on anything else."""
    match = UTTERANCE_ID.match(utterance_id)
    if not match:
        raise ValueError(
            f"{utterance_id!r} is not a LibriSpeech utterance id (speaker-chapter-utterance)"
        )
    return int(match.group(1)), int(match.group(2))


def read_transcripts(path: Path) -> dict[str, str]:
    """Utterance id -> raw transcript of one ``*.trans.txt`` file."""
    transcripts = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            utterance_id, _, text = line.strip().partition(" ")
            transcripts[utterance_id] = text.strip()
    return transcripts


def check_audio(path: Path) -> tuple[AudioInfo | None, AudioIssue | None, str]:
    """Header of ``path``, what is wrong with its audio (``None``: nothing) and in what words.

    The issue is a code for programs (the data-quality report counts and filters by it); the text
    is for people and may change with the audio library's messages.
    """
    if path.stat().st_size == 0:
        return None, AudioIssue.EMPTY, "empty file (0 bytes)"
    try:
        info = read_info(path)
    except AudioError as error:
        return None, AudioIssue.UNREADABLE, str(error)
    if info.num_samples == 0:
        return info, AudioIssue.EMPTY, "no audio samples"
    try:
        # The header promises num_samples; a truncated file cannot deliver the last one.
        with quiet_c_stderr(), sf.SoundFile(str(path)) as sound:
            sound.seek(info.num_samples - 1)
            if len(sound.read(1)) != 1:
                return info, AudioIssue.TRUNCATED, "truncated: fewer samples than the header says"
    except Exception as error:  # libsndfile raises RuntimeError/LibsndfileError for broken streams
        return info, AudioIssue.TRUNCATED, f"truncated or corrupt: {error}"
    return info, None, ""


def _chapter_folders(subset_dir: Path) -> Iterator[Path]:
    yield from sorted(p for p in subset_dir.glob("*/*") if p.is_dir())


def scan_subset(root: Path, subset: str, extensions: Sequence[str]) -> Iterator[ScannedUtterance]:
    """Every utterance of one subset, pairing transcript lines with audio files by id."""
    subset_dir = root / subset
    if not subset_dir.is_dir():
        raise FileNotFoundError(f"LibriSpeech subset {subset!r} not found at {subset_dir}")
    suffixes = {f".{ext.lower().lstrip('.')}" for ext in extensions}
    for chapter_dir in _chapter_folders(subset_dir):
        transcripts: dict[str, str] = {}
        for trans_file in sorted(chapter_dir.glob("*.trans.txt")):
            transcripts.update(read_transcripts(trans_file))
        audio = {p.stem: p for p in sorted(chapter_dir.iterdir()) if p.suffix.lower() in suffixes}
        for utterance_id in sorted(set(transcripts) | set(audio)):
            try:
                speaker_id, chapter_id = parse_utterance_id(utterance_id)
            except ValueError:
                logger.warning("Skipping %s in %s: not a LibriSpeech id", utterance_id, chapter_dir)
                continue
            item = ScannedUtterance(
                utterance_id=utterance_id,
                subset=subset,
                speaker_id=speaker_id,
                chapter_id=chapter_id,
                path=str(audio[utterance_id].resolve()) if utterance_id in audio else None,
                transcript=transcripts.get(utterance_id),
            )
            if item.path is not None:
                info, issue, item.audio_error = check_audio(Path(item.path))
                item.audio_issue = issue.value if issue else ""
                if info is not None:
                    item.sample_rate = info.sample_rate
                    item.channels = info.channels
                    item.num_samples = info.num_samples
                    item.audio_format = info.format
            yield item


def scan(root: Path, subsets: Iterable[str], extensions: Sequence[str]) -> list[ScannedUtterance]:
    """All utterances of ``subsets`` under ``root``."""
    return [item for subset in subsets for item in scan_subset(root, subset, extensions)]


def find_utterance(root: Path, utterance_id: str, extensions: Sequence[str]) -> Path:
    """Audio file of a LibriSpeech utterance id in any subset under ``root``."""
    speaker_id, chapter_id = parse_utterance_id(utterance_id)
    for ext in extensions:
        matches = sorted(root.glob(f"*/{speaker_id}/{chapter_id}/{utterance_id}.{ext}"))
        if matches:
            return matches[0]
    raise FileNotFoundError(f"utterance {utterance_id} not found under {root}")


def find_transcript(audio_path: Path) -> str | None:
    """Raw transcript of the utterance whose audio is ``audio_path`` (None when there is none)."""
    speaker_id, chapter_id = parse_utterance_id(audio_path.stem)
    trans_file = audio_path.parent / f"{speaker_id}-{chapter_id}.trans.txt"
    if not trans_file.exists():
        return None
    return read_transcripts(trans_file).get(audio_path.stem)
