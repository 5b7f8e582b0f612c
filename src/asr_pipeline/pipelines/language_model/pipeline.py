"""language_model: the beam search's word LM (ARPA): a general-English LM, or one of the training
transcripts backed by common English words (``beam_search.lm_source``).

A pipeline of its own, run before training: the LM depends on text alone, not on the acoustic
model, and under ``torchrun`` the training pipeline's rank 0 must reach the first collective
without building it first (the other ranks would wait, and NCCL gives up after 10 minutes).
"""

from kedro.pipeline import Node, Pipeline

from .nodes import build_word_lm


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(
                build_word_lm,
                inputs=[
                    "manifest_splits",
                    "word_frequencies",
                    "general_lm",
                    "params:beam_search",
                ],
                outputs="word_lm",
                name="build_word_lm",
            ),
        ]
    )
