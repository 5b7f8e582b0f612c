"""The trainer of this checkout against an older revision's, on the same data, side by side.

    python benchmarks/trainer_versions.py [--old-ref 0b5f91a] [--audio-seconds 1200]
        [--epochs 6] [--repeats 2] [--threads 2] [--librispeech-dir DIR]

The default old revision is the last one before the GPU and multi-process work (issue 22): its
trainer built batches in the training process with ``BatchLoader``, had no DataLoader, no bf16,
no sharded validation and no in-epoch checkpoints. Features, the index (train and validation rows
of train-clean-100) and the normalisation statistics are computed once, here, with this checkout's
code; then each revision trains on them in its own process (``src`` and ``conf`` of the old one
come from ``git archive``), through its own ``train_acoustic_model`` node and its own
``conf/base`` recipe and default preset, with character units, for the same number of epochs and no
time budget. Each process reports the training audio-seconds per second of every epoch, the wall
time of the whole fit (validation and checkpoints included), its peak RSS and the final validation
CER; the two revisions take turns (new, old, old, new, ...) and their means are compared. Writes
data/08_reporting/benchmarks/trainer_versions.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from io import BytesIO
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import PROJECT_ROOT, REPORT_DIR, librispeech_dir, peak_rss_mb, write_report  # noqa: E402

OLD_REF = "0b5f91a"  # before "training DataLoader over planned batches ... bf16 ... conf/gpu"
VALIDATION_EVERY = 10  # every 10th utterance validates (a throughput benchmark: no speaker split)


def prepare(root: Path, audio_seconds: float, out: Path) -> dict:
    """Features, index and statistics of about ``audio_seconds`` of train-clean-100, in ``out``."""
    import pandas as pd
    import torch
    import yaml

    from asr_pipeline.audio.extraction import compute_features
    from asr_pipeline.audio.features import FeatureConfig, FeatureExtractor
    from asr_pipeline.corpus.librispeech import scan
    from asr_pipeline.pipelines.feature_engineering.nodes import compute_normalisation_stats
    from asr_pipeline.units.characters import normalise

    params = yaml.safe_load((PROJECT_ROOT / "conf/base/parameters_feature_engineering.yml").open())
    feature_params = params["features"]
    extractor = FeatureExtractor(FeatureConfig.from_params(feature_params))
    items = [i for i in scan(root, ["train-clean-100"], ["flac"]) if not i.audio_error]
    items.sort(key=lambda i: i.num_samples)  # evenly over the lengths, as a real epoch has them
    total = sum(i.num_samples / i.sample_rate for i in items)
    items = items[:: max(1, int(total / audio_seconds))]
    features = {i.utterance_id: compute_features(str(i.path), extractor) for i in items}
    index = pd.DataFrame(
        {
            "utterance_id": [i.utterance_id for i in items],
            "split": [
                "validation" if n % VALIDATION_EVERY == 0 else "train" for n in range(len(items))
            ],
            "subset": "train-clean-100",
            "speaker_id": [i.utterance_id.split("-")[0] for i in items],
            "duration_s": [i.num_samples / i.sample_rate for i in items],
            "speed": 1.0,
            "text": [normalise(i.transcript)[0] for i in items],
            "feature_key": [i.utterance_id for i in items],
            "path": [str(i.path) for i in items],
            "num_frames": [features[i.utterance_id].shape[1] for i in items],
        }
    )
    stats = compute_normalisation_stats(index, features, feature_params)
    torch.save(features, out / "features.pt")
    index.to_parquet(out / "index.parquet")
    (out / "stats.json").write_text(json.dumps(stats))
    train = index[index.split == "train"]
    return {
        "train_utterances": len(train),
        "train_audio_seconds": float(train.duration_s.sum()),
        "validation_utterances": int((index.split == "validation").sum()),
    }


def train(data: Path, epochs: int, threads: int) -> dict:
    """Train with the ``asr_pipeline`` on the path (this checkout's, or an old revision's)."""
    import pandas as pd
    import torch
    import yaml

    import asr_pipeline
    from asr_pipeline.pipelines.training.nodes import train_acoustic_model
    from asr_pipeline.units.characters import CharacterUnits

    conf = Path(asr_pipeline.__file__).resolve().parents[2] / "conf" / "base"
    params = yaml.safe_load((conf / "parameters_training.yml").open())["training"]
    feature_params = yaml.safe_load((conf / "parameters_feature_engineering.yml").open())
    feature_params = feature_params["features"]
    checkpoints = tempfile.mkdtemp()
    params = {
        **params,
        "epochs": epochs,
        "max_minutes": None,
        "early_stopping_patience": epochs,
        "threads": threads,
        "device": "cpu",
        "checkpoint_dir": checkpoints,
        "resume": False,
    }
    features = torch.load(data / "features.pt")
    index = pd.read_parquet(data / "index.parquet")
    stats = json.loads((data / "stats.json").read_text())
    start = time.perf_counter()
    bundle, history, _ = train_acoustic_model(
        index, features, stats, CharacterUnits().to_dict(), params, feature_params
    )
    return {
        "source": str(Path(asr_pipeline.__file__).parent),
        "preset": params["preset"],
        "parameters": bundle["info"]["parameters"],
        "fit_seconds": time.perf_counter() - start,
        "audio_seconds_per_second": history.audio_seconds_per_second.tolist(),
        "epoch_seconds": history.epoch_seconds.tolist(),
        "final_val_cer": float(history.val_cer.iloc[-1]),
        "peak_rss_mb": peak_rss_mb(),
    }


def old_tree(ref: str, into: Path) -> Path:
    """``src`` and ``conf`` of ``ref`` unpacked into ``into`` (no checkout is touched)."""
    archive = subprocess.run(
        ["git", "archive", "--format=tar", ref, "src", "conf"],
        cwd=PROJECT_ROOT, capture_output=True, check=True,
    ).stdout  # fmt: skip
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return into


def run_worker(tree: Path, data: Path, epochs: int, threads: int) -> dict:
    """One training in a fresh process whose ``asr_pipeline`` is ``tree/src``'s."""
    env = {**os.environ, "PYTHONPATH": str(tree / "src"), "OMP_NUM_THREADS": str(threads)}
    command = [sys.executable, __file__, "--worker", str(data)]
    command += ["--epochs", str(epochs), "--threads", str(threads)]
    done = subprocess.run(command, check=False, env=env, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"training with {tree} failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    if Path(result["source"]) != (tree / "src" / "asr_pipeline").resolve():
        sys.exit(f"the worker imported {result['source']}, not {tree / 'src'}")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--librispeech-dir")
    parser.add_argument("--old-ref", default=OLD_REF)
    parser.add_argument("--audio-seconds", type=float, default=1200.0)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--repeats", type=int, default=2, help="runs of each, in the order new, old, old, new, ..."
    )
    parser.add_argument("--out", type=Path, default=REPORT_DIR / "trainer_versions.json")
    parser.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(train(args.worker, args.epochs, args.threads)))
        return
    if args.epochs < 2:
        parser.error("--epochs must be at least 2: the first one warms up and is not compared")
    root = librispeech_dir(args.librispeech_dir)
    report = {"old_ref": args.old_ref, "epochs": args.epochs, "threads": args.threads}
    runs: dict[str, list[dict]] = {"new": [], "old": []}
    with tempfile.TemporaryDirectory() as temp:
        data = Path(temp) / "data"
        data.mkdir()
        report["data"] = prepare(root, args.audio_seconds, data)
        print(f"data: {report['data']}", flush=True)
        trees = {"new": PROJECT_ROOT, "old": old_tree(args.old_ref, Path(temp) / "old")}
        # one after the other (two at once would share the cores), in the order ABBA..., so that
        # a machine that slows down or speeds up during the benchmark favours neither
        order = [("new", "old") if i % 2 == 0 else ("old", "new") for i in range(args.repeats)]
        for name in (name for pair in order for name in pair):
            result = run_worker(trees[name], data, args.epochs, args.threads)
            # the first epoch warms up (allocator, thread pools): the later ones are compared
            later = result["audio_seconds_per_second"][1:]
            result["training_speed"] = sum(later) / len(later)
            runs[name].append(result)
            print(
                f"{name}: {result['training_speed']:.1f} audio-s/s, fit {result['fit_seconds']:.1f}"
                f" s, peak RSS {result['peak_rss_mb']:.0f} MB, "
                f"val CER {100 * result['final_val_cer']:.1f}%",
                flush=True,
            )
    report["runs"] = runs
    summary = {
        name: {
            key: sum(r[key] for r in results) / len(results)
            for key in ("training_speed", "fit_seconds", "peak_rss_mb", "final_val_cer")
        }
        for name, results in runs.items()
    }
    report["mean"] = summary
    new, old = summary["new"], summary["old"]
    print(f"{'mean of ' + str(args.repeats) + ' runs':22} {'new':>10} {'old':>10} {'new/old':>8}")
    for label, key, scale in (
        ("train audio-s/s", "training_speed", 1),
        ("fit seconds", "fit_seconds", 1),
        ("peak RSS MB", "peak_rss_mb", 1),
        ("final val CER %", "final_val_cer", 100),
    ):
        ratio = new[key] / old[key] if old[key] else float("nan")
        report[f"new_over_old_{key}"] = ratio
        print(f"{label:22} {scale * new[key]:10.1f} {scale * old[key]:10.1f} {ratio:8.3f}")
    write_report(report, args.out)


if __name__ == "__main__":
    main()
