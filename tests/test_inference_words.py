"""Word timings and cut points through the inference pipeline and ``asr-transcribe --json``.

A small untrained model carrying a beam search (so that it outputs words) transcribes a real
utterance and a 70-second file of consecutive ones: what is checked is the plumbing (words and
cuts in every result, times in the recording's seconds, the conf's segmentation used), not the
model's accuracy (tests/test_long_audio.py).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from click.testing import CliRunner

from asr_pipeline import cli
from asr_pipeline.pipelines import inference
from asr_pipeline.units.characters import CharacterUnits
from tests.in_memory import merged, run_in_memory
from tests.support import base_parameters, make_project, project_params
from tests.test_alignment import _with_lm
from tests.test_units import _bundle

pytestmark = pytest.mark.filterwarnings("ignore:register_new_resolver:UserWarning")


@pytest.fixture(scope="module")
def bundle() -> dict:
    return _with_lm(_bundle(CharacterUnits()), ["the cat sat on the mat", "a dog ran"])


@pytest.fixture(scope="module")
def long_file(librispeech_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """70 s of consecutive utterances of one chapter, as one FLAC file."""
    chapter = sorted((librispeech_root / "train-clean-100").glob("*/*"))[0]
    pieces, seconds = [], 0.0
    for path in sorted(chapter.glob("*.flac")):
        samples, rate = sf.read(path, dtype="float32")
        pieces.append(samples)
        seconds += len(samples) / rate
        if seconds > 70:
            break
    path = tmp_path_factory.mktemp("audio") / "long.flac"
    sf.write(path, np.concatenate(pieces), 16_000)
    return path


def _check(result: dict, max_segment: float) -> None:
    assert not result["error"], result["error"]
    words, duration = result["words"], result["duration_s"]
    assert [w["word"] for w in words] == result["text"].split() and result["words_note"] == ""
    assert all(0 <= w["start"] < w["end"] <= duration for w in words)
    assert all(a["end"] <= b["start"] for a, b in zip(words, words[1:], strict=False))
    edges = [0.0, *result["cuts"], duration]
    assert max(b - a for a, b in zip(edges, edges[1:], strict=False)) <= max_segment + 1e-3


def test_the_pipeline_gives_words_and_cuts(bundle, librispeech_root, long_file) -> None:
    utterance = next((librispeech_root / "dev-clean-2").rglob("*.flac")).stem
    params = merged(
        base_parameters(),
        {
            "inference": {"inputs": [utterance, str(long_file)], "threads": 1},
            "librispeech": {"root": str(librispeech_root)},
        },
    )
    catalog = run_in_memory(inference.create_pipeline(), params, {"inference_model": bundle})
    short, long = catalog.load("transcriptions")
    limit = params["inference"]["segmentation"]["max_seconds"]
    _check(short, limit)
    _check(long, limit)
    assert short["cuts"] == [] and short["reference"]
    assert len(long["cuts"]) >= 2 and long["words"][-1]["start"] >= long["cuts"][-1]
    misspelt = merged(params, {"inference": {"segmentation": {"max_second": 10}}})
    with pytest.raises(ValueError, match="unknown inference.segmentation setting"):
        run_in_memory(inference.create_pipeline(), misspelt, {"inference_model": bundle})


def test_the_command_writes_words_and_cuts(bundle, long_file, tmp_path) -> None:
    model = tmp_path / "model.pt"
    torch.save(bundle, model)
    out = tmp_path / "out.json"
    args = ["transcribe", str(long_file), "--model", str(model), "--json", str(out)]
    result = CliRunner().invoke(cli.cli, [*args, "--segment-seconds", "20"])
    assert result.exit_code == 0, result.output
    (written,) = json.loads(out.read_text())
    _check(written, 20.0)
    assert len(written["cuts"]) >= 3 and "cut at pauses (s):" in result.output


def test_the_command_reads_its_segmentation_from_the_conf(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    base = project_params("inference")["inference"]["segmentation"]
    assert cli.project_defaults(start=tmp_path).segmentation is None  # no project: conf/base's
    assert cli._segmentation(None, None) == base
    assert cli._segmentation(None, 12.0) == {**base, "max_seconds": 12.0}
    project = make_project(tmp_path / "project")
    for stray in (project / "conf" / "local").glob("*.yml"):
        stray.unlink()
    (project / "conf" / "local" / "parameters_inference.yml").write_text(
        "inference:\n  segmentation:\n    max_seconds: 9.0\n"
    )
    monkeypatch.setattr(sys, "path", list(sys.path))  # bootstrapping the copy adds its src/
    monkeypatch.setenv("PYTHONPATH", os.environ.get("PYTHONPATH", ""))
    conf = cli.project_defaults(start=project).segmentation
    assert conf == {**base, "max_seconds": 9.0}
