"""Feature-extraction benchmark on the real LibriSpeech sample.

Measures, on the same utterances:
  (a) decoding alone (soundfile, one process),
  (b) decoding + features (load_audio + FeatureExtractor, one process, one torch thread),
  (c) the pipeline's extraction end to end (``extract_features`` with its worker processes, each
      chunk saved into a fresh FeatureStoreDataset), and
  (d) the same again with a warm cache.

Usage:
  python benchmarks/features.py [--librispeech-dir DIR] [--subsets train-clean-100,dev-clean]
                                [--workers N] [--out data/08_reporting/benchmarks/features.json]

The feature parameters are the project defaults (conf/base/parameters_feature_engineering.yml).
Other processes on the machine slow every figure down: the load average is recorded beside them.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import resource
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import soundfile as sf
import torch
import yaml

from asr_pipeline.audio.features import FeatureConfig, FeatureExtractor
from asr_pipeline.audio.loading import load_audio
from asr_pipeline.corpus import librispeech
from asr_pipeline.datasets.feature_store import FeatureStoreDataset
from asr_pipeline.pipelines.feature_engineering.nodes import (
    assign_feature_keys,
    extract_features,
)

PROJECT_ROOT = Path(__file__).resolve().parents[1]
PARAMS_FILE = PROJECT_ROOT / "conf/base/parameters_feature_engineering.yml"
DEFAULT_OUT = PROJECT_ROOT / "data/08_reporting/benchmarks/features.json"
EXTENSIONS = ["flac", "wav", "mp3"]

GOAL_PIPELINE_RATE = 1500.0  # (c) audio-seconds per wall-second
GOAL_PARALLEL_EFFICIENCY = 0.5  # (c) >= this x (a) x workers
GOAL_WARM_SPEEDUP = 20.0  # (c) wall / (d) wall


def parse_args() -> argparse.Namespace:
    default_dir = os.environ.get(
        "LIBRISPEECH_DIR", str(PROJECT_ROOT.parent / "shared/librispeech/LibriSpeech")
    )
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--librispeech-dir",
        type=Path,
        default=Path(default_dir),
        help="LibriSpeech root (default: $LIBRISPEECH_DIR or ../shared/librispeech/LibriSpeech)",
    )
    parser.add_argument(
        "--subsets",
        default="train-clean-100,dev-clean",
        help="comma-separated subsets (default: %(default)s)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        help="extraction worker processes (default: features.workers, or one per core)",
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON report path")
    return parser.parse_args()


def cpu_seconds() -> float:
    """CPU time (user + system) of this process and its waited-for children."""
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        total += usage.ru_utime + usage.ru_stime
    return total


def peak_rss_mb() -> dict[str, float]:
    """Peak resident memory (ru_maxrss, KiB on Linux) of this process and of its largest child."""
    return {
        "self": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "children": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
    }


def measure(name: str, audio_s: float, work: Callable[[], Any]) -> dict[str, Any]:
    print(f"  {name} ...", flush=True)
    cpu0, wall0 = cpu_seconds(), time.perf_counter()
    detail = work()
    wall, cpu = time.perf_counter() - wall0, cpu_seconds() - cpu0
    return {
        "wall_s": wall,
        "cpu_s": cpu,
        "audio_s_per_wall_s": audio_s / wall if wall > 0 else float("inf"),
        "audio_s_per_cpu_s": audio_s / cpu if cpu > 0 else float("inf"),
        "peak_rss_mb": peak_rss_mb(),
        **(detail or {}),
    }


def main() -> int:
    args = parse_args()
    root: Path = args.librispeech_dir.expanduser()
    subsets = [s.strip() for s in args.subsets.split(",") if s.strip()]
    missing = [s for s in subsets if not (root / s).is_dir()]
    if missing:
        sys.exit(
            f"LibriSpeech subset(s) {', '.join(missing)} not found under {root}: pass "
            "--librispeech-dir or set LIBRISPEECH_DIR (default ../shared/librispeech/LibriSpeech)"
        )

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    params = yaml.safe_load(PARAMS_FILE.read_text())["features"]
    workers = args.workers or params.get("workers") or os.cpu_count() or 1
    # one feature row per file: the figures are audio-seconds of the files themselves
    params = {**params, "workers": workers, "speed_perturbation": []}
    config = FeatureConfig.from_params(params)

    items = [
        item
        for item in librispeech.scan(root, subsets, EXTENSIONS)
        if item.path is not None and not item.audio_error and item.sample_rate
    ]
    if not items:
        sys.exit(f"no readable utterances in {', '.join(subsets)} under {root}")
    manifest = pd.DataFrame(
        {
            "utterance_id": [item.utterance_id for item in items],
            "path": [item.path for item in items],
            "duration_s": [item.num_samples / item.sample_rate for item in items],
        }
    )
    audio_s = float(manifest.duration_s.sum())
    paths = manifest.path.tolist()
    keyed = assign_feature_keys(manifest, params)
    load_before = os.getloadavg()
    print(
        f"{len(items)} utterances, {audio_s / 3600:.2f} h of audio ({', '.join(subsets)}); "
        f"{config.kind} {config.n_features}; {workers} workers on {os.cpu_count()} cores; "
        f"load average {load_before[0]:.2f}"
    )

    def decode_only() -> dict[str, Any]:
        samples = 0
        for path in paths:
            samples += len(sf.read(path, dtype="float32")[0])
        return {"samples": samples}

    def decode_and_features() -> dict[str, Any]:
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            extractor = FeatureExtractor(config)
            frames = 0
            for path in paths:
                frames += extractor(load_audio(path, config.sample_rate)).shape[-1]
        finally:
            torch.set_num_threads(threads)
        return {"frames": frames}

    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="features-benchmark-") as tmp:
        store = FeatureStoreDataset(str(Path(tmp) / "features"))

        def pipeline() -> dict[str, Any]:
            plan = extract_features(keyed, store.load(), params)
            store.save(plan)
            return {"planned": len(plan.jobs), "stored": len(store.load())}

        results["a_decode"] = measure("(a) decode", audio_s, decode_only)
        results["b_decode_features"] = measure(
            "(b) decode + features", audio_s, decode_and_features
        )
        results["c_pipeline_cold"] = measure("(c) pipeline, cold cache", audio_s, pipeline)
        results["d_pipeline_warm"] = measure("(d) pipeline, warm cache", audio_s, pipeline)
        store_mb = sum(p.stat().st_size for p in Path(tmp).rglob("*.safetensors")) / 2**20

    a, b = results["a_decode"], results["b_decode_features"]
    c, d = results["c_pipeline_cold"], results["d_pipeline_warm"]
    ratios = {
        "c_over_a_wall_throughput": c["audio_s_per_wall_s"] / a["audio_s_per_wall_s"],
        "c_over_a_times_workers": c["audio_s_per_wall_s"] / (a["audio_s_per_wall_s"] * workers),
        "c_over_b_times_workers": c["audio_s_per_wall_s"] / (b["audio_s_per_wall_s"] * workers),
        "warm_speedup_c_over_d_wall": c["wall_s"] / d["wall_s"] if d["wall_s"] else float("inf"),
    }
    goals = {
        f"(c) >= {GOAL_PIPELINE_RATE:.0f} audio-s per wall-s": (
            c["audio_s_per_wall_s"] >= GOAL_PIPELINE_RATE
        ),
        f"(c) >= {GOAL_PARALLEL_EFFICIENCY} x (a) x workers": (
            ratios["c_over_a_times_workers"] >= GOAL_PARALLEL_EFFICIENCY
        ),
        f"warm >= {GOAL_WARM_SPEEDUP:.0f}x faster": (
            ratios["warm_speedup_c_over_d_wall"] >= GOAL_WARM_SPEEDUP
        ),
    }

    print()
    print(f"{'stage':<28}{'wall s':>9}{'CPU s':>9}{'audio-s/wall-s':>16}{'audio-s/CPU-s':>15}")
    for name, row in results.items():
        print(
            f"{name:<28}{row['wall_s']:>9.2f}{row['cpu_s']:>9.2f}"
            f"{row['audio_s_per_wall_s']:>16.0f}{row['audio_s_per_cpu_s']:>15.0f}"
        )
    rss = peak_rss_mb()
    print(f"\npeak RSS: {rss['self']:.0f} MB (this process), {rss['children']:.0f} MB (a worker)")
    print(f"feature store: {c['stored']} files, {store_mb:.0f} MB; (c) computed {c['computed']}")
    for name, value in ratios.items():
        print(f"{name:<30}{value:>8.2f}")
    print()
    for goal, passed in goals.items():
        print(f"{'PASS' if passed else 'FAIL'}  {goal}")
    load_after = os.getloadavg()
    print(f"load average before/after: {load_before[0]:.2f} / {load_after[0]:.2f}")

    report = {
        "librispeech_dir": str(root),
        "subsets": subsets,
        "utterances": len(items),
        "audio_hours": audio_s / 3600,
        "workers": workers,
        "cpu_count": os.cpu_count(),
        "feature_params": dict(params),
        "feature_fingerprint": config.fingerprint(),
        "results": results,
        "ratios": ratios,
        "goals": goals,
        "peak_rss_mb": rss,
        "feature_store_mb": store_mb,
        "load_average": {"before": load_before, "after": load_after},
        "python": platform.python_version(),
        "torch": torch.__version__,
        "unix_time": time.time(),
    }
    out = args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
