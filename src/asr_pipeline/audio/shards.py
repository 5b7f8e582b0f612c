"""A feature store of safetensors shards: many utterances per file, a bounded number of files per
folder, every shard written whole or not at all.

Layout under the store's root::

    shards/<ab>/<abcdef0123456789>.safetensors    ab = the first two characters of the name

A shard holds each utterance's ``(n_features, frames)`` tensor under its feature key, and two
float64 ``(utterances, n_features)`` tensors, ``__sum__`` and ``__sumsq__``: per-utterance sums of
the stored values and of their squares, taken while extracting, so that normalisation statistics
and frame counts come from the shards' headers and these sums instead of another pass over every
tensor. Its metadata lists the keys in the order of those rows.

Why safetensors: a documented header (dtype, shape and byte range of each tensor) readable without
loading anything else, no pickle, float16 kept as is. Reading one utterance is one ``pread`` of its
byte range (no memory map: mapped pages would count in the training process's memory). The names
come from the keys a shard holds, so a shard never changes once written and the store needs no
index file of its own: loading reads the headers. Writes go to a temporary name that readers skip,
then a rename, so a crash loses only the shards being written.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import struct
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save as safetensors_bytes

from asr_pipeline.common.atomic import TEMPORARY_PREFIX

logger = logging.getLogger(__name__)

FORMAT = "asr-feature-shards/1"
SUFFIX = ".safetensors"
SUMS, SQUARES = "__sum__", "__sumsq__"
_DTYPES = {
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "F32": torch.float32,
    "F64": torch.float64,
}


def utterance_sums(features: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """float64 per-coefficient sums of ``(n_features, frames)`` features and of their squares.

    Added frame after frame (a running sum): the same figures in any process, with any number of
    threads and any memory alignment, so sums an extraction worker took equal those taken later
    from the same tensor. (Vectorised and threaded reductions, numpy's and torch's, can differ in
    the last bit between two such calls.)
    """
    values = features.to(torch.float64)
    sums = values.cumsum(dim=1)[:, -1]
    squares = (values * values).cumsum(dim=1)[:, -1]
    return sums.numpy(), squares.numpy()


def shard_name(keys: Iterable[str]) -> str:
    """A shard's name, from the keys it holds: the same features always make the same file."""
    return hashlib.sha1("\n".join(sorted(keys)).encode()).hexdigest()[:16]


def shard_path(root: Path, name: str) -> Path:
    return root / "shards" / name[:2] / f"{name}{SUFFIX}"


def write_shard(root: Path, tensors: Mapping[str, torch.Tensor]) -> Path | None:
    """Write ``tensors`` (key -> ``(n_features, frames)``) as one shard under ``root``: a temporary
    file, flushed to disk, then renamed. None when there is nothing to write."""
    if not tensors:
        return None
    keys = list(tensors)
    # each its own contiguous storage (a view would otherwise bring its base along)
    values = {
        key: t.detach().cpu().clone(memory_format=torch.contiguous_format)
        for key, t in tensors.items()
    }
    for key, value in values.items():
        if value.dim() != 2:
            raise ValueError(f"features must be (n_features, frames), got {tuple(value.shape)}")
        if key.startswith("__"):
            raise ValueError(f"feature keys must not start with '__': {key!r}")
    sums = [utterance_sums(value) for value in values.values()]
    values[SUMS] = torch.from_numpy(np.stack([s for s, _ in sums]))
    values[SQUARES] = torch.from_numpy(np.stack([q for _, q in sums]))
    payload = safetensors_bytes(values, metadata={"format": FORMAT, "keys": json.dumps(keys)})
    path = shard_path(root, shard_name(keys))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{TEMPORARY_PREFIX}{path.stem}-{os.getpid()}{SUFFIX}")
    try:
        with open(tmp, "wb") as file:
            file.write(payload)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def read_header(path: Path) -> tuple[dict, int]:
    """A shard's safetensors header and where its data begins (8-byte length, then JSON); a
    ValueError when the file is shorter than its header says (a copy cut short)."""
    size = path.stat().st_size
    with open(path, "rb") as file:
        start = file.read(8)
        if len(start) < 8:
            raise ValueError(f"{path} is not a feature shard (too short)")
        (length,) = struct.unpack("<Q", start)
        if 8 + length > size:
            raise ValueError(f"{path} is truncated (its header says more than the file holds)")
        header = json.loads(file.read(length))
    ranges = [v["data_offsets"] for k, v in header.items() if k != "__metadata__"]
    if 8 + length + max((end for _, end in ranges), default=0) > size:
        raise ValueError(f"{path} is truncated (its tensors end past the file)")
    return header, 8 + length


def _entries(path: Path) -> tuple[int, tuple[int, int, int, int], list[tuple]]:
    """Where a shard's data begins, the byte ranges of its sums, and per key (in the order of
    the sums' rows): key, dtype code, begin, end, n_features, frames. ValueError if malformed."""
    try:
        header, data_start = read_header(path)
        keys = json.loads(header["__metadata__"]["keys"])
        sums = (*header[SUMS]["data_offsets"], *header[SQUARES]["data_offsets"])
        entries = []
        for key in keys:
            entry = header[key]
            if entry["dtype"] not in _DTYPES or len(entry["shape"]) != 2:
                raise ValueError(f"unsupported tensor {key} in {path}: {entry}")
            begin, end = (data_start + offset for offset in entry["data_offsets"])
            code = list(_DTYPES).index(entry["dtype"])
            entries.append((key, code, begin, end, *entry["shape"]))
    except (KeyError, TypeError, struct.error, json.JSONDecodeError) as error:
        raise ValueError(f"{path} is not a readable feature shard: {error!r}") from error
    return data_start, sums, entries


def shard_files(root: Path) -> Iterator[Path]:
    """Every complete shard under ``root`` (temporary files of writers at work are skipped)."""
    folder = root / "shards"
    if not folder.is_dir():
        return
    for sub in sorted(folder.iterdir()):
        if sub.is_dir():
            yield from sorted(
                p for p in sub.iterdir() if p.suffix == SUFFIX and not p.name.startswith(".")
            )


def _read(path: Path, start: int, end: int) -> bytes:
    fd = os.open(path, os.O_RDONLY)
    try:
        data = os.pread(fd, end - start, start)
    finally:
        os.close(fd)
    if len(data) != end - start:
        raise ValueError(f"feature shard {path} is truncated")
    return data


class ShardedFeatures(Mapping[str, torch.Tensor]):
    """The store read-only: ``features[key]`` reads one tensor from its shard.

    Loading reads the shards' headers only; a shard that is malformed or shorter than its header
    says is skipped with a warning, so its keys count as missing and are extracted again. Where
    each key lies is held in numpy arrays (plus one dict from key to row), which forked
    DataLoader workers share. No file stays open: the mapping can be pickled into workers.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.shards: list[Path] = []
        self._shard_data: list[int] = []  # where each shard's tensor data begins
        self._sums: list[tuple[int, int, int, int]] = []  # byte ranges of __sum__ and __sumsq__
        rows: dict[str, int] = {}
        shard, begin, end, n_features, frames, position, dtypes = [], [], [], [], [], [], []
        for path in shard_files(root):
            try:
                data_start, sums, entries = _entries(path)
            except ValueError as error:
                logger.warning("Feature shard skipped, its keys to be extracted again: %s", error)
                continue
            number = len(self.shards)
            self.shards.append(path)
            self._shard_data.append(data_start)
            self._sums.append(sums)
            for place, (key, code, first, last, features, length) in enumerate(entries):
                if key in rows:  # written twice (two writers): the first copy serves
                    continue
                rows[key] = len(shard)
                shard.append(number)
                begin.append(first)
                end.append(last)
                n_features.append(features)
                frames.append(length)
                position.append(place)
                dtypes.append(code)
        self._rows = rows
        self._shard = np.asarray(shard, dtype=np.int32)
        self._begin = np.asarray(begin, dtype=np.int64)
        self._end = np.asarray(end, dtype=np.int64)
        self._n_features = np.asarray(n_features, dtype=np.int32)
        self._frames = np.asarray(frames, dtype=np.int64)
        self._position = np.asarray(position, dtype=np.int32)
        self._dtype = np.asarray(dtypes, dtype=np.int8)  # index into _DTYPES (float16 mostly)

    def __getitem__(self, key: str) -> torch.Tensor:
        row = self._rows.get(key)
        if row is None:
            raise KeyError(f"no features for {key!r} in {self.root}")
        data = _read(self.shards[self._shard[row]], int(self._begin[row]), int(self._end[row]))
        dtype = list(_DTYPES.values())[self._dtype[row]]
        shape = (int(self._n_features[row]), int(self._frames[row]))
        return torch.frombuffer(bytearray(data), dtype=dtype).view(shape)

    def __contains__(self, key: object) -> bool:
        return key in self._rows

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._rows))

    def __len__(self) -> int:
        return len(self._rows)

    def num_frames(self, keys: Sequence[str]) -> np.ndarray:
        """Frames of each key's features, from the headers: nothing is read."""
        return self._frames[[self._rows[key] for key in keys]]

    def sums(self, keys: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per-utterance sums, sums of squares ``(n, n_features)`` and frames ``(n,)`` of ``keys``,
        read from the sums each shard keeps (a few bytes per utterance, not its tensor)."""
        rows = np.asarray([self._rows[key] for key in keys], dtype=np.int64)
        n_features = int(self._n_features[rows[0]]) if len(rows) else 0
        sums = np.zeros((len(rows), n_features))
        squares = np.zeros((len(rows), n_features))
        for number in np.unique(self._shard[rows]):
            mine = np.flatnonzero(self._shard[rows] == number)
            path, start = self.shards[number], self._shard_data[number]
            sum_begin, sum_end, sq_begin, sq_end = self._sums[number]
            shape = (-1, n_features)
            shard_sums = np.frombuffer(_read(path, start + sum_begin, start + sum_end), "<f8")
            shard_squares = np.frombuffer(_read(path, start + sq_begin, start + sq_end), "<f8")
            positions = self._position[rows[mine]]
            sums[mine] = shard_sums.reshape(shape)[positions]
            squares[mine] = shard_squares.reshape(shape)[positions]
        return sums, squares, self._frames[rows]

    def shard_of(self, key: str) -> Path:
        return self.shards[self._shard[self._rows[key]]]


def remove_keys(root: Path, stale: Iterable[str]) -> None:
    """Remove ``stale`` keys from the store (every copy): a shard with nothing else goes; a shard
    that keeps some keys is written again with those (the new shard first, then the old one
    removed, so a crash in between leaves both copies, never neither)."""
    stale = set(stale)
    for path in list(shard_files(root)):
        try:
            keys = [entry[0] for entry in _entries(path)[2]]
        except ValueError:
            continue  # unreadable: ShardedFeatures skips it with a warning
        if stale.isdisjoint(keys):
            continue
        kept = [key for key in keys if key not in stale]
        if kept:
            with safe_open(path, framework="pt") as shard:
                write_shard(root, {key: shard.get_tensor(key) for key in kept})
        path.unlink(missing_ok=True)
