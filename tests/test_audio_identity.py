"""The audio part of a feature cache key: a FLAC file's digest of its samples, else its size."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf

from asr_pipeline.audio.identity import audio_identity


def _a_flac(librispeech_root: Path) -> Path:
    return sorted((librispeech_root / "train-clean-100").glob("*/*/*.flac"))[0]


def test_the_same_samples_are_the_same_audio_however_encoded(
    librispeech_root: Path, tmp_path: Path
) -> None:
    original = _a_flac(librispeech_root)
    samples, rate = sf.read(original, dtype="int16")
    recoded = tmp_path / "recoded.flac"  # another compression level: other bytes, same samples
    sf.write(recoded, samples, rate, subtype="PCM_16", compression_level=1.0)
    assert recoded.read_bytes() != original.read_bytes()
    identity = audio_identity(original)
    assert identity.startswith("flac-md5:") and audio_identity(recoded) == identity
    edited = samples.copy()
    edited[len(edited) // 2] += 1  # one sample, one step: the file keeps its size
    changed = tmp_path / "changed.flac"
    sf.write(changed, edited, rate, subtype="PCM_16", compression_level=1.0)
    assert audio_identity(changed) != identity


def test_other_formats_and_flac_without_a_digest_are_known_by_their_size(
    librispeech_root: Path, tmp_path: Path
) -> None:
    samples, rate = sf.read(_a_flac(librispeech_root), dtype="int16")
    wav = tmp_path / "a.wav"
    sf.write(wav, samples, rate)
    assert audio_identity(wav) == f"size:{wav.stat().st_size}"
    no_digest = tmp_path / "no-digest.flac"
    data = bytearray(_a_flac(librispeech_root).read_bytes())
    data[26:42] = bytes(16)  # STREAMINFO's MD5 left at zero, as an encoder that skips it writes
    no_digest.write_bytes(bytes(data))
    assert audio_identity(no_digest) == f"size:{len(data)}"
    empty = tmp_path / "empty.flac"
    empty.write_bytes(b"")
    assert audio_identity(empty) == "size:0"
    noise = tmp_path / "noise.flac"
    noise.write_bytes(np.random.default_rng(0).bytes(100))
    assert audio_identity(noise) == "size:100"
