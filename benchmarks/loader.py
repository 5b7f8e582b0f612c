"""Benchmark: the training DataLoader against the loader before it, side by side in one run.

    python benchmarks/loader.py [--audio-minutes 120] [--baseline-ref 0b5f91a]

Features of real shared utterances (train-clean-100, spread over the lengths) are extracted into
a temporary feature store, then the same planned batches (the project's ``batch_seconds``) are
built by:

- ``old``: the batch loader and SpecAugment of ``--baseline-ref`` (read from git), one batch at a
  time in this process, as the trainer did between steps;
- ``new_w0/w1/w2``: :func:`asr_pipeline.trainer.loader.batch_loader` with 0, 1 and 2 workers;
- ``fly_*``: the same with features computed from the audio when loaded (``features.storage:
  on_the_fly``), at the original speed, and (``fly_speeds``) at 0.9/1/1.1 in turn.

For each: audio-seconds of batches per wall-second, time to the first batch. Then a few training
steps of the default model (2 torch threads) fed by the old loader and by the DataLoader with 0
and 1 workers, cached and on the fly (steps as the trainer takes them: ``gpu.timed_steps``):
training audio-s per second and the share of the step time spent waiting for the next batch.
Writes ``data/08_reporting/benchmarks/loader.json``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from common import (
    REPORT_DIR,
    librispeech_dir,
    old_module,
    peak_rss_mb,
    project_params,
    write_report,
)
from gpu import timed_steps


def _prepare(root: Path, audio_minutes: float, store_dir: Path):
    """A feature store of real utterances, its index, statistics and the planned batches."""
    import pandas as pd

    from asr_pipeline.audio.extraction import ExtractionJob, ExtractionPlan
    from asr_pipeline.audio.features import FeatureConfig, RunningStats
    from asr_pipeline.corpus.buckets import bucket_batches
    from asr_pipeline.corpus.librispeech import scan
    from asr_pipeline.datasets.feature_store import FeatureStoreDataset
    from asr_pipeline.units.characters import normalise

    training = project_params("training")["training"]
    config = FeatureConfig.from_params(project_params("feature_engineering")["features"])
    items = sorted(
        (i for i in scan(root, ["train-clean-100"], ["flac"]) if not i.audio_error),
        key=lambda i: i.num_samples,
    )
    total = sum(i.num_samples / i.sample_rate for i in items)
    step = max(1, int(total / (audio_minutes * 60)))
    chosen = items[step // 2 :: step]
    jobs = [
        ExtractionJob(i.utterance_id, str(i.path), i.num_samples / i.sample_rate) for i in chosen
    ]
    store = FeatureStoreDataset(str(store_dir))
    store.save(ExtractionPlan(tuple(jobs), config, workers=2, shard_mb=16))
    features = store.load()
    texts = {i.utterance_id: normalise(i.transcript)[0] for i in chosen}
    keys = [i.utterance_id for i in chosen if i.utterance_id in features]
    paths = {i.utterance_id: str(i.path) for i in chosen}
    index = pd.DataFrame(
        {"utterance_id": keys, "feature_key": keys, "text": [texts[k] for k in keys],
         "num_frames": [features[k].shape[1] for k in keys], "path": [paths[k] for k in keys],
         "speed": 1.0}
    )  # fmt: skip
    stats = RunningStats(config.n_features)
    for key in keys:
        stats.update(features[key].float())
    fps = config.sample_rate / config.hop_length
    batches = bucket_batches(index.num_frames.tolist(), int(training["batch_seconds"] * fps), 1)
    return index, features, stats.result(), batches, fps, training, config


def _drain(batches_iter, fps: float) -> dict[str, float]:
    """Consume every batch as fast as it comes: audio-s per second over the whole pass and after
    the first batch (workers started), and the time to the first batch."""
    start = time.perf_counter()
    first, frames, after_first = None, 0, 0
    for batch in batches_iter:
        if first is None:
            first = time.perf_counter()
        else:
            after_first += int(batch.feature_lengths.sum())
        frames += int(batch.feature_lengths.sum())
    end = time.perf_counter()
    return {
        "audio_s_per_s": frames / fps / (end - start),
        "steady_audio_s_per_s": after_first / fps / (end - first),
        "first_batch_s": first - start,
        "wall_s": end - start,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--librispeech-dir")
    parser.add_argument("--audio-minutes", type=float, default=120.0)
    parser.add_argument("--baseline-ref", default="0b5f91a", help="the commit of the old loader")
    parser.add_argument("--train-steps", type=int, default=20)
    parser.add_argument("--out", type=Path, default=REPORT_DIR / "loader.json")
    args = parser.parse_args()

    import torch

    from asr_pipeline.audio.computed import ComputedFeatures
    from asr_pipeline.model.factory import build_acoustic_model, model_config_from_dict
    from asr_pipeline.trainer.augment import SpecAugment
    from asr_pipeline.trainer.batching import UtteranceDataset
    from asr_pipeline.trainer.loader import LoaderSettings, batch_loader

    root = librispeech_dir(args.librispeech_dir)
    with tempfile.TemporaryDirectory() as tmp:
        index, features, stats, batches, fps, training, config = _prepare(
            root, args.audio_minutes, Path(tmp) / "features"
        )
        audio_s = index.num_frames.sum() / fps
        print(
            f"{len(index)} utterances, {audio_s / 60:.1f} min, {len(batches)} batches", flush=True
        )
        augment = SpecAugment(**training["spec_augment"])
        old_augment = old_module(
            args.baseline_ref, "trainer/augment.py", "old_augment"
        ).SpecAugment(**training["spec_augment"])
        old_batching = old_module(args.baseline_ref, "trainer/batching.py", "old_batching")
        old = old_batching.BatchLoader(index, features, stats, old_augment)
        dataset = UtteranceDataset(index, features, stats, augment, seed=1)

        def new(workers: int):
            return batch_loader(dataset, batches, LoaderSettings(workers, 2))

        # on the fly: features computed from the audio when loaded; "speeds": each utterance at
        # 0.9, 1 or 1.1 in turn, as an epoch with speed perturbation draws them
        computed = ComputedFeatures(index, config)
        fly = UtteranceDataset(index, computed, stats, augment, seed=1)
        speeds = index.assign(speed=[(0.9, 1.0, 1.1)[i % 3] for i in range(len(index))])
        fly_speeds = UtteranceDataset(speeds, ComputedFeatures(speeds, config), stats, augment)

        def on_the_fly(workers: int, data=fly):
            return batch_loader(data, batches, LoaderSettings(workers, 2))

        torch.set_num_threads(1)  # loading alone: one core per worker, the parent on one
        loading = {"old": _drain(old.iterate(batches), fps)}
        for workers in (0, 1, 2):
            loading[f"new_w{workers}"] = _drain(new(workers), fps)
        for workers in (0, 2):
            loading[f"fly_w{workers}"] = _drain(on_the_fly(workers), fps)
        loading["fly_speeds_w2"] = _drain(on_the_fly(2, fly_speeds), fps)
        for name, figures in loading.items():
            print(f"loading {name:7s} {figures['audio_s_per_s']:9.0f} audio-s/s "
                  f"({figures['steady_audio_s_per_s']:.0f} after the first batch), first batch "
                  f"{figures['first_batch_s']:.3f} s", flush=True)  # fmt: skip

        torch.set_num_threads(2)
        model_config = model_config_from_dict(
            {**training["presets"]["default"], "n_features": config.n_features}
        )
        training_figures = {}
        for name, feed in (("old", lambda: old.iterate(batches)), ("new_w0", lambda: new(0)),
                           ("new_w1", lambda: new(1)), ("fly_w0", lambda: on_the_fly(0)),
                           ("fly_w1", lambda: on_the_fly(1))):  # fmt: skip
            torch.manual_seed(0)
            model = build_acoustic_model(model_config)
            optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
            _, pace, waiting = timed_steps(
                model, feed(), optimizer, torch.device("cpu"), "fp32", args.train_steps, fps
            )
            training_figures[name] = {"train_audio_s_per_s": pace, "waiting_share": waiting}
            figures = training_figures[name]
            print(f"training {name:7s} {figures['train_audio_s_per_s']:6.1f} audio-s/s, waiting "
                  f"{100 * figures['waiting_share']:.1f}% of the time", flush=True)  # fmt: skip

    per_worker = loading["new_w1"]["steady_audio_s_per_s"]
    result = {
        "utterances": len(index),
        "audio_minutes": audio_s / 60,
        "batches": len(batches),
        "baseline_ref": args.baseline_ref,
        "loading": loading,
        "training": training_figures,
        "loader_audio_s_per_s_per_worker": per_worker,
        "loader_speedup_new_over_old": loading["new_w2"]["audio_s_per_s"]
        / loading["old"]["audio_s_per_s"],
        "training_speedup_w1_over_old": training_figures["new_w1"]["train_audio_s_per_s"]
        / training_figures["old"]["train_audio_s_per_s"],
        "training_on_the_fly_over_cached_w0": training_figures["fly_w0"]["train_audio_s_per_s"]
        / training_figures["new_w0"]["train_audio_s_per_s"],
        "peak_rss_mb": peak_rss_mb(),
    }
    print(f"per worker {per_worker:.0f} audio-s/s; 2 workers / old "
          f"{result['loader_speedup_new_over_old']:.2f}x; training with 1 worker / old "
          f"{result['training_speedup_w1_over_old']:.3f}x")  # fmt: skip
    write_report(result, args.out)


if __name__ == "__main__":
    sys.exit(main())
