"""Nodes of the feature_store_maintenance pipeline."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import pandas as pd

logger = logging.getLogger(__name__)


def find_stale_features(
    feature_index: pd.DataFrame, feature_cache: Mapping[str, Any]
) -> tuple[list[str], dict[str, Any]]:
    """The stored keys that the last feature_engineering run (its ``feature_index``) did not use:
    audio that left the corpus or changed, other feature parameters, other subsets; and a report.

    Stale is judged by that run's subsets and parameters alone: features kept for another
    environment or parameter set in the same folder count as stale too (the report says how many
    were kept and removed, and names a few).
    """
    wanted = set(feature_index.feature_key)
    stored = list(feature_cache)
    stale = sorted(key for key in stored if key not in wanted)
    report = {
        "stored": len(stored),
        "kept": len(stored) - len(stale),
        "removed": len(stale),
        "removed_examples": stale[:10],
    }
    logger.info(
        "Feature store: %d entries, %d kept (the last feature_engineering run's), %d removed",
        report["stored"],
        report["kept"],
        report["removed"],
    )
    return stale, report
