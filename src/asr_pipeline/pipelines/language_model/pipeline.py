"""language_model: the training transcripts and common English words -> a word n-gram LM (ARPA).

A pipeline of its own, run before training: the LM depends on text alone, not on the acoustic
model, and under ``torchrun`` the training pipeline's rank 0 must reach the first collective
without building it first (the other ranks would wait, and NCCL gives up after 10 minutes).
"""

from kedro.pipeline import Node, Pipeline

from .nodes import build_transcript_lm


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(
                build_transcript_lm,
                inputs=["manifest_splits", "word_frequencies", "params:beam_search"],
                outputs="transcript_lm",
                name="build_transcript_lm",
            ),
        ]
    )
