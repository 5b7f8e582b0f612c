"""evaluation: model + test split -> transcripts, WER/CER report, plots, champion promotion.

The model is ``acoustic_model``: the one just trained, or any registered model with
``--params model_uri=models:/NAME@ALIAS``; its units and beam search (LM and tuned settings) come
with it. ``pronunciations`` turns the references into phones for a phone model's PER.
Promotion takes the registered version as an input, ``registered_model``: the training pipeline's
output (the version its ``package_recognizer`` registered) in a full run, the version that
``model_uri`` points at when a registered model is evaluated.
"""

from kedro.pipeline import Node, Pipeline

from .nodes import plot_evaluation, promote_model, score_transcripts, transcribe_split


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(
                transcribe_split,
                inputs=[
                    "acoustic_model",
                    "manifest_splits",
                    "params:evaluation",
                    "pronunciations",
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
                    "registered_model",
                    "manifest_splits",
                    "params:evaluation",
                ],
                outputs="promotion_decision",
                name="promote_model",
            ),
        ]
    )
