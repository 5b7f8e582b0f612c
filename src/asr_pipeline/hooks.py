"""Project hooks: a fast check that the tracking server answers before a run starts, the peak
memory of each node, and a short, readable summary at the end of a run."""

from __future__ import annotations

import logging
import os
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from kedro.framework.hooks import hook_impl

from asr_pipeline.common.memory import (
    configure_memory,
    current_rss_mb,
    peak_rss_mb,
    release_free_memory,
)

logger = logging.getLogger(__name__)


class RunSummaryHook:
    """Refuse a run that would overwrite a registered model; summarise an evaluation at the end."""

    @hook_impl
    def before_pipeline_run(self, run_params: dict[str, Any], pipeline: Any) -> None:
        model_uri = (run_params.get("runtime_params") or {}).get("model_uri")
        if model_uri and "train_acoustic_model" in {node.name for node in pipeline.nodes}:
            raise ValueError(
                f"model_uri={model_uri} selects a model to evaluate or serve, but this run also "
                "trains one (and would save it there): run the evaluation or inference pipeline "
                "alone (--pipelines evaluation), or drop model_uri"
            )

    @hook_impl
    def after_pipeline_run(self, run_params: dict[str, Any], pipeline: Any, catalog: Any) -> None:
        names = {node.name for node in pipeline.nodes}
        if "score_transcripts" not in names:
            return
        report = catalog.load("evaluation_report")
        lines = [
            f"Evaluation of {report['model']} on {report['utterances']} {report['split']} "
            f"utterances ({report['audio_hours']:.2f} h of held-out speakers):"
        ]
        for name, rates in report["decoders"].items():
            scores = [
                f"{metric.upper()} {100 * rates[metric]:5.1f}%"
                for metric in ("cer", "wer", "per")  # a phone model's greedy decoding: PER
                if metric in rates
            ]
            lines.append(f"  {name:>6}: " + "   ".join(scores))
        if "promote_model" in names:
            decision = catalog.load("promotion_decision")
            if "version" in decision:
                lines.append(
                    f"Registry: {decision['model']} version {decision['version']}: "
                    f"{decision['reason']}"
                )
        print("\n".join(lines), flush=True)  # noqa: T201 - the closing summary is for people


class PeakMemoryHook:
    """The run's allocator settings; freed memory given back after each node; the node that
    raised the process's peak memory, and the run's peak at its end.

    A run's memory is the largest of its nodes' (they run one after another in one process), so
    the node that set the peak is the one to look at when a run needs more than a machine has.
    Without the release each node would start from the largest working set before it, which
    glibc keeps for reuse (:func:`asr_pipeline.common.memory.release_free_memory`). The
    allocator settings are training's (``malloc_mmap_threshold_mb``, ``onednn_primitive_cache``,
    ``load_triton_without_gpu``):
    decoding batches of ever new shapes fragments the heaps as training does, so every pipeline
    gets them, not only the trainer (an evaluation alone peaked at 2.17 GB without, 1.29 GB with).
    """

    def __init__(self) -> None:
        self.peak_mb, self.peak_node = 0.0, ""

    @hook_impl
    def before_pipeline_run(self, catalog: Any) -> None:
        self.peak_mb, self.peak_node = peak_rss_mb(), "(before the first node)"
        training = catalog.load("params:training") if catalog.exists("params:training") else {}
        try:
            configure_memory(
                training.get("malloc_mmap_threshold_mb"),
                training.get("onednn_primitive_cache"),
                training.get("load_triton_without_gpu"),
            )
        except ValueError as error:
            raise ValueError(
                "training.malloc_mmap_threshold_mb / training.onednn_primitive_cache / "
                f"training.load_triton_without_gpu: {error}"
            ) from None

    @hook_impl
    def after_node_run(self, node: Any) -> None:
        peak = peak_rss_mb()
        if peak > self.peak_mb:
            logger.info("Peak memory %.0f MB, raised by node %s", peak, node.name)
            self.peak_mb, self.peak_node = peak, node.name
        release_free_memory()
        now = current_rss_mb()
        if now is not None:
            logger.info("Memory after node %s: %.0f MB in use", node.name, now)

    @hook_impl
    def after_pipeline_run(self) -> None:
        logger.info("Peak memory of the run: %.0f MB (node %s)", self.peak_mb, self.peak_node)


TRACKING_CHECK_TIMEOUT_S = 10.0


def _configured_tracking_uri(context: Any) -> str | None:
    """The tracking URI kedro-mlflow will use: mlflow.yml (which reads MLFLOW_TRACKING_URI)."""
    try:
        uri = context.config_loader["mlflow"]["server"]["mlflow_tracking_uri"]
    except Exception:  # noqa: BLE001 - no or odd mlflow.yml: kedro-mlflow falls back to the env
        uri = None
    return uri or os.environ.get("MLFLOW_TRACKING_URI")


def check_tracking_server(uri: str | None, timeout: float = TRACKING_CHECK_TIMEOUT_S) -> None:
    """Raise a clear RuntimeError when an http(s) tracking URI does not answer ``GET /health``.

    Other URIs (``sqlite:///mlflow.db``, ``databricks``, ...) are left to MLflow.
    """
    if not uri or urllib.parse.urlparse(uri).scheme not in {"http", "https"}:
        return
    health = uri.rstrip("/") + "/health"
    try:
        with urllib.request.urlopen(health, timeout=timeout) as response:
            status = response.status
    except urllib.error.HTTPError as error:
        status = error.code  # it answered: 401/403/404 come from a proxy or auth in front
    except (OSError, ValueError) as error:
        reason = getattr(error, "reason", error)
        raise RuntimeError(
            f"The MLflow tracking server at {uri} is unreachable ({reason}); nothing was run. "
            "Start one with `make tracking-server` (python scripts/tracking_server.py start) "
            "and export the MLFLOW_TRACKING_URI it prints, or unset MLFLOW_TRACKING_URI to "
            "track to the local SQLite store (sqlite:///mlflow.db)."
        ) from None
    if status >= 500:
        raise RuntimeError(
            f"The MLflow tracking server at {uri} answers {health} with HTTP {status}: "
            "it is not healthy (see its log); nothing was run."
        )


class TrackingServerCheckHook:
    """Fail in seconds, before anything runs, when the MLflow tracking server is down.

    kedro-mlflow's own ``after_context_created`` asks the server for the experiment and MLflow
    retries a refused connection with back-off for about four minutes before failing. Plugin
    hooks are called before project hooks, so this one is marked ``tryfirst``.
    """

    def __init__(self, timeout: float = TRACKING_CHECK_TIMEOUT_S) -> None:
        self.timeout = timeout

    @hook_impl(tryfirst=True)
    def after_context_created(self, context: Any) -> None:
        check_tracking_server(_configured_tracking_uri(context), self.timeout)
