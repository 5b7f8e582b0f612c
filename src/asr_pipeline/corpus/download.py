"""Fetch missing LibriSpeech subsets from OpenSLR, verify them and extract them atomically.

Users who already have LibriSpeech never touch this module: a subset that is present under the
configured root is used as-is. For everyone else it downloads ``<subset>.tar.gz``, checks the
published digest while streaming (so a truncated or tampered archive is never extracted), then
extracts into a hidden temporary folder inside the root and renames the subset into place. The
rename is atomic on one filesystem, so a crash or a failed check never leaves a half-written subset
that a later run would mistake for a complete one.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import re
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import BinaryIO

from asr_pipeline.common.progress import progress_bar

logger = logging.getLogger(__name__)


class DownloadError(RuntimeError):
    """A subset is missing and could not (or may not) be fetched, verified or extracted."""


# subset -> (OpenSLR resource number, digest of <subset>.tar.gz as published/pinned upstream).
# A 64-hex digest is SHA-256, a 32-hex digest is MD5 (OpenSLR itself only publishes md5sum.txt).
# Resource 12: SHA-256 values from torchaudio, pytorch/audio torchaudio/datasets/librispeech.py
# (`_CHECKSUMS`).
# Resource 31 (Mini LibriSpeech): OpenSLR's md5sum.txt lists MD5 6d7ab67ac6a1d2c993d050e16d61080d
# (dev-clean-2) and 5df7d4e78065366204ca6845bb08f490 (train-clean-5), quoted by many public data
# scripts (e.g. PaddlePaddle DeepSpeech's Mini LibriSpeech script). The SHA-256 values below are
# pinned by several independent public projects that check those official MD5s alongside them.
OPENSLR_SUBSETS: dict[str, tuple[int, str]] = {
    "dev-clean-2": (31, "176ec501490eced2d6c1f89f4f0ddc7dfe799e649e5322f8ba49fe3ff50c8012"),
    "train-clean-5": (31, "47805806c8b15f7549f3c51bd6b7da72ec0128a34d32830c8014a88658c0292d"),
    "dev-clean": (12, "76f87d090650617fca0cac8f88b9416e0ebf80350acb97b343a85fa903728ab3"),
    "dev-other": (12, "12661c48e8c3fe1de2c1caa4c3e135193bfb1811584f11f569dd12645aa84365"),
    "test-clean": (12, "39fde525e59672dc6d1551919b1478f724438a95aa55f874b576be21967e6c23"),
    "test-other": (12, "d09c181bba5cf717b3dee7d4d592af11a3ee3a09e08ae025c5506f6ebe961c29"),
    "train-clean-100": (12, "d4ddd1d5a6ab303066f14971d768ee43278a5f2a0aa43dc716b0e64ecbbbf6e2"),
    "train-clean-360": (12, "146a56496217e96c14334a160df97fffedd6e0a04e66b9c5af0d40be3c792ecf"),
    "train-other-500": (12, "ddb22f27f96ec163645d53215559df6aa36515f26e01dd70798188350adcb6d2"),
}

# Subsets only known through `checksums` are looked up in the main LibriSpeech resource.
_DEFAULT_RESOURCE = 12
# Corpus-level documentation shipped next to the subsets in every OpenSLR tarball.
_TOP_LEVEL_FILES = ("README.TXT", "SPEAKERS.TXT", "CHAPTERS.TXT", "BOOKS.TXT", "LICENSE.TXT")
_CHUNK_BYTES = 1 << 20
# Subset names become path components and URL parts: refuse anything that could escape them.
_SUBSET_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_HEX = re.compile(r"[0-9a-fA-F]+")


def subset_present(root: Path, subset: str) -> bool:
    """True when root/<subset> is a directory with at least one *.trans.txt inside (any depth).

    Transcripts are the last thing a usable subset needs, so their presence is the cheapest
    reliable sign that the folder is not an empty or unrelated directory.
    """
    folder = Path(root) / subset
    if not folder.is_dir():
        return False
    return next(folder.rglob("*.trans.txt"), None) is not None


def ensure_subsets(
    root: str | Path,
    subsets: Sequence[str],
    *,
    download: bool,
    base_url: str,
    checksums: Mapping[str, str] | None = None,
    timeout_s: float = 60.0,
) -> list[str]:
    """Make sure every subset is under `root` (the folder that contains `train-clean-100/` etc.).

    Returns the subsets that were downloaded (empty when everything was already there), so callers
    can log or track what changed. Missing subsets with ``download=False`` raise DownloadError
    that says where we looked and how to point the pipeline at an existing copy. ``checksums``
    overrides the digests of OPENSLR_SUBSETS (sha256 hex; 32-hex md5 is accepted too).
    """
    root_path = Path(root).expanduser()
    wanted = list(dict.fromkeys(subsets))
    missing = [s for s in wanted if not subset_present(root_path, s)]
    if not missing:
        return []

    if not download:
        raise DownloadError(_missing_message(root_path, missing, base_url))

    plans = [(s, *_resolve(s, checksums)) for s in missing]
    for subset, _, _ in plans:
        _check_target_free(root_path, subset)

    root_path.mkdir(parents=True, exist_ok=True)
    downloaded: list[str] = []
    for subset, resource, digest in plans:
        url = f"{base_url.rstrip('/')}/{resource}/{subset}.tar.gz"
        _download_and_extract(root_path, subset, url, digest, timeout_s)
        downloaded.append(subset)
    return downloaded


def _missing_message(root: Path, missing: Sequence[str], base_url: str) -> str:
    """Explain the three ways out, because this is the first error a new user is likely to see."""
    looked = ", ".join(str(root.resolve() / s) for s in missing)
    return (
        f"LibriSpeech subset(s) {', '.join(missing)} not found: looked for {looked} "
        "(a folder containing *.trans.txt files). If you already have LibriSpeech, set "
        "LIBRISPEECH_DIR to the folder that contains the subset folders (e.g. "
        "/data/LibriSpeech) or run with `--params librispeech.root=/data/LibriSpeech`. "
        f"Setting `librispeech.download: true` would fetch the missing subset(s) from "
        f"{base_url.rstrip('/')} instead."
    )


def _resolve(subset: str, checksums: Mapping[str, str] | None) -> tuple[int, str]:
    """Find the OpenSLR resource and expected digest, refusing names we cannot verify."""
    if not _SUBSET_NAME.fullmatch(subset):
        raise DownloadError(f"Invalid LibriSpeech subset name {subset!r}.")
    overrides = checksums or {}
    if subset not in OPENSLR_SUBSETS and subset not in overrides:
        known = ", ".join(OPENSLR_SUBSETS)
        raise DownloadError(
            f"Unknown LibriSpeech subset {subset!r}: no OpenSLR resource or checksum is known for "
            f"it, so it cannot be downloaded. Known subsets: {known}."
        )
    resource, digest = OPENSLR_SUBSETS.get(subset, (_DEFAULT_RESOURCE, ""))
    digest = overrides.get(subset, digest).strip().lower()
    _hash_name(subset, digest)  # validate early, before any network traffic
    return resource, digest


def _hash_name(subset: str, digest: str) -> str:
    """Pick the hash algorithm from the digest length (64 hex = sha256, 32 hex = md5)."""
    if _HEX.fullmatch(digest):
        if len(digest) == 64:
            return "sha256"
        if len(digest) == 32:
            return "md5"
    raise DownloadError(
        f"Checksum for {subset!r} must be a sha256 (64 hex) or md5 (32 hex) digest, got {digest!r}."
    )


def _check_target_free(root: Path, subset: str) -> None:
    """Never overwrite a folder we did not create: it may be the user's own (partial) data."""
    target = root / subset
    if not (target.exists() or target.is_symlink()):
        return
    if target.is_dir() and not target.is_symlink() and not any(target.iterdir()):
        return  # an empty folder carries no data; it is replaced by the extracted subset
    raise DownloadError(
        f"{target} exists but is not a complete LibriSpeech subset (no *.trans.txt inside). "
        "Move or delete it so that the subset can be downloaded, or point librispeech.root "
        "at a complete copy."
    )


def _download_and_extract(root: Path, subset: str, url: str, digest: str, timeout_s: float) -> None:
    """Download, verify and install one subset; leaves nothing behind in `root` on failure."""
    logger.info("Downloading %s (%s) into %s", subset, url, root)
    fd, name = tempfile.mkstemp(dir=root, prefix=f".download-{subset}-", suffix=".tar.gz")
    archive = Path(name)
    extract_dir: Path | None = None
    try:
        with os.fdopen(fd, "wb") as sink:
            actual = _stream(url, sink, subset, _hash_name(subset, digest), timeout_s)
        if actual != digest:
            raise DownloadError(
                f"checksum mismatch for {subset} downloaded from {url}: expected {digest}, "
                f"got {actual}. The archive was deleted; retry, or check base_url/mirror."
            )
        logger.info("Verified checksum of %s (%s)", subset, actual)
        extract_dir = Path(tempfile.mkdtemp(dir=root, prefix=".extract-"))
        _extract(archive, extract_dir, subset, url)
        _install(extract_dir / "LibriSpeech", root, subset, url)
        logger.info("Extracted %s to %s", subset, root / subset)
    finally:
        archive.unlink(missing_ok=True)
        if extract_dir is not None:
            shutil.rmtree(extract_dir, ignore_errors=True)


def _stream(url: str, sink: BinaryIO, subset: str, hash_name: str, timeout_s: float) -> str:
    """Copy the response into `sink`, hashing on the fly; detect truncated transfers."""
    hasher = hashlib.new(hash_name)
    received = 0
    expected_len: int | None = None
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            length = response.headers.get("Content-Length")
            expected_len = int(length) if length and length.isdigit() else None
            with progress_bar(
                total=expected_len, unit="B", unit_scale=True, unit_divisor=1024, desc=subset
            ) as bar:
                while chunk := response.read(_CHUNK_BYTES):
                    hasher.update(chunk)
                    sink.write(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
    except urllib.error.HTTPError as exc:
        raise DownloadError(
            f"Download of {subset} from {url} failed: HTTP {exc.code} {exc.reason}."
        ) from exc
    except urllib.error.URLError as exc:
        raise DownloadError(
            f"Could not connect to {url} to download {subset}: {exc.reason}. "
            "Check the network or librispeech.base_url."
        ) from exc
    except (TimeoutError, ConnectionError, http.client.HTTPException, OSError) as exc:
        raise DownloadError(
            f"Download of {subset} from {url} was interrupted after {received} bytes: {exc!r}."
        ) from exc
    if expected_len is not None and received != expected_len:
        raise DownloadError(
            f"Download of {subset} from {url} was interrupted: received {received} of "
            f"{expected_len} bytes (connection closed early)."
        )
    return hasher.hexdigest()


def _extract(archive: Path, dest: Path, subset: str, url: str) -> None:
    """Extract with the "data" filter, which refuses path traversal, links out and devices."""
    try:
        with tarfile.open(archive, "r:gz") as tar:
            tar.extractall(dest, filter="data")
    except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
        raise DownloadError(f"Could not extract {subset} archive from {url}: {exc}") from exc


def _install(source_root: Path, root: Path, subset: str, url: str) -> None:
    """Rename the extracted subset into place and add missing corpus-level documentation."""
    if not subset_present(source_root, subset):
        raise DownloadError(
            f"The archive from {url} has no LibriSpeech/{subset}/ folder with transcripts; "
            "it is not the expected OpenSLR tarball."
        )
    target = root / subset
    try:
        if target.is_dir() and not any(target.iterdir()):
            target.rmdir()
        os.replace(source_root / subset, target)
    except OSError as exc:
        if subset_present(root, subset):  # a concurrent run installed it first: that is fine
            logger.info("%s was installed concurrently; keeping the existing copy", subset)
            return
        raise DownloadError(f"Could not move {subset} into {target}: {exc}") from exc
    for name in _TOP_LEVEL_FILES:
        src = source_root / name
        if src.is_file() and not (root / name).exists():
            os.replace(src, root / name)
