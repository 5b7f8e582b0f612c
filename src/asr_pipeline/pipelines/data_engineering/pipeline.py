"""data_engineering: LibriSpeech folder -> manifest, quality report, speaker-disjoint splits."""

from kedro.pipeline import Node, Pipeline

from .nodes import prepare_librispeech, scan_librispeech, split_by_speaker, validate_utterances


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(
                prepare_librispeech,
                inputs=["params:librispeech", "params:data_engineering"],
                outputs="librispeech_root",
                name="prepare_librispeech",
            ),
            Node(
                scan_librispeech,
                inputs=["librispeech_root", "params:data_engineering"],
                outputs="librispeech_inventory",
                name="scan_librispeech",
            ),
            Node(
                validate_utterances,
                inputs=["librispeech_inventory", "params:data_engineering"],
                outputs=["manifest", "data_quality_report"],
                name="validate_utterances",
            ),
            Node(
                split_by_speaker,
                inputs=["manifest", "params:data_engineering"],
                outputs="manifest_splits",
                name="split_by_speaker",
            ),
        ]
    )
