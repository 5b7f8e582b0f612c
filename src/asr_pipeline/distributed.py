"""Training on several processes with ``torchrun`` (DistributedDataParallel).

    torchrun --nproc_per_node=2 -m asr_pipeline.distributed --env shared

Every rank trains on its share of each global batch; rank 0 runs the Kedro ``training`` pipeline
(and so is the only one that logs to MLflow, registers the model and writes files), the other ranks
load the same inputs from the catalog and run the same training node without a Kedro run. What
training reads (data_engineering, feature_engineering and language_model's outputs) must exist
first: rank 0 then reaches the first collective as soon as the others do.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from kedro.framework.cli.utils import _split_params
from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project
from kedro.io import DataCatalog

from asr_pipeline.pipelines.training.nodes import train_acoustic_model
from asr_pipeline.pipelines.training.units_nodes import build_output_units

# what the training pipeline reads that earlier pipelines write
TRAINING_INPUTS = ("manifest_splits", "feature_index", "normalisation_stats", "word_lm")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--env", default=None)
    parser.add_argument("--params", default="", help='like kedro run --params "a.b=1,c=2"')
    args = parser.parse_args(argv)
    runtime_params = _split_params(None, None, args.params) if args.params else {}
    rank = int(os.environ.get("RANK", "0"))
    bootstrap_project(Path.cwd())
    with KedroSession.create(env=args.env, runtime_params=runtime_params) as session:
        catalog = session.load_context().catalog
        require_inputs(catalog)
        if rank == 0:
            session.run(pipeline_names=["training"])
            return
        # rank 0 makes the units inside its run: the others make the same ones from the same
        # transcripts (deterministic, subwords included: sentencepiece trains on one thread)
        output_units, _ = build_output_units(
            catalog.load("manifest_splits"),
            catalog.load("pronunciations"),
            catalog.load("params:units"),
            catalog.load("params:training"),
        )
        train_acoustic_model(
            catalog.load("feature_index"),
            catalog.load("features"),
            catalog.load("normalisation_stats"),
            output_units,
            catalog.load("params:training"),
            catalog.load("params:features"),
        )


def require_inputs(catalog: DataCatalog) -> None:
    """Fail at once, on every rank, when what training reads is not on disk, rather than after
    training (the LM is only read when the beam search is tuned)."""
    missing = [name for name in TRAINING_INPUTS if not catalog.exists(name)]
    if missing:
        raise RuntimeError(
            f"torchrun training needs {missing} on disk: run `kedro run --env ENV --pipelines "
            "data_engineering,feature_engineering,language_model` first"
        )


if __name__ == "__main__":
    main()
