"""feature_store_maintenance: the features the last feature_engineering run indexed stay, the
others are removed from the store (not in the default run).

    kedro run --env shared                                          # features of this env
    kedro run --env shared --pipelines feature_store_maintenance    # then drop all others
"""

from kedro.pipeline import Node, Pipeline

from .nodes import find_stale_features


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(
                find_stale_features,
                inputs=["feature_index", "feature_cache"],
                outputs=["stale_features", "feature_prune_report"],
                name="find_stale_features",
            ),
        ]
    )
