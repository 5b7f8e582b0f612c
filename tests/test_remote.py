"""A LibriSpeech root given as an fsspec URL (memory://, standing in for s3:// or gs://)."""

from __future__ import annotations

import fsspec
import pytest

from asr_pipeline.datasets import FeatureStoreDataset
from asr_pipeline.pipelines.data_engineering.nodes import (
    prepare_librispeech,
    scan_librispeech,
    split_by_speaker,
    validate_utterances,
)
from asr_pipeline.pipelines.feature_engineering.nodes import (
    assign_feature_keys,
    extract_features,
    index_features,
)
from tests.support import project_params

# conf/base's parameters (what the nodes expect to find), on one subset and nothing held out
PARAMS = {
    **project_params("data_engineering")["data_engineering"],
    "train_subsets": ["dev-clean-2"],
    "test_subsets": [],
    "validation_fraction": 0.0,
    "strict": False,
}
FEATURES = {
    **project_params("feature_engineering")["features"],
    "workers": 1,
    "speed_perturbation": [],
}


def _settings(root: str, tmp_path) -> dict:
    return {
        "root": root,
        "download": False,
        "base_url": "unused",
        "mirror_dir": str(tmp_path / "mirror"),
    }


@pytest.fixture
def memory_librispeech(librispeech_root):
    """The shared dev-clean-2 subset uploaded to an in-memory fsspec file system."""
    fs = fsspec.filesystem("memory")
    for path in (librispeech_root / "dev-clean-2").rglob("*"):
        if path.is_file():
            fs.pipe(f"/LibriSpeech/{path.relative_to(librispeech_root)}", path.read_bytes())
    yield "memory://LibriSpeech"
    fs.rm("/LibriSpeech", recursive=True)


def test_features_from_an_fsspec_root(memory_librispeech, tmp_path):
    settings = _settings(memory_librispeech, tmp_path)
    root = prepare_librispeech(settings, PARAMS)
    manifest, report = validate_utterances(scan_librispeech(root, PARAMS), PARAMS)
    assert len(manifest) == 10 and report.empty
    keyed = assign_feature_keys(split_by_speaker(manifest, PARAMS), FEATURES)
    store = FeatureStoreDataset(str(tmp_path / "features"))
    store.save(extract_features(keyed, store.load(), FEATURES))
    index = index_features(keyed, store.load(), FEATURES)
    assert index.utterance_id.nunique() == 10 and len(index) == len(keyed)
    assert (index.num_frames > 0).all()

    # a second run finds the mirror: nothing is copied again
    before = {p: p.stat().st_mtime_ns for p in tmp_path.joinpath("mirror").rglob("*.flac")}
    assert prepare_librispeech(settings, PARAMS) == root
    after = {p: p.stat().st_mtime_ns for p in tmp_path.joinpath("mirror").rglob("*.flac")}
    assert before == after and len(before) == 10


def test_a_missing_remote_subset_is_a_clear_error(memory_librispeech, tmp_path):
    settings = _settings(memory_librispeech, tmp_path)
    with pytest.raises(FileNotFoundError, match="test-clean"):
        prepare_librispeech(settings, {**PARAMS, "test_subsets": ["test-clean"]})
    assert not list((tmp_path / "mirror").rglob("test-clean"))
    assert not list((tmp_path / "mirror").rglob(".mirror-*"))  # no half-done copy left
