"""evaluation: model + test split -> transcripts, WER/CER report, plots, champion promotion.

The model is ``acoustic_model``: the one just trained, or any registered model with
``--params model_uri=models:/NAME@ALIAS``. The beam search's LM weight and word score are tuned
on the validation split first (never on the evaluated one). Promotion runs last: Kedro runs nodes
in dependency layers, so the model registered by ``package_recognizer`` exists by then.
"""

from kedro.pipeline import Node, Pipeline

from .nodes import (
    build_transcript_lm,
    plot_evaluation,
    promote_model,
    score_transcripts,
    transcribe_split,
    tune_beam_search,
)


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(
                build_transcript_lm,
                inputs=["manifest_splits", "word_frequencies", "params:evaluation"],
                outputs="transcript_lm",
                name="build_transcript_lm",
            ),
            Node(
                tune_beam_search,
                inputs=["acoustic_model", "manifest_splits", "transcript_lm", "params:evaluation"],
                outputs="beam_settings",
                name="tune_beam_search",
            ),
            Node(
                transcribe_split,
                inputs=[
                    "acoustic_model",
                    "manifest_splits",
                    "transcript_lm",
                    "params:evaluation",
                    "beam_settings",
                ],
                outputs="evaluation_transcripts",
                name="transcribe_split",
            ),
            Node(
                score_transcripts,
                inputs=["evaluation_transcripts", "acoustic_model", "params:evaluation"],
                outputs=["evaluation_report", "evaluation_breakdown", "evaluation_metrics"],
                name="score_transcripts",
            ),
            Node(
                plot_evaluation,
                inputs="evaluation_transcripts",
                outputs="evaluation_plots",
                name="plot_evaluation",
            ),
            Node(
                promote_model,
                inputs=[
                    "evaluation_report",
                    "manifest_splits",
                    "transcript_lm",
                    "params:training",
                    "params:evaluation",
                ],
                outputs="promotion_decision",
                name="promote_model",
            ),
        ]
    )
