"""feature_engineering: manifest -> cached features, feature index, normalisation statistics."""

from kedro.pipeline import Node, Pipeline

from .nodes import (
    assign_feature_keys,
    compute_normalisation_stats,
    extract_features,
    index_features,
    plot_feature_example,
)


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(
                assign_feature_keys,
                inputs=["manifest_splits", "params:features"],
                outputs="keyed_manifest",
                name="assign_feature_keys",
            ),
            Node(
                extract_features,
                inputs=["keyed_manifest", "feature_cache", "params:features"],
                outputs="features",
                name="extract_features",
            ),
            Node(
                index_features,
                inputs=["keyed_manifest", "features", "params:features"],
                outputs="feature_index",
                name="index_features",
            ),
            Node(
                compute_normalisation_stats,
                inputs=["feature_index", "features", "params:features"],
                outputs="normalisation_stats",
                name="compute_normalisation_stats",
            ),
            Node(
                plot_feature_example,
                inputs=["feature_index", "manifest_splits", "params:features"],
                outputs="feature_example_plot",
                name="plot_feature_example",
            ),
        ]
    )
