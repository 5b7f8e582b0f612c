"""evaluation: model + test split -> transcripts, WER/CER report, plots, champion promotion.

The model is ``acoustic_model``: the one just trained, or any registered model with
``--params model_uri=models:/NAME@ALIAS``; its beam search (LM and tuned settings) comes with it.
Promotion runs last: Kedro runs nodes in dependency layers, so the model registered by the
training pipeline's ``package_recognizer`` exists by then.
"""

from kedro.pipeline import Node, Pipeline

from .nodes import plot_evaluation, promote_model, score_transcripts, transcribe_split


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(
                transcribe_split,
                inputs=["acoustic_model", "manifest_splits", "params:evaluation"],
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
                    "params:training",
                    "params:evaluation",
                ],
                outputs="promotion_decision",
                name="promote_model",
            ),
        ]
    )
