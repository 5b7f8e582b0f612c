"""Kedro project settings."""

import os
import warnings

from kedro.config import OmegaConfigLoader
from omegaconf.resolvers import oc

# Telemetry would try the network on every command: off for everyone using this project.
os.environ.setdefault("KEDRO_DISABLE_TELEMETRY", "1")
os.environ.setdefault("DO_NOT_TRACK", "1")

# pandas reads Parquet and keeps string columns in Arrow buffers, and Arrow's own pool (mimalloc)
# keeps the pages it frees resident: a 321,180-word table built and dropped left 70 MB behind,
# which every later node, training too, would carry (docs/scaling.md). "system" gives Arrow's
# allocations to malloc, which the pipeline's hook trims between nodes. It is Arrow's own switch,
# read when Arrow first allocates (after this file), so a user's setting of it wins.
os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")

# Kedro 1.7 calls OmegaConf 2.4's deprecated register_new_resolver itself; nothing to act on here.
warnings.filterwarnings("ignore", message="register_new_resolver", category=UserWarning)
# kedro-mlflow's KedroPipelineModel (imported with its CLI, on every kedro command) has a predict
# without type hints, and MLflow warns about it, in 15 lines at the top of every log. This project
# never logs that model, so nothing is to be done about it. MLflow forces that warning through any
# filter ("once"), so it is caught here, where the class is first imported (settings.py is read
# before Kedro loads the plugins' commands); MLflow checks each class only once.
with warnings.catch_warnings(record=True):
    import kedro_mlflow.mlflow  # noqa: F401

CONFIG_LOADER_CLASS = OmegaConfigLoader
CONFIG_LOADER_ARGS = {
    "base_env": "base",
    "default_run_env": "local",
    # Environment variables (LIBRISPEECH_DIR, MLFLOW_TRACKING_URI) may set defaults in conf/.
    "custom_resolvers": {"oc.env": oc.env},
    "config_patterns": {"mlflow": ["mlflow*", "mlflow*/**"]},
    # Deep-merge parameters across environments: with the default (destructive) strategy a
    # `--params data_engineering.max_utterances_per_speaker=4` given with `--env shared` would
    # replace all of `data_engineering`, because run-time parameters are merged into the run
    # environment first.
    "merge_strategy": {"parameters": "soft", "catalog": "soft"},
}

from asr_pipeline.hooks import (  # noqa: E402
    PeakMemoryHook,
    RunSummaryHook,
    TrackingServerCheckHook,
)

HOOKS = (TrackingServerCheckHook(), RunSummaryHook(), PeakMemoryHook())
