"""Cutting long recordings at pauses, on signals whose pauses are known to the sample."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from asr_pipeline.audio import segmentation
from asr_pipeline.audio.segmentation import (
    DEFAULT_SEGMENTATION,
    SegmentationConfig,
    cut_points,
    frame_energies_db,
    segment_bounds,
)
from tests.support import project_params

RATE = 16_000


def test_the_default_is_conf_bases_and_the_settings_are_checked() -> None:
    conf = project_params("inference")["inference"]["segmentation"]
    assert SegmentationConfig.from_params(conf) == DEFAULT_SEGMENTATION
    assert DEFAULT_SEGMENTATION.to_dict() == conf
    with pytest.raises(
        ValueError, match=r"unknown inference.segmentation setting\(s\) \['max_s'\]"
    ):
        SegmentationConfig.from_params({**conf, "max_s": 3})
    with pytest.raises(ValueError, match=r"missing inference.segmentation setting\(s\)"):
        SegmentationConfig.from_params({"max_seconds": 3})
    with pytest.raises(ValueError, match="must be positive"):
        SegmentationConfig.from_params({**conf, "max_seconds": 0})


def _speech_like(seed: int, seconds: float) -> tuple[torch.Tensor, list[tuple[float, float]]]:
    """Noise "words" (0.2-0.9 s, 60-150 ms apart, in phrases of 1-8 words) and "pauses" between
    phrases (0.4-0.9 s) over a noise floor 50 dB lower; the pauses' bounds in seconds."""
    rng = np.random.default_rng(seed)
    pieces: list[np.ndarray] = []
    pauses, samples = [], 0

    def add(level: float, length: float) -> None:
        nonlocal samples
        pieces.append(rng.normal(0, level, int(length * RATE)))
        samples += len(pieces[-1])

    while samples < seconds * RATE:
        for word in range(rng.integers(1, 9)):
            if word:
                add(3e-4, rng.uniform(0.06, 0.15))
            add(0.1, rng.uniform(0.2, 0.9))
        start = samples / RATE
        add(3e-4, rng.uniform(0.4, 0.9))
        pauses.append((start, samples / RATE))
    return torch.from_numpy(np.concatenate(pieces).astype(np.float32)), pauses


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_cuts_fall_in_pauses_and_segments_keep_to_the_limit(seed: int) -> None:
    signal, pauses = _speech_like(seed, 180.0)
    config = SegmentationConfig(max_seconds=10.0, min_silence_seconds=0.3, silence_db=35.0)
    bounds = segment_bounds(signal, RATE, config)
    assert bounds[0][0] == 0 and bounds[-1][1] == len(signal)
    assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:], strict=False))
    assert max(end - start for start, end in bounds) <= 10 * RATE
    cuts = [start / RATE for start, _ in bounds[1:]]
    assert 18 <= len(cuts) <= 36  # 180 s in segments of at most 10 s, most over 5 s
    for cut in cuts:  # never between two words of a phrase (those gaps are under 0.3 s)
        assert any(start + 0.1 <= cut <= end - 0.1 for start, end in pauses), cut


def test_without_a_pause_the_cut_goes_to_the_quietest_point_near_the_limit() -> None:
    rng = np.random.default_rng(0)
    loud = rng.normal(0, 0.1, 25 * RATE).astype(np.float32)
    dip = loud.copy()
    dip[int(9.1 * RATE) : int(9.2 * RATE)] *= 0.01  # 100 ms: too short to be a pause
    config = SegmentationConfig(max_seconds=10.0, min_silence_seconds=0.3, silence_db=35.0)
    cuts = cut_points(torch.from_numpy(dip), RATE, config)
    assert 9.1 <= cuts[0] / RATE <= 9.2, cuts
    flat = [c / RATE for c in cut_points(torch.from_numpy(loud), RATE, config)]
    assert 8.0 <= flat[0] <= 10.0 and len(flat) == 2  # 25 s: three segments


def test_a_recording_within_the_limit_is_one_segment() -> None:
    config = SegmentationConfig(max_seconds=10.0, min_silence_seconds=0.3, silence_db=35.0)
    assert segment_bounds(torch.zeros(10 * RATE), RATE, config) == [(0, 10 * RATE)]
    assert segment_bounds(torch.zeros(5), RATE, config) == [(0, 5)]


def test_energies_are_the_same_block_by_block(monkeypatch: pytest.MonkeyPatch) -> None:
    signal = torch.from_numpy(np.random.default_rng(0).normal(0, 0.1, 5 * RATE + 77)).float()
    whole = frame_energies_db(signal, RATE)
    monkeypatch.setattr(segmentation, "_BLOCK_FRAMES", 7)  # blocks: memory bounded for hours
    assert torch.allclose(frame_energies_db(signal, RATE), whole)
    assert len(whole) == 500 and abs(float(whole.mean()) + 20.0) < 0.5  # 0.1 rms: -20 dB
