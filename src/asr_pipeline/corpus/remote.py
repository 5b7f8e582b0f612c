"""LibriSpeech in object storage: mirror the configured subsets of an fsspec URL to local disk.

``librispeech.root`` may be any fsspec URL (``s3://bucket/LibriSpeech``, ``gs://...``,
``memory://...``). Audio decoding and feature caching want local files, so each missing subset is
copied once into ``librispeech.mirror_dir`` (through a temporary folder, then a rename, so a broken
copy leaves nothing half-done) and the pipeline goes on from there.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

import fsspec

from asr_pipeline.corpus.download import subset_present

logger = logging.getLogger(__name__)


def is_remote(root: str) -> bool:
    """True for a URL with a protocol other than the local file system."""
    return "://" in root and not root.startswith("file://")


def mirror_subsets(url: str, subsets: Sequence[str], mirror_dir: str | Path) -> Path:
    """Local copy of ``subsets`` of the LibriSpeech folder at ``url``; returns the local root."""
    fs, remote_root = fsspec.core.url_to_fs(url)
    local_root = Path(mirror_dir) / hashlib.sha1(url.encode()).hexdigest()[:12]
    local_root.mkdir(parents=True, exist_ok=True)
    for subset in subsets:
        if subset_present(local_root, subset):
            continue
        source = f"{remote_root.rstrip('/')}/{subset}"
        if not fs.isdir(source):
            raise FileNotFoundError(f"LibriSpeech subset {subset!r} not found at {url}/{subset}")
        logger.info("Copying %s/%s to %s", url, subset, local_root)
        staging = Path(tempfile.mkdtemp(dir=local_root, prefix=".mirror-"))
        try:
            fs.get(source, str(staging / subset), recursive=True)
            shutil.rmtree(local_root / subset, ignore_errors=True)
            (staging / subset).rename(local_root / subset)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return local_root
