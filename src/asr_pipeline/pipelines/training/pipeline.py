"""training: features -> output units, trained model, its beam search (the language_model
pipeline's word LM + settings tuned on the validation speakers), the model bundle with all three,
history, curves, tags, and a registered pyfunc.

The units (``units.kind``: characters, phones or subwords) are made from the training transcripts
(and the pronunciation dictionary for phones) by ``build_output_units``, and travel in the bundle.

``registered_model`` is an output (the pyfunc is registered when it is saved) that evaluation's
``promote_model`` takes as an input (it loads as the version registered), so promotion follows the
registration through the pipeline's edges."""

from kedro.pipeline import Node, Pipeline

from .decoder_nodes import attach_beam_search, tune_beam_search
from .nodes import (
    describe_training_run,
    package_recognizer,
    plot_training_curves,
    train_acoustic_model,
)
from .units_nodes import build_output_units


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(
                build_output_units,
                inputs=["manifest_splits", "pronunciations", "params:units", "params:training"],
                outputs=["output_units", "units_report"],
                name="build_output_units",
            ),
            Node(
                train_acoustic_model,
                inputs=[
                    "feature_index",
                    "features",
                    "normalisation_stats",
                    "output_units",
                    "params:training",
                    "params:features",
                ],
                outputs=["trained_acoustic_model", "training_history", "training_metrics"],
                name="train_acoustic_model",
            ),
            Node(
                describe_training_run,
                inputs=["feature_index", "params:features"],
                outputs="training_tags",
                name="describe_training_run",
            ),
            Node(
                plot_training_curves,
                inputs="training_history",
                outputs="training_curves",
                name="plot_training_curves",
            ),
            Node(
                tune_beam_search,
                inputs=[
                    "trained_acoustic_model",
                    "manifest_splits",
                    "word_lm",
                    "params:beam_search",
                    "params:evaluation.split",
                ],
                outputs="beam_settings",
                name="tune_beam_search",
            ),
            Node(
                attach_beam_search,
                inputs=[
                    "trained_acoustic_model",
                    "word_lm",
                    "beam_settings",
                    "params:beam_search",
                ],
                outputs="acoustic_model",
                name="attach_beam_search",
            ),
            Node(
                package_recognizer,
                inputs="acoustic_model",
                outputs="registered_model",
                name="package_recognizer",
            ),
        ]
    )
