"""training: features -> model bundle, history, curves, tags, and a registered pyfunc model."""

from kedro.pipeline import Node, Pipeline

from .nodes import (
    describe_training_run,
    package_recognizer,
    plot_training_curves,
    train_acoustic_model,
)


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(
                train_acoustic_model,
                inputs=[
                    "feature_index",
                    "features",
                    "normalisation_stats",
                    "params:training",
                    "params:features",
                ],
                outputs=["acoustic_model", "training_history", "training_metrics"],
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
                package_recognizer,
                inputs="acoustic_model",
                outputs="recognizer_model",
                name="package_recognizer",
            ),
        ]
    )
