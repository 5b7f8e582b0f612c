"""Cutting long recordings at pauses, so that no segment splits a word.

The recognizer runs its model one segment at a time, so memory stays flat for hours of audio;
cutting every N seconds at fixed points split words and lost them. Here a segment ends in a pause:
a stretch of at least ``min_silence_seconds`` whose frames are ``silence_db`` below the
recording's speech level (the 95th percentile of its 10 ms frame log-energies, so that the
threshold follows the recording's gain). Segments last at most ``max_seconds``; when no pause
lies within that limit, the cut goes to the quietest 100 ms near the limit. A recording whose
noise floor is less than ``silence_db`` below its speech has no such pauses: every cut is then
the quietest point near the limit (still rather between words than inside one).

Why energy and not a neural VAD: the ``silero-vad`` wheel (which ships its model) is not installed
in this project, and adding it would add a dependency (and an ONNX/JIT model) to the served
model's requirements for what a level threshold does well on read and dictated speech. Energy
needs nothing but torch, is deterministic, and costs one pass over the samples (a float per
10 ms frame: under 2 MB of energies for an hour). A pause is only a cut candidate; the cut is
placed in its middle, so a threshold that takes a soft consonant for silence still has to
find a long enough run of such frames.

The settings have no defaults here: they are ``inference.segmentation`` in
``conf/base/parameters_inference.yml``; :data:`DEFAULT_SEGMENTATION` is that YAML's value for
callers without conf (the served model), kept equal to it by a test.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

import torch

from asr_pipeline.common.settings import check_settings

FRAME_SECONDS = 0.01  # energy frames: 10 ms, as the model's feature hop
_SPEECH_PERCENTILE = 0.95  # the recording's speech level
_QUIET_WINDOW_SECONDS = 0.1  # the quietest point is the quietest 100 ms, not a single frame
_FALLBACK_SPAN = 0.2  # without a pause, look for the quietest point in the last 20 % of the limit
_BLOCK_FRAMES = 6_000  # energies computed a minute of audio at a time (bounded memory)


@dataclass(frozen=True)
class SegmentationConfig:
    """``inference.segmentation``: how long recordings are cut (see the module docstring)."""

    max_seconds: float
    min_silence_seconds: float
    silence_db: float

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> SegmentationConfig:
        """Unknown or missing keys are refused, so that a misspelt setting fails the run."""
        names = {f.name for f in fields(cls)}
        check_settings("inference.segmentation", params, known=names, required=names)
        config = cls(**{k: float(v) for k, v in params.items()})
        if config.max_seconds <= 0 or config.min_silence_seconds <= 0 or config.silence_db <= 0:
            raise ValueError(f"inference.segmentation settings must be positive: {params}")
        return config

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


# conf/base/parameters_inference.yml's inference.segmentation (tests/test_segmentation.py checks)
DEFAULT_SEGMENTATION = SegmentationConfig(
    max_seconds=15.0, min_silence_seconds=0.3, silence_db=30.0
)


def frame_energies_db(signal: torch.Tensor, sample_rate: int) -> torch.Tensor:
    """Log-energy (dB) of each 10 ms frame of a mono signal, computed block by block."""
    hop = max(int(sample_rate * FRAME_SECONDS), 1)
    n = max(len(signal) // hop, 1)
    padded = signal if len(signal) >= n * hop else torch.nn.functional.pad(signal, (0, hop))
    energies = torch.empty(n)
    for first in range(0, n, _BLOCK_FRAMES):
        last = min(first + _BLOCK_FRAMES, n)
        block = padded[first * hop : last * hop].reshape(last - first, hop).double()
        energies[first:last] = (10 * torch.log10(block.pow(2).mean(dim=1) + 1e-10)).float()
    return energies


def _pauses(silent: torch.Tensor, min_frames: int) -> list[tuple[int, int]]:
    """Runs ``[start, end)`` of silent frames at least ``min_frames`` long."""
    padded = torch.cat([torch.tensor([False]), silent, torch.tensor([False])]).int()
    edges = padded.diff()
    starts = (edges == 1).nonzero().flatten().tolist()
    ends = (edges == -1).nonzero().flatten().tolist()
    return [(s, e) for s, e in zip(starts, ends, strict=True) if e - s >= min_frames]


def _quietest(energies: torch.Tensor, first: int, last: int) -> int:
    """The frame in ``[first, last)`` at the middle of the quietest 100 ms (a mean over
    neighbouring frames, so that one quiet frame inside a word does not win)."""
    width = max(round(_QUIET_WINDOW_SECONDS / FRAME_SECONDS), 1)
    low, high = max(first - width // 2, 0), min(last + width // 2, len(energies))
    sums = torch.cat([torch.zeros(1, dtype=torch.float64), energies[low:high].double().cumsum(0)])
    best, best_mean = first, float("inf")
    for frame in range(first, last):
        a, b = max(frame - width // 2, low) - low, min(frame + width // 2 + 1, high) - low
        mean = float(sums[b] - sums[a]) / max(b - a, 1)
        if mean < best_mean:
            best, best_mean = frame, mean
    return best


def _cut_in(start: int, limit: int, pauses: list[tuple[int, int]], energies: torch.Tensor) -> int:
    """The cut frame of the segment that starts at frame ``start`` and may not pass ``limit``:
    the middle of the longest pause in the segment's second half, else of its latest pause,
    else the quietest point in the last fifth of the limit.

    A pause that began before ``start`` is the one the previous cut was made in: its rest is no
    candidate (cutting there again would only make a segment of silence).
    """
    inside = [
        (min(end, limit) - begin, (begin + min(end, limit)) // 2)
        for begin, end in pauses
        if start < begin < limit
    ]
    half = start + (limit - start) // 2
    late = [pause for pause in inside if pause[1] >= half]
    if late:
        return max(late)[1]
    if inside:
        return max(inside, key=lambda pause: pause[1])[1]
    return _quietest(energies, max(start + 1, limit - int((limit - start) * _FALLBACK_SPAN)), limit)


def cut_points(signal: torch.Tensor, sample_rate: int, config: SegmentationConfig) -> list[int]:
    """Sample indices where ``signal`` is cut (none when it fits in one segment)."""
    max_samples = int(config.max_seconds * sample_rate)
    if len(signal) <= max_samples:
        return []
    energies = frame_energies_db(signal, sample_rate)
    # kthvalue, not quantile: torch.quantile refuses inputs of more than 2**24 values
    level = energies.kthvalue(max(int(len(energies) * _SPEECH_PERCENTILE), 1)).values.item()
    silent = energies < level - config.silence_db
    pauses = _pauses(silent, max(round(config.min_silence_seconds / FRAME_SECONDS), 1))
    hop = max(int(sample_rate * FRAME_SECONDS), 1)
    max_frames = max(max_samples // hop, 1)  # whole frames: no segment passes the limit
    cuts, start = [], 0
    while len(signal) - start * hop > max_samples:
        start = _cut_in(start, start + max_frames, pauses, energies)
        cuts.append(start * hop)
    return cuts


def segment_bounds(
    signal: torch.Tensor, sample_rate: int, config: SegmentationConfig
) -> list[tuple[int, int]]:
    """``[start, end)`` sample bounds of the segments of ``signal``, in order, covering it."""
    edges = [0, *cut_points(signal, sample_rate, config), len(signal)]
    return list(zip(edges, edges[1:], strict=False))
