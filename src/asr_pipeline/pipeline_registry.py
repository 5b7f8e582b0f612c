"""Project pipelines."""

from kedro.framework.project import find_pipelines
from kedro.pipeline import Pipeline


def register_pipelines() -> dict[str, Pipeline]:
    """Every folder under ``pipelines/`` is a pipeline; ``__default__`` runs them end to end.

    ``inference`` needs run-time inputs (audio to transcribe), so it is left out of the default run.
    """
    pipelines = find_pipelines(raise_errors=True)
    end_to_end = [
        "data_engineering",
        "feature_engineering",
        "language_model",
        "training",
        "evaluation",
    ]
    # `kedro run --pipelines X` makes Kedro load only X here: build the default from what is loaded.
    pipelines["__default__"] = sum(
        (pipelines[name] for name in end_to_end if name in pipelines), start=Pipeline([])
    )
    return pipelines
