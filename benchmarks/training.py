"""Training throughput of the default preset against the original design (``seed``).

    python benchmarks/training.py [--librispeech-dir DIR] [--audio-seconds 600] [--threads 2]

Both presets train on the same real utterances (train-clean-100) with the same batch size in
audio-seconds; each runs in its own process so peak memory is its own. Writes
data/08_reporting/benchmarks/training.json. Goal: the default trains >= 10x faster per audio-second.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    REPORT_DIR,
    cpu_seconds,
    librispeech_dir,
    peak_rss_mb,
    project_params,
    write_report,
)


def measure(
    preset: str,
    root: Path,
    audio_seconds: float,
    threads: int,
    warmup_batches: int,
    original_features: bool = True,
    subsets: Sequence[str] = ("train-clean-100",),
    spread: bool = False,
    model_overrides: dict | None = None,
):
    """Train ``preset`` over about ``audio_seconds`` of audio; return throughput figures.

    ``original_features``: the seed preset gets the original design's 128 MFCC; without it every
    preset gets the project's configured features (what a pipeline run would train on).
    ``spread``: utterances picked evenly over the length distribution of ``subsets`` instead of
    the first ones; short utterances train faster per audio-second than long ones (bigger
    batches), so a budget planned from long ones alone is too pessimistic.
    ``model_overrides``: single model settings over the preset (``training.model`` in a run).
    """
    import pandas as pd
    import torch

    from asr_pipeline.audio.extraction import compute_features
    from asr_pipeline.audio.features import FeatureConfig, FeatureExtractor, RunningStats
    from asr_pipeline.corpus.buckets import bucket_batches
    from asr_pipeline.corpus.librispeech import scan
    from asr_pipeline.model.acoustic import count_parameters
    from asr_pipeline.model.factory import build_acoustic_model, model_config_from_dict
    from asr_pipeline.trainer.augment import SpecAugment
    from asr_pipeline.trainer.batching import BatchLoader
    from asr_pipeline.units.characters import normalise

    torch.manual_seed(0)
    torch.set_num_threads(threads)
    training = project_params("training")["training"]
    feature_params = project_params("feature_engineering")["features"]
    if preset == "seed" and original_features:
        # the original design's 128 MFCC (n_fft 1024 so all 128 mel filters are used)
        feature_params = {
            **feature_params,
            "kind": "mfcc",
            "n_mfcc": 128,
            "n_mels": 128,
            "n_fft": 1024,
        }
    config = FeatureConfig.from_params(feature_params)
    extractor = FeatureExtractor(config)
    items = [i for i in scan(root, list(subsets), ["flac", "wav", "mp3"]) if not i.audio_error]
    items.sort(key=lambda i: i.utterance_id)
    if spread:
        items.sort(key=lambda i: i.num_samples)
        total_seconds = sum(i.num_samples / i.sample_rate for i in items)
        step = max(1, int(total_seconds / audio_seconds))
        items = items[step // 2 :: step]
    chosen, total = [], 0.0
    for item in items:
        if total >= audio_seconds:
            break
        chosen.append(item)
        total += item.num_samples / item.sample_rate
    features = {i.utterance_id: compute_features(i.path, extractor) for i in chosen}
    index = pd.DataFrame(
        {
            "utterance_id": [i.utterance_id for i in chosen],
            "feature_key": [i.utterance_id for i in chosen],
            "text": [normalise(i.transcript)[0] for i in chosen],
            "num_frames": [features[i.utterance_id].shape[1] for i in chosen],
        }
    )
    stats = RunningStats(config.n_features)
    for tensor in features.values():
        stats.update(tensor.float())
    loader = BatchLoader(index, features, stats.result(), SpecAugment(**training["spec_augment"]))
    fps = config.sample_rate / config.hop_length
    batches = bucket_batches(
        index.num_frames.tolist(), int(training["batch_seconds"] * fps), seed=1
    )
    model = build_acoustic_model(
        model_config_from_dict(
            {
                **training["presets"][preset],
                **(model_overrides or {}),
                "n_features": config.n_features,
            }
        )
    )
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    model.train()
    real = padded = 0
    audio = 0.0
    start_wall = start_cpu = None
    for step, rows in enumerate(batches + batches[:warmup_batches]):
        if step == warmup_batches:
            start_wall, start_cpu = time.perf_counter(), cpu_seconds()
        batch = loader.load(rows)
        log_probs, out_lengths = model(batch.features, batch.feature_lengths)
        loss = torch.nn.functional.ctc_loss(
            log_probs.transpose(0, 1),
            batch.targets,
            out_lengths,
            batch.target_lengths,
            zero_infinity=True,
        )
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step >= warmup_batches:
            audio += float(batch.feature_lengths.sum()) / fps
            real += int(batch.feature_lengths.sum())
            padded += batch.features.shape[0] * batch.features.shape[2]
    wall, cpu = time.perf_counter() - start_wall, cpu_seconds() - start_cpu
    return {
        "preset": preset,
        "parameters": count_parameters(model),
        "n_features": config.n_features,
        "threads": threads,
        "audio_seconds": audio,
        "wall_seconds": wall,
        "cpu_seconds": cpu,
        "audio_seconds_per_wall_second": audio / wall,
        "audio_seconds_per_cpu_second": audio / cpu,
        "padding_fraction": 1 - real / padded,
        "peak_rss_mb": peak_rss_mb(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--librispeech-dir")
    parser.add_argument("--presets", default="default,seed")
    parser.add_argument("--audio-seconds", type=float, default=600.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--warmup-batches", type=int, default=2)
    parser.add_argument("--out", type=Path, default=REPORT_DIR / "training.json")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    root = librispeech_dir(args.librispeech_dir)
    if args.worker:
        print(
            json.dumps(
                measure(args.worker, root, args.audio_seconds, args.threads, args.warmup_batches)
            )
        )
        return
    results = {}
    for preset in args.presets.split(","):
        command = [
            sys.executable,
            __file__,
            "--worker",
            preset,
            "--librispeech-dir",
            str(root),
            "--audio-seconds",
            str(args.audio_seconds),
            "--threads",
            str(args.threads),
            "--warmup-batches",
            str(args.warmup_batches),
        ]
        output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
        results[preset] = json.loads(output.strip().splitlines()[-1])
        r = results[preset]
        print(
            f"{preset:>8}: {r['parameters'] / 1e6:6.2f} M params, "
            f"{r['audio_seconds_per_wall_second']:7.1f} audio-s/wall-s, "
            f"{r['audio_seconds_per_cpu_second']:6.1f} audio-s/CPU-s, "
            f"padding {100 * r['padding_fraction']:.1f}%, peak RSS {r['peak_rss_mb']:.0f} MB"
        )
    report = {"presets": results}
    if {"default", "seed"} <= set(results):
        ratio = (
            results["default"]["audio_seconds_per_wall_second"]
            / results["seed"]["audio_seconds_per_wall_second"]
        )
        report["default_over_seed_speed"] = ratio
        print(
            f"default trains {ratio:.1f}x faster per audio-second than seed "
            f"(goal >= 10x: {'PASS' if ratio >= 10 else 'FAIL'})"
        )
    write_report(report, args.out)


if __name__ == "__main__":
    main()
